//! The agent's task loop: claim a step from the control plane, run it while
//! renewing its lease, and deliver its result until the control plane
//! acknowledges it.
//!
//! A result is stored locally before it is sent, and a step whose result is
//! stored is never run again: a re-hand-out (after a restart of either side)
//! just resends it. Together with the per-key records of the steps
//! themselves, this makes every hand-out of a task safe to repeat. Each
//! claim lists the keys running here, so the control plane does not hand
//! those out again in the first place.
//!
//! A received task's node is added to the PXE services' nodes before its
//! step runs, so the node's first DHCP request gets a reply even when the
//! node was created after the last fetch of the node list.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackhand_images::ImageCache;
use rackhand_protocol::agent::{Heartbeat, Outcome, Step, Task, TaskReport};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::{ControlPlane, encode_report};
use crate::driver_step::{self, DriverSettings};
use crate::failpoint::Failpoints;
use crate::image_step;
use crate::site_nodes::SiteNodes;
use crate::state::State;

/// The shared state of the task loop.
#[derive(Debug)]
pub struct Runner {
    pub control_plane: ControlPlane,
    pub state: State,
    /// The image store, through the cache that downloads missing images.
    pub cache: ImageCache,
    pub failpoints: Failpoints,
    pub driver: DriverSettings,
    pub callbacks: Arc<Notify>,
    /// The nodes the PXE services serve. Each received task adds its node.
    pub nodes: Arc<SiteNodes>,
    /// Correlation keys of the tasks running (or delivering a result) here.
    running: Mutex<HashSet<String>>,
}

impl Runner {
    pub fn new(
        control_plane: ControlPlane,
        state: State,
        cache: ImageCache,
        failpoints: Failpoints,
        driver: DriverSettings,
        callbacks: Arc<Notify>,
        nodes: Arc<SiteNodes>,
    ) -> Runner {
        Runner {
            control_plane,
            state,
            cache,
            failpoints,
            driver,
            callbacks,
            nodes,
            running: Mutex::new(HashSet::new()),
        }
    }

    /// Returns the correlation keys of the tasks running here.
    pub fn running_keys(&self) -> Vec<String> {
        self.running().iter().cloned().collect()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running
            .lock()
            .expect("the running-task set is never poisoned")
    }
}

