//! The `network` and `handoff` phases run twice (a retry or a restart after
//! a crash) and failed at their steps: the second run finds what the first
//! made, and a crash in the middle of sending never leads to a second e-mail.

use rackhand_control_plane::phases::{self, OrderContext, PhaseOutcome, Retry};
use rackhand_control_plane::{orders, seal};
use rackhand_protocol::Phase;
use serde_json::json;

use crate::harness::{TestPlane, id_of};

/// Places an order, reserves a node for it and returns its phase context.
async fn allocated_order(plane: &TestPlane, node: &str, mac: &str) -> OrderContext {
    plane.create_node(node, mac).await;
    plane.allocated_order_of(crate::harness::PRODUCT).await
}

fn payload_ipv4(outcome: &PhaseOutcome) -> String {
    match outcome {
        PhaseOutcome::Done { payload, .. } => payload
            .as_ref()
            .and_then(|p| p["ipv4"].as_str())
            .unwrap_or_default()
            .to_string(),
        other => panic!("expected Done, got {other:?}"),
    }
}

#[tokio::test]
async fn network_rerun_keeps_address() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let order = allocated_order(&plane, "n1", "52:54:00:00:10:01").await;
    let key = phases::correlation_key(&order, Phase::Network);

    let first = phases::network::run(&plane.app, &order, &key)
        .await
        .expect("first run");
    let second = phases::network::run(&plane.app, &order, &key)
        .await
        .expect("second run");
    assert_eq!(
        payload_ipv4(&first),
        "192.0.2.10",
        "the first address of the range"
    );
    assert_eq!(
        payload_ipv4(&second),
        "192.0.2.10",
        "the same address again"
    );
    assert_eq!(plane.count("SELECT COUNT(*) FROM services").await, 1);
}

#[tokio::test]
async fn network_gives_next_order_next_address() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let first = allocated_order(&plane, "n1", "52:54:00:00:10:01").await;
    let second = allocated_order(&plane, "n2", "52:54:00:00:10:02").await;

    let a = phases::network::run(&plane.app, &first, "a")
        .await
        .expect("runs");
    let b = phases::network::run(&plane.app, &second, "b")
        .await
        .expect("runs");
    assert_eq!(payload_ipv4(&a), "192.0.2.10");
    assert_eq!(payload_ipv4(&b), "192.0.2.11");
}

#[tokio::test]
async fn network_without_free_address_fails_permanently() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    // One usable address besides the gateway: the first order takes it.
    plane
        .create(
            "/v1/subnets",
            &json!({ "name": "tiny", "site": "dc1", "cidr": "198.51.100.0/30", "gateway": "198.51.100.1" }),
        )
        .await;
    let mut orders_in_tiny = Vec::new();
    for (name, mac) in [("n1", "52:54:00:00:10:01"), ("n2", "52:54:00:00:10:02")] {
        let mut body = crate::harness::node_body(name, mac, "pw");
        body["subnet"] = json!("tiny");
        plane.create("/v1/nodes", &body).await;
        let order_id = id_of(&plane.create_order().await, "order_id");
        phases::allocate::allocate(&plane.app.pool, order_id, None)
            .await
            .expect("allocates");
        let order = orders::context(&plane.app.pool, order_id)
            .await
            .expect("reads")
            .expect("exists");
        orders_in_tiny.push(order);
    }

    let first = phases::network::run(&plane.app, &orders_in_tiny[0], "a")
        .await
        .expect("one address is free");
    assert_eq!(payload_ipv4(&first), "198.51.100.2");
    let error = phases::network::run(&plane.app, &orders_in_tiny[1], "b")
        .await
        .expect_err("no address");
    assert_eq!(error.retry, Retry::Permanent);
    assert!(
        error.message.contains("198.51.100.0/30"),
        "{}",
        error.message
    );
    assert_eq!(plane.count("SELECT COUNT(*) FROM services").await, 1);
}

#[tokio::test]
async fn handoff_rerun_sends_one_email() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let order = allocated_order(&plane, "n1", "52:54:00:00:10:01").await;
    phases::network::run(&plane.app, &order, "net")
        .await
        .expect("network runs");

    let first = phases::handoff::run(&plane.app, &order, "handoff")
        .await
        .expect("first run");
    assert!(matches!(first, PhaseOutcome::Done { .. }));
    let second = phases::handoff::run(&plane.app, &order, "handoff")
        .await
        .expect("second run");
    assert!(
        matches!(second, PhaseOutcome::Done { ref summary, .. } if summary.contains("already active"))
    );

    let outbox: Vec<_> = std::fs::read_dir(plane.dir.path().join("outbox"))
        .expect("the outbox exists")
        .flatten()
        .collect();
    assert_eq!(outbox.len(), 1, "one e-mail");
    assert_eq!(plane.order_state(order.id).await, "active");
}

#[tokio::test]
async fn handoff_retry_reuses_sealed_password() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let order = allocated_order(&plane, "n1", "52:54:00:00:10:01").await;
    phases::network::run(&plane.app, &order, "net")
        .await
        .expect("network runs");

    // A first attempt that stored the password and then crashed before the
    // e-mail: plant a known sealed password.
    let context = seal::root_password_context(order.id);
    let sealed = plane
        .app
        .sealer
        .seal(&context, "Known-Password-123")
        .expect("seals");
    sqlx::query("UPDATE services SET root_password_sealed = ? WHERE order_id = ?")
        .bind(&sealed)
        .bind(order.id)
        .execute(&plane.app.pool)
        .await
        .expect("updates");

    phases::handoff::run(&plane.app, &order, "handoff")
        .await
        .expect("runs");
    let mail = std::fs::read_dir(plane.dir.path().join("outbox"))
        .expect("the outbox exists")
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).expect("readable"))
        .next()
        .expect("one e-mail");
    assert!(
        mail.contains("Known-Password-123"),
        "the retry sends the stored password"
    );
}

#[tokio::test]
async fn handoff_after_crash_mid_send_fails_permanently() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let order = allocated_order(&plane, "n1", "52:54:00:00:10:01").await;
    phases::network::run(&plane.app, &order, "net")
        .await
        .expect("network runs");

    // What a crash between "sending" and "sent" leaves, with no file in the
    // outbox: delivery is unknown.
    sqlx::query("UPDATE services SET email_state = 'sending' WHERE order_id = ?")
        .bind(order.id)
        .execute(&plane.app.pool)
        .await
        .expect("updates");
    let error = phases::handoff::run(&plane.app, &order, "handoff")
        .await
        .expect_err("unknown delivery");
    assert_eq!(error.retry, Retry::Permanent);
    assert!(
        error.message.contains("--resend-email"),
        "{}",
        error.message
    );
    assert!(
        std::fs::read_dir(plane.dir.path().join("outbox"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}
