//! The operator API: authentication, roles, validation errors, and BMC
//! passwords that never leave the control plane in clear.

use http::StatusCode;
use serde_json::json;

use crate::harness::{ADMIN_TOKEN, SITE, TestPlane, VIEWER_TOKEN, node_body, subnet_body};

/// Asserts a 422 response whose JSON `field` is `field`.
fn assert_invalid_field(reply: &crate::harness::Reply, field: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "expected 422 for `{field}`: {}",
        reply.text
    );
    assert_eq!(reply.json["field"], field, "{}", reply.text);
}

#[tokio::test]
async fn missing_token_is_unauthorized() {
    let plane = TestPlane::start().await;

    let reply = plane.call("GET", "/v1/sites", None, None).await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let message = reply.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("Authorization"), "{}", reply.text);
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let plane = TestPlane::start().await;

    let reply = plane
        .call("GET", "/v1/sites", Some("not-a-configured-token"), None)
        .await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}

#[tokio::test]
async fn non_bearer_scheme_is_unauthorized() {
    let plane = TestPlane::start().await;
    let request = http::Request::builder()
        .uri("/v1/sites")
        .header(http::header::AUTHORIZATION, format!("Basic {ADMIN_TOKEN}"))
        .body(axum::body::Body::empty())
        .expect("the request is well formed");

    let reply = plane.send(request).await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}

#[tokio::test]
async fn lowercase_bearer_scheme_is_accepted() {
    let plane = TestPlane::start().await;
    let request = http::Request::builder()
        .uri("/v1/sites")
        .header(http::header::AUTHORIZATION, format!("bearer {ADMIN_TOKEN}"))
        .body(axum::body::Body::empty())
        .expect("the request is well formed");

    let reply = plane.send(request).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn viewer_head_is_allowed() {
    let plane = TestPlane::start().await;

    let reply = plane
        .call("HEAD", "/v1/sites", Some(VIEWER_TOKEN), None)
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn viewer_post_is_forbidden() {
    let plane = TestPlane::start().await;

    let read = plane
        .call("GET", "/v1/sites", Some(VIEWER_TOKEN), None)
        .await;
    let write = plane
        .call(
            "POST",
            "/v1/sites",
            Some(VIEWER_TOKEN),
            Some(&json!({ "name": SITE })),
        )
        .await;

    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(write.status, StatusCode::FORBIDDEN, "{}", write.text);
    let message = write.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("viewer"), "{}", write.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM sites").await, 0);
}

#[tokio::test]
async fn unknown_order_is_not_found() {
    let plane = TestPlane::start().await;

    let reply = plane.get("/v1/orders/999").await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let message = reply.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("999"), "{}", reply.text);
}

#[tokio::test]
async fn duplicate_site_is_conflict() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;

    let reply = plane.post("/v1/sites", &json!({ "name": SITE })).await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM sites").await, 1);
}

#[tokio::test]
async fn bad_boot_mac_names_field() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    plane.create("/v1/subnets", &subnet_body()).await;

    let reply = plane
        .post("/v1/nodes", &node_body("n1", "52:54:00:zz:00:01", "pw"))
        .await;

    assert_invalid_field(&reply, "boot_mac");
}

#[tokio::test]
async fn bad_cidr_names_field() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    let mut body = subnet_body();
    body["cidr"] = json!("192.0.2.0/33");

    let reply = plane.post("/v1/subnets", &body).await;

    assert_invalid_field(&reply, "cidr");
}

#[tokio::test]
async fn gateway_outside_cidr_names_field() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    let mut body = subnet_body();
    body["gateway"] = json!("198.51.100.1");

    let reply = plane.post("/v1/subnets", &body).await;

    assert_invalid_field(&reply, "gateway");
}

#[tokio::test]
async fn unknown_site_names_field() {
    let plane = TestPlane::start().await;

    let reply = plane.post("/v1/subnets", &subnet_body()).await;

    assert_invalid_field(&reply, "site");
    assert_eq!(plane.count("SELECT COUNT(*) FROM subnets").await, 0);
}

#[tokio::test]
async fn bad_currency_names_field() {
    let plane = TestPlane::start().await;
    let product = json!({
        "name": "small",
        "price_minor": 1999,
        "currency": "euro",
        "min_cpu_cores": 4,
        "min_ram_mib": 8192,
        "min_disk_gb": 100,
        "image": "debian-12",
    });

    let reply = plane.post("/v1/products", &product).await;

    assert_invalid_field(&reply, "currency");
}

#[tokio::test]
async fn unknown_json_key_names_field() {
    let plane = TestPlane::start().await;

    let reply = plane
        .post("/v1/sites", &json!({ "name": SITE, "region": "eu" }))
        .await;

    assert_invalid_field(&reply, "region");
}

#[tokio::test]
async fn unknown_nested_json_key_names_field() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    plane.create("/v1/subnets", &subnet_body()).await;
    let mut body = node_body("n1", "52:54:00:00:00:01", "pw");
    body["bmc"]["port"] = json!(443);

    let reply = plane.post("/v1/nodes", &body).await;

    assert_invalid_field(&reply, "bmc.port");
}

#[tokio::test]
async fn missing_json_key_names_field() {
    let plane = TestPlane::start().await;

    let reply = plane.post("/v1/sites", &json!({})).await;

    assert_invalid_field(&reply, "name");
}

#[tokio::test]
async fn missing_nested_json_key_names_path() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    plane.create("/v1/subnets", &subnet_body()).await;
    let mut body = node_body("n1", "52:54:00:00:00:01", "pw");
    body["bmc"]
        .as_object_mut()
        .expect("the node body has a bmc object")
        .remove("password");

    let reply = plane.post("/v1/nodes", &body).await;

    assert_invalid_field(&reply, "bmc.password");
}

#[tokio::test]
async fn body_of_wrong_type_names_body() {
    let plane = TestPlane::start().await;

    let reply = plane.post("/v1/sites", &json!(SITE)).await;

    assert_invalid_field(&reply, "body");
}

/// Returns whether `haystack` contains `needle` as a byte string.
fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn bmc_password_never_in_clear() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    plane.create("/v1/subnets", &subnet_body()).await;
    let password = "bmc-Secret-5b7e0c2a91";

    let created = plane
        .post("/v1/nodes", &node_body("n1", "52:54:00:00:00:01", password))
        .await;
    let listed = plane.get("/v1/nodes").await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(!created.text.contains(password), "{}", created.text);
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.json.as_array().map(Vec::len), Some(1));
    assert!(!listed.text.contains(password), "{}", listed.text);

    let database = plane.database_file();
    let wal = database.with_file_name("rackhand.db-wal");
    let database_bytes = std::fs::read(&database).expect("the database file exists");
    let wal_bytes = std::fs::read(&wal).expect("the WAL file exists while the pool is open");
    // The boot MAC proves that the files contain the node row, so the
    // absence of the password below is not vacuous.
    let stored = [&database_bytes[..], &wal_bytes[..]].concat();
    assert!(contains_bytes(&stored, "52:54:00:00:00:01"));
    assert!(!contains_bytes(&database_bytes, password));
    assert!(!contains_bytes(&wal_bytes, password));
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let plane = TestPlane::start().await;

    let reply = plane.call("GET", "/healthz", None, None).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text, "ok");
}
