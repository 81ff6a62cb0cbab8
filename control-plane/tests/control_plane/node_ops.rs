//! Node operations end to end through both routers. An operator request
//! waits while a simulated agent claims the operation and reports. A node
//! added without a MAC takes it from the inventory. Failures surface as 502
//! with the agent's message, and the sealed password is cleared afterwards.

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use rackhand_control_plane::agents::{self, PeerCertificate};
use rackhand_control_plane::api::error::ApiError;
use rackhand_control_plane::db;
use rackhand_control_plane::operations::{self, NewOperation};
use rackhand_protocol::agent::{NodeAction, OPERATION_CLAIM_PATH, operation_result_path};
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION, Secret};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::harness::{Reply, SITE, TestPlane, node_body};

const FINGERPRINT: &str = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e";
const MAX_BODY_BYTES: usize = 1 << 20;

async fn ready_plane() -> TestPlane {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let site_id: i64 = sqlx::query_scalar("SELECT id FROM sites WHERE name = ?")
        .bind(SITE)
        .fetch_one(&plane.app.pool)
        .await
        .expect("the test site exists");
    let now = db::now_ms();
    sqlx::query(
        "INSERT INTO agents (site_id, cert_fingerprint, cert_expires_at, agent_version, enrolled_at)
         VALUES (?, ?, ?, 'test', ?)",
    )
    .bind(site_id)
    .bind(FINGERPRINT)
    .bind(now + 86_400_000)
    .bind(now)
    .execute(&plane.app.pool)
    .await
    .expect("the agent row inserts");
    plane
}

