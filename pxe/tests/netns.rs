//! End-to-end tests against real DHCP and TFTP clients. Needs root.
//!
//! Each test creates two network namespaces joined by a veth pair, runs
//! [`DhcpServer`] and [`TftpServer`] in the server namespace through
//! [`SocketFactory::for_namespace`], and runs busybox `udhcpc`, tftp-hpa
//! `tftp` and `atftp` in the client namespace. A guard deletes both
//! namespaces when the test ends, also when it fails. Every external command
//! runs under `timeout(1)`. The clients come from the Debian packages listed
//! in `tests/peers/packages/pxe.list`.
//!
//! `dhcp_peers` adds tests against other real DHCP software: dnsmasq as the
//! site's DHCP server beside our proxyDHCP, ISC dhcrelay, perfdhcp and a
//! qemu iPXE netboot client.

#[path = "netns/dhcp_peers.rs"]
mod dhcp_peers;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rackhand_pxe::MacAddr;
use rackhand_pxe::dhcp::{
    BootFiles, DECLINE_QUARANTINE, DhcpConfig, DhcpMode, DhcpServer, KnownMacs, LeaseState,
    LeaseStore,
};
use rackhand_pxe::netns::{SocketFactory, UdpOptions};
use rackhand_pxe::tftp::{TftpOptions, TftpServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const KNOWN_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]);
const UNKNOWN_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x99, 0x99, 0x99]);
/// Size of the file fetched over TFTP: several MB, and not a multiple of
/// any block size used here.
const BIG_FILE_LEN: usize = 5 * 1024 * 1024 + 123;

/// Two namespaces joined by a veth pair, deleted on drop.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    /// Third octet of the lab's 10.213.X.0/24 network.
    subnet: u8,
}

impl Lab {
    fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names are limited to 15 bytes; a PID has at most 7 digits.
        let lab = Self {
            server_ns: format!("rh-pxe-s-{pid}-{n}"),
            client_ns: format!("rh-pxe-c-{pid}-{n}"),
            server_if: format!("rhs{pid}n{n}"),
            client_if: format!("rhc{pid}n{n}"),
            subnet: (pid % 200) as u8 + n as u8,
        };

        ip(&["netns", "add", &lab.server_ns]);
        ip(&["netns", "add", &lab.client_ns]);
        // Both ends are created inside the namespaces, never in the host's.
        ip(&[
            "link",
            "add",
            &lab.server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ]);
        let server_cidr = format!("{}/24", lab.server_ip());
        ip(&[
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            &server_cidr,
            "dev",
            &lab.server_if,
        ]);
        let mac = KNOWN_MAC.to_string();
        ip(&[
            "-n",
            &lab.client_ns,
            "link",
            "set",
            &lab.client_if,
            "address",
            &mac,
        ]);
        for (namespace, interface) in [
            (&lab.server_ns, &lab.server_if),
            (&lab.client_ns, &lab.client_if),
        ] {
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
            ip(&["-n", namespace, "link", "set", interface, "up"]);
        }
        lab
    }

    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, last)
    }

    fn server_ip(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// Gives the client end a static address, for the TFTP clients.
    fn configure_client_address(&self) {
        let cidr = format!("{}/24", self.address(2));
        ip(&[
            "-n",
            &self.client_ns,
            "addr",
            "add",
            &cidr,
            "dev",
            &self.client_if,
        ]);
    }

    fn set_client_mac(&self, mac: MacAddr) {
        let mac = mac.to_string();
        ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            &self.client_if,
            "down",
        ]);
        ip(&[
            "-n",
            &self.client_ns,
            "link",
            "set",
            &self.client_if,
            "address",
            &mac,
        ]);
        ip(&["-n", &self.client_ns, "link", "set", &self.client_if, "up"]);
    }

    /// Runs `command` in the client namespace under `timeout(1)`.
    async fn run_client(&self, seconds: u32, command: &[&str]) -> Output {
        let mut process = tokio::process::Command::new("ip");
        process
            .args([
                "netns",
                "exec",
                &self.client_ns,
                "timeout",
                &seconds.to_string(),
            ])
            .args(command)
            .kill_on_drop(true);
        let limit = Duration::from_secs(u64::from(seconds) + 10);
        tokio::time::timeout(limit, process.output())
            .await
            .unwrap_or_else(|_| panic!("{command:?} outlived its timeout"))
            .unwrap_or_else(|error| panic!("{command:?} could not start: {error}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for namespace in [&self.client_ns, &self.server_ns] {
            let _ = std::process::Command::new("timeout")
                .args(["10", "ip", "netns", "delete", namespace])
                .output();
        }
    }
}

