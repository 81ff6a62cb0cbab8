//! Stripe webhooks signed by the official `stripe` Python library (through
//! `tests/peers/stripe-sign`), delivered to `POST /webhooks/stripe`.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use rackhand_control_plane::db;
use serde_json::{Value, json};

use crate::harness::{CURRENCY, PRICE_MINOR, Reply, STRIPE_SECRET, TestPlane, id_of};

/// Upper bound for one `stripe-sign` run. A run takes well under a second
/// once its venv exists, but the first run may install the venv.
const SIGN_TIMEOUT: Duration = Duration::from_secs(300);

/// Signs `payload` with `secret` at `timestamp` (default now) and returns
/// the `Stripe-Signature` header value.
async fn stripe_sign(dir: &Path, secret: &str, payload: &[u8], timestamp: Option<i64>) -> String {
    let payload_file = tempfile::NamedTempFile::new_in(dir).expect("a payload file can be created");
    std::fs::write(payload_file.path(), payload).expect("the payload file is writable");

    let script = rackhand_e2e::workspace::peer_script("stripe-sign");
    let mut command = tokio::process::Command::new(&script);
    command
        .args(["sign", "--secret", secret, "--payload"])
        .arg(payload_file.path())
        .kill_on_drop(true);
    if let Some(timestamp) = timestamp {
        command.args(["--timestamp", &timestamp.to_string()]);
    }
    let output = tokio::time::timeout(SIGN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} did not finish within {SIGN_TIMEOUT:?}",
                script.display()
            )
        })
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}); run `tests/peers/install stripe-sign` once: {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("the signature header is ASCII")
        .trim()
        .to_string()
}

/// Posts `payload` to the Stripe webhook with an optional signature header.
async fn deliver(plane: &TestPlane, payload: &[u8], signature: Option<&str>) -> Reply {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/webhooks/stripe")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        builder = builder.header("Stripe-Signature", signature);
    }
    let request = builder
        .body(Body::from(payload.to_vec()))
        .expect("the request is well formed");
    plane.send(request).await
}

/// Signs `event` with the configured secret and delivers it.
async fn deliver_signed(plane: &TestPlane, event: &Value) -> Reply {
    let payload = serde_json::to_vec_pretty(event).expect("an event serializes");
    let signature = stripe_sign(plane.dir.path(), STRIPE_SECRET, &payload, None).await;
    deliver(plane, &payload, Some(&signature)).await
}

fn event(event_id: &str, event_type: &str, object: Value) -> Value {
    json!({
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": db::now_ms() / 1000,
        "livemode": false,
        "type": event_type,
        "data": { "object": object },
    })
}

fn invoice_paid(event_id: &str, invoice_ref: &str, amount: i64, currency: &str) -> Value {
    event(
        event_id,
        "invoice.paid",
        json!({
            "id": "in_1PkTestInvoice",
            "object": "invoice",
            "status": "paid",
            "amount_paid": amount,
            "currency": currency,
            "metadata": { "invoice_id": invoice_ref },
        }),
    )
}

fn checkout_completed(event_id: &str, invoice_ref: &str, amount: i64) -> Value {
    event(
        event_id,
        "checkout.session.completed",
        json!({
            "id": "cs_test_a1",
            "object": "checkout.session",
            "payment_status": "paid",
            "status": "complete",
            "amount_total": amount,
            "currency": CURRENCY,
            "client_reference_id": invoice_ref,
        }),
    )
}

fn payment_intent_succeeded(event_id: &str, amount: i64) -> Value {
    event(
        event_id,
        "payment_intent.succeeded",
        json!({
            "id": "pi_3PkTest",
            "object": "payment_intent",
            "status": "succeeded",
            "amount": amount,
            "amount_received": amount,
            "currency": CURRENCY,
        }),
    )
}

/// Starts a plane with the catalog and one order. Returns the plane, the
/// order id and the invoice id as Stripe metadata carries it.
async fn plane_with_order() -> (TestPlane, i64, String) {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let order = plane.create_order().await;
    let invoice_ref = id_of(&order, "invoice_id").to_string();
    (plane, id_of(&order, "order_id"), invoice_ref)
}

async fn webhook_outcomes(plane: &TestPlane) -> Vec<String> {
    sqlx::query_scalar("SELECT outcome FROM webhook_events ORDER BY id")
        .fetch_all(&plane.app.pool)
        .await
        .expect("webhook_events is readable")
}

