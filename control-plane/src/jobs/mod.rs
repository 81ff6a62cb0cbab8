//! The durable job queue: one job per paid order, moving through the phases.
//!
//! Design: a job row holds the order's current phase and a state —
//! `queued` (runnable from `run_after`), `running` (leased by one worker
//! until `lease_expires_at`), `waiting` (a site agent is doing the phase; the
//! agent API advances the job when the result arrives), `done` or `failed`.
//! Workers claim with one conditional `UPDATE … RETURNING`, so two workers
//! (or two control-plane processes) never run the same job at once; a
//! worker that dies simply stops renewing its lease and another claims the
//! job after it expires. Nothing about a job lives only in memory, which is
//! what makes a restart after `kill -9` resume every order.
//!
//! Callers guarantee that each phase is idempotent: a phase may run again
//! after a crash at any point, and must find and reuse what the earlier run
//! created.

pub mod worker;

use rackhand_protocol::Phase;

use crate::db::{self, Pool, Tx};

/// A job a worker holds the lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: i64,
    pub order_id: i64,
    pub phase: Phase,
    /// Attempt number of this phase, starting at 1.
    pub attempt: i64,
}

/// Enqueues the job of `order_id` at `phase`; an existing job is left alone.
pub async fn enqueue(
    tx: &mut Tx<'_>,
    order_id: i64,
    phase: Phase,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (order_id, phase, state, attempt, run_after, created_at, updated_at)
         VALUES (?, ?, 'queued', 0, ?, ?, ?)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(phase.as_str())
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims the next runnable job for `owner`, leased for `lease_ms`.
///
/// Runnable means `queued` and due, or `running` with an expired lease (its
/// worker died). The claim increments the attempt number.
pub async fn claim(
    pool: &Pool,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<ClaimedJob>, sqlx::Error> {
    let now = db::now_ms();
    let row: Option<(i64, i64, String, i64)> = sqlx::query_as(
        "UPDATE jobs
         SET state = 'running', lease_owner = ?1, lease_expires_at = ?2,
             attempt = attempt + 1, updated_at = ?3
         WHERE id = (
             SELECT id FROM jobs
             WHERE (state = 'queued' AND run_after <= ?3)
                OR (state = 'running' AND lease_expires_at < ?3)
             ORDER BY run_after, id
             LIMIT 1)
           AND ((state = 'queued' AND run_after <= ?3)
                OR (state = 'running' AND lease_expires_at < ?3))
         RETURNING id, order_id, phase, attempt",
    )
    .bind(owner)
    .bind(now + lease_ms)
    .bind(now)
    .fetch_optional(pool)
    .await?;

    Ok(row.and_then(|(id, order_id, phase, attempt)| {
        let phase = phase.parse().ok()?;
        Some(ClaimedJob {
            id,
            order_id,
            phase,
            attempt,
        })
    }))
}

/// Extends the lease of a job that `owner` still holds; returns false when
/// the lease was lost (another worker took the job over).
pub async fn renew_lease(
    pool: &Pool,
    job_id: i64,
    owner: &str,
    lease_ms: i64,
) -> Result<bool, sqlx::Error> {
    let now = db::now_ms();
    let result = sqlx::query(
        "UPDATE jobs SET lease_expires_at = ?, updated_at = ?
         WHERE id = ? AND state = 'running' AND lease_owner = ?",
    )
    .bind(now + lease_ms)
    .bind(now)
    .bind(job_id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Moves a job to `next` (or to `done` when `next` is `None`), resetting the
/// attempt counter. Only the lease holder (`owner`) or, for agent phases,
/// the agent API (`owner` = `None`, job `waiting`) may do this; returns false
/// when neither matches.
pub async fn advance(
    tx: &mut Tx<'_>,
    job_id: i64,
    owner: Option<&str>,
    next: Option<Phase>,
) -> Result<bool, sqlx::Error> {
    let now = db::now_ms();
    let (state, phase) = match next {
        Some(phase) => ("queued", Some(phase.as_str())),
        None => ("done", None),
    };
    let result = sqlx::query(
        "UPDATE jobs
         SET phase = COALESCE(?, phase), state = ?, attempt = 0, run_after = ?,
             lease_owner = NULL, lease_expires_at = NULL, last_error = NULL, updated_at = ?
         WHERE id = ?
           AND ((?6 IS NOT NULL AND state = 'running' AND lease_owner = ?6)
                OR (?6 IS NULL AND state = 'waiting'))",
    )
    .bind(phase)
    .bind(state)
    .bind(now)
    .bind(now)
    .bind(job_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Parks a leased job while a site agent runs its phase.
pub async fn wait_for_agent(
    tx: &mut Tx<'_>,
    job_id: i64,
    owner: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'waiting', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
         WHERE id = ? AND state = 'running' AND lease_owner = ?",
    )
    .bind(db::now_ms())
    .bind(job_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Requeues a leased job to run again at `run_after` after a transient error.
pub async fn retry_later(
    tx: &mut Tx<'_>,
    job_id: i64,
    owner: &str,
    run_after: i64,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'queued', run_after = ?, last_error = ?,
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
         WHERE id = ? AND state = 'running' AND lease_owner = ?",
    )
    .bind(run_after)
    .bind(error)
    .bind(db::now_ms())
    .bind(job_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Marks a job failed for good. `owner` as in [`advance`].
pub async fn fail(
    tx: &mut Tx<'_>,
    job_id: i64,
    owner: Option<&str>,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE jobs SET state = 'failed', last_error = ?,
             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
         WHERE id = ?
           AND ((?4 IS NOT NULL AND state = 'running' AND lease_owner = ?4)
                OR (?4 IS NULL AND state = 'waiting'))",
    )
    .bind(error)
    .bind(db::now_ms())
    .bind(job_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Returns the delay before retry number `attempt` (1-based): exponential
/// from `base_ms`, capped at `max_ms`, with full jitter so that many orders
/// failing together do not retry in lockstep.
pub fn backoff_ms(attempt: i64, base_ms: u64, max_ms: u64) -> u64 {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let ceiling = base_ms.saturating_mul(1u64 << exponent).min(max_ms);
    // Full jitter over the upper half keeps a floor, so retries never
    // collapse to zero delay.
    ceiling / 2 + fastrand::u64(0..=ceiling / 2)
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_grows_and_caps() {
        for _ in 0..100 {
            let first = backoff_ms(1, 1000, 60_000);
            assert!((500..=1000).contains(&first), "{first}");
            let fourth = backoff_ms(4, 1000, 60_000);
            assert!((4000..=8000).contains(&fourth), "{fourth}");
            let late = backoff_ms(40, 1000, 60_000);
            assert!((30_000..=60_000).contains(&late), "{late}");
        }
    }
}
