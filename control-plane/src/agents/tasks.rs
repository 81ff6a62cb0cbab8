//! The task loop on the control plane's side: agents claim phase steps of
//! their site, renew the lease while working, and report the result.
//!
//! Hand-out: a task is claimable when `pending` and due, or `claimed` with
//! an expired lease (its agent went silent), or `claimed` by the same agent
//! that now claims with `resume` after a restart. A task whose correlation key
//! the claiming agent lists as running is skipped, so an agent is never
//! handed a task it is still working on. Each hand-out increments the
//! attempt; the agent deduplicates by correlation key, so a re-hand-out
//! never repeats a side effect. A task that would be handed out more than
//! `2 × worker.max_attempts` times fails its order instead: an agent that
//! crashes on every attempt would otherwise get it forever.
//!
//! Result: recording a result and advancing (or failing) the order's job
//! happen in one transaction, and a result for a task that is already final
//! changes nothing, so an agent may resend a result it is unsure about.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rackhand_protocol::agent::{
    BmcAccess, ClaimRequest, DriverStep, Heartbeat, HeartbeatAck, ImageFile, ImageSpec, ImageStep,
    InstallMethod, Outcome, Step, Task, TaskReport,
};
use rackhand_protocol::{MacAddr, Phase};
use serde_json::json;

use crate::activity::{self, Entry, Event};
use crate::agents::Agent;
use crate::api::error::{ApiError, Body};
use crate::api::image_library;
use crate::app::App;
use crate::db::{self, Tx};
use crate::jobs;
use crate::orders;
use crate::seal;

/// Maximum long-poll time of a claim.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Maximum number of running correlation keys a claim may list.
const MAX_RUNNING_KEYS: usize = 1024;
/// Candidate rows a claim reads beyond the number of running keys, so that
/// candidates taken by a concurrent claim still leave some to try.
const EXTRA_CANDIDATES: usize = 4;

/// The condition that makes a task claimable, shared by the candidate query
/// and the conditional update that decides a race between two claims.
/// Parameters: `?1` the claiming agent's id, `?2` now in ms, `?3` resume.
macro_rules! claimable {
    () => {
        "((state = 'pending' AND run_after <= ?2)
          OR (state = 'claimed' AND (lease_expires_at < ?2 OR (?3 AND claimed_by = ?1))))"
    };
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    order_id: i64,
    phase: String,
    correlation_key: String,
    attempt: i64,
}

/// `POST /agent/v1/tasks/claim`: the next task of the agent's site, or 204
/// when none became ready within the requested wait.
pub async fn claim(
    State(app): State<Arc<App>>,
    agent: Agent,
    Body(request): Body<ClaimRequest>,
) -> Result<Response, ApiError> {
    if request.running.len() > MAX_RUNNING_KEYS {
        return Err(ApiError::invalid(
            "running",
            format!(
                "lists {} correlation keys; at most {MAX_RUNNING_KEYS} are accepted",
                request.running.len()
            ),
        ));
    }
    let running: HashSet<&str> = request.running.iter().map(String::as_str).collect();
    let wait = Duration::from_secs(u64::from(request.wait_seconds)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut resume = request.resume;

    loop {
        // Register for the wake-up before looking, so a task created between
        // the look and the wait is not missed.
        let notified = app.tasks_ready.notified();
        if let Some(row) = claim_row(&app, &agent, resume, &running).await? {
            match build_task(&app, &row).await {
                Ok(task) => {
                    record_claim(&app, &agent, &row).await?;
                    return Ok(Json(task).into_response());
                }
                Err(error) => {
                    fail_task(&app, &row, &error.to_string(), None).await?;
                    continue;
                }
            }
        }
        resume = false;

        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1))) => {}
        }
    }
}