#[tokio::test]
async fn invoice_paid_starts_provisioning() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;

    let reply = deliver_signed(
        &plane,
        &invoice_paid("evt_paid_1", &invoice_ref, PRICE_MINOR, CURRENCY),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["result"]["outcome"], "applied", "{}", reply.text);
    assert_eq!(plane.order_state(order_id).await, "provisioning_pending");
    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 1);
    let phase: String = sqlx::query_scalar("SELECT phase FROM jobs WHERE order_id = ?")
        .bind(order_id)
        .fetch_one(&plane.app.pool)
        .await
        .expect("the order has a job");
    assert_eq!(phase, "allocate");
    let invoice_state: String = sqlx::query_scalar("SELECT state FROM invoices")
        .fetch_one(&plane.app.pool)
        .await
        .expect("the invoice exists");
    assert_eq!(invoice_state, "paid");
    assert_eq!(webhook_outcomes(&plane).await, ["applied"]);
}

#[tokio::test]
async fn wrong_secret_stores_nothing() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;
    let payload = serde_json::to_vec(&invoice_paid(
        "evt_wrong_secret",
        &invoice_ref,
        PRICE_MINOR,
        CURRENCY,
    ))
    .expect("an event serializes");
    let signature = stripe_sign(plane.dir.path(), "whsec_not_ours", &payload, None).await;

    let reply = deliver(&plane, &payload, Some(&signature)).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(plane.order_state(order_id).await, "pending_payment");
}

#[tokio::test]
async fn altered_body_stores_nothing() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;
    let signed = serde_json::to_vec(&invoice_paid("evt_altered", &invoice_ref, 1, CURRENCY))
        .expect("an event serializes");
    let sent = serde_json::to_vec(&invoice_paid(
        "evt_altered",
        &invoice_ref,
        PRICE_MINOR,
        CURRENCY,
    ))
    .expect("an event serializes");
    let signature = stripe_sign(plane.dir.path(), STRIPE_SECRET, &signed, None).await;

    let reply = deliver(&plane, &sent, Some(&signature)).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
    assert_eq!(plane.order_state(order_id).await, "pending_payment");
}

/// Delivers a correctly signed `invoice.paid` whose signature timestamp is
/// `offset_seconds` from now.
async fn deliver_with_timestamp_offset(offset_seconds: i64) -> (TestPlane, Reply) {
    let (plane, _, invoice_ref) = plane_with_order().await;
    let payload = serde_json::to_vec(&invoice_paid(
        "evt_skewed",
        &invoice_ref,
        PRICE_MINOR,
        CURRENCY,
    ))
    .expect("an event serializes");
    let timestamp = db::now_ms() / 1000 + offset_seconds;
    let signature = stripe_sign(plane.dir.path(), STRIPE_SECRET, &payload, Some(timestamp)).await;
    let reply = deliver(&plane, &payload, Some(&signature)).await;
    (plane, reply)
}

#[tokio::test]
async fn stale_timestamp_is_rejected() {
    let (plane, reply) = deliver_with_timestamp_offset(-600).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let message = reply.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("tolerance"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn future_timestamp_is_rejected() {
    // Stripe's library accepts any future timestamp; we do not.
    let (plane, reply) = deliver_with_timestamp_offset(600).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let message = reply.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("tolerance"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn missing_signature_header_is_rejected() {
    let (plane, _, invoice_ref) = plane_with_order().await;
    let payload = serde_json::to_vec(&invoice_paid(
        "evt_unsigned",
        &invoice_ref,
        PRICE_MINOR,
        CURRENCY,
    ))
    .expect("an event serializes");

    let reply = deliver(&plane, &payload, None).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let message = reply.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("Stripe-Signature"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn duplicate_delivery_enqueues_once() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;
    let paid = invoice_paid("evt_twice", &invoice_ref, PRICE_MINOR, CURRENCY);

    let first = deliver_signed(&plane, &paid).await;
    let second = deliver_signed(&plane, &paid).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(
        second.json["result"]["outcome"], "duplicate",
        "{}",
        second.text
    );
    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 1);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 1);
    assert_eq!(plane.order_state(order_id).await, "provisioning_pending");
}

#[tokio::test]
async fn three_events_for_one_payment_pay_once() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;

    let replies = [
        deliver_signed(
            &plane,
            &invoice_paid("evt_invoice", &invoice_ref, PRICE_MINOR, CURRENCY),
        )
        .await,
        deliver_signed(
            &plane,
            &checkout_completed("evt_checkout", &invoice_ref, PRICE_MINOR),
        )
        .await,
        deliver_signed(&plane, &payment_intent_succeeded("evt_intent", PRICE_MINOR)).await,
    ];

    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 1);
    let paid_by: Option<String> = sqlx::query_scalar("SELECT paid_by_event FROM invoices")
        .fetch_one(&plane.app.pool)
        .await
        .expect("the invoice exists");
    assert_eq!(paid_by.as_deref(), Some("evt_invoice"));
    let payments: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM activity_log
         WHERE order_id = ? AND phase = 'billing' AND event = 'succeeded'",
    )
    .bind(order_id)
    .fetch_one(&plane.app.pool)
    .await
    .expect("activity_log is readable");
    assert_eq!(payments, 1);
    assert_eq!(
        webhook_outcomes(&plane).await,
        ["applied", "ignored", "ignored"]
    );
}

