//! The durable job queue: leases, takeover after a lease expires, and the
//! retry back-off.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rackhand_control_plane::db;
use rackhand_control_plane::jobs::{self, backoff_ms};
use rackhand_protocol::Phase;

use crate::harness::{TestPlane, id_of};

/// Lease of the first claim: long enough that the second owner's immediate
/// claim falls inside it, short enough to wait out in a test.
const LEASE_MS: i64 = 1000;
/// Upper bound for waiting until the expired lease can be claimed.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

async fn plane_with_queued_job() -> (TestPlane, i64) {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let order_id = id_of(&plane.create_order().await, "order_id");

    let mut tx = db::begin(&plane.app.pool)
        .await
        .expect("a write transaction starts");
    jobs::enqueue(&mut tx, order_id, Phase::Allocate, db::now_ms())
        .await
        .expect("the job is enqueued");
    tx.commit().await.expect("the enqueue commits");
    (plane, order_id)
}

#[tokio::test]
async fn expired_lease_moves_job_to_new_owner() {
    let (plane, order_id) = plane_with_queued_job().await;
    let pool = &plane.app.pool;

    let claimed_at = Instant::now();
    let first = jobs::claim(pool, "worker-a", LEASE_MS)
        .await
        .expect("claim runs")
        .expect("the queued job is claimable");
    let during_lease = jobs::claim(pool, "worker-b", LEASE_MS)
        .await
        .expect("claim runs");

    assert_eq!(first.order_id, order_id);
    assert_eq!(first.phase, Phase::Allocate);
    assert_eq!(first.attempt, 1);
    assert!(
        claimed_at.elapsed() < Duration::from_millis(LEASE_MS.unsigned_abs()),
        "the machine is too slow for this test's lease"
    );
    assert!(during_lease.is_none(), "{during_lease:?}");

    // Poll, bounded, until worker-b takes over the expired lease.
    let deadline = Instant::now() + TAKEOVER_TIMEOUT;
    let takeover = loop {
        if let Some(job) = jobs::claim(pool, "worker-b", 60_000)
            .await
            .expect("claim runs")
        {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "worker-b could not claim the job within {TAKEOVER_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert!(claimed_at.elapsed() >= Duration::from_millis(LEASE_MS.unsigned_abs()));
    assert_eq!(takeover.id, first.id);
    assert_eq!(takeover.attempt, 2);

    let renewed = jobs::renew_lease(pool, first.id, "worker-a", LEASE_MS)
        .await
        .expect("renew runs");
    assert!(!renewed);

    let mut tx = db::begin(pool).await.expect("a write transaction starts");
    let stale_advance = jobs::advance(&mut tx, first.id, Some("worker-a"), Some(Phase::Driver))
        .await
        .expect("advance runs");
    let owner_advance = jobs::advance(&mut tx, first.id, Some("worker-b"), Some(Phase::Driver))
        .await
        .expect("advance runs");
    tx.commit().await.expect("the advance commits");
    assert!(!stale_advance);
    assert!(owner_advance);

    let (phase, state, attempt): (String, String, i64) =
        sqlx::query_as("SELECT phase, state, attempt FROM jobs WHERE id = ?")
            .bind(first.id)
            .fetch_one(pool)
            .await
            .expect("the job exists");
    assert_eq!(phase, "driver");
    assert_eq!(state, "queued");
    assert_eq!(attempt, 0);
}

#[tokio::test]
async fn enqueue_twice_keeps_one_job() {
    let (plane, order_id) = plane_with_queued_job().await;

    let mut tx = db::begin(&plane.app.pool)
        .await
        .expect("a write transaction starts");
    jobs::enqueue(&mut tx, order_id, Phase::Network, db::now_ms())
        .await
        .expect("the second enqueue runs");
    tx.commit().await.expect("the enqueue commits");

    assert_eq!(plane.count("SELECT COUNT(*) FROM jobs").await, 1);
    let phase: String = sqlx::query_scalar("SELECT phase FROM jobs")
        .fetch_one(&plane.app.pool)
        .await
        .expect("the job exists");
    assert_eq!(phase, "allocate");
}

#[tokio::test]
async fn empty_queue_claims_nothing() {
    let plane = TestPlane::start().await;

    let claimed = jobs::claim(&plane.app.pool, "worker-a", LEASE_MS)
        .await
        .expect("claim runs");

    assert!(claimed.is_none(), "{claimed:?}");
}

proptest! {
    #[test]
    fn backoff_stays_within_bounds(
        attempt in any::<i64>(),
        base_ms in 0u64..=3_600_000,
        extra_ms in 0u64..=3_600_000,
    ) {
        let max_ms = base_ms + extra_ms;
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30))
            .expect("the exponent is clamped to 0..=30");
        let ceiling = base_ms.saturating_mul(1u64 << exponent).min(max_ms);

        let delay = backoff_ms(attempt, base_ms, max_ms);

        prop_assert!(delay <= max_ms, "delay {delay} > max {max_ms}");
        prop_assert!(delay <= ceiling, "delay {delay} > ceiling {ceiling}");
        prop_assert!(delay >= ceiling / 2, "delay {delay} < half of {ceiling}");
    }

    #[test]
    fn first_retry_stays_within_base(base_ms in 2u64..=60_000) {
        let delay = backoff_ms(1, base_ms, 300_000);

        prop_assert!(delay >= base_ms / 2, "delay {delay}");
        prop_assert!(delay <= base_ms, "delay {delay}");
    }
}
