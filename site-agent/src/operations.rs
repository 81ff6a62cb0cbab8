//! Node operations: operators' requests about one node's BMC (inventory,
//! power, boot device, virtual media, sensors, console), claimed from the
//! control plane and carried out here, beside the BMCs.
//!
//! An operation runs once. Its result is reported a few times on transport
//! errors and then dropped: the control plane fails the operation when its
//! lease runs out, and the operator sees that. Unlike phase steps nothing is
//! kept across a restart, because an operation's caller waits for at most a
//! few minutes.

use std::sync::Arc;
use std::time::Duration;

use rackhand_ironic_bridge::{
    BmcDriver, BmcEndpoint, BootMode, BootOverride, BootPersistence, BootTarget, Console,
    DriverError, DriverKind, PowerState, connect,
};
use rackhand_protocol::agent::{NodeAction, Operation, OperationOutcome};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::client::ControlPlane;

/// Operations carried out at the same time. A choice: enough for an
/// operator adding a rack of nodes at once, few enough not to flood one
/// management network.
const CONCURRENCY: usize = 16;

/// Attempts at delivering one result.
const REPORT_ATTEMPTS: u32 = 5;

/// Claims and carries out node operations until `shutdown`.
pub async fn run(control_plane: ControlPlane, bmc_timeout: Duration, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut failures: u32 = 0;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let claimed = tokio::select! {
            claimed = control_plane.claim_operation() => claimed,
            _ = shutdown.cancelled() => return,
        };
        match claimed {
            Ok(Some(operation)) => {
                failures = 0;
                let control_plane = control_plane.clone();
                let span = tracing::info_span!(
                    "operation",
                    operation_id = operation.operation_id,
                    node = %operation.node_name,
                    action = operation.action.name()
                );
                tokio::spawn(
                    async move {
                        let _permit = permit;
                        let outcome = execute(&control_plane, &operation, bmc_timeout).await;
                        report(&control_plane, operation.operation_id, &outcome).await;
                    }
                    .instrument(span),
                );
            }
            Ok(None) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_secs(1 << failures.min(5));
                tracing::warn!(
                    error = format!("{error:#}"),
                    ?delay,
                    "claiming node operations failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn report(control_plane: &ControlPlane, operation_id: i64, outcome: &OperationOutcome) {
    for attempt in 1..=REPORT_ATTEMPTS {
        match control_plane.report_operation(operation_id, outcome).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(
                    attempt,
                    error = format!("{error:#}"),
                    "reporting a node operation failed"
                );
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(
        "gave up reporting the node operation; the control plane fails it when its lease ends"
    );
}

/// Carries out one operation, bounded by its lease.
pub async fn execute(
    control_plane: &ControlPlane,
    operation: &Operation,
    bmc_timeout: Duration,
) -> OperationOutcome {
    // Leave the report a margin inside the lease.
    let limit = Duration::from_secs(u64::from(operation.lease_seconds))
        .saturating_sub(Duration::from_secs(15))
        .max(Duration::from_secs(5));
    match tokio::time::timeout(limit, act(control_plane, operation, bmc_timeout)).await {
        Ok(Ok(result)) => {
            tracing::info!("node operation done");
            OperationOutcome::Succeeded { result }
        }
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "node operation failed");
            OperationOutcome::Failed {
                retryable: error.retryable,
                error: error.message,
            }
        }
        Err(_) => OperationOutcome::Failed {
            retryable: true,
            error: format!(
                "the BMC did not finish {} within {} s",
                operation.action.name(),
                limit.as_secs()
            ),
        },
    }
}

/// An operation's failure as the operator reads it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct ActionError {
    message: String,
    retryable: bool,
}

impl From<DriverError> for ActionError {
    fn from(error: DriverError) -> Self {
        ActionError {
            retryable: error.is_retryable(),
            message: error.to_string(),
        }
    }
}

fn invalid(message: String) -> ActionError {
    ActionError {
        message,
        retryable: false,
    }
}

