//! The `driver` step against the real sushy-tools Redfish emulator (fake
//! driver), whose power state changes only seconds after it accepts a reset.
//! The emulator's request log counts the power-ons the BMC received.

use std::time::Duration;

use rackhand_e2e::peers::Peer;
use rackhand_ironic_bridge::{BmcDriver, BmcEndpoint, DriverKind, connect};
use rackhand_protocol::agent::{BmcAccess, DriverStep, Outcome};
use rackhand_protocol::{MacAddr, Secret};
use rackhand_site_agent::driver_step::{self, DriverSettings};
use rackhand_site_agent::failpoint::Failpoints;
use rackhand_site_agent::state::State;

/// The peer comes before its state folder, so that it is stopped (by the
/// PID file in that folder) before the folder is removed.
struct Bench {
    peer: Peer,
    _dir: tempfile::TempDir,
    state: State,
    step: DriverStep,
}

async fn bench(power_delay: &str) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let peer = Peer::start(
        "redfish-bmc",
        &dir.path().join("peers"),
        &[
            ("REDFISH_SYSTEMS", "1"),
            ("REDFISH_POWER_DELAY", power_delay),
        ],
    )?;
    let state = State::open(&dir.path().join("agent")).await?;
    let mac: MacAddr = peer
        .var("REDFISH_SYSTEM_MACS")
        .split(',')
        .next()
        .unwrap_or_default()
        .parse()?;
    let step = DriverStep {
        node_id: 1,
        node_name: "node-1".into(),
        boot_mac: mac,
        bmc: BmcAccess {
            driver: "redfish".into(),
            url: peer.var("REDFISH_URL").to_string(),
            username: peer.var("REDFISH_USER").to_string(),
            password: Secret::new(peer.var("REDFISH_PASSWORD").to_string()),
            ca_pem: None,
            fingerprint: None,
        },
    };
    Ok(Bench {
        peer,
        _dir: dir,
        state,
        step,
    })
}

fn settings() -> DriverSettings {
    DriverSettings {
        bmc_timeout: Duration::from_secs(10),
        power_on_grace: Duration::from_secs(30),
        ironic: None,
    }
}

fn power_on_posts(peer: &Peer) -> anyhow::Result<usize> {
    let log = std::fs::read_to_string(peer.var("REDFISH_LOG"))?;
    Ok(log
        .lines()
        .filter(|l| l.contains("POST ") && l.contains("ComputerSystem.Reset"))
        .count())
}

#[tokio::test]
async fn power_on_is_sent_once_and_rerun_sends_nothing() -> anyhow::Result<()> {
    let bench = bench("3").await?;
    let failpoints = Failpoints::default();

    let first = driver_step::run(
        &bench.state,
        &failpoints,
        &settings(),
        "order-a/driver",
        &bench.step,
    )
    .await;
    assert!(matches!(first, Outcome::Succeeded { .. }), "{first:?}");
    let second = driver_step::run(
        &bench.state,
        &failpoints,
        &settings(),
        "order-a/driver",
        &bench.step,
    )
    .await;
    assert!(matches!(second, Outcome::Succeeded { .. }), "{second:?}");
    assert_eq!(power_on_posts(&bench.peer)?, 1);
    Ok(())
}

#[tokio::test]
async fn retry_after_crash_polls_instead_of_resending() -> anyhow::Result<()> {
    let bench = bench("4").await?;

    // What a crash right after sending leaves: the request is recorded and
    // the BMC accepted it, but still reports Off for a few seconds.
    bench
        .state
        .record_request("order-b/driver", "power_on")
        .await?;
    let endpoint = BmcEndpoint::from_access(&bench.step.bmc, "node-1")?;
    assert_eq!(endpoint.kind, DriverKind::Redfish);
    connect(endpoint)?.power_on().await?;

    let outcome = driver_step::run(
        &bench.state,
        &Failpoints::default(),
        &settings(),
        "order-b/driver",
        &bench.step,
    )
    .await;
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    assert_eq!(
        power_on_posts(&bench.peer)?,
        1,
        "the retry sent no second power-on"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_bmc_password_fails_without_retry_or_secret() -> anyhow::Result<()> {
    let mut bench = bench("1").await?;
    bench.step.bmc.password = Secret::new("Wrong-Planted-Password".into());
    let outcome = driver_step::run(
        &bench.state,
        &Failpoints::default(),
        &settings(),
        "order-c/driver",
        &bench.step,
    )
    .await;
    let Outcome::Failed {
        retryable, error, ..
    } = outcome
    else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(!retryable);
    assert!(!error.contains("Wrong-Planted-Password"), "{error}");
    assert!(
        error.contains("node-1"),
        "the error names the node: {error}"
    );
    assert_eq!(power_on_posts(&bench.peer)?, 0);
    Ok(())
}
