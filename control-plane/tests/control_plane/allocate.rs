//! The `allocate` phase under a forced race: two orders select the same
//! node before either reserves it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rackhand_control_plane::phases::allocate::{AfterSelect, AllocateError, allocate};
use tokio::sync::Barrier;

use crate::harness::{SITE, TestPlane, id_of};

/// Upper bound for the racing allocations, which take milliseconds.
const RACE_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds each allocation's first selection at a barrier shared by both, so
/// that both have selected before either reserves. Later selections (after
/// a lost race) pass straight through, because the winner no longer waits.
struct MeetAfterFirstSelection<'a> {
    barrier: &'a Barrier,
    waited: AtomicBool,
    selected: Mutex<Vec<i64>>,
}

impl<'a> MeetAfterFirstSelection<'a> {
    fn new(barrier: &'a Barrier) -> Self {
        MeetAfterFirstSelection {
            barrier,
            waited: AtomicBool::new(false),
            selected: Mutex::new(Vec::new()),
        }
    }

    fn selected(&self) -> Vec<i64> {
        self.selected
            .lock()
            .expect("no test thread panicked while holding the lock")
            .clone()
    }
}

impl AfterSelect for MeetAfterFirstSelection<'_> {
    fn after_select(&self, node_id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.selected
            .lock()
            .expect("no test thread panicked while holding the lock")
            .push(node_id);
        Box::pin(async move {
            if !self.waited.swap(true, Ordering::SeqCst) {
                tokio::time::timeout(RACE_TIMEOUT, self.barrier.wait())
                    .await
                    .expect("the other allocation reaches its first selection");
            }
        })
    }
}

async fn node_reserved_by(plane: &TestPlane, node_id: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT reserved_by_order FROM nodes WHERE id = ?")
        .bind(node_id)
        .fetch_one(&plane.app.pool)
        .await
        .expect("the node exists")
}

async fn order_node(plane: &TestPlane, order_id: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT node_id FROM orders WHERE id = ?")
        .bind(order_id)
        .fetch_one(&plane.app.pool)
        .await
        .expect("the order exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_orders_get_different_nodes() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:00:01").await;
    plane.create_node("n2", "52:54:00:00:00:02").await;
    let first = id_of(&plane.create_order().await, "order_id");
    let second = id_of(&plane.create_order().await, "order_id");
    let third = id_of(&plane.create_order().await, "order_id");
    let pool = &plane.app.pool;

    let barrier = Barrier::new(2);
    let first_hook = MeetAfterFirstSelection::new(&barrier);
    let second_hook = MeetAfterFirstSelection::new(&barrier);
    let (first_result, second_result) = tokio::time::timeout(RACE_TIMEOUT, async {
        tokio::join!(
            allocate(pool, first, Some(&first_hook)),
            allocate(pool, second, Some(&second_hook)),
        )
    })
    .await
    .expect("the racing allocations finish");

    // Both selected the same node first, so exactly one of them lost the
    // reservation and selected again.
    let first_selected = first_hook.selected();
    let second_selected = second_hook.selected();
    assert_eq!(first_selected.first(), second_selected.first());
    assert_eq!(first_selected.len() + second_selected.len(), 3);

    let first_node = first_result.expect("the first order gets a node").node_id;
    let second_node = second_result.expect("the second order gets a node").node_id;
    assert_ne!(first_node, second_node);
    assert_eq!(node_reserved_by(&plane, first_node).await, Some(first));
    assert_eq!(node_reserved_by(&plane, second_node).await, Some(second));
    assert_eq!(order_node(&plane, first).await, Some(first_node));
    assert_eq!(order_node(&plane, second).await, Some(second_node));

    let error = allocate(pool, third, None)
        .await
        .expect_err("no node is left for the third order");
    assert!(
        matches!(error, AllocateError::NoCapacity { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(SITE), "{message}");
    assert!(message.contains("4 cores"), "{message}");
    assert!(message.contains("8192 MiB"), "{message}");
    assert!(message.contains("100 GB"), "{message}");
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM nodes WHERE state = 'reserved'")
            .await,
        2
    );
    assert_eq!(order_node(&plane, third).await, None);
    assert_eq!(node_reserved_by(&plane, first_node).await, Some(first));
    assert_eq!(node_reserved_by(&plane, second_node).await, Some(second));
}

#[tokio::test]
async fn allocate_again_returns_same_node() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:00:01").await;
    plane.create_node("n2", "52:54:00:00:00:02").await;
    let order = id_of(&plane.create_order().await, "order_id");
    let pool = &plane.app.pool;

    let before = allocate(pool, order, None)
        .await
        .expect("a free node fits the order");
    let again = allocate(pool, order, None)
        .await
        .expect("an allocated order keeps its node");

    assert_eq!(again, before);
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM nodes WHERE state = 'reserved'")
            .await,
        1
    );
}

#[tokio::test]
async fn node_too_small_is_not_allocated() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let mut small = crate::harness::node_body("tiny", "52:54:00:00:00:09", "pw");
    small["cpu_cores"] = serde_json::json!(2);
    plane.create("/v1/nodes", &small).await;
    let order = id_of(&plane.create_order().await, "order_id");

    let error = allocate(&plane.app.pool, order, None)
        .await
        .expect_err("a 2-core node does not fit a 4-core product");

    let message = error.to_string();
    assert!(message.contains("1 nodes at the site, 1 free"), "{message}");
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM nodes WHERE state = 'available'")
            .await,
        1
    );
}

#[tokio::test]
async fn unknown_order_is_not_found() {
    let plane = TestPlane::start().await;

    let error = allocate(&plane.app.pool, 4242, None)
        .await
        .expect_err("order 4242 does not exist");

    assert!(
        matches!(error, AllocateError::OrderNotFound(4242)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_order_race_reserves_one_node() {
    // Two workers can run one order's allocate phase at once when a lease
    // expires while the first is still running.
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:00:01").await;
    plane.create_node("n2", "52:54:00:00:00:02").await;
    let order = id_of(&plane.create_order().await, "order_id");
    let pool = &plane.app.pool;

    let barrier = Barrier::new(2);
    let first_hook = MeetAfterFirstSelection::new(&barrier);
    let second_hook = MeetAfterFirstSelection::new(&barrier);
    let (first_result, second_result) = tokio::time::timeout(RACE_TIMEOUT, async {
        tokio::join!(
            allocate(pool, order, Some(&first_hook)),
            allocate(pool, order, Some(&second_hook)),
        )
    })
    .await
    .expect("the racing allocations finish");

    let first = first_result.expect("the first run gets a node");
    let second = second_result.expect("the second run gets a node");
    assert_eq!(first, second);
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM nodes WHERE state = 'reserved'")
            .await,
        1
    );
    assert_eq!(order_node(&plane, order).await, Some(first.node_id));
    assert_eq!(node_reserved_by(&plane, first.node_id).await, Some(order));
}
