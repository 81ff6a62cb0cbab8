//! The `allocate` phase: reserve a free node at the order's site that meets
//! the product's minimum cores, RAM and disk.
//!
//! Selection and reservation are separate statements, so two orders may
//! select the same node. The reservation is a conditional update
//! (`… WHERE state = 'available'`) whose affected-row count is checked: the
//! loser gets 0 rows and selects again. This holds on SQLite and on
//! PostgreSQL alike, without table locks. Among fitting nodes the smallest
//! is taken, so large machines stay free for large products.
//
// TODO: score candidates on CPU compatibility, free RAM, storage, NIC
// capacity and location instead of taking the smallest fitting node.

use std::future::Future;
use std::pin::Pin;

use crate::app::App;
use crate::db::{self, Pool};
use crate::phases::{OrderContext, PhaseError, PhaseOutcome};

/// How many lost reservation races an allocation tolerates before it gives
/// up for this attempt (the job retries later).
const MAX_RACES: usize = 8;

/// A node reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub node_id: i64,
    pub node_name: String,
}

/// A failure to reserve a node.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    #[error(
        "no free node at site {site} with at least {cores} cores, {ram_mib} MiB RAM and {disk_gb} GB disk ({total} nodes at the site, {free} free)"
    )]
    NoCapacity {
        site: String,
        cores: i64,
        ram_mib: i64,
        disk_gb: i64,
        total: i64,
        free: i64,
    },
    #[error("lost the reservation race {0} times in a row")]
    Contention(usize),
    #[error("order {0} not found")]
    OrderNotFound(i64),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// A hook called after a candidate was selected and before it is reserved;
