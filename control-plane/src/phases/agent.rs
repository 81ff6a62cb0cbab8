//! Hand-off of the `driver` and `image` phases to the order's site agent.
//!
//! The worker inserts the task row (keyed by the correlation key, so a
//! repeated dispatch finds the existing row) and parks the job as `waiting`
//! in the same transaction, so the agent can never report a result for a
//! job that is not yet waiting for it. The task's instructions, including
//! the BMC password, are built when the agent claims it (see
//! `agents::tasks`), so no unsealed secret is ever stored.

use crate::app::App;
use crate::db;
use crate::jobs::{self, ClaimedJob};
use crate::phases::{OrderContext, PhaseError, PhaseOutcome};

/// Creates (or finds) the agent task for the job's phase and parks the job.
pub async fn dispatch(
    app: &App,
    job: &ClaimedJob,
    owner: &str,
    order: &OrderContext,
    key: &str,
) -> Result<PhaseOutcome, PhaseError> {
    if order.node_id.is_none() {
        return Err(PhaseError::permanent(
            "order has no reserved node; the allocate phase did not complete",
        ));
    }

    let now = db::now_ms();
    let mut tx = db::begin(&app.pool).await?;
    sqlx::query(
        "INSERT INTO agent_tasks
            (order_id, site_id, phase, correlation_key, state, attempt, run_after, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)
         ON CONFLICT (correlation_key) DO NOTHING",
    )
    .bind(order.id)
    .bind(order.site_id)
    .bind(job.phase.as_str())
    .bind(key)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if !jobs::wait_for_agent(&mut tx, job.id, owner).await? {
        return Err(PhaseError::transient(
            "lost the job's lease while dispatching",
        ));
    }
    tx.commit().await?;
    app.tasks_ready.notify_waiters();

    let (site, agents): (String, i64) = sqlx::query_as(
        "SELECT s.name, (SELECT COUNT(*) FROM agents a WHERE a.site_id = s.id AND a.revoked_at IS NULL)
         FROM sites s WHERE s.id = ?",
    )
    .bind(order.site_id)
    .fetch_one(&app.pool)
    .await?;
    let summary = if agents == 0 {
        format!("handed to site {site}; no agent is enrolled there yet, so the step waits for one")
    } else {
        format!("handed to the site agent of {site}")
    };
    Ok(PhaseOutcome::Dispatched { summary })
}