/// Hands out the first claimable task of the agent's site, in id order,
/// skipping claimed tasks whose key is in `running`. Candidates that reached the hand-out limit
/// are failed on the way.
async fn claim_row(
    app: &App,
    agent: &Agent,
    resume: bool,
    running: &HashSet<&str>,
) -> Result<Option<ClaimedRow>, ApiError> {
    let now = db::now_ms();
    let limit = i64::try_from(running.len() + EXTRA_CANDIDATES).unwrap_or(i64::MAX);
    let candidates: Vec<(i64, String, i64, String)> = sqlx::query_as(concat!(
        "SELECT id, correlation_key, attempt, state FROM agent_tasks
         WHERE site_id = ?4 AND ",
        claimable!(),
        " ORDER BY id LIMIT ?5"
    ))
    .bind(agent.id)
    .bind(now)
    .bind(resume)
    .bind(agent.site_id)
    .bind(limit)
    .fetch_all(&app.pool)
    .await?;

    let max_hand_outs = 2 * i64::from(app.config.worker.max_attempts);
    for (task_id, key, attempt, state) in candidates {
        // Only a claimed task can be running on the agent. A pending one
        // was requeued after the agent reported a retryable failure, which
        // the agent may still list as running while its claim was open.
        if state == "claimed" && running.contains(key.as_str()) {
            continue;
        }
        if attempt >= max_hand_outs {
            fail_over_limit(app, agent, resume, task_id, max_hand_outs).await?;
            continue;
        }
        // A concurrent claim may have taken the candidate since the query
        // above; the conditional update lets exactly one of them have it.
        let claimed: Option<ClaimedRow> = sqlx::query_as(concat!(
            "UPDATE agent_tasks
             SET state = 'claimed', claimed_by = ?1, lease_expires_at = ?4, attempt = attempt + 1,
                 updated_at = ?2
             WHERE id = ?5 AND attempt < ?6 AND ",
            claimable!(),
            " RETURNING id, order_id, phase, correlation_key, attempt"
        ))
        .bind(agent.id)
        .bind(now)
        .bind(resume)
        .bind(now + i64::from(app.config.agents.lease_seconds) * 1000)
        .bind(task_id)
        .bind(max_hand_outs)
        .fetch_optional(&app.pool)
        .await?;
        if claimed.is_some() {
            return Ok(claimed);
        }
    }
    Ok(None)
}

/// Fails a claimable task that was handed out `max_hand_outs` times
/// already, with its job and order. The task is first taken over by the
/// same conditional update as a hand-out (without counting one), so a task
/// that just got a result or a live lease is left alone.
async fn fail_over_limit(
    app: &App,
    agent: &Agent,
    resume: bool,
    task_id: i64,
    max_hand_outs: i64,
) -> Result<(), ApiError> {
    let now = db::now_ms();
    let held: Option<ClaimedRow> = sqlx::query_as(concat!(
        "UPDATE agent_tasks
         SET state = 'claimed', claimed_by = ?1, lease_expires_at = ?4, updated_at = ?2
         WHERE id = ?5 AND attempt >= ?6 AND ",
        claimable!(),
        " RETURNING id, order_id, phase, correlation_key, attempt"
    ))
    .bind(agent.id)
    .bind(now)
    .bind(resume)
    .bind(now + i64::from(app.config.agents.lease_seconds) * 1000)
    .bind(task_id)
    .bind(max_hand_outs)
    .fetch_optional(&app.pool)
    .await?;
    let Some(row) = held else {
        return Ok(());
    };

    let message = format!(
        "handed out {} times without a final result (the limit is 2 × worker.max_attempts); \
         site agent {} of {} may be crash-looping, see its log",
        row.attempt, agent.id, agent.site
    );
    fail_task(app, &row, &message, None).await?;
    Ok(())
}

async fn record_claim(app: &App, agent: &Agent, row: &ClaimedRow) -> Result<(), sqlx::Error> {
    let message = format!(
        "handed to site agent {} of {} (hand-out {})",
        agent.id, agent.site, row.attempt
    );
    tracing::info!(order_id = row.order_id, phase = %row.phase, correlation_key = %row.correlation_key, agent_id = agent.id, "task handed to agent");
    activity::record(
        &app.pool,
        &Entry {
            order_id: row.order_id,
            phase: &row.phase,
            event: Event::Progress,
            attempt: row.attempt,
            correlation_key: Some(&row.correlation_key),
            message: &message,
            payload: None,
        },
    )
    .await
}

