//! Agent task claims through the agent router, sent as an enrolled agent.
//! A resumed claim hands a held task back once, and a key the agent lists
//! as running is never handed out again. Two racing claims get one task
//! between them, and a task handed out too often fails its order.

use axum::body::Body;
use http::{Request, StatusCode, header};
use rackhand_control_plane::agents::{self, PeerCertificate};
use rackhand_control_plane::{db, jobs, orders, phases};
use rackhand_protocol::agent::{CLAIM_PATH, ClaimRequest};
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION, Phase};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::harness::{Reply, SITE, TestPlane, id_of};

/// Largest response body a test reads.
const MAX_BODY_BYTES: usize = 1 << 20;
/// The certificate fingerprint of the test agent.
const FINGERPRINT: &str = "5e1f0c2a9d7b4e3f8a6c1d0b9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f";
/// `worker.max_attempts` when the config leaves it out.
const DEFAULT_MAX_ATTEMPTS: i64 = 8;

/// Registers an agent of the test site, as enrollment does.
async fn enroll_agent(plane: &TestPlane) {
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
}

/// Places an order on a new node and runs its `driver` phase until the
/// agent task waits to be claimed. Returns the order id and the task's
/// correlation key.
async fn order_waiting_for_agent(plane: &TestPlane, node: &str, mac: &str) -> (i64, String) {
    let (job, order) = driver_job(plane, node, mac).await;
    phases::run(&plane.app, &job, "test-worker", &order)
        .await
        .expect("the driver phase dispatches its agent task");
    (order.id, phases::correlation_key(&order, Phase::Driver))
}

/// Places an order on a new node and claims its `driver` job.
async fn driver_job(
    plane: &TestPlane,
    node: &str,
    mac: &str,
) -> (jobs::ClaimedJob, phases::OrderContext) {
    plane.create_node(node, mac).await;
    let order_id = id_of(&plane.create_order().await, "order_id");
    phases::allocate::allocate(&plane.app.pool, order_id, None)
        .await
        .expect("a fitting node is free");

    let mut tx = db::begin(&plane.app.pool)
        .await
        .expect("a write transaction starts");
    jobs::enqueue(&mut tx, order_id, Phase::Driver, db::now_ms())
        .await
        .expect("the job is enqueued");
    tx.commit().await.expect("the enqueue commits");
    let job = jobs::claim(&plane.app.pool, "test-worker", 60_000)
        .await
        .expect("claim runs")
        .expect("the queued job is claimable");
    assert_eq!(job.order_id, order_id);
    let order = orders::context(&plane.app.pool, order_id)
        .await
        .expect("the order reads")
        .expect("the order exists");
    (job, order)
}

/// Claims through the agent router without waiting for new tasks.
async fn claim(plane: &TestPlane, resume: bool, running: &[&str]) -> Reply {
    let body = serde_json::to_string(&ClaimRequest {
        wait_seconds: 0,
        resume,
        running: running.iter().map(|key| key.to_string()).collect(),
    })
    .expect("a claim serializes");
    let mut request = Request::builder()
        .method("POST")
        .uri(CLAIM_PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .body(Body::from(body))
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
        .expect("the response body is readable and small");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, text, json }
}

fn correlation_key(reply: &Reply) -> &str {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["correlation_key"]
        .as_str()
        .expect("a task has a correlation key")
}

/// Returns the number of "handed to site agent" rows in the activity log.
async fn hand_out_rows(plane: &TestPlane, order_id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM activity_log
         WHERE order_id = ? AND message LIKE 'handed to site agent%'",
    )
    .bind(order_id)
    .fetch_one(&plane.app.pool)
    .await
    .expect("the count query runs")
}

async fn set_task(plane: &TestPlane, key: &str, assignment: &'static str) {
    sqlx::query(assignment)
        .bind(key)
        .execute(&plane.app.pool)
        .await
        .expect("the task row updates");
}

async fn ready_plane() -> TestPlane {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    enroll_agent(&plane).await;
    plane
}

