//! The worker loop: claim a job, run one attempt of its phase, record the
//! result, repeat.
//!
//! Recording is one transaction per outcome: the activity row and the job's
//! next state (advanced, parked for the agent, requeued with backoff, or
//! failed together with its order) commit together. While a phase runs, a
//! side task renews the job's lease; if the lease is lost anyway (the
//! process stalled past it), the conditional updates refuse to record and
//! the job belongs to whoever claimed it next.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::activity::{self, Entry, Event};
use crate::app::App;
use crate::db;
use crate::jobs::{self, ClaimedJob};
use crate::orders;
use crate::phases::{self, PhaseError, PhaseOutcome, Retry};

/// How long an idle worker sleeps before polling again when no wake-up came.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs one worker until `shutdown` is cancelled.
pub async fn run(app: Arc<App>, index: usize, shutdown: CancellationToken) {
    let owner = format!("worker-{}-{index}", uuid::Uuid::new_v4().simple());
    let lease_ms = i64::from(app.config.worker.lease_seconds) * 1000;
    tracing::debug!(worker = %owner, "worker started");

    while !shutdown.is_cancelled() {
        let claimed = match jobs::claim(&app.pool, &owner, lease_ms).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(error = %error, "claiming a job failed");
                None
            }
        };
        let Some(job) = claimed else {
            tokio::select! {
                _ = app.jobs_ready.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        };

        let span = tracing::info_span!(
            "job",
            job_id = job.id,
            order_id = job.order_id,
            phase = %job.phase,
            attempt = job.attempt
        );
        if let Err(error) = run_job(&app, &job, &owner, lease_ms).instrument(span).await {
            tracing::error!(
                job_id = job.id,
                order_id = job.order_id,
                error = format!("{error:#}"),
                "recording a job's result failed"
            );
        }
    }
}

/// Runs one attempt of `job` and records its outcome.
async fn run_job(
    app: &Arc<App>,
    job: &ClaimedJob,
    owner: &str,
    lease_ms: i64,
) -> anyhow::Result<()> {
    let Some(order) = orders::context(&app.pool, job.order_id).await? else {
        anyhow::bail!(
            "job {} names order {} which does not exist",
            job.id,
            job.order_id
        );
    };
    orders::mark_provisioning(&app.pool, order.id).await?;

    let key = phases::correlation_key(&order, job.phase);
    record(
        app,
        job,
        &key,
        Event::Started,
        &format!("attempt {}", job.attempt),
        None,
    )
    .await?;

    let renewer = spawn_lease_renewer(app.clone(), job.id, owner.to_string(), lease_ms);
    let result = phases::run(app, job, owner, &order).await;
    renewer.abort();

    match result {
        Ok(PhaseOutcome::Done { summary, payload }) => {
            tracing::info!(summary = %summary, "phase succeeded");
            let mut tx = db::begin(&app.pool).await?;
            activity::record(
                &mut *tx,
                &entry(job, &key, Event::Succeeded, &summary, payload.as_ref()),
            )
            .await?;
            if jobs::advance(&mut tx, job.id, Some(owner), job.phase.next()).await? {
                tx.commit().await?;
                app.jobs_ready.notify_waiters();
            } else {
                tracing::warn!(
                    "lost the job's lease before recording success; the next claim reruns the phase"
                );
            }
        }
        Ok(PhaseOutcome::Dispatched { summary }) => {
            tracing::info!(summary = %summary, "phase handed to the site agent");
            record(app, job, &key, Event::Progress, &summary, None).await?;
        }
        Err(error) => record_failure(app, job, owner, &key, error).await?,
    }
    Ok(())
}

async fn record_failure(
    app: &App,
    job: &ClaimedJob,
    owner: &str,
    key: &str,
    error: PhaseError,
) -> anyhow::Result<()> {
    let max_attempts = i64::from(app.config.worker.max_attempts);
    let exhausted = job.attempt >= max_attempts;
    let mut tx = db::begin(&app.pool).await?;

    if error.retry == Retry::Transient && !exhausted {
        let delay = jobs::backoff_ms(
            job.attempt,
            app.config.worker.backoff_base_ms,
            app.config.worker.backoff_max_ms,
        );
        let message = format!(
            "{}; retrying in {:.1} s",
            error.message,
            delay as f64 / 1000.0
        );
        tracing::warn!(error = %error.message, retry_in_ms = delay, "phase failed; will retry");
        activity::record(
            &mut *tx,
            &entry(job, key, Event::Retrying, &message, error.upstream.as_ref()),
        )
        .await?;
        let delay = i64::try_from(delay).unwrap_or(i64::MAX);
        if jobs::retry_later(&mut tx, job.id, owner, db::now_ms() + delay, &error.message).await? {
            tx.commit().await?;
        }
        return Ok(());
    }

    let message = if exhausted && error.retry == Retry::Transient {
        format!("gave up after {} attempts: {}", job.attempt, error.message)
    } else {
        error.message.clone()
    };
    tracing::error!(error = %message, "phase failed permanently; order failed");
    activity::record(
        &mut *tx,
        &entry(job, key, Event::Failed, &message, error.upstream.as_ref()),
    )
    .await?;
    if jobs::fail(&mut tx, job.id, Some(owner), &message).await? {
        orders::mark_failed(
            &mut tx,
            job.order_id,
            job.phase,
            &message,
            error.upstream.as_ref(),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn entry<'a>(
    job: &'a ClaimedJob,
    key: &'a str,
    event: Event,
    message: &'a str,
    payload: Option<&'a Value>,
) -> Entry<'a> {
    Entry {
        order_id: job.order_id,
        phase: job.phase.as_str(),
        event,
        attempt: job.attempt,
        correlation_key: Some(key),
        message,
        payload,
    }
}

async fn record(
    app: &App,
    job: &ClaimedJob,
    key: &str,
    event: Event,
    message: &str,
    payload: Option<&Value>,
) -> Result<(), sqlx::Error> {
    activity::record(&app.pool, &entry(job, key, event, message, payload)).await
}

/// Renews the lease every third of its length until aborted.
fn spawn_lease_renewer(
    app: Arc<App>,
    job_id: i64,
    owner: String,
    lease_ms: i64,
) -> tokio::task::JoinHandle<()> {
    let period = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(1000));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            match jobs::renew_lease(&app.pool, job_id, &owner, lease_ms).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(job_id, "job lease lost while the phase was running");
                    return;
                }
                Err(error) => {
                    tracing::warn!(job_id, error = %error, "renewing the job lease failed")
                }
            }
        }
    })
}
