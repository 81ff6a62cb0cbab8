//! Console relay over real loopback sockets: an operator's upgraded
//! connection and a simulated agent's upgraded connection are joined, and
//! bytes flow both ways until the operator leaves.

use std::time::Duration;

use axum::extract::Request;
use http::StatusCode;
use rackhand_control_plane::agents::{self, PeerCertificate};
use rackhand_control_plane::{api, db};
use rackhand_protocol::agent::{CONSOLE_UPGRADE, OPERATION_CLAIM_PATH, console_attach_path};
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{ADMIN_TOKEN, SITE, TestPlane, node_body};

const FINGERPRINT: &str = "7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f0d1e2f3a4b5c6d7e8f9a0b1c2d3e";

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

async fn ready_plane() -> TestPlane {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let now = db::now_ms();
    sqlx::query(
        "INSERT INTO agents (site_id, cert_fingerprint, cert_expires_at, agent_version, enrolled_at)
         SELECT id, ?, ?, 'test', ? FROM sites WHERE name = ?",
    )
    .bind(FINGERPRINT)
    .bind(now + 86_400_000)
    .bind(now)
    .bind(SITE)
    .execute(&plane.app.pool)
    .await
    .expect("the agent row inserts");
    plane
        .create("/v1/nodes", &node_body("r1-n01", "52:54:00:00:00:01", "pw"))
        .await;
    plane
}

#[tokio::test]
async fn console_bytes_flow_both_ways_until_operator_leaves() {
    let plane = ready_plane().await;
    let api_url = serve(api::router(plane.app.clone())).await;
    // The agent router behind a plain listener, with the certificate
    // fingerprint the TLS listener would have inserted.
    let agent_router = agents::router(plane.app.clone()).layer(axum::middleware::map_request(
        |mut request: Request| async move {
            request
                .extensions_mut()
                .insert(PeerCertificate(Some(FINGERPRINT.to_string())));
            request
        },
    ));
    let agent_url = serve(agent_router).await;
    let http =
        rackhand_control_plane::http_client::build(Duration::from_secs(30)).expect("a client");

    let operator = {
        let http = http.clone();
        let url = format!("{api_url}/v1/nodes/r1-n01/console/attach");
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(ADMIN_TOKEN)
                .header("connection", "upgrade")
                .header("upgrade", CONSOLE_UPGRADE)
                .send()
                .await
        })
    };

    let claim: Value = http
        .post(format!("{agent_url}{OPERATION_CLAIM_PATH}"))
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .json(&json!({ "wait_seconds": 10 }))
        .send()
        .await
        .expect("the claim is answered")
        .json()
        .await
        .expect("an operation");
    assert_eq!(claim["action"]["action"], "console_attach", "{claim}");
    let id = claim["operation_id"].as_i64().expect("an id");

    let joined = http
        .post(format!("{agent_url}{}", console_attach_path(id)))
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .header("connection", "upgrade")
        .header("upgrade", CONSOLE_UPGRADE)
        .send()
        .await
        .expect("the join is answered");
    assert_eq!(joined.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut agent_side = joined.upgrade().await.expect("the agent side upgrades");

    let response = operator
        .await
        .expect("the operator task ends")
        .expect("the attach is answered");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut operator_side = response
        .upgrade()
        .await
        .expect("the operator side upgrades");

    agent_side
        .write_all(b"login: ")
        .await
        .expect("agent writes");
    let mut seen = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), operator_side.read_exact(&mut seen))
        .await
        .expect("in time")
        .expect("operator reads");
    assert_eq!(&seen, b"login: ");

    operator_side
        .write_all(b"root\n")
        .await
        .expect("operator writes");
    let mut typed = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), agent_side.read_exact(&mut typed))
        .await
        .expect("in time")
        .expect("agent reads");
    assert_eq!(&typed, b"root\n");

    drop(operator_side);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), agent_side.read_to_end(&mut rest))
        .await
        .expect("the agent side closes when the operator leaves");
    assert!(read.is_ok_and(|n| n == 0));
}

#[tokio::test]
async fn attach_without_upgrade_is_rejected_with_the_cli_command() {
    let plane = ready_plane().await;
    let reply = plane.get("/v1/nodes/r1-n01/console/attach").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.text.contains("--attach"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM node_operations").await, 0);
}