#[derive(sqlx::FromRow)]
struct StepRow {
    image_id: i64,
    node_id: i64,
    node_name: String,
    boot_mac: String,
    bmc_driver: String,
    bmc_url: String,
    bmc_username: String,
    bmc_password_sealed: String,
    hostname: String,
    image_name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    kernel_args: String,
    kernel_url: Option<String>,
    initrd_url: Option<String>,
    install_method: String,
    disk_sha256: Option<String>,
    disk_size: Option<i64>,
    disk_url: Option<String>,
    bmc_ca_pem: Option<String>,
    bmc_fingerprint: Option<String>,
}

/// Builds the instructions of a claimed task; the BMC password is unsealed
/// here and only travels inside the TLS connection.
async fn build_task(app: &App, row: &ClaimedRow) -> anyhow::Result<Task> {
    let phase: Phase = row.phase.parse()?;
    let step: StepRow = sqlx::query_as(
        "SELECT i.id AS image_id, n.id AS node_id, n.name AS node_name, n.boot_mac, n.bmc_driver, n.bmc_url, n.bmc_username,
                n.bmc_password_sealed, o.hostname, i.name AS image_name, i.kernel_sha256, i.initrd_sha256,
                i.kernel_args, i.kernel_url, i.initrd_url, i.install_method, i.disk_sha256, i.disk_size,
                i.disk_url, n.bmc_ca_pem, n.bmc_fingerprint
         FROM orders o
         JOIN nodes n ON n.id = o.node_id
         JOIN products p ON p.id = o.product_id
         JOIN images i ON i.id = p.image_id
         WHERE o.id = ?",
    )
    .bind(row.order_id)
    .fetch_one(&app.pool)
    .await?;
    let boot_mac: MacAddr = step.boot_mac.parse()?;
    let uploaded = image_library::uploaded_roles(app, step.image_id).await?;
    let file_url = |role: &str, sha256: &str, upstream: Option<String>| {
        image_library::agent_file_url(uploaded.iter().any(|r| r == role), sha256, upstream)
    };

    let step = match phase {
        Phase::Driver => {
            let password = app.sealer.open(
                &seal::bmc_password_context(step.node_id),
                &step.bmc_password_sealed,
            )?;
            Step::Driver(DriverStep {
                node_id: step.node_id,
                node_name: step.node_name,
                boot_mac,
                bmc: BmcAccess {
                    driver: step.bmc_driver,
                    url: step.bmc_url,
                    username: step.bmc_username,
                    password,
                    ca_pem: step.bmc_ca_pem,
                    fingerprint: step.bmc_fingerprint,
                },
            })
        }
        Phase::Image => {
            let ironic = if step.bmc_driver == "ironic" {
                let password = app.sealer.open(
                    &seal::bmc_password_context(step.node_id),
                    &step.bmc_password_sealed,
                )?;
                Some(BmcAccess {
                    driver: step.bmc_driver,
                    url: step.bmc_url,
                    username: step.bmc_username,
                    password,
                    ca_pem: step.bmc_ca_pem,
                    fingerprint: step.bmc_fingerprint,
                })
            } else {
                None
            };
            let install_method: InstallMethod =
                step.install_method.parse().map_err(anyhow::Error::msg)?;
            // Images created before images.require_signatures was turned on
            // may still be unsigned; their orders must not install them.
            if app.config.images.require_signatures {
                let unsigned =
                    image_library::unsigned_roles(app, step.image_id, &step.install_method).await?;
                if !unsigned.is_empty() {
                    anyhow::bail!(image_library::unsigned_order_message(
                        &step.image_name,
                        &unsigned,
                        row.order_id
                    ));
                }
            }
            let install_files = match crate::install::render_for_order(app, row.order_id).await? {
                Some(install) if install.method != install_method => anyhow::bail!(
                    "the product's install template drives a {} install, but image {} has install method {install_method}; give the product a template of the image's method",
                    install.method,
                    step.image_name
                ),
                Some(install) => install.files,
                None => Vec::new(),
            };
            Step::Image(ImageStep {
                node_id: step.node_id,
                node_name: step.node_name,
                boot_mac,
                hostname: step.hostname,
                image: ImageSpec {
                    name: step.image_name,
                    kernel_url: file_url("kernel", &step.kernel_sha256, step.kernel_url),
                    initrd_url: file_url("initrd", &step.initrd_sha256, step.initrd_url),
                    kernel_sha256: step.kernel_sha256,
                    initrd_sha256: step.initrd_sha256,
                    kernel_args: step.kernel_args,
                    install_method,
                    disk: match (step.disk_sha256, step.disk_size) {
                        (Some(sha256), Some(size)) => Some(ImageFile {
                            url: file_url("disk", &sha256, step.disk_url),
                            sha256,
                            size: u64::try_from(size)?,
                        }),
                        _ => None,
                    },
                },
                callback_timeout_seconds: app.config.agents.callback_timeout_seconds,
                ironic,
                install_files,
            })
        }
        other => anyhow::bail!("phase {other} does not run on site agents"),
    };
    Ok(Task {
        task_id: row.id,
        order_id: row.order_id,
        phase,
        correlation_key: row.correlation_key.clone(),
        attempt: u32::try_from(row.attempt).unwrap_or(u32::MAX),
        lease_seconds: app.config.agents.lease_seconds,
        step,
    })
}