/// Sends a request to the agent router as the enrolled test agent.
async fn agent_call(plane: &TestPlane, uri: &str, body: &Value) -> Reply {
    let mut request = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .body(Body::from(body.to_string()))
        .expect("the request is well formed");
    request
        .extensions_mut()
        .insert(PeerCertificate(Some(FINGERPRINT.to_string())));
    let response = agents::router(plane.app.clone())
        .oneshot(request)
        .await
        .expect("the router's error type is Infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES)
        .await
        .expect("the body is readable");
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Claims the next operation, waiting up to 10 s for one to be queued.
async fn claim(plane: &TestPlane) -> Value {
    let reply = agent_call(plane, OPERATION_CLAIM_PATH, &json!({ "wait_seconds": 10 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json
}

async fn report(plane: &TestPlane, operation: &Value, outcome: Value) -> Reply {
    let id = operation["operation_id"].as_i64().expect("an operation id");
    agent_call(plane, &operation_result_path(id), &outcome).await
}

/// Starts an operator request in the background, so the test can play the
/// agent while the handler waits.
fn spawn_request(
    plane: &TestPlane,
    method: &'static str,
    uri: &str,
    body: Option<Value>,
) -> tokio::task::JoinHandle<Reply> {
    let plane = TestPlane {
        app: plane.app.clone(),
        dir: tempfile::tempdir().expect("a temporary folder"),
    };
    let uri = uri.to_string();
    tokio::spawn(async move {
        plane
            .call(
                method,
                &uri,
                Some(crate::harness::ADMIN_TOKEN),
                body.as_ref(),
            )
            .await
    })
}

fn inventory() -> Value {
    json!({
        "manufacturer": "Contoso", "model": "R1", "serial_number": "SN1", "uuid": null,
        "cpus": [{ "model": "x", "architecture": "x86_64", "cores": 8, "threads": 16 },
                 { "model": "x", "architecture": "x86_64", "cores": 8, "threads": 16 }],
        "memory_mib": 65536,
        "disks": [{ "name": "sda", "size_bytes": 480_000_000_000u64, "model": null, "serial_number": null, "media_type": "SSD" },
                  { "name": "sdb", "size_bytes": 960_000_000_000u64, "model": null, "serial_number": null, "media_type": "SSD" }],
        "nics": [{ "name": "eno1", "mac": "52:54:00:aa:00:01", "speed_mbps": 1000, "link_up": false },
                 { "name": "eno2", "mac": "52:54:00:aa:00:02", "speed_mbps": 10000, "link_up": true }],
        "firmware": [{ "name": "BIOS", "version": "2.1" }],
    })
}

fn inspect_body(name: &str) -> Value {
    json!({
        "name": name, "site": SITE, "subnet": "dc1-public",
        "bmc": { "driver": "idrac", "url": "https://10.0.0.9/redfish/v1", "username": "root", "password": "planted-bmc-pw-77" },
    })
}

#[tokio::test]
async fn node_added_without_mac_takes_values_from_inventory() {
    let plane = ready_plane().await;
    let request = spawn_request(&plane, "POST", "/v1/nodes", Some(inspect_body("r1-n09")));

    let operation = claim(&plane).await;
    assert_eq!(operation["action"]["action"], "inspect");
    assert_eq!(operation["node_name"], "r1-n09");
    assert_eq!(operation["bmc"]["driver"], "idrac");
    assert_eq!(operation["bmc"]["password"], "planted-bmc-pw-77");
    let reply = report(
        &plane,
        &operation,
        json!({ "status": "succeeded", "result": { "inventory": inventory() } }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let created = request.await.expect("the request task ends");
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["boot_mac"], "52:54:00:aa:00:02", "link-up NIC");
    assert_eq!(created.json["cpu_cores"], 16);
    assert_eq!(created.json["ram_mib"], 65536);
    assert_eq!(created.json["disk_gb"], 960);

    let shown = plane.get("/v1/nodes/r1-n09").await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert_eq!(shown.json["inventory"]["model"], "R1");
    assert!(!shown.text.contains("planted-bmc-pw-77"), "{}", shown.text);

    let left: String = sqlx::query_scalar("SELECT bmc_password_sealed FROM node_operations")
        .fetch_one(&plane.app.pool)
        .await
        .expect("the operation row exists");
    assert!(
        left.is_empty(),
        "the sealed password is cleared when the operation ends"
    );
}

#[tokio::test]
async fn failed_inspection_creates_no_node() {
    let plane = ready_plane().await;
    let request = spawn_request(&plane, "POST", "/v1/nodes", Some(inspect_body("r1-n10")));
    let operation = claim(&plane).await;
    report(
        &plane,
        &operation,
        json!({ "status": "failed", "retryable": false,
                "error": "BMC of node r1-n10 rejected user \"root\" at https://10.0.0.9/redfish/v1 with HTTP 401" }),
    )
    .await;
    let reply = request.await.expect("the request task ends");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text);
    assert!(reply.text.contains("rejected user"), "{}", reply.text);
    assert!(reply.text.contains("r1-n10"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM nodes").await, 0);
}

#[tokio::test]
async fn power_action_runs_once_through_the_agent() {
    let plane = ready_plane().await;
    plane
        .create(
            "/v1/nodes",
            &node_body("r1-n01", "52:54:00:00:00:01", "pw-n01-secret"),
        )
        .await;
    let request = spawn_request(
        &plane,
        "POST",
        "/v1/nodes/r1-n01/power",
        Some(json!({ "action": "force-off" })),
    );
    let operation = claim(&plane).await;
    assert_eq!(
        operation["action"],
        json!({ "action": "power_off", "force": true })
    );
    assert_eq!(operation["boot_mac"], "52:54:00:00:00:01");
    assert_eq!(operation["bmc"]["password"], "pw-n01-secret");
    report(
        &plane,
        &operation,
        json!({ "status": "succeeded", "result": {} }),
    )
    .await;
    let reply = request.await.expect("the request task ends");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // A resent result changes nothing, and nothing is handed out again.
    let again = report(
        &plane,
        &operation,
        json!({ "status": "failed", "retryable": true, "error": "late" }),
    )
    .await;
    assert_eq!(again.json["recorded"], false, "{}", again.text);
    let empty = agent_call(&plane, OPERATION_CLAIM_PATH, &json!({ "wait_seconds": 0 })).await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT, "{}", empty.text);
}

#[tokio::test]
async fn invalid_actions_are_rejected_before_any_operation() {
    let plane = ready_plane().await;
    plane
        .create("/v1/nodes", &node_body("r1-n02", "52:54:00:00:00:02", "pw"))
        .await;
    let reply = plane
        .post("/v1/nodes/r1-n02/power", &json!({ "action": "explode" }))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("explode"), "{}", reply.text);
    let reply = plane
        .call(
            "PUT",
            "/v1/nodes/r1-n02/boot",
            Some(crate::harness::ADMIN_TOKEN),
            Some(&json!({ "target": "floppy" })),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let reply = plane
        .post(
            "/v1/nodes/r1-n02/media",
            &json!({ "url": "file:///etc/passwd" }),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let reply = plane.get("/v1/nodes/nope/sensors").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let body = json!({ "name": "r1-n03", "site": SITE, "subnet": "dc1-public",
        "bmc": { "driver": "amt", "url": "https://10.0.0.3", "username": "u", "password": "p" } });
    let reply = plane.post("/v1/nodes", &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("amt"), "{}", reply.text);
    let body = json!({ "name": "r1-n03", "site": SITE, "subnet": "dc1-public",
        "bmc": { "driver": "ipmi", "url": "https://10.0.0.3", "username": "u", "password": "p" } });
    let reply = plane.post("/v1/nodes", &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("ipmi://"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM node_operations").await, 0);
}

#[tokio::test]
async fn node_under_provisioning_needs_force() {
    let plane = ready_plane().await;
    let node_id = plane.create_node("r1-n04", "52:54:00:00:00:04").await;
    let order_id = crate::harness::id_of(&plane.create_order().await, "order_id");
    sqlx::query("UPDATE orders SET state = 'provisioning', node_id = ? WHERE id = ?")
        .bind(node_id)
        .bind(order_id)
        .execute(&plane.app.pool)
        .await
        .expect("the order updates");
    sqlx::query("UPDATE nodes SET state = 'reserved', reserved_by_order = ? WHERE id = ?")
        .bind(order_id)
        .bind(node_id)
        .execute(&plane.app.pool)
        .await
        .expect("the node updates");
    let reply = plane
        .post("/v1/nodes/r1-n04/power", &json!({ "action": "reset" }))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.text.contains("force"), "{}", reply.text);

    let request = spawn_request(
        &plane,
        "POST",
        "/v1/nodes/r1-n04/power",
        Some(json!({ "action": "reset", "force": true })),
    );
    let operation = claim(&plane).await;
    assert_eq!(operation["action"]["action"], "reset");
    report(
        &plane,
        &operation,
        json!({ "status": "succeeded", "result": {} }),
    )
    .await;
    assert_eq!(request.await.expect("ends").status, StatusCode::OK);
}

#[tokio::test]
async fn unclaimed_operation_fails_naming_the_agents() {
    let plane = ready_plane().await;
    let site_id: i64 = sqlx::query_scalar("SELECT id FROM sites")
        .fetch_one(&plane.app.pool)
        .await
        .expect("a site");
    let error = operations::run(
        &plane.app,
        NewOperation {
            site_id,
            node_id: None,
            node_name: "r1-n05".into(),
            boot_mac: None,
            bmc_driver: "redfish".into(),
            bmc_url: "https://10.0.0.5".into(),
            bmc_username: "root".into(),
            bmc_password: Secret::new("pw".into()),
            bmc_ca_pem: None,
            bmc_fingerprint: None,
            action: NodeAction::Sensors,
        },
        Duration::from_millis(300),
    )
    .await
    .expect_err("no agent claims it");
    let ApiError::GatewayTimeout(message) = error else {
        panic!("expected a gateway timeout, got {error:?}");
    };
    assert!(message.contains("agent list"), "{message}");
    let state: String = sqlx::query_scalar("SELECT state FROM node_operations")
        .fetch_one(&plane.app.pool)
        .await
        .expect("the row exists");
    assert_eq!(state, "failed");
    // A late agent gets nothing.
    let empty = agent_call(&plane, OPERATION_CLAIM_PATH, &json!({ "wait_seconds": 0 })).await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn expired_lease_fails_the_operation_instead_of_repeating_it() {
    let plane = ready_plane().await;
    plane
        .create("/v1/nodes", &node_body("r1-n06", "52:54:00:00:00:06", "pw"))
        .await;
    let request = spawn_request(
        &plane,
        "POST",
        "/v1/nodes/r1-n06/power",
        Some(json!({ "action": "reset" })),
    );
    let operation = claim(&plane).await;
    sqlx::query("UPDATE node_operations SET lease_expires_at = 0")
        .execute(&plane.app.pool)
        .await
        .expect("the lease is backdated");
    let empty = agent_call(&plane, OPERATION_CLAIM_PATH, &json!({ "wait_seconds": 0 })).await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT, "not handed out again");
    let reply = request.await.expect("ends");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text);
    assert!(reply.text.contains("lease"), "{}", reply.text);
    let late = report(
        &plane,
        &operation,
        json!({ "status": "succeeded", "result": {} }),
    )
    .await;
    assert_eq!(late.json["recorded"], false);
}

#[tokio::test]
async fn node_boot_files_reach_the_site_list() {
    let plane = ready_plane().await;
    plane
        .create("/v1/nodes", &node_body("r1-n07", "52:54:00:00:00:07", "pw"))
        .await;
    let patch = |body: Value| {
        let plane = &plane;
        async move {
            plane
                .call(
                    "PATCH",
                    "/v1/nodes/r1-n07",
                    Some(crate::harness::ADMIN_TOKEN),
                    Some(&body),
                )
                .await
        }
    };
    for (body, field) in [
        (
            json!({ "boot": { "tftp_file": "../etc/passwd" } }),
            "boot.tftp_file",
        ),
        (
            json!({ "boot": { "http_url": "ftp://x/y.efi" } }),
            "boot.http_url",
        ),
        (
            json!({ "boot": { "ipxe_script_url": format!("http://h/{}", "a".repeat(130)) } }),
            "boot.ipxe_script_url",
        ),
        (json!({ "boot": {} }), "boot"),
    ] {
        let reply = patch(body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        assert_eq!(reply.json["field"], field, "{body}: {}", reply.text);
    }
    let reply = patch(json!({ "boot": { "tftp_file": "custom/ipxe.efi" } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let site = agent_get(&plane, "/agent/v1/site").await;
    let node = site["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == "r1-n07"))
        .cloned()
        .expect("the node is listed");
    assert_eq!(node["boot"]["tftp_file"], "custom/ipxe.efi", "{site}");

    let reply = patch(json!({ "boot": null })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let site = agent_get(&plane, "/agent/v1/site").await;
    assert!(site.to_string().contains("r1-n07"));
    assert!(!site.to_string().contains("custom/ipxe.efi"), "{site}");
}

/// Sends a GET to the agent router as the enrolled test agent.
async fn agent_get(plane: &TestPlane, uri: &str) -> Value {
    let mut request = Request::builder()
        .method("GET")
        .uri(uri)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .body(Body::empty())
        .expect("the request is well formed");
    request
        .extensions_mut()
        .insert(PeerCertificate(Some(FINGERPRINT.to_string())));
    let response = agents::router(plane.app.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("JSON")
}

#[tokio::test]
async fn driver_specific_addresses_are_checked() {
    let plane = ready_plane().await;
    let body = |name: &str, driver: &str, url: &str, password: &str| {
        json!({ "name": name, "site": SITE, "subnet": "dc1-public", "boot_mac": "52:54:00:00:00:31",
                "cpu_cores": 8, "ram_mib": 16384, "disk_gb": 240,
                "bmc": { "driver": driver, "url": url, "username": "admin", "password": password } })
    };
    for (driver, url, password, needle) in [
        ("ipmi", "ipmi://10.0.0.7/path", "pw", "path"),
        ("ipmi", "ipmi://10.0.0.7:0", "pw", "port 0"),
        ("ipmi", "ipmi://10.0.0.7?colour=red", "pw", "colour"),
        (
            "ipmi",
            "ipmi://10.0.0.7",
            "a-password-of-thirty-bytes-xyz",
            "20 bytes",
        ),
        ("ironic", "http://10.0.0.8:6385", "pw", "/v1/nodes/"),
        (
            "ironic",
            "http://10.0.0.8:6385/v1/nodes/",
            "pw",
            "/v1/nodes/",
        ),
        ("redfish", "https://10.0.0.9/redfish/v1?x=1", "pw", "query"),
    ] {
        let reply = plane
            .post("/v1/nodes", &body("r1-n31", driver, url, password))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            reply.text
        );
        assert!(reply.text.contains(needle), "{url}: {}", reply.text);
    }
    let ok = plane
        .post(
            "/v1/nodes",
            &body(
                "r1-n31",
                "ipmi",
                "ipmi://10.0.0.7:623?cipher_suite=17",
                "pw",
            ),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM node_operations").await, 0);
}

#[tokio::test]
async fn node_names_are_unique_across_sites() {
    let plane = ready_plane().await;
    plane
        .create("/v1/nodes", &node_body("r1-n40", "52:54:00:00:00:40", "pw"))
        .await;
    plane.create("/v1/sites", &json!({ "name": "dc2" })).await;
    plane
        .create(
            "/v1/subnets",
            &json!({ "name": "dc2-public", "site": "dc2", "cidr": "198.51.100.0/24", "gateway": "198.51.100.1" }),
        )
        .await;
    let mut other = node_body("r1-n40", "52:54:00:00:00:41", "pw");
    other["site"] = json!("dc2");
    other["subnet"] = json!("dc2-public");
    other["bmc"]["url"] = json!("https://127.0.0.1:1/redfish/v1/Systems/other");
    let reply = plane.post("/v1/nodes", &other).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.text.contains("unique across sites"), "{}", reply.text);
}

#[tokio::test]
async fn wrong_driver_can_be_corrected() {
    let plane = ready_plane().await;
    plane
        .create("/v1/nodes", &node_body("r1-n50", "52:54:00:00:00:50", "pw"))
        .await;
    let patch = |body: Value| {
        let plane = &plane;
        async move {
            plane
                .call(
                    "PATCH",
                    "/v1/nodes/r1-n50",
                    Some(crate::harness::ADMIN_TOKEN),
                    Some(&body),
                )
                .await
        }
    };
    let reply = patch(json!({ "bmc": { "driver": "ipmi" } })).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an https URL is no IPMI address: {}",
        reply.text
    );
    let reply = patch(json!({ "bmc": { "driver": "idrac" } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let shown = plane.get("/v1/nodes/r1-n50").await;
    assert_eq!(shown.json["bmc_driver"], "idrac");
    let reply = patch(json!({ "bmc": {} })).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn media_url_with_credentials_is_rejected() {
    let plane = ready_plane().await;
    plane
        .create("/v1/nodes", &node_body("r1-n60", "52:54:00:00:00:60", "pw"))
        .await;
    let reply = plane
        .post(
            "/v1/nodes/r1-n60/media",
            &json!({ "url": "http://user:S3cret@10.0.0.1/a.iso" }),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("S3cret"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM node_operations").await, 0);
}

#[tokio::test]
async fn bmc_certificate_trust_reaches_the_agent() {
    let plane = ready_plane().await;
    let mut body = node_body("r1-n70", "52:54:00:00:00:70", "pw");
    body["bmc"]["fingerprint"] = json!("sha256:AB:cd".to_string() + &"0".repeat(59));
    let reply = plane.post("/v1/nodes", &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "bmc.fingerprint");

    body["bmc"]["fingerprint"] = json!(format!("AB:CD:{}", "0".repeat(60)));
    body["bmc"]["ca_pem"] = json!("not a certificate");
    let reply = plane.post("/v1/nodes", &body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "bmc.ca_pem");

    body["bmc"]["ca_pem"] = json!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    plane.create("/v1/nodes", &body).await;
    let request = spawn_request(&plane, "GET", "/v1/nodes/r1-n70/power", None);
    let operation = claim(&plane).await;
    assert_eq!(
        operation["bmc"]["fingerprint"],
        format!("abcd{}", "0".repeat(60))
    );
    assert!(
        operation["bmc"]["ca_pem"]
            .as_str()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")),
        "{operation}"
    );
    report(
        &plane,
        &operation,
        json!({ "status": "succeeded", "result": { "power": "off" } }),
    )
    .await;
    assert_eq!(request.await.expect("ends").status, StatusCode::OK);
}
