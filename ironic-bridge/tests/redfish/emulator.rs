//! The Redfish driver against a real Redfish service: sushy-tools
//! sushy-emulator with its fake driver, started by `tests/peers/redfish-bmc`.
//!
//! Each test starts its own emulator (about a second) with fresh systems that
//! are all powered off, so tests run in parallel without sharing state. The
//! emulator shows a power change one second after the reset
//! (`REDFISH_POWER_DELAY=1`); tests poll for it with a bound.

use std::path::Path;
use std::time::{Duration, Instant};

use rackhand_e2e::peers::Peer;
use rackhand_ironic_bridge::driver::DriverError;
use rackhand_ironic_bridge::redfish::RedfishDriver;
use rackhand_ironic_bridge::{
    BmcDriver, BmcEndpoint, BootOverride, BootPersistence, BootTarget, DriverKind, PowerState,
    connect,
};
use rackhand_protocol::hardware::SensorKind;
use rackhand_protocol::{MacAddr, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for a power change to show; the emulator needs about one
/// second, the rest is slack for a loaded test machine.
const POWER_CHANGE_LIMIT: Duration = Duration::from_secs(20);

const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A running emulator and the folder that contains its state. The peer field
/// comes first so that it stops before the folder is removed.
struct Bmc {
    peer: Peer,
    _state: tempfile::TempDir,
}

impl Bmc {
    fn start(tls: bool) -> Bmc {
        let state = tempfile::tempdir().expect("create a state folder");
        let tls = if tls { "1" } else { "0" };
        let peer = Peer::start(
            "redfish-bmc",
            state.path(),
            &[
                ("REDFISH_SYSTEMS", "2"),
                ("REDFISH_POWER_DELAY", "1"),
                ("REDFISH_TLS", tls),
            ],
        )
        .expect("start the redfish-bmc peer");
        Bmc {
            peer,
            _state: state,
        }
    }

    fn var(&self, key: &str) -> &str {
        self.peer.var(key)
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.var(key).split(',').map(str::to_string).collect()
    }

    fn system_url(&self, index: usize) -> String {
        let id = &self.list("REDFISH_SYSTEM_IDS")[index];
        format!("{}/redfish/v1/Systems/{id}", self.var("REDFISH_URL"))
    }

    fn mac(&self, index: usize) -> MacAddr {
        self.list("REDFISH_SYSTEM_MACS")[index]
            .parse()
            .expect("the peer prints valid MACs")
    }

    fn endpoint(&self, url: String) -> BmcEndpoint {
        BmcEndpoint {
            timeout: Duration::from_secs(10),
            ..BmcEndpoint::new(
                DriverKind::Redfish,
                url,
                self.var("REDFISH_USER"),
                Secret::new(self.var("REDFISH_PASSWORD").to_string()),
                "emulated-node",
            )
        }
    }

    /// Counts the emulator's log lines for `method` on `path`.
    fn requests(&self, method: &str, path: &str) -> usize {
        let log = std::fs::read_to_string(Path::new(self.var("REDFISH_LOG")))
            .expect("read the emulator's request log");
        let needle = format!("\"{method} {path} ");
        log.lines().filter(|line| line.contains(&needle)).count()
    }
}

/// Polls until the power state is `want` or [`POWER_CHANGE_LIMIT`] passes,
/// and returns the last state read.
async fn wait_for_power(driver: &impl BmcDriver, want: PowerState) -> PowerState {
    let deadline = Instant::now() + POWER_CHANGE_LIMIT;
    loop {
        let state = driver.power_state().await.expect("read power state");
        if state == want || Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test]
async fn discovery_by_mac_from_service_root() {
    let bmc = Bmc::start(false);
    let endpoint = BmcEndpoint {
        boot_mac: Some(bmc.mac(1)),
        ..bmc.endpoint(bmc.var("REDFISH_URL").to_string())
    };
    let driver = RedfishDriver::new(endpoint).expect("valid endpoint");

    let system = driver.system_url().await.expect("discover the system");

    assert_eq!(system.as_str(), bmc.system_url(1));
    assert_eq!(
        driver.boot_macs().await.expect("read MACs"),
        vec![bmc.mac(1)]
    );
}

#[tokio::test]
async fn fresh_system_reads_off() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");

    let state = driver.power_state().await.expect("read power state");

    assert_eq!(state, PowerState::Off);
}

#[tokio::test]
async fn system_name_url_follows_redirect() {
    let bmc = Bmc::start(false);
    let name = &bmc.list("REDFISH_SYSTEM_NAMES")[0];
    let url = format!("{}/redfish/v1/Systems/{name}", bmc.var("REDFISH_URL"));
    let driver = connect(bmc.endpoint(url)).expect("connect");

    // sushy-tools redirects a system name to its UUID path with a 307.
    let state = driver.power_state().await.expect("read power state");

    assert_eq!(state, PowerState::Off);
}

#[tokio::test]
async fn pxe_boot_once_is_stored() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");

    driver
        .set_next_boot(BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: None,
        })
        .await
        .expect("set next boot");

    // Read back through a plain client: the driver has no getter for it.
    // reqwest is built without a default crypto provider, so install ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let system: serde_json::Value = reqwest::Client::new()
        .get(bmc.system_url(0))
        .basic_auth(bmc.var("REDFISH_USER"), Some(bmc.var("REDFISH_PASSWORD")))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("GET the system")
        .json()
        .await
        .expect("system JSON");
    // The emulator stores the target but ignores BootSourceOverrideEnabled.
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe");
    let path = bmc.system_url(0).replace(bmc.var("REDFISH_URL"), "");
    assert_eq!(bmc.requests("PATCH", &path), 1);
}