/// `POST /agent/v1/tasks/{id}/heartbeat`: extends the lease.
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    agent: Agent,
    Path(task_id): Path<i64>,
    Body(beat): Body<Heartbeat>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    let now = db::now_ms();
    let lease_seconds = app.config.agents.lease_seconds;
    let previous: Option<(i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT order_id, progress, attempt FROM agent_tasks
         WHERE id = ? AND correlation_key = ? AND state = 'claimed' AND claimed_by = ?",
    )
    .bind(task_id)
    .bind(&beat.correlation_key)
    .bind(agent.id)
    .fetch_optional(&app.pool)
    .await?;
    let Some((order_id, previous_progress, attempt)) = previous else {
        return Ok(Json(HeartbeatAck {
            lease_seconds,
            abandoned: true,
        }));
    };

    sqlx::query("UPDATE agent_tasks SET lease_expires_at = ?, progress = COALESCE(?, progress), updated_at = ? WHERE id = ?")
        .bind(now + i64::from(lease_seconds) * 1000)
        .bind(&beat.progress)
        .bind(now)
        .bind(task_id)
        .execute(&app.pool)
        .await?;

    if let Some(progress) = &beat.progress
        && previous_progress.as_ref() != Some(progress)
    {
        let phase: String = sqlx::query_scalar("SELECT phase FROM agent_tasks WHERE id = ?")
            .bind(task_id)
            .fetch_one(&app.pool)
            .await?;
        activity::record(
            &app.pool,
            &Entry {
                order_id,
                phase: &phase,
                event: Event::Progress,
                attempt,
                correlation_key: Some(&beat.correlation_key),
                message: progress,
                payload: None,
            },
        )
        .await?;
    }
    Ok(Json(HeartbeatAck {
        lease_seconds,
        abandoned: false,
    }))
}

/// `POST /agent/v1/tasks/{id}/result`: records how the step ended.
pub async fn report(
    State(app): State<Arc<App>>,
    agent: Agent,
    Path(task_id): Path<i64>,
    Body(report): Body<TaskReport>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row: Option<ClaimedRow> = sqlx::query_as(
        "SELECT id, order_id, phase, correlation_key, attempt FROM agent_tasks
         WHERE id = ? AND correlation_key = ? AND site_id = ?",
    )
    .bind(task_id)
    .bind(&report.correlation_key)
    .bind(agent.site_id)
    .fetch_optional(&app.pool)
    .await?;
    let row = row.ok_or_else(|| {
        ApiError::NotFound(format!(
            "task {task_id} with correlation key {} not found for site {}",
            report.correlation_key, agent.site
        ))
    })?;
    if row.phase == Phase::Driver.as_str() {
        app.failpoints.hit("cp.driver_result.before_record").await;
    }

    let recorded = match report.outcome {
        Outcome::Succeeded { summary, payload } => {
            record_success(&app, &row, &summary, &payload).await?
        }
        Outcome::Failed {
            retryable,
            error,
            upstream,
        } => {
            if retryable && row.attempt < i64::from(app.config.worker.max_attempts) {
                record_retry(&app, &row, &error, upstream.as_ref()).await?
            } else {
                let message = if retryable {
                    format!("gave up after {} attempts: {error}", row.attempt)
                } else {
                    error
                };
                fail_task(&app, &row, &message, upstream.as_ref()).await?
            }
        }
    };
    Ok(Json(json!({ "recorded": recorded })))
}