async fn act(
    control_plane: &ControlPlane,
    operation: &Operation,
    bmc_timeout: Duration,
) -> Result<Value, ActionError> {
    let mut endpoint = BmcEndpoint::from_access(&operation.bmc, operation.node_name.clone())
        .map_err(|e| invalid(e.to_string()))?;
    endpoint.timeout = bmc_timeout;
    endpoint.boot_mac = operation.boot_mac;
    let driver = connect(endpoint)?;
    let result = match &operation.action {
        NodeAction::Inspect => json!({ "inventory": driver.inventory().await? }),
        NodeAction::PowerState => json!({ "power": driver.power_state().await?.to_string() }),
        // BMCs accept a power change seconds before they report it, so
        // each change waits for the requested state: a following request
        // then reads the state the operator asked for.
        NodeAction::PowerOn => {
            driver.power_on().await?;
            json!({ "power": wait_for_power(&driver, &PowerState::On).await?.to_string() })
        }
        NodeAction::PowerOff { force } => {
            driver.power_off(*force).await?;
            json!({ "power": wait_for_power(&driver, &PowerState::Off).await?.to_string() })
        }
        NodeAction::Reset => {
            driver.reset().await?;
            json!({ "power": wait_for_power(&driver, &PowerState::On).await?.to_string() })
        }
        NodeAction::SetBoot {
            target,
            persistent,
            mode,
        } => {
            let boot = boot_override(target, *persistent, mode.as_deref())?;
            driver.set_next_boot(boot).await?;
            json!({})
        }
        NodeAction::Sensors => json!({ "sensors": driver.sensors().await? }),
        NodeAction::InsertMedia { url } => {
            driver.insert_media(url).await?;
            json!({})
        }
        NodeAction::EjectMedia => {
            driver.eject_media().await?;
            json!({})
        }
        // Opening a Serial-over-LAN session only to describe it would take
        // the BMC's one SOL slot, so IPMI consoles are described unopened.
        NodeAction::Console if driver.kind() == DriverKind::Ipmi => {
            json!({ "console": { "protocol": "sol", "attach": true } })
        }
        NodeAction::Console => match driver.open_console().await? {
            Console::Remote {
                protocol,
                host,
                port,
            } => json!({ "console": { "protocol": protocol, "host": host, "port": port } }),
            Console::Stream(_) => json!({ "console": { "protocol": "stream", "attach": true } }),
            _ => {
                return Err(invalid(
                    "the driver returned a console kind this agent does not know".to_string(),
                ));
            }
        },
        NodeAction::ConsoleAttach => match driver.open_console().await? {
            Console::Stream(mut console) => {
                let mut upgraded = control_plane
                    .join_console(operation.operation_id)
                    .await
                    .map_err(|e| ActionError {
                        message: format!("{e:#}"),
                        retryable: true,
                    })?;
                tracing::info!("console session joined");
                let (to_console, to_operator) =
                    tokio::io::copy_bidirectional(&mut upgraded, &mut console)
                        .await
                        .unwrap_or((0, 0));
                json!({ "console": { "bytes_to_console": to_console, "bytes_to_operator": to_operator } })
            }
            Console::Remote {
                protocol,
                host,
                port,
            } => {
                return Err(invalid(format!(
                    "the BMC serves this console itself over {protocol} at {host}:{port}; connect there with the BMC credentials"
                )));
            }
            _ => {
                return Err(invalid(
                    "the driver returned a console kind this agent does not know".to_string(),
                ));
            }
        },
    };
    Ok(result)
}

/// Longest wait for a power change to show. A choice: an orderly shutdown
/// through the operating system can take minutes, and the wait must end
/// inside the operation's 180 s lease so the result still reaches the
/// control plane.
const POWER_WAIT: Duration = Duration::from_secs(150);

/// Polls the power state until it is `wanted`, failing after
/// [`POWER_WAIT`] with the state last read.
async fn wait_for_power(
    driver: &impl BmcDriver,
    wanted: &PowerState,
) -> Result<PowerState, ActionError> {
    let deadline = tokio::time::Instant::now() + POWER_WAIT;
    loop {
        let state = driver.power_state().await?;
        if &state == wanted {
            return Ok(state);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ActionError {
                message: format!(
                    "the BMC accepted the request, but node {} still reads {state} after {} s instead of {wanted}",
                    driver.node(),
                    POWER_WAIT.as_secs()
                ),
                retryable: true,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Builds the driver's boot override from the operation's words, which the
/// control plane has checked.
fn boot_override(
    target: &str,
    persistent: bool,
    mode: Option<&str>,
) -> Result<BootOverride, ActionError> {
    let target = match target {
        "pxe" => BootTarget::Pxe,
        "disk" => BootTarget::Disk,
        "cd" => BootTarget::Cd,
        "uefi_http" => BootTarget::UefiHttp,
        "bios_setup" => BootTarget::BiosSetup,
        other => return Err(invalid(format!("unknown boot target {other:?}"))),
    };
    let mode = match mode {
        None => None,
        Some("uefi") => Some(BootMode::Uefi),
        Some("legacy") => Some(BootMode::Legacy),
        Some(other) => return Err(invalid(format!("unknown boot mode {other:?}"))),
    };
    Ok(BootOverride {
        target,
        persistence: if persistent {
            BootPersistence::Continuous
        } else {
            BootPersistence::Once
        },
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_override_maps_words() {
        let boot = boot_override("uefi_http", true, Some("uefi")).expect("valid");
        assert_eq!(boot.target, BootTarget::UefiHttp);
        assert_eq!(boot.persistence, BootPersistence::Continuous);
        assert_eq!(boot.mode, Some(BootMode::Uefi));
        assert!(boot_override("floppy", false, None).is_err());
        assert!(boot_override("pxe", false, Some("efi")).is_err());
    }
}
