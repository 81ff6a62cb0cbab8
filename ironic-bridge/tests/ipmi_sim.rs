//! The IPMI driver against a real BMC: OpenIPMI's `ipmi_sim`, started by
//! `tests/peers/ipmi-bmc` with three sensors, a FRU and Serial-over-LAN, and
//! cross-checked with `ipmitool -I lanplus -C 3` against the same simulator.
//!
//! Each test starts its own simulator (about a second) on a free port, with
//! the power off and no boot device, so tests run in parallel.

use std::process::Command;
use std::time::{Duration, Instant};

use rackhand_e2e::peers::Peer;
use rackhand_ironic_bridge::driver::DriverError;
use rackhand_ironic_bridge::hardware::{Health, SensorKind};
use rackhand_ironic_bridge::ipmi::{CipherSuite, IpmiDriver};
use rackhand_ironic_bridge::{
    BmcDriver, BmcEndpoint, BootMode, BootOverride, BootPersistence, BootTarget, Console,
    DriverKind, PowerState,
};
use rackhand_protocol::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for ipmi_sim's power cycle (off, then on about 1 s later).
const POWER_CYCLE_LIMIT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A running simulator and the folder that contains its state. The peer
/// field comes first so that it stops before the folder is removed.
struct Bmc {
    peer: Peer,
    _state: tempfile::TempDir,
}

impl Bmc {
    fn start() -> Bmc {
        let state = tempfile::tempdir().expect("create a state folder");
        let peer = Peer::start("ipmi-bmc", state.path(), &[]).expect("start the ipmi-bmc peer");
        Bmc {
            peer,
            _state: state,
        }
    }

    fn var(&self, key: &str) -> &str {
        self.peer.var(key)
    }

    fn address(&self) -> String {
        format!("{}:{}", self.var("IPMI_HOST"), self.var("IPMI_PORT"))
    }

    fn endpoint_with(&self, query: &str, password: &str) -> BmcEndpoint {
        BmcEndpoint {
            timeout: Duration::from_secs(4),
            ..BmcEndpoint::new(
                DriverKind::Ipmi,
                format!("ipmi://{}{query}", self.address()),
                self.var("IPMI_USER"),
                Secret::new(password.to_string()),
                "node-ipmi",
            )
        }
    }

    fn driver(&self) -> IpmiDriver {
        let endpoint = self.endpoint_with("", self.var("IPMI_PASSWORD"));
        IpmiDriver::new(endpoint).expect("valid endpoint")
    }

    fn file(&self, key: &str) -> String {
        std::fs::read_to_string(self.var(key))
            .expect("read a peer state file")
            .trim()
            .to_string()
    }