fn ip(args: &[&str]) {
    let output = std::process::Command::new("timeout")
        .arg("10")
        .arg("ip")
        .args(args)
        .output()
        .expect("timeout(1) and ip(8) are installed");
    assert!(
        output.status.success(),
        "ip {} failed (this test needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The DHCP and TFTP servers of one lab, stopped by [`Servers::stop`].
struct Servers {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    leases: LeaseStore,
    tftp_root: PathBuf,
    _directory: tempfile::TempDir,
}

impl Servers {
    fn start(lab: &Lab) -> Self {
        Self::start_with(lab, dhcp_config(lab), &[])
    }

    /// Starts the servers with `config`, knowing `KNOWN_MAC` (with its
    /// reservation) and `other_macs`.
    fn start_with(lab: &Lab, config: DhcpConfig, other_macs: &[MacAddr]) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let tftp_root = directory.path().join("tftp");
        std::fs::create_dir(&tftp_root).expect("create TFTP root");
        std::fs::write(directory.path().join("secret"), b"outside the root").expect("write secret");

        let factory = SocketFactory::for_namespace(&lab.server_ns).expect("server namespace");
        let leases = LeaseStore::open(directory.path().join("leases.json")).expect("lease store");
        leases
            .reserve(KNOWN_MAC, lab.address(50))
            .expect("reservation of a free address");

        let dhcp_socket = factory
            .udp(
                SocketAddr::from(([0, 0, 0, 0], 67)),
                UdpOptions {
                    broadcast: true,
                    reuse_addr: true,
                    bind_device: Some(lab.server_if.clone()),
                },
            )
            .expect("DHCP socket in the server namespace");
        let known: KnownMacs = [KNOWN_MAC]
            .into_iter()
            .chain(other_macs.iter().copied())
            .collect();
        let dhcp = DhcpServer::new(config, known, leases.clone(), dhcp_socket)
            .expect("valid DHCP config")
            .with_ping_factory(factory.clone());

        let tftp_socket = factory
            .udp(
                SocketAddr::from((lab.server_ip(), 69)),
                UdpOptions::default(),
            )
            .expect("TFTP socket in the server namespace");
        let tftp = TftpServer::new(
            tftp_root.clone(),
            tftp_socket,
            factory,
            TftpOptions::default(),
        )
        .expect("valid TFTP root");

        let shutdown = CancellationToken::new();
        let dhcp_shutdown = shutdown.clone();
        let tftp_shutdown = shutdown.clone();
        let tasks = vec![
            tokio::spawn(async move { dhcp.run(dhcp_shutdown).await.map_err(|e| e.to_string()) }),
            tokio::spawn(async move { tftp.run(tftp_shutdown).await.map_err(|e| e.to_string()) }),
        ];
        Self {
            shutdown,
            tasks,
            leases,
            tftp_root,
            _directory: directory,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task does not panic");
            assert_eq!(result, Ok(()));
        }
    }
}

fn dhcp_config(lab: &Lab) -> DhcpConfig {
    DhcpConfig {
        server_ip: lab.server_ip(),
        interface: Some(lab.server_if.clone()),
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        pool_start: lab.address(100),
        pool_end: lab.address(199),
        router: None,
        dns_servers: Vec::new(),
        lease_time: Duration::from_secs(600),
        boot: BootFiles {
            tftp_server: lab.server_ip(),
            bios: "undionly.kpxe".to_string(),
            uefi_x64: "snponly.efi".to_string(),
            uefi_arm64: None,
            http_x64: None,
            http_ia32: None,
            http_arm64: None,
            ipxe_script_url: format!("http://{}:8080/boot/{{mac}}.ipxe", lab.server_ip()),
        },
        mode: DhcpMode::Full,
        relay_subnets: Vec::new(),
        discovery_pool: None,
        decline_quarantine: DECLINE_QUARANTINE,
        ping_check: None,
        arp_check: None,
    }
}

/// Writes a udhcpc script that appends the lease's fields to `log`.
fn udhcpc_script(directory: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;

    let script = directory.join("udhcpc.sh");
    let body = format!(
        "#!/bin/sh\necho \"$1 ip=$ip siaddr=$siaddr boot_file=$boot_file\" >> {}\n",
        log.display()
    );
    std::fs::write(&script, body).expect("write udhcpc script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make script executable");
    script
}

/// Runs one udhcpc exchange and returns its output and the "bound" line its
/// script logged, if any.
async fn udhcpc(lab: &Lab, extra: &[&str]) -> (Output, Option<String>) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let log = directory.path().join("lease.log");
    let script = udhcpc_script(directory.path(), &log);
    let script = script.to_str().expect("UTF-8 path");

    let mut command = vec![
        "busybox",
        "udhcpc",
        "-i",
        &lab.client_if,
        "-f",
        "-q",
        "-n",
        "-t",
        "3",
        "-T",
        "2",
        "-s",
        script,
    ];
    command.extend_from_slice(extra);
    let output = lab.run_client(30, &command).await;

    let bound = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("bound "))
        .map(str::to_string);
    (output, bound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_gets_reserved_address_without_boot_file() {
    let lab = Lab::create();
    let servers = Servers::start(&lab);

    let (output, bound) = udhcpc(&lab, &[]).await;

    assert!(output.status.success(), "{}", text(&output));
    let bound = bound.expect("udhcpc ran its script with a lease");
    assert!(
        bound.contains(&format!("ip={} ", lab.address(50))),
        "{bound}"
    );
    assert!(bound.ends_with("boot_file="), "{bound}");
    let lease = servers.leases.lease(&KNOWN_MAC).expect("lease recorded");
    assert_eq!(lease.state, LeaseState::Bound);
    // A second store reads the lease file and its journal as a restarted
    // server would.
    let saved = LeaseStore::open(servers.leases.path().expect("file store"))
        .expect("lease file readable")
        .lease(&KNOWN_MAC)
        .expect("lease saved");
    assert_eq!(saved.state, LeaseState::Bound);
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arp_check_skips_address_held_by_peer() {
    let lab = Lab::create();
    // The client's veth end holds the first pool address, so the kernel
    // there answers the server's ARP probe for it.
    let held = lab.address(100);
    let cidr = format!("{held}/24");
    ip(&[
        "-n",
        &lab.client_ns,
        "addr",
        "add",
        &cidr,
        "dev",
        &lab.client_if,
    ]);
    let unreserved = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x21]);
    lab.set_client_mac(unreserved);
    let config = DhcpConfig {
        arp_check: Some(Duration::from_millis(300)),
        ..dhcp_config(&lab)
    };
    let servers = Servers::start_with(&lab, config, &[unreserved]);

    let (output, bound) = udhcpc(&lab, &[]).await;

    assert!(output.status.success(), "{}", text(&output));
    let bound = bound.expect("udhcpc ran its script with a lease");
    assert!(
        bound.contains(&format!("ip={} ", lab.address(101))),
        "{bound}"
    );
    let lease = servers.leases.lease(&unreserved).expect("lease recorded");
    assert_ne!(lease.ip, held);
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_as_uefi_pxe_client_gets_snponly() {
    let lab = Lab::create();
    let servers = Servers::start(&lab);

    let (output, bound) = udhcpc(
        &lab,
        &["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007"],
    )
    .await;

    assert!(output.status.success(), "{}", text(&output));
    let bound = bound.expect("udhcpc ran its script with a lease");
    assert!(
        bound.contains(&format!("siaddr={} ", lab.server_ip())),
        "{bound}"
    );
    assert!(bound.ends_with("boot_file=snponly.efi"), "{bound}");
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_as_ipxe_gets_script_url() {
    let lab = Lab::create();
    let servers = Servers::start(&lab);

    // Option 77 (0x4d) carrying "iPXE".
    let (output, bound) = udhcpc(&lab, &["-x", "0x4d:69505845"]).await;

    assert!(output.status.success(), "{}", text(&output));
    let bound = bound.expect("udhcpc ran its script with a lease");
    let url = format!(
        "http://{}:8080/boot/52-54-00-62-00-10.ipxe",
        lab.server_ip()
    );
    assert!(bound.ends_with(&format!("boot_file={url}")), "{bound}");
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_with_unknown_mac_gets_no_answer() {
    let lab = Lab::create();
    lab.set_client_mac(UNKNOWN_MAC);
    let servers = Servers::start(&lab);

    let (output, bound) = udhcpc(&lab, &[]).await;

    assert!(!output.status.success(), "{}", text(&output));
    assert!(bound.is_none(), "{bound:?}");
    assert!(servers.leases.lease(&UNKNOWN_MAC).is_none());
    servers.stop().await;
}

/// Deterministic pseudo-random bytes (xorshift), so a misplaced block shows.
fn big_file() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BIG_FILE_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Starts a lab with servers and `big.bin` in the TFTP root.
fn tftp_lab() -> (Lab, Servers, Vec<u8>, tempfile::TempDir) {
    let lab = Lab::create();
    lab.configure_client_address();
    let servers = Servers::start(&lab);
    let content = big_file();
    std::fs::write(servers.tftp_root.join("big.bin"), &content).expect("write big file");
    let downloads = tempfile::tempdir().expect("temporary directory");
    (lab, servers, content, downloads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_fetches_big_file() {
    let (lab, servers, content, downloads) = tftp_lab();
    let target = downloads.path().join("hpa.bin");
    let server = lab.server_ip().to_string();
    let target_arg = target.to_str().expect("UTF-8 path");

    let output = lab
        .run_client(
            120,
            &[
                "tftp", "-m", "binary", &server, "-c", "get", "big.bin", target_arg,
            ],
        )
        .await;

    let fetched = std::fs::read(&target).unwrap_or_default();
    assert_eq!(fetched.len(), content.len(), "{}", text(&output));
    assert!(fetched == content, "downloaded bytes differ");
    servers.stop().await;
}

/// Returns the line of atftp's `--trace` output that shows the server's OACK,
/// such as `received OACK <blksize: 1468, >` (atftp 0.8.0).
fn oack_line(log: &str) -> &str {
    log.lines()
        .find(|line| line.contains("received OACK"))
        .unwrap_or_else(|| panic!("no OACK in atftp output:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_fetches_big_file_with_blksize() {
    let (lab, servers, content, downloads) = tftp_lab();
    let target = downloads.path().join("atftp.bin");
    let server = lab.server_ip().to_string();
    let target_arg = target.to_str().expect("UTF-8 path");

    let output = lab
        .run_client(
            120,
            &[
                "atftp",
                "--trace",
                "--option",
                "blksize 1468",
                "-g",
                "-r",
                "big.bin",
                "-l",
                target_arg,
                &server,
            ],
        )
        .await;

    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let oack = oack_line(&log);
    assert!(oack.contains("blksize: 1468"), "{oack}");
    let fetched = std::fs::read(&target).expect("downloaded file");
    assert!(fetched == content, "downloaded bytes differ");
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blksize_is_clamped_to_path_mtu() {
    let (lab, servers, content, downloads) = tftp_lab();
    // A link MTU of 1000 leaves 968 bytes of data per block.
    for (namespace, interface) in [
        (&lab.server_ns, &lab.server_if),
        (&lab.client_ns, &lab.client_if),
    ] {
        ip(&["-n", namespace, "link", "set", interface, "mtu", "1000"]);
    }
    let target = downloads.path().join("mtu.bin");
    let server = lab.server_ip().to_string();
    let target_arg = target.to_str().expect("UTF-8 path");

    let output = lab
        .run_client(
            120,
            &[
                "atftp",
                "--trace",
                "--option",
                "blksize 1468",
                "-g",
                "-r",
                "big.bin",
                "-l",
                target_arg,
                &server,
            ],
        )
        .await;

    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let oack = oack_line(&log);
    assert!(oack.contains("blksize: 968"), "{oack}");
    let fetched = std::fs::read(&target).expect("downloaded file");
    assert!(fetched == content, "downloaded bytes differ");
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_fetches_big_file_with_windowsize() {
    let (lab, servers, content, downloads) = tftp_lab();
    let target = downloads.path().join("window.bin");
    let server = lab.server_ip().to_string();
    let target_arg = target.to_str().expect("UTF-8 path");

    let output = lab
        .run_client(
            120,
            &[
                "atftp",
                "--trace",
                "--option",
                "blksize 1468",
                "--option",
                "windowsize 8",
                "-g",
                "-r",
                "big.bin",
                "-l",
                target_arg,
                &server,
            ],
        )
        .await;

    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let oack = oack_line(&log);
    assert!(oack.contains("blksize: 1468"), "{oack}");
    assert!(oack.contains("windowsize: 8"), "{oack}");
    let fetched = std::fs::read(&target).expect("downloaded file");
    assert!(fetched == content, "downloaded bytes differ");
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_parent_path_is_refused() {
    let (lab, servers, _content, downloads) = tftp_lab();
    let target = downloads.path().join("secret");
    let server = lab.server_ip().to_string();
    let target_arg = target.to_str().expect("UTF-8 path");

    let output = lab
        .run_client(
            30,
            &[
                "tftp",
                "-m",
                "binary",
                &server,
                "-c",
                "get",
                "../secret",
                target_arg,
            ],
        )
        .await;

    let log = text(&output);
    assert!(log.contains("Error code 2"), "{log}");
    let fetched = std::fs::read(&target).unwrap_or_default();
    assert!(fetched.is_empty(), "secret leaked: {fetched:?}");
    servers.stop().await;
}