#[tokio::test]
async fn resume_hands_held_task_back_once() {
    let plane = ready_plane().await;
    let (order_id, key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;

    let first = claim(&plane, false, &[]).await;
    assert_eq!(correlation_key(&first), key);
    assert_eq!(first.json["attempt"], 1);

    // The agent restarts and lost the task: its resumed claim gets it back
    // at once, although the lease is still live.
    let resumed = claim(&plane, true, &[]).await;
    assert_eq!(correlation_key(&resumed), key);
    assert_eq!(resumed.json["attempt"], 2);

    // The agent runs it now and keeps resuming until a claim returns 204.
    let next = claim(&plane, true, &[&key]).await;
    assert_eq!(next.status, StatusCode::NO_CONTENT, "{}", next.text);
    assert_eq!(hand_out_rows(&plane, order_id).await, 2);
}

#[tokio::test]
async fn running_key_not_handed_out_after_lease_expired() {
    let plane = ready_plane().await;
    let (order_id, key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;
    assert_eq!(correlation_key(&claim(&plane, false, &[]).await), key);

    // Heartbeats were lost, so the lease expired while the agent still runs
    // the task.
    set_task(
        &plane,
        &key,
        "UPDATE agent_tasks SET lease_expires_at = 0 WHERE correlation_key = ?",
    )
    .await;
    let plain = claim(&plane, false, &[&key]).await;
    let resumed = claim(&plane, true, &[&key]).await;
    assert_eq!(plain.status, StatusCode::NO_CONTENT, "{}", plain.text);
    assert_eq!(resumed.status, StatusCode::NO_CONTENT, "{}", resumed.text);
    assert_eq!(hand_out_rows(&plane, order_id).await, 1);

    // Once the agent no longer lists it, the expired task is handed out.
    let after = claim(&plane, false, &[]).await;
    assert_eq!(correlation_key(&after), key);
    assert_eq!(after.json["attempt"], 2);
}

#[tokio::test]
async fn running_key_skipped_for_next_task() {
    let plane = ready_plane().await;
    let (_, first_key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;
    let (_, second_key) = order_waiting_for_agent(&plane, "n2", "52:54:00:00:20:02").await;
    set_task(
        &plane,
        &first_key,
        "UPDATE agent_tasks SET state = 'claimed', lease_expires_at = 0 WHERE correlation_key = ?",
    )
    .await;

    let reply = claim(&plane, true, &[&first_key]).await;
    assert_eq!(correlation_key(&reply), second_key);
}

#[tokio::test]
async fn racing_claims_hand_out_task_once() {
    let plane = ready_plane().await;
    let (order_id, key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;

    let (a, b) = tokio::join!(claim(&plane, false, &[]), claim(&plane, false, &[]));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::NO_CONTENT]);
    let winner = if a.status == StatusCode::OK { &a } else { &b };
    assert_eq!(correlation_key(winner), key);
    assert_eq!(hand_out_rows(&plane, order_id).await, 1);
}

#[tokio::test]
async fn claim_below_hand_out_limit_hands_out() {
    let plane = ready_plane().await;
    let (order_id, key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;
    sqlx::query("UPDATE agent_tasks SET attempt = ? WHERE correlation_key = ?")
        .bind(2 * DEFAULT_MAX_ATTEMPTS - 1)
        .bind(&key)
        .execute(&plane.app.pool)
        .await
        .expect("the task row updates");

    let reply = claim(&plane, false, &[]).await;
    assert_eq!(correlation_key(&reply), key);
    assert_eq!(reply.json["attempt"], 2 * DEFAULT_MAX_ATTEMPTS);
    assert_ne!(plane.order_state(order_id).await, "failed");
}

#[tokio::test]
async fn hand_out_limit_fails_order() {
    let plane = ready_plane().await;
    let (order_id, key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;
    // What a crash-looping agent leaves: the limit reached, the last lease
    // expired.
    sqlx::query(
        "UPDATE agent_tasks SET state = 'claimed', attempt = ?, lease_expires_at = 0
         WHERE correlation_key = ?",
    )
    .bind(2 * DEFAULT_MAX_ATTEMPTS)
    .bind(&key)
    .execute(&plane.app.pool)
    .await
    .expect("the task row updates");

    let reply = claim(&plane, true, &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);

    let (state, phase, error): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, failed_phase, failure_error FROM orders WHERE id = ?")
            .bind(order_id)
            .fetch_one(&plane.app.pool)
            .await
            .expect("the order reads");
    let error = error.unwrap_or_default();
    assert_eq!(state, "failed");
    assert_eq!(phase.as_deref(), Some("driver"));
    assert!(
        error.contains("handed out 16 times without a final result"),
        "{error}"
    );
    assert!(error.contains("crash-looping"), "{error}");

    let task_state: String =
        sqlx::query_scalar("SELECT state FROM agent_tasks WHERE correlation_key = ?")
            .bind(&key)
            .fetch_one(&plane.app.pool)
            .await
            .expect("the task reads");
    let job_state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE order_id = ?")
        .bind(order_id)
        .fetch_one(&plane.app.pool)
        .await
        .expect("the job reads");
    let attempt: i64 =
        sqlx::query_scalar("SELECT attempt FROM agent_tasks WHERE correlation_key = ?")
            .bind(&key)
            .fetch_one(&plane.app.pool)
            .await
            .expect("the task reads");
    assert_eq!(task_state, "failed");
    assert_eq!(job_state, "failed");
    assert_eq!(attempt, 2 * DEFAULT_MAX_ATTEMPTS, "no hand-out was counted");
    assert_eq!(hand_out_rows(&plane, order_id).await, 0);
}

#[tokio::test]
async fn too_many_running_keys_rejected() {
    let plane = ready_plane().await;
    let keys: Vec<String> = (0..1025).map(|i| format!("order-{i}/driver")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();

    let reply = claim(&plane, false, &keys).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("running"), "{}", reply.text);
}

#[tokio::test]
async fn requeued_task_handed_out_though_listed_running() {
    let plane = ready_plane().await;
    let (_, key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:01").await;
    assert_eq!(correlation_key(&claim(&plane, false, &[]).await), key);

    // The agent reported a retryable failure and the task was requeued,
    // while the agent's open claim still lists the key as running.
    set_task(
        &plane,
        &key,
        "UPDATE agent_tasks SET state = 'pending', run_after = 0, lease_expires_at = NULL WHERE correlation_key = ?",
    )
    .await;
    let retried = claim(&plane, false, &[&key]).await;

    assert_eq!(correlation_key(&retried), key);
    assert_eq!(retried.json["attempt"], 2);
}

#[tokio::test]
async fn operator_retry_of_image_reruns_driver_under_new_key() {
    let plane = ready_plane().await;
    let (order_id, first_key) = order_waiting_for_agent(&plane, "n1", "52:54:00:00:20:09").await;
    // The image step failed for good (say, a tampered image), after the
    // driver step had succeeded.
    for statement in [
        "UPDATE orders SET state = 'failed', failed_phase = 'image' WHERE id = ?",
        "UPDATE jobs SET state = 'failed', phase = 'image' WHERE order_id = ?",
        "UPDATE agent_tasks SET state = 'failed' WHERE order_id = ?",
    ] {
        sqlx::query(statement)
            .bind(order_id)
            .execute(&plane.app.pool)
            .await
            .expect("the failure is recorded");
    }

    let reply = plane
        .post(&format!("/v1/orders/{order_id}/retry"), &json!({}))
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let job = jobs::claim(&plane.app.pool, "test-worker", 60_000)
        .await
        .expect("claim runs")
        .expect("the retried job is claimable");
    let order = orders::context(&plane.app.pool, order_id)
        .await
        .expect("the order reads")
        .expect("the order exists");
    phases::run(&plane.app, &job, "test-worker", &order)
        .await
        .expect("the driver phase dispatches again");

    assert_eq!(job.phase, Phase::Driver, "the node is power-cycled first");
    let new_key = format!("{first_key}/retry-1");
    assert_eq!(correlation_key(&claim(&plane, false, &[]).await), new_key);
    let old_state: String =
        sqlx::query_scalar("SELECT state FROM agent_tasks WHERE correlation_key = ?")
            .bind(&first_key)
            .fetch_one(&plane.app.pool)
            .await
            .expect("the failed task stays");
    assert_eq!(old_state, "failed");
}

/// Seeds the catalog of a control plane that requires signatures, as it
/// was before the setting was turned on: image `debian-12` registered by
/// digest (so unsigned) and product `small` on it, written to the database
/// directly because the API now rejects both.
async fn seed_unsigned_catalog(plane: &TestPlane) {
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    plane
        .create("/v1/subnets", &crate::harness::subnet_body())
        .await;
    let now = db::now_ms();
    let image_id: i64 = sqlx::query_scalar(
        "INSERT INTO images (name, kernel_sha256, initrd_sha256, kernel_args, os_family, install_method, state, created_at)
         VALUES ('debian-12', ?, ?, '', 'debian', 'live', 'ready', ?) RETURNING id",
    )
    .bind("a".repeat(64))
    .bind("b".repeat(64))
    .bind(now)
    .fetch_one(&plane.app.pool)
    .await
    .expect("the image inserts");
    sqlx::query(
        "INSERT INTO products (name, price_minor, currency, min_cpu_cores, min_ram_mib, min_disk_gb, image_id, created_at)
         VALUES (?, ?, ?, 4, 8192, 100, ?, ?)",
    )
    .bind(crate::harness::PRODUCT)
    .bind(crate::harness::PRICE_MINOR)
    .bind(crate::harness::CURRENCY)
    .bind(image_id)
    .bind(now)
    .execute(&plane.app.pool)
    .await
    .expect("the product inserts");
}

#[tokio::test]
async fn image_task_of_unsigned_image_fails_when_signatures_required() {
    let plane = TestPlane::start_with(
        "[images]\nsignature_keyring = \"keyring.gpg\"\nrequire_signatures = true\n",
    )
    .await;
    seed_unsigned_catalog(&plane).await;
    enroll_agent(&plane).await;
    // The driver step was dispatched before the setting was turned on, so
    // it skips the driver phase's own check.
    let (job, order) = driver_job(&plane, "n1", "52:54:00:00:20:0a").await;
    let key = phases::correlation_key(&order, Phase::Driver);
    phases::agent::dispatch(&plane.app, &job, "test-worker", &order, &key)
        .await
        .expect("the driver step dispatches");
    let order_id = order.id;
    // The driver step succeeded; the image step is next.
    set_task(
        &plane,
        &key,
        "UPDATE agent_tasks SET phase = 'image' WHERE correlation_key = ?",
    )
    .await;

    let reply = claim(&plane, false, &[]).await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let (state, phase, error): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, failed_phase, failure_error FROM orders WHERE id = ?")
            .bind(order_id)
            .fetch_one(&plane.app.pool)
            .await
            .expect("the order reads");
    let error = error.unwrap_or_default();
    assert_eq!(state, "failed");
    assert_eq!(phase.as_deref(), Some("image"));
    assert!(error.contains("image \"debian-12\""), "{error}");
    assert!(error.contains("kernel and initrd"), "{error}");
    assert!(error.contains("rackhand order retry"), "{error}");
}

#[tokio::test]
async fn unsigned_image_fails_before_node_powers_on() {
    let plane = TestPlane::start_with(
        "[images]\nsignature_keyring = \"keyring.gpg\"\nrequire_signatures = true\n",
    )
    .await;
    seed_unsigned_catalog(&plane).await;
    enroll_agent(&plane).await;
    let (job, order) = driver_job(&plane, "n1", "52:54:00:00:20:0b").await;

    let error = phases::run(&plane.app, &job, "test-worker", &order)
        .await
        .expect_err("the driver phase refuses the unsigned image");

    assert!(error.message.contains("image \"debian-12\""), "{error:?}");
    assert!(error.message.contains("rackhand order retry"), "{error:?}");
    assert_eq!(plane.count("SELECT COUNT(*) FROM agent_tasks").await, 0);
}

#[tokio::test]
async fn incomplete_image_fails_before_node_powers_on() {
    let plane = ready_plane().await;
    sqlx::query("UPDATE images SET state = 'incomplete' WHERE name = 'debian-12'")
        .execute(&plane.app.pool)
        .await
        .expect("updates");
    let (job, order) = driver_job(&plane, "n1", "52:54:00:00:20:0c").await;

    let error = phases::run(&plane.app, &job, "test-worker", &order)
        .await
        .expect_err("the driver phase refuses the incomplete image");

    assert!(error.message.contains("is incomplete"), "{error:?}");
    assert!(
        error.message.contains("rackhand image show debian-12"),
        "{error:?}"
    );
    assert_eq!(plane.count("SELECT COUNT(*) FROM agent_tasks").await, 0);
}