/// tests use it to make two allocations select the same node.
pub trait AfterSelect: Send + Sync {
    fn after_select(&self, node_id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Runs the phase.
pub async fn run(app: &App, order: &OrderContext) -> Result<PhaseOutcome, PhaseError> {
    match allocate(&app.pool, order.id, None).await {
        Ok(allocation) => Ok(PhaseOutcome::Done {
            summary: format!(
                "reserved node {} (id {})",
                allocation.node_name, allocation.node_id
            ),
            payload: Some(serde_json::json!({
                "node_id": allocation.node_id,
                "node": allocation.node_name,
            })),
        }),
        Err(error @ AllocateError::NoCapacity { .. }) => {
            Err(PhaseError::permanent(error.to_string()))
        }
        Err(error @ AllocateError::OrderNotFound(_)) => {
            Err(PhaseError::permanent(error.to_string()))
        }
        Err(error @ AllocateError::Contention(_)) => Err(PhaseError::transient(error.to_string())),
        Err(AllocateError::Database(error)) => Err(error.into()),
    }
}

#[derive(sqlx::FromRow)]
struct Requirement {
    node_id: Option<i64>,
    site_id: i64,
    site: String,
    min_cpu_cores: i64,
    min_ram_mib: i64,
    min_disk_gb: i64,
}

/// Reserves a node for `order_id`, or returns the one already reserved.
pub async fn allocate(
    pool: &Pool,
    order_id: i64,
    hook: Option<&dyn AfterSelect>,
) -> Result<Allocation, AllocateError> {
    let requirement: Option<Requirement> = sqlx::query_as(
        "SELECT o.node_id, o.site_id, s.name AS site, p.min_cpu_cores, p.min_ram_mib, p.min_disk_gb
         FROM orders o JOIN products p ON p.id = o.product_id JOIN sites s ON s.id = o.site_id
         WHERE o.id = ?",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    let requirement = requirement.ok_or(AllocateError::OrderNotFound(order_id))?;

    if let Some(node_id) = requirement.node_id {
        let node_name: String = sqlx::query_scalar("SELECT name FROM nodes WHERE id = ?")
            .bind(node_id)
            .fetch_one(pool)
            .await?;
        return Ok(Allocation { node_id, node_name });
    }

    for _ in 0..MAX_RACES {
        let candidate: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM nodes
             WHERE site_id = ? AND state = 'available'
               AND cpu_cores >= ? AND ram_mib >= ? AND disk_gb >= ?
             ORDER BY cpu_cores, ram_mib, disk_gb, id
             LIMIT 1",
        )
        .bind(requirement.site_id)
        .bind(requirement.min_cpu_cores)
        .bind(requirement.min_ram_mib)
        .bind(requirement.min_disk_gb)
        .fetch_optional(pool)
        .await?;
        let Some((node_id, node_name)) = candidate else {
            return Err(no_capacity(pool, &requirement).await);
        };

        if let Some(hook) = hook {
            hook.after_select(node_id).await;
        }

        match reserve(pool, order_id, node_id).await? {
            Reservation::Reserved => {
                tracing::info!(order_id, node_id, node = %node_name, "node reserved");
                return Ok(Allocation { node_id, node_name });
            }
            Reservation::OrderHasNode(node_id) => {
                let node_name: String = sqlx::query_scalar("SELECT name FROM nodes WHERE id = ?")
                    .bind(node_id)
                    .fetch_one(pool)
                    .await?;
                return Ok(Allocation { node_id, node_name });
            }
            Reservation::OrderGone => return Err(AllocateError::OrderNotFound(order_id)),
            Reservation::NodeTaken => tracing::debug!(
                order_id,
                node_id,
                "lost the reservation race; selecting again"
            ),
        }
    }
    Err(AllocateError::Contention(MAX_RACES))
}

/// The result of a reservation attempt.
enum Reservation {
    Reserved,
    /// Another order reserved the node first.
    NodeTaken,
    /// The order already has this node, reserved by another run of its phase.
    OrderHasNode(i64),
    /// The order no longer exists.
    OrderGone,
}

/// Reserves `node_id` for `order_id` in one transaction, unless the node or
/// the order was taken in the meantime.
async fn reserve(pool: &Pool, order_id: i64, node_id: i64) -> Result<Reservation, sqlx::Error> {
    let mut tx = db::begin(pool).await?;
    let reserved = sqlx::query(
        "UPDATE nodes SET state = 'reserved', reserved_by_order = ?
         WHERE id = ? AND state = 'available'",
    )
    .bind(order_id)
    .bind(node_id)
    .execute(&mut *tx)
    .await?;
    if reserved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(Reservation::NodeTaken);
    }

    // Two runs of one order's phase may each reserve a node when a worker
    // takes over a lease while the first run still works. Only the first
    // reservation stays, so the second run releases its node.
    let assigned = sqlx::query(
        "UPDATE orders SET node_id = ?, updated_at = ? WHERE id = ? AND node_id IS NULL",
    )
    .bind(node_id)
    .bind(db::now_ms())
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    if assigned.rows_affected() != 1 {
        let existing: Option<Option<i64>> =
            sqlx::query_scalar("SELECT node_id FROM orders WHERE id = ?")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.rollback().await?;
        return Ok(match existing.flatten() {
            Some(node_id) => Reservation::OrderHasNode(node_id),
            None => Reservation::OrderGone,
        });
    }
    tx.commit().await?;
    Ok(Reservation::Reserved)
}

async fn no_capacity(pool: &Pool, requirement: &Requirement) -> AllocateError {
    let counts: Result<(i64, i64), sqlx::Error> = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'available' THEN 1 ELSE 0 END), 0)
         FROM nodes WHERE site_id = ?",
    )
    .bind(requirement.site_id)
    .fetch_one(pool)
    .await;
    let (total, free) = match counts {
        Ok(counts) => counts,
        Err(error) => return AllocateError::Database(error),
    };
    AllocateError::NoCapacity {
        site: requirement.site.clone(),
        cores: requirement.min_cpu_cores,
        ram_mib: requirement.min_ram_mib,
        disk_gb: requirement.min_disk_gb,
        total,
        free,
    }
}