#[tokio::test]
async fn unknown_invoice_is_stored_rejected() {
    let (plane, order_id, _) = plane_with_order().await;

    let reply = deliver_signed(
        &plane,
        &invoice_paid("evt_stranger", "424242", PRICE_MINOR, CURRENCY),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["result"]["outcome"], "rejected",
        "{}",
        reply.text
    );
    assert_eq!(webhook_outcomes(&plane).await, ["rejected"]);
    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(plane.order_state(order_id).await, "pending_payment");
}

#[tokio::test]
async fn amount_mismatch_keeps_order_pending() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;

    let reply = deliver_signed(
        &plane,
        &invoice_paid("evt_short", &invoice_ref, PRICE_MINOR - 1, CURRENCY),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(webhook_outcomes(&plane).await, ["rejected"]);
    assert_eq!(plane.order_state(order_id).await, "pending_payment");
    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 0);
    let rejections: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM activity_log WHERE order_id = ? AND event = 'rejected'",
    )
    .bind(order_id)
    .fetch_one(&plane.app.pool)
    .await
    .expect("activity_log is readable");
    assert_eq!(rejections, 1);

    let order_view = plane.get(&format!("/v1/orders/{order_id}")).await;
    assert_eq!(
        order_view.json["invoice_state"], "open",
        "{}",
        order_view.text
    );
}

#[tokio::test]
async fn currency_mismatch_is_rejected() {
    let (plane, order_id, invoice_ref) = plane_with_order().await;

    let reply = deliver_signed(
        &plane,
        &invoice_paid("evt_dollars", &invoice_ref, PRICE_MINOR, "usd"),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(webhook_outcomes(&plane).await, ["rejected"]);
    assert_eq!(plane.order_state(order_id).await, "pending_payment");
}

#[tokio::test]
async fn signed_malformed_json_is_rejected() {
    let (plane, _, _) = plane_with_order().await;
    let payload = br#"{"id": "evt_cut", "type": "invoice.paid", "data": {"#;
    let signature = stripe_sign(plane.dir.path(), STRIPE_SECRET, payload, None).await;

    let reply = deliver(&plane, payload, Some(&signature)).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let message = reply.json["error"].as_str().unwrap_or_default();
    assert!(message.contains("not JSON"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn non_event_json_is_rejected() {
    let (plane, _, _) = plane_with_order().await;
    let payload = br#"{"id": "evt_bare", "type": "invoice.paid"}"#;
    let signature = stripe_sign(plane.dir.path(), STRIPE_SECRET, payload, None).await;

    let reply = deliver(&plane, payload, Some(&signature)).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
}

#[tokio::test]
async fn extreme_timestamp_is_rejected() {
    let (plane, _, invoice_ref) = plane_with_order().await;
    let payload = serde_json::to_vec(&invoice_paid(
        "evt_extreme",
        &invoice_ref,
        PRICE_MINOR,
        CURRENCY,
    ))
    .expect("an event serializes");
    // The tolerance check runs on a timestamp the sender chose, before the
    // signature is verified, so `t = i64::MIN` must not overflow it.
    let signature = format!("t={},v1={}", i64::MIN, "0".repeat(64));

    let reply = deliver(&plane, &payload, Some(&signature)).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM webhook_events").await, 0);
}
