//! The `driver` step for bare metal: set a one-time PXE boot and power the
//! node on through its BMC, at most once per correlation key.
//!
//! Order of events, and what a crash at each point leaves:
//! 1. read the power state; a node already on is forced off first (it was
//!    not booted by this order, because no power-on is recorded yet);
//! 2. PATCH the one-time PXE boot override (idempotent);
//! 3. record `power_on requested` under the correlation key (committed);
//! 4. send the power-on;
//! 5. record `sent`, then poll until the BMC reports On.
//!
//! A retry that finds a record never sends again while the BMC may still be
//! applying the first request (BMCs report the new state seconds after they
//! accept it): it polls. Only when the node still reads Off after the grace
//! period, meaning the first request never took effect, does it send one
//! more power-on; a power-on never resets a machine that is running.

use std::time::Duration;

use rackhand_ironic_bridge::{
    BmcDriver, BmcEndpoint, BootOverride, BootTarget, DriverError, PowerState, connect,
};
use rackhand_protocol::agent::{DriverStep, Outcome};
use serde_json::json;

use crate::failpoint::Failpoints;
use crate::state::{State, now_ms};

/// How often the power state is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Power-on requests allowed per correlation key (the first, plus one after
/// the grace period proved it lost).
const MAX_SENDS: i64 = 2;
/// Maximum wait for a forced power-off of a node found running.
const POWER_OFF_WAIT: Duration = Duration::from_secs(60);

/// Settings the step needs from the agent's configuration.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    pub bmc_timeout: Duration,
    pub power_on_grace: Duration,
    /// Set when the agent's config has an `[ironic]` section.
    pub ironic: Option<IronicSettings>,
}

/// The configuration the steps of Ironic-driven nodes need.
#[derive(Debug, Clone)]
pub struct IronicSettings {
    /// The base URL of the agent's conductor listener, where the conductor
    /// fetches the verified kernel and ramdisk.
    pub conductor_url: String,
    /// The boot HTTP server's base URL on the provisioning network, for the
    /// callback URL on the kernel command line.
    pub boot_base_url: String,
}

/// Runs the step and returns its outcome (never an `Err`: every failure is
/// an outcome the control plane records).
pub async fn run(
    state: &State,
    failpoints: &Failpoints,
    settings: &DriverSettings,
    key: &str,
    step: &DriverStep,
) -> Outcome {
    if step.bmc.driver == "ironic" {
        return prepare_ironic_node(settings, step).await;
    }
    match power_on_once(state, failpoints, settings, key, step).await {
        Ok(outcome) => outcome,
        Err(StepError::Driver(error)) => Outcome::Failed {
            retryable: error.is_retryable(),
            error: error.to_string(),
            upstream: None,
        },
        Err(StepError::State(error)) => Outcome::Failed {
            retryable: true,
            error: format!("agent state database error: {error}"),
            upstream: None,
        },
        Err(StepError::Other { message, retryable }) => Outcome::Failed {
            retryable,
            error: message,
            upstream: None,
        },
    }
}