/// Claims and runs tasks until `shutdown`.
pub async fn run(runner: Arc<Runner>, shutdown: CancellationToken) {
    resend_pending(&runner, &shutdown).await;

    // A resumed claim hands back the tasks this agent held before it
    // restarted, one per claim, except those listed as running. The claims
    // stay resumed until one returns 204: then every held task is back.
    let mut resume = true;
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let claimed = tokio::select! {
            claimed = runner.control_plane.claim(resume, runner.running_keys()) => claimed,
            _ = shutdown.cancelled() => return,
        };
        match claimed {
            Ok(Some(task)) => {
                failures = 0;
                start(&runner, task, &shutdown);
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

/// Adds the task's node to the PXE services' nodes, then spawns the task
/// unless a task with its key already runs here.
fn start(runner: &Arc<Runner>, task: Task, shutdown: &CancellationToken) {
    let (node_id, node_name, mac) = match &task.step {
        Step::Driver(step) => (step.node_id, &step.node_name, step.boot_mac),
        Step::Image(step) => (step.node_id, &step.node_name, step.boot_mac),
    };
    if runner.nodes.add_task_node(mac, node_name) {
        tracing::info!(node_id, node = %node_name, mac = %mac, "node of a received task added to the DHCP server's known MACs");
    }

    let key = task.correlation_key.clone();
    if !runner.running().insert(key.clone()) {
        tracing::debug!(correlation_key = %key, "task handed out again while still running here; ignored");
        return;
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
            runner.running().remove(&task.correlation_key);
        }
        .instrument(span),
    );
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
                let ironic = image_step::IronicContext {
                    settings: &runner.driver,
                    nodes: &runner.nodes,
                };
                image_step::run(
                    &runner.state,
                    &runner.cache,
                    &runner.callbacks,
                    &progress_tx,
                    Some(ironic),
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

/// Resends results stored before a restart. Their keys count as running
/// until delivered, so claims do not get those tasks handed out again.
async fn resend_pending(runner: &Arc<Runner>, shutdown: &CancellationToken) {
    let pending = match runner.state.pending_reports().await {
        Ok(pending) => pending,
        Err(error) => {
            tracing::error!(error = %error, "reading stored results failed");
            return;
        }
    };
    for (key, task_id, body) in pending {
        runner.running().insert(key.clone());
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            deliver(&runner, task_id, &key, &body, &shutdown).await;
            runner.running().remove(&key);
        });
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

#[cfg(test)]
mod tests {
    use rackhand_images::ImageStore;
    use rackhand_protocol::agent::{BmcAccess, DriverStep, ImageSpec, ImageStep};
    use rackhand_protocol::{MacAddr, Phase, Secret};
    use rackhand_pxe::dhcp::KnownMacs;

    use super::*;
    use crate::enroll::Identity;

    /// Builds a runner whose control plane and BMCs are unreachable
    /// loopback ports: the tests look only at what `start` does before the
    /// step runs.
    async fn runner(dir: &std::path::Path) -> Arc<Runner> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let identity = Identity {
            tls,
            site: "dc1".to_string(),
        };
        let control_plane =
            ControlPlane::new("https://127.0.0.1:1", &identity).expect("the client builds");
        let state = State::open(&dir.join("state"))
            .await
            .expect("the state opens in a new folder");
        let store = ImageStore::open(&dir.join("images")).expect("the store opens");
        let cache = ImageCache::new(store, &rackhand_images::CacheConfig::new(1 << 30))
            .expect("the cache builds");
        Arc::new(Runner::new(
            control_plane,
            state,
            cache,
            Failpoints::default(),
            DriverSettings {
                bmc_timeout: Duration::from_secs(1),
                power_on_grace: Duration::from_secs(5),
                ironic: None,
            },
            Arc::new(Notify::new()),
            Arc::new(SiteNodes::new(KnownMacs::new())),
        ))
    }

    fn task(key: &str, step: Step) -> Task {
        Task {
            task_id: 7,
            order_id: 3,
            phase: Phase::Driver,
            correlation_key: key.to_string(),
            attempt: 1,
            lease_seconds: 30,
            step,
        }
    }

    fn driver_step(mac: MacAddr) -> Step {
        Step::Driver(DriverStep {
            node_id: 11,
            node_name: "node-new".to_string(),
            boot_mac: mac,
            bmc: BmcAccess {
                driver: "redfish".to_string(),
                url: "http://127.0.0.1:1/redfish/v1/Systems/1".to_string(),
                username: "root".to_string(),
                password: Secret::new("bmc-password".to_string()),
                ca_pem: None,
                fingerprint: None,
            },
        })
    }

    fn mac(text: &str) -> MacAddr {
        text.parse().expect("a valid MAC")
    }

    // The test runtime runs one thread, so the spawned step has not run
    // when `start` returns.
    #[tokio::test]
    async fn driver_task_node_known_before_step() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let runner = runner(dir.path()).await;
        let shutdown = CancellationToken::new();
        let boot_mac = mac("52:54:00:00:40:01");

        start(
            &runner,
            task("order-1/driver", driver_step(boot_mac)),
            &shutdown,
        );

        assert!(runner.nodes.known_macs().contains(&boot_mac));
        assert_eq!(runner.nodes.name_of(&boot_mac).as_deref(), Some("node-new"));
        assert_eq!(runner.running_keys(), vec!["order-1/driver".to_string()]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn image_task_node_known_before_step() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let runner = runner(dir.path()).await;
        let shutdown = CancellationToken::new();
        let boot_mac = mac("52:54:00:00:40:02");
        let step = Step::Image(ImageStep {
            node_id: 12,
            node_name: "node-image".to_string(),
            boot_mac,
            hostname: "web-1".to_string(),
            image: ImageSpec {
                name: "debian-12".to_string(),
                kernel_sha256: "a".repeat(64),
                initrd_sha256: "b".repeat(64),
                kernel_args: String::new(),
                kernel_url: None,
                initrd_url: None,
                ..ImageSpec::default()
            },
            callback_timeout_seconds: 60,
            ironic: None,
            install_files: Vec::new(),
        });

        start(&runner, task("order-2/image", step), &shutdown);

        assert!(runner.nodes.known_macs().contains(&boot_mac));
        assert_eq!(
            runner.nodes.name_of(&boot_mac).as_deref(),
            Some("node-image")
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn task_running_here_not_started_twice() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let runner = runner(dir.path()).await;
        let shutdown = CancellationToken::new();
        let boot_mac = mac("52:54:00:00:40:03");

        start(
            &runner,
            task("order-3/driver", driver_step(boot_mac)),
            &shutdown,
        );
        start(
            &runner,
            task("order-3/driver", driver_step(boot_mac)),
            &shutdown,
        );

        assert_eq!(runner.running_keys(), vec!["order-3/driver".to_string()]);
        shutdown.cancel();
    }
}
