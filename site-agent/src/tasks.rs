//! The agent's task loop: claim a step from the control plane, run it while
//! renewing its lease, and deliver its result until the control plane
//! acknowledges it.
//!
//! A result is stored locally before it is sent, and a step whose result is
//! stored is never run again: a re-hand-out (after a restart of either side)
//! just resends it. Together with the per-key records of the steps
//! themselves, this makes every hand-out of a task safe to repeat.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackhand_images::ImageStore;
use rackhand_protocol::agent::{Heartbeat, Outcome, Step, Task, TaskReport};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::{ControlPlane, encode_report};
use crate::driver_step::{self, DriverSettings};
use crate::failpoint::Failpoints;
use crate::image_step;
use crate::state::State;

/// The shared state of the task loop.
#[derive(Debug)]
pub struct Runner {
    pub control_plane: ControlPlane,
    pub state: State,
    pub store: ImageStore,
    pub failpoints: Failpoints,
    pub driver: DriverSettings,
    pub callbacks: Arc<Notify>,
    running: Mutex<HashSet<String>>,
}

impl Runner {
    pub fn new(
        control_plane: ControlPlane,
        state: State,
        store: ImageStore,
        failpoints: Failpoints,
        driver: DriverSettings,
        callbacks: Arc<Notify>,
    ) -> Runner {
        Runner {
            control_plane,
            state,
            store,
            failpoints,
            driver,
            callbacks,
            running: Mutex::new(HashSet::new()),
        }
    }
}

/// Claims and runs tasks until `shutdown`.
pub async fn run(runner: Arc<Runner>, shutdown: CancellationToken) {
    resend_pending(&runner, &shutdown).await;

    let mut resume = true;
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let claimed = tokio::select! {
            claimed = runner.control_plane.claim(resume) => claimed,
            _ = shutdown.cancelled() => return,
        };
        match claimed {
            Ok(Some(task)) => {
                failures = 0;
                // A resumed claim hands back the tasks this agent held before
                // it restarted, one per call; once one comes back that is
                // already running here, every held task has been resumed.
                if !start(&runner, task, &shutdown) {
                    resume = false;
                }
            }
            Ok(None) => {
                failures = 0;
                resume = false;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_s = delay.as_secs(),
                    "claiming a task failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// Spawns the task unless a task with its key already runs here; returns
/// whether it was spawned.
fn start(runner: &Arc<Runner>, task: Task, shutdown: &CancellationToken) -> bool {
    let key = task.correlation_key.clone();
    {
        let mut running = runner
            .running
            .lock()
            .expect("the running-task set is never poisoned");
        if !running.insert(key.clone()) {
            tracing::debug!(correlation_key = %key, "task handed out again while still running here; ignored");
            return false;
        }
    }
    let span = tracing::info_span!(
        "task",
        task_id = task.task_id,
        order_id = task.order_id,
        phase = %task.phase,
        correlation_key = %key,
        attempt = task.attempt
    );
    let runner = runner.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(
        async move {
            run_task(&runner, &task, &shutdown).await;
            runner
                .running
                .lock()
                .expect("the running-task set is never poisoned")
                .remove(&task.correlation_key);
        }
        .instrument(span),
    );
    true
}

async fn run_task(runner: &Runner, task: &Task, shutdown: &CancellationToken) {
    let key = &task.correlation_key;
    match runner.state.pending_report(key).await {
        Ok(Some(body)) => {
            tracing::info!("result already stored; sending it again");
            deliver(runner, task.task_id, key, &body, shutdown).await;
            return;
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(error = %error, "reading stored results failed"),
    }
    tracing::info!("task started");

    let (progress_tx, progress_rx) = watch::channel(None);
    let abandoned = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeats(
        runner.control_plane.clone(),
        task.task_id,
        key.clone(),
        task.lease_seconds,
        progress_rx,
        abandoned.clone(),
    ));

    let step = async {
        match &task.step {
            Step::Driver(step) => {
                driver_step::run(&runner.state, &runner.failpoints, &runner.driver, key, step).await
            }
            Step::Image(step) => {
                image_step::run(
                    &runner.state,
                    &runner.store,
                    &runner.callbacks,
                    &progress_tx,
                    key,
                    step,
                )
                .await
            }
        }
    };
    let outcome = tokio::select! {
        outcome = step => Some(outcome),
        _ = abandoned.cancelled() => None,
        _ = shutdown.cancelled() => None,
    };
    heartbeat.abort();
    let Some(outcome) = outcome else {
        tracing::warn!("task stopped before it finished (abandoned or shutting down)");
        return;
    };

    match &outcome {
        Outcome::Succeeded { summary, .. } => tracing::info!(summary = %summary, "task succeeded"),
        Outcome::Failed {
            error, retryable, ..
        } => tracing::warn!(error = %error, retryable, "task failed"),
    }
    let body = encode_report(&TaskReport {
        correlation_key: key.clone(),
        outcome,
    });
    if let Err(error) = runner.state.save_report(key, task.task_id, &body).await {
        tracing::error!(error = %error, "storing the result failed; sending it anyway");
    }
    deliver(runner, task.task_id, key, &body, shutdown).await;
}

/// Sends a stored result until the control plane takes it or `shutdown`.
async fn deliver(
    runner: &Runner,
    task_id: i64,
    key: &str,
    body: &str,
    shutdown: &CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        match runner.control_plane.report(task_id, body).await {
            Ok(()) => {
                if let Err(error) = runner.state.delete_report(key).await {
                    tracing::warn!(error = %error, "forgetting a delivered result failed");
                }
                tracing::info!(correlation_key = key, "result delivered");
                return;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_s = delay.as_secs(),
                    "delivering a result failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Resends results stored before a restart.
async fn resend_pending(runner: &Arc<Runner>, shutdown: &CancellationToken) {
    let pending = match runner.state.pending_reports().await {
        Ok(pending) => pending,
        Err(error) => {
            tracing::error!(error = %error, "reading stored results failed");
            return;
        }
    };
    for (key, task_id, body) in pending {
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { deliver(&runner, task_id, &key, &body, &shutdown).await });
    }
}

/// Renews the lease every third of it, carrying the latest progress note;
/// cancels `abandoned` when the control plane says the task is gone.
async fn heartbeats(
    control_plane: ControlPlane,
    task_id: i64,
    key: String,
    lease_seconds: u32,
    mut progress: watch::Receiver<Option<String>>,
    abandoned: CancellationToken,
) {
    let period = Duration::from_secs(u64::from(lease_seconds / 3).max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            changed = progress.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(period).await;
                }
            }
        }
        let beat = Heartbeat {
            correlation_key: key.clone(),
            progress: progress.borrow_and_update().clone(),
        };
        match control_plane.heartbeat(task_id, &beat).await {
            Ok(ack) if ack.abandoned => {
                tracing::warn!("control plane no longer assigns this task to us; stopping it");
                abandoned.cancel();
                return;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "heartbeat failed"),
        }
    }
}