/// The `driver` step of a node driven through Ironic: Ironic powers the
/// node on when the image step deploys it, so this step only checks that
/// Ironic has the node and makes it `available` if it is not yet.
async fn prepare_ironic_node(settings: &DriverSettings, step: &DriverStep) -> Outcome {
    use rackhand_ironic_bridge::ironic::StateDeadlines;
    let failed = |error: String, retryable: bool| Outcome::Failed {
        retryable,
        error,
        upstream: None,
    };
    let driver = match crate::ironic_boot::driver(&step.bmc, &step.node_name, settings.bmc_timeout)
    {
        Ok(driver) => driver,
        Err(error) => return failed(error, false),
    };
    let client = driver.client();
    let node = driver.ironic_node();
    let current = match client.node(node).await {
        Ok(current) => current,
        Err(error) => return failed(error.to_string(), error.is_retryable()),
    };
    if current.maintenance {
        return failed(
            format!(
                "Ironic node {node} is in maintenance; take it out of maintenance, then retry the order"
            ),
            false,
        );
    }
    let deadlines = StateDeadlines::default();
    let state = match current.provision_state.as_str() {
        "enroll" | "manageable" | "verifying" => {
            let prepared = async {
                client.manage(node, &deadlines).await?;
                client.provide(node, &deadlines).await
            };
            match prepared.await {
                Ok(node) => node.provision_state,
                Err(error) => return failed(error.to_string(), error.is_retryable()),
            }
        }
        other => other.to_string(),
    };
    tracing::info!(node = %step.node_name, ironic_node = node, provision_state = %state, "node ready in Ironic");
    Outcome::Succeeded {
        summary: format!(
            "{} is {state} in Ironic; Ironic powers it on when the image phase deploys it",
            step.node_name
        ),
        payload: json!({ "node": step.node_name, "ironic_node": node, "provision_state": state }),
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    State(#[from] sqlx::Error),
    #[error("{message}")]
    Other { message: String, retryable: bool },
}

async fn power_on_once(
    state: &State,
    failpoints: &Failpoints,
    settings: &DriverSettings,
    key: &str,
    step: &DriverStep,
) -> Result<Outcome, StepError> {
    let mut endpoint =
        BmcEndpoint::from_access(&step.bmc, step.node_name.clone()).map_err(|e| {
            StepError::Other {
                message: e.to_string(),
                retryable: false,
            }
        })?;
    endpoint.timeout = settings.bmc_timeout;
    endpoint.boot_mac = Some(step.boot_mac);
    let driver = connect(endpoint)?;

    let mut record = state.side_effect(key).await?;
    if record.is_none() {
        let power = driver.power_state().await?;
        if matches!(power, PowerState::On | PowerState::PoweringOn) {
            tracing::warn!(node = %step.node_name, "node is on before this step powers it on; forcing it off so that it netboots");
            driver.power_off(true).await?;
            wait_for(&driver, PowerState::Off, POWER_OFF_WAIT).await?;
        }
        driver
            .set_next_boot(BootOverride::once(BootTarget::Pxe))
            .await?;
        send_power_on(state, failpoints, &driver, key, &step.node_name).await?;
        record = state.side_effect(key).await?;
    }
    let record = record.ok_or_else(|| StepError::Other {
        message: "power-on record vanished from the agent's state".to_string(),
        retryable: true,
    })?;
    if record.state == "done" {
        return Ok(succeeded(
            step,
            "powered on earlier under this correlation key",
        ));
    }

    // Poll until On. The grace period counts from the last send.
    let grace_ms = i64::try_from(settings.power_on_grace.as_millis()).unwrap_or(i64::MAX);
    let mut grace_ends = record.updated_at.saturating_add(grace_ms);
    let mut sends = record.sends;
    loop {
        let power = driver.power_state().await?;
        if power == PowerState::On {
            state.mark_side_effect(key, "done", Some("On")).await?;
            tracing::info!(node = %step.node_name, correlation_key = key, "node powered on");
            return Ok(succeeded(step, "one-time PXE boot set; powered on"));
        }
        let now = now_ms();
        if now > grace_ends {
            if sends >= MAX_SENDS {
                return Err(StepError::Other {
                    message: format!(
                        "node {} still reports {power} {} s after {sends} power-on requests",
                        step.node_name,
                        settings.power_on_grace.as_secs()
                    ),
                    retryable: false,
                });
            }
            tracing::warn!(node = %step.node_name, power = %power, "power-on did not take effect within the grace period; sending it once more");
            driver
                .set_next_boot(BootOverride::once(BootTarget::Pxe))
                .await?;
            send_power_on(state, failpoints, &driver, key, &step.node_name).await?;
            sends += 1;
            grace_ends = now_ms().saturating_add(grace_ms);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn send_power_on(
    state: &State,
    failpoints: &Failpoints,
    driver: &impl BmcDriver,
    key: &str,
    node: &str,
) -> Result<(), StepError> {
    state.record_request(key, "power_on").await?;
    driver.power_on().await?;
    failpoints.hit("agent.driver.after_power_on").await;
    state.mark_side_effect(key, "sent", None).await?;
    tracing::info!(node, correlation_key = key, "power-on sent");
    Ok(())
}

async fn wait_for(
    driver: &impl BmcDriver,
    wanted: PowerState,
    limit: Duration,
) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let power = driver.power_state().await?;
        if power == wanted {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::Other {
                message: format!(
                    "node did not reach {wanted} within {} s (reads {power})",
                    limit.as_secs()
                ),
                retryable: true,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn succeeded(step: &DriverStep, summary: &str) -> Outcome {
    Outcome::Succeeded {
        summary: format!("{summary} ({} via {})", step.node_name, step.bmc.driver),
        payload: json!({
            "node": step.node_name,
            "bmc_url": step.bmc.url,
            "boot": {"target": "Pxe", "persistence": "Once"},
            "power_state": "On",
        }),
    }
}