fn entry<'a>(
    row: &'a ClaimedRow,
    event: Event,
    message: &'a str,
    payload: Option<&'a serde_json::Value>,
) -> Entry<'a> {
    Entry {
        order_id: row.order_id,
        phase: &row.phase,
        event,
        attempt: row.attempt,
        correlation_key: Some(&row.correlation_key),
        message,
        payload,
    }
}

/// Moves the task to `state` unless it is already final; false when it was.
async fn finish_task(tx: &mut Tx<'_>, task_id: i64, state: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE agent_tasks SET state = ?, lease_expires_at = NULL, updated_at = ?
         WHERE id = ? AND state IN ('pending', 'claimed')",
    )
    .bind(state)
    .bind(db::now_ms())
    .bind(task_id)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

async fn record_success(
    app: &App,
    row: &ClaimedRow,
    summary: &str,
    payload: &serde_json::Value,
) -> Result<bool, ApiError> {
    let phase: Phase = row
        .phase
        .parse()
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let mut tx = db::begin(&app.pool).await?;
    if !finish_task(&mut tx, row.id, "done").await? {
        return Ok(false);
    }
    activity::record(
        &mut *tx,
        &entry(row, Event::Succeeded, summary, Some(payload)),
    )
    .await?;
    let job_id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE order_id = ?")
        .bind(row.order_id)
        .fetch_one(&mut *tx)
        .await?;
    if !jobs::advance(&mut tx, job_id, None, phase.next()).await? {
        tracing::warn!(order_id = row.order_id, phase = %phase, "agent result arrived for a job that was not waiting for it");
    }
    tx.commit().await?;
    tracing::info!(order_id = row.order_id, phase = %phase, correlation_key = %row.correlation_key, "agent step succeeded");
    app.jobs_ready.notify_waiters();
    Ok(true)
}

async fn record_retry(
    app: &App,
    row: &ClaimedRow,
    error: &str,
    upstream: Option<&serde_json::Value>,
) -> Result<bool, ApiError> {
    let delay = jobs::backoff_ms(
        row.attempt,
        app.config.worker.backoff_base_ms,
        app.config.worker.backoff_max_ms,
    );
    let message = format!("{error}; retrying in {:.1} s", delay as f64 / 1000.0);
    let mut tx = db::begin(&app.pool).await?;
    let requeued = sqlx::query(
        "UPDATE agent_tasks SET state = 'pending', run_after = ?, claimed_by = NULL, lease_expires_at = NULL,
             updated_at = ?
         WHERE id = ? AND state IN ('pending', 'claimed')",
    )
    .bind(db::now_ms() + i64::try_from(delay).unwrap_or(i64::MAX))
    .bind(db::now_ms())
    .bind(row.id)
    .execute(&mut *tx)
    .await?;
    if requeued.rows_affected() != 1 {
        return Ok(false);
    }
    activity::record(&mut *tx, &entry(row, Event::Retrying, &message, upstream)).await?;
    tx.commit().await?;
    tracing::warn!(order_id = row.order_id, phase = %row.phase, error, "agent step failed; will retry");
    Ok(true)
}

/// Fails the task, its job and its order for good.
async fn fail_task(
    app: &App,
    row: &ClaimedRow,
    message: &str,
    upstream: Option<&serde_json::Value>,
) -> Result<bool, ApiError> {
    let phase: Phase = row
        .phase
        .parse()
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let mut tx = db::begin(&app.pool).await?;
    if !finish_task(&mut tx, row.id, "failed").await? {
        return Ok(false);
    }
    activity::record(&mut *tx, &entry(row, Event::Failed, message, upstream)).await?;
    let job_id: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE order_id = ?")
        .bind(row.order_id)
        .fetch_one(&mut *tx)
        .await?;
    jobs::fail(&mut tx, job_id, None, message).await?;
    orders::mark_failed(&mut tx, row.order_id, phase, message, upstream).await?;
    tx.commit().await?;
    tracing::error!(order_id = row.order_id, phase = %phase, error = message, "agent step failed permanently; order failed");
    Ok(true)
}