    /// Runs `ipmitool -I lanplus -C 3` against the simulator.
    fn ipmitool(&self, args: &[&str]) -> String {
        let output = Command::new("timeout")
            .arg("20")
            .args(["ipmitool", "-I", "lanplus", "-C", "3", "-H"])
            .arg(self.var("IPMI_HOST"))
            .args(["-p", self.var("IPMI_PORT"), "-U", self.var("IPMI_USER")])
            .args(["-P", self.var("IPMI_PASSWORD")])
            .args(args)
            .output()
            .expect("run ipmitool");
        assert!(output.status.success(), "ipmitool {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn hook_log(&self) -> String {
        std::fs::read_to_string(self.var("IPMI_HOOK_LOG")).expect("read the hook log")
    }
}

/// Polls the power file until it reads `expected`, within `limit`.
async fn wait_for_power_file(bmc: &Bmc, expected: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while bmc.file("IPMI_POWER_FILE") != expected {
        assert!(
            Instant::now() < deadline,
            "power file did not read {expected} within {limit:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test]
async fn session_falls_back_to_suite_3() {
    let bmc = Bmc::start();
    let driver = bmc.driver();

    let state = driver.power_state().await.expect("read power state");

    assert_eq!(state, PowerState::Off);
    assert_eq!(driver.cipher_suite(), Some(CipherSuite::Suite3));
}

#[tokio::test]
async fn suite_17_rejection_names_the_suite() {
    let bmc = Bmc::start();
    let endpoint = bmc.endpoint_with("?cipher_suite=17", bmc.var("IPMI_PASSWORD"));
    let driver = IpmiDriver::new(endpoint).expect("valid endpoint");

    let error = driver
        .power_state()
        .await
        .expect_err("ipmi_sim has no suite 17");

    let message = error.to_string();
    assert!(
        matches!(error, DriverError::IpmiInvalidResponse { .. }),
        "{error:?}"
    );
    assert!(message.contains("cipher suite 17"), "{message}");
    assert!(message.contains(&bmc.address()), "{message}");
}

#[tokio::test]
async fn power_commands_change_state() {
    let bmc = Bmc::start();
    let driver = bmc.driver();

    driver.power_on().await.expect("power on");
    assert_eq!(bmc.file("IPMI_POWER_FILE"), "1");
    assert_eq!(driver.power_state().await.expect("state"), PowerState::On);

    let log_before = bmc.hook_log();
    driver.power_on().await.expect("power on again");
    assert_eq!(
        bmc.hook_log(),
        log_before,
        "a second power on sent a command"
    );

    driver.reset().await.expect("reset");
    assert!(bmc.hook_log().contains("set reset"), "{}", bmc.hook_log());
    assert_eq!(bmc.file("IPMI_POWER_FILE"), "1");

    driver.power_off(false).await.expect("soft off");
    assert!(
        bmc.hook_log().contains("set shutdown"),
        "{}",
        bmc.hook_log()
    );
    assert_eq!(bmc.file("IPMI_POWER_FILE"), "0");

    let log_before = bmc.hook_log();
    driver.power_off(true).await.expect("force off while off");
    assert_eq!(
        bmc.hook_log(),
        log_before,
        "power off of an off node sent a command"
    );

    driver.reset().await.expect("reset while off powers on");
    assert_eq!(bmc.file("IPMI_POWER_FILE"), "1");

    driver.power_off(true).await.expect("force off");
    assert_eq!(bmc.file("IPMI_POWER_FILE"), "0");
    assert_eq!(driver.power_state().await.expect("state"), PowerState::Off);
}

#[tokio::test]
async fn power_cycle_turns_power_off_then_on() {
    let bmc = Bmc::start();
    let driver = bmc.driver();
    driver.power_on().await.expect("power on");

    driver.power_cycle().await.expect("power cycle");

    assert!(bmc.hook_log().contains("set power 0"), "{}", bmc.hook_log());
    wait_for_power_file(&bmc, "1", POWER_CYCLE_LIMIT).await;
}

#[tokio::test]
async fn power_matches_ipmitool_both_ways() {
    let bmc = Bmc::start();
    let driver = bmc.driver();

    driver.power_on().await.expect("power on");
    assert!(
        bmc.ipmitool(&["chassis", "power", "status"])
            .contains("is on")
    );

    bmc.ipmitool(&["chassis", "power", "off"]);
    assert_eq!(driver.power_state().await.expect("state"), PowerState::Off);
}

#[tokio::test]
async fn boot_device_round_trips_with_ipmitool() {
    let bmc = Bmc::start();
    let driver = bmc.driver();

    let pxe = BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Legacy),
    };
    driver.set_next_boot(pxe).await.expect("set PXE");
    assert_eq!(bmc.file("IPMI_BOOT_FILE"), "pxe");
    assert!(
        bmc.ipmitool(&["chassis", "bootparam", "get", "5"])
            .contains("Force PXE")
    );

    for (target, stored) in [
        (BootTarget::Disk, "default"),
        (BootTarget::Cd, "cdrom"),
        (BootTarget::BiosSetup, "bios"),
    ] {
        let boot = BootOverride {
            target,
            persistence: BootPersistence::Continuous,
            mode: Some(BootMode::Uefi),
        };
        driver.set_next_boot(boot).await.expect("set boot device");
        assert_eq!(bmc.file("IPMI_BOOT_FILE"), stored, "{target:?}");
    }

    bmc.ipmitool(&["chassis", "bootdev", "pxe"]);
    assert_eq!(bmc.file("IPMI_BOOT_FILE"), "pxe");
}

#[tokio::test]
async fn uefi_http_boot_is_unsupported() {
    let bmc = Bmc::start();

    let error = bmc
        .driver()
        .set_next_boot(BootOverride::once(BootTarget::UefiHttp))
        .await
        .expect_err("IPMI has no HTTP boot device");

    assert!(
        matches!(error, DriverError::Unsupported { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn sensors_are_linearized_with_health() {
    let bmc = Bmc::start();

    let sensors = bmc.driver().sensors().await.expect("read sensors");

    let find = |name: &str| {
        sensors
            .readings
            .iter()
            .find(|reading| reading.name == name)
            .unwrap_or_else(|| panic!("no sensor {name} in {sensors:?}"))
    };
    let temperature = find("CPU Temp");
    assert_eq!(temperature.kind, SensorKind::Temperature);
    assert_eq!(temperature.value, Some(45.0));
    assert_eq!(temperature.unit.as_deref(), Some("Cel"));
    assert_eq!(temperature.health, Health::Ok);

    let fan = find("FAN1");
    assert_eq!(fan.kind, SensorKind::Fan);
    assert_eq!(fan.value, Some(480.0));
    assert_eq!(fan.health, Health::Warning);

    let voltage = find("12V");
    assert_eq!(voltage.kind, SensorKind::Voltage);
    let volts = voltage.value.expect("a voltage reading");
    assert!((volts - 12.0).abs() < 1e-9, "{volts}");
    assert_eq!(voltage.health, Health::Ok);

    assert_eq!(sensors.readings.len(), 3);
    assert_eq!(sensors.health, Health::Warning);
}

#[tokio::test]
async fn inventory_reads_fru_and_firmware() {
    let bmc = Bmc::start();

    let inventory = bmc.driver().inventory().await.expect("read inventory");

    let fru = bmc.ipmitool(&["fru", "print", "0"]);
    let serial = bmc.var("IPMI_SERIAL_NUMBER");
    assert!(fru.contains(serial), "{fru}");
    assert_eq!(inventory.serial_number.as_deref(), Some(serial));
    assert_eq!(inventory.manufacturer.as_deref(), Some("Rackhand Lab"));
    assert_eq!(inventory.model.as_deref(), Some("Sim Server 1000"));

    let mc = bmc.ipmitool(&["mc", "info"]);
    assert_eq!(inventory.firmware.len(), 1);
    let version = &inventory.firmware[0].version;
    assert!(
        mc.contains(&format!("Firmware Revision         : {version}")),
        "{mc}"
    );
}

#[tokio::test]
async fn boot_macs_are_unsupported() {
    let bmc = Bmc::start();

    let error = bmc
        .driver()
        .boot_macs()
        .await
        .expect_err("IPMI lists no MACs");

    assert!(
        matches!(error, DriverError::Unsupported { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn console_carries_text_both_ways() {
    let bmc = Bmc::start();
    let driver = bmc.driver();
    let serial_address = format!("{}:{}", bmc.var("IPMI_HOST"), bmc.var("IPMI_SERIAL_PORT"));
    let mut host = tokio::net::TcpStream::connect(&serial_address)
        .await
        .expect("connect to the host side of the serial port");

    let Console::Stream(mut console) = driver.open_console().await.expect("open console") else {
        panic!("the IPMI console is a stream");
    };

    host.write_all(b"login: ").await.expect("host writes");
    let mut received = Vec::new();
    let mut buffer = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !received.ends_with(b"login: ") {
        assert!(Instant::now() < deadline, "console got only {received:?}");
        let read = tokio::time::timeout(Duration::from_secs(10), console.read(&mut buffer))
            .await
            .expect("console output in time")
            .expect("console read");
        assert!(read > 0, "console closed after {received:?}");
        received.extend_from_slice(&buffer[..read]);
    }

    console.write_all(b"root\r").await.expect("console writes");
    let mut typed = Vec::new();
    while !typed.ends_with(b"root\r") {
        assert!(Instant::now() < deadline, "host got only {typed:?}");
        let read = tokio::time::timeout(Duration::from_secs(10), host.read(&mut buffer))
            .await
            .expect("keystrokes in time")
            .expect("host read");
        assert!(read > 0, "serial port closed after {typed:?}");
        typed.extend_from_slice(&buffer[..read]);
    }

    // Dropping the stream deactivates SOL, so a second console opens.
    drop(console);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = driver.open_console().await.expect("open console again");
    drop(second);
}

#[tokio::test]
async fn second_console_names_the_active_session() {
    let bmc = Bmc::start();
    let driver = bmc.driver();
    let first = driver.open_console().await.expect("open console");
    let error = driver
        .open_console()
        .await
        .expect_err("SOL is already active");
    assert!(
        error
            .to_string()
            .contains("already active in another session"),
        "{error}"
    );
    drop(first);
}

#[tokio::test]
async fn wrong_password_names_user_and_address() {
    let bmc = Bmc::start();
    let endpoint = bmc.endpoint_with("", "wrong-secret-7");
    let driver = IpmiDriver::new(endpoint).expect("valid endpoint");

    let error = driver.power_state().await.expect_err("wrong password");

    let message = error.to_string();
    assert!(
        matches!(error, DriverError::IpmiAuthentication { .. }),
        "{error:?}"
    );
    assert!(message.contains("\"admin\""), "{message}");
    assert!(message.contains(&bmc.address()), "{message}");
    assert!(message.contains("node-ipmi"), "{message}");
    assert!(!message.contains("wrong-secret-7"), "{message}");
    assert!(!format!("{error:?}").contains("wrong-secret-7"));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn presence_ping_reports_ipmi() {
    let bmc = Bmc::start();

    let supported = bmc.driver().presence_ping().await.expect("pong");

    assert!(supported);
}

/// A UDP socket on loopback that answers every datagram with `reply`.
async fn fake_bmc(reply: Vec<u8>) -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback socket");
    let address = socket.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        // Bounded: the driver sends at most 4 attempts per request.
        for _ in 0..16 {
            let Ok((_, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let _ = socket.send_to(&reply, from).await;
        }
    });
    address
}

fn driver_for(address: std::net::SocketAddr) -> IpmiDriver {
    let endpoint = BmcEndpoint {
        timeout: Duration::from_millis(800),
        ..BmcEndpoint::new(
            DriverKind::Ipmi,
            format!("ipmi://{address}"),
            "admin",
            Secret::new("password".to_string()),
            "node-fake",
        )
    };
    IpmiDriver::new(endpoint).expect("valid endpoint")
}

#[tokio::test]
async fn garbage_reply_is_invalid_response() {
    let address = fake_bmc(b"HTTP/1.1 400 Bad Request\r\n".to_vec()).await;

    let error = driver_for(address)
        .power_state()
        .await
        .expect_err("garbage is not IPMI");

    let message = error.to_string();
    assert!(
        matches!(error, DriverError::IpmiInvalidResponse { .. }),
        "{error:?}"
    );
    assert!(message.contains("not an RMCP packet"), "{message}");
    assert!(message.contains(&address.to_string()), "{message}");
    assert!(message.contains("node-fake"), "{message}");
}

#[tokio::test]
async fn short_reply_is_invalid_response() {
    let address = fake_bmc(vec![0x06, 0x00, 0xFF, 0x07, 0x00, 0x00]).await;

    let error = driver_for(address)
        .power_state()
        .await
        .expect_err("a short packet is not a response");

    assert!(
        matches!(error, DriverError::IpmiInvalidResponse { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("too short"), "{error}");
}

#[tokio::test]
async fn silent_bmc_times_out_after_retries() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
    let address = socket.local_addr().expect("local address");

    let error = driver_for(address)
        .power_state()
        .await
        .expect_err("nothing answers");

    assert!(
        matches!(error, DriverError::IpmiTimeout { attempts: 4, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    drop(socket);
}