#[tokio::test]
async fn power_cycle_polls_until_changed() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");
    let reset_path = format!(
        "{}/Actions/ComputerSystem.Reset",
        bmc.system_url(0).replace(bmc.var("REDFISH_URL"), "")
    );

    driver.power_on().await.expect("power on");
    assert_eq!(
        wait_for_power(&driver, PowerState::On).await,
        PowerState::On
    );

    // A retried power-on finds the node on and sends no second reset.
    driver.power_on().await.expect("power on again");
    assert_eq!(bmc.requests("POST", &reset_path), 1);

    driver.power_off(false).await.expect("graceful power off");
    assert_eq!(
        wait_for_power(&driver, PowerState::Off).await,
        PowerState::Off
    );

    driver.power_on().await.expect("power on");
    assert_eq!(
        wait_for_power(&driver, PowerState::On).await,
        PowerState::On
    );
    driver.power_off(true).await.expect("forced power off");
    assert_eq!(
        wait_for_power(&driver, PowerState::Off).await,
        PowerState::Off
    );
    assert_eq!(bmc.requests("POST", &reset_path), 4);
}

#[tokio::test]
async fn wrong_password_is_authentication_error() {
    let bmc = Bmc::start(false);
    let wrong = "wrong-pw-4711";
    let endpoint = BmcEndpoint {
        password: Secret::new(wrong.to_string()),
        ..bmc.endpoint(bmc.system_url(0))
    };
    let driver = connect(endpoint).expect("connect");

    let error = driver.power_state().await.expect_err("wrong password");

    assert!(
        matches!(&error, DriverError::Authentication { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let texts = [error.to_string(), format!("{error:?}")];
    for text in texts {
        assert!(!text.contains(wrong), "password leaked: {text}");
        assert!(text.contains("emulated-node"), "node missing: {text}");
    }
}

#[tokio::test]
async fn unknown_system_is_http_404() {
    let bmc = Bmc::start(false);
    let url = format!(
        "{}/redfish/v1/Systems/no-such-system",
        bmc.var("REDFISH_URL")
    );
    let driver = connect(bmc.endpoint(url.clone())).expect("connect");

    let error = driver.power_state().await.expect_err("unknown system");

    let DriverError::Http {
        status, message, ..
    } = &error
    else {
        panic!("expected Http, got {error:?}");
    };
    assert_eq!(*status, 404);
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("no-such-system")),
        "{message:?}"
    );
    assert!(error.to_string().contains(&url), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn https_with_endpoint_ca_is_trusted() {
    let bmc = Bmc::start(true);
    let ca_pem = std::fs::read_to_string(bmc.var("REDFISH_CA_CERT")).expect("read the peer's CA");
    let trusted = BmcEndpoint {
        ca_pem: Some(ca_pem),
        ..bmc.endpoint(bmc.system_url(0))
    };

    let state = connect(trusted)
        .expect("connect")
        .power_state()
        .await
        .expect("power state over HTTPS");
    assert_eq!(state, PowerState::Off);

    let untrusted = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");
    let error = untrusted.power_state().await.expect_err("unknown CA");
    // A rejected certificate is permanent, not a connection failure.
    assert!(
        matches!(&error, DriverError::TlsHandshake { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn foreign_mac_fails_before_power_on() {
    let bmc = Bmc::start(false);
    // System 0's URL with system 1's boot MAC: a node record pointing at
    // another machine's BMC.
    let endpoint = BmcEndpoint {
        boot_mac: Some(bmc.mac(1)),
        ..bmc.endpoint(bmc.system_url(0))
    };
    let driver = RedfishDriver::new(endpoint).expect("valid endpoint");

    let error = driver.power_on().await.expect_err("the MAC does not match");

    assert!(
        matches!(error, DriverError::SystemNotFound { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains(&bmc.mac(1).to_string()),
        "{error}"
    );
    assert_eq!(
        bmc.requests(
            "POST",
            &format!(
                "{}/Actions/ComputerSystem.Reset",
                bmc.system_url(0).trim_start_matches(bmc.var("REDFISH_URL"))
            )
        ),
        0
    );
}

#[tokio::test]
async fn system_url_with_its_own_mac_passes() {
    let bmc = Bmc::start(false);
    let endpoint = BmcEndpoint {
        boot_mac: Some(bmc.mac(0)),
        ..bmc.endpoint(bmc.system_url(0))
    };
    let driver = RedfishDriver::new(endpoint).expect("valid endpoint");

    let system = driver.system_url().await.expect("the MAC matches");

    assert_eq!(system.as_str(), bmc.system_url(0));
}

#[tokio::test]
async fn https_with_pinned_fingerprint_is_trusted() {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let bmc = Bmc::start(true);
    let pem = std::fs::read(bmc.var("REDFISH_CA_CERT")).expect("read the peer's certificate");
    let der = CertificateDer::from_pem_slice(&pem).expect("the peer writes one PEM certificate");
    let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()));
    let pinned = BmcEndpoint {
        fingerprint: Some(fingerprint),
        ..bmc.endpoint(bmc.system_url(0))
    };

    let state = connect(pinned)
        .expect("connect")
        .power_state()
        .await
        .expect("power state over HTTPS with the pinned certificate");
    assert_eq!(state, PowerState::Off);

    let other = BmcEndpoint {
        fingerprint: Some("00".repeat(32)),
        ..bmc.endpoint(bmc.system_url(0))
    };
    let error = connect(other)
        .expect("connect")
        .power_state()
        .await
        .expect_err("another fingerprint");
    assert!(
        matches!(&error, DriverError::TlsHandshake { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn virtual_media_insert_is_idempotent_and_ejects() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");
    let (image, _server) = serve_image().await;
    let id = &bmc.list("REDFISH_SYSTEM_IDS")[0];
    let insert_path =
        format!("/redfish/v1/Systems/{id}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia");
    let eject_path =
        format!("/redfish/v1/Systems/{id}/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia");

    driver.insert_media(&image).await.expect("insert");
    driver.insert_media(&image).await.expect("insert again");

    assert_eq!(bmc.requests("POST", &insert_path), 1);

    driver.eject_media().await.expect("eject");
    driver.eject_media().await.expect("eject again");

    assert_eq!(bmc.requests("POST", &eject_path), 1);
}

#[tokio::test]
async fn inventory_lists_disks_and_nic() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");

    let inventory = driver.inventory().await.expect("inventory");

    // sushy-tools: static Storage 1 with Disk.0 (480 GB) and Disk.1 (1.92 TB).
    assert_eq!(inventory.disks.len(), 2);
    assert_eq!(inventory.nics.len(), 1);
    assert_eq!(inventory.nics[0].mac, Some(bmc.mac(0)));
    assert!(inventory.uuid.is_some(), "{inventory:?}");
}

#[tokio::test]
async fn sensors_read_emulated_thermal() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");

    let sensors = driver.sensors().await.expect("sensors");

    // sushy-tools 2.2.0's chassis has one CPU temperature per system, an
    // intake temperature and two fans, and no Power resource.
    let temperatures = sensors
        .readings
        .iter()
        .filter(|reading| reading.kind == SensorKind::Temperature)
        .count();
    let fans = sensors
        .readings
        .iter()
        .filter(|reading| reading.kind == SensorKind::Fan)
        .count();
    assert_eq!(temperatures, 3);
    assert_eq!(fans, 2);
}

#[tokio::test]
async fn reset_of_off_node_powers_it_on() {
    let bmc = Bmc::start(false);
    let driver = connect(bmc.endpoint(bmc.system_url(0))).expect("connect");

    driver.reset().await.expect("reset");

    assert_eq!(
        wait_for_power(&driver, PowerState::On).await,
        PowerState::On
    );
}

/// Serves a 4 KiB image on a loopback port for the emulator to download on
/// InsertMedia. Returns its URL and the task, which stops when dropped.
async fn serve_image() -> (String, AbortOnDrop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!(
        "http://{}/boot.iso",
        listener.local_addr().expect("listener has an address")
    );
    let task = tokio::spawn(async move {
        // The emulator downloads the image once per InsertMedia.
        for _ in 0..16 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let body = vec![0u8; 4096];
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        }
    });
    (url, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
