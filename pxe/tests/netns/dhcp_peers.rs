//! DHCP against other real DHCP software, in network namespaces that each
//! test creates and deletes. dnsmasq is the site's existing DHCP server
//! beside our proxyDHCP, with a qemu iPXE client. ISC dhcrelay sits between
//! a client and our server. perfdhcp (Kea 2.2) checks protocol conformance.
//!
//! Every external command runs under `timeout(1)`, and every process a test
//! starts is killed by its PID when the test ends.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rackhand_pxe::MacAddr;
use rackhand_pxe::dhcp::{
    AddressRange, DhcpConfig, DhcpMode, DhcpServer, KnownMacs, LeaseStore, PXE_PORT, RelaySubnet,
};
use rackhand_pxe::netns::{SocketFactory, UdpOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{KNOWN_MAC, ip, text};

/// MAC of the client bridge in the proxyDHCP lab, which is not a site node.
const BRIDGE_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x77]);

/// Network namespaces of one test, deleted on drop.
struct Namespaces {
    names: Vec<String>,
    /// Number that makes names and subnets unique per test in this process.
    id: u32,
}

impl Namespaces {
    fn create(roles: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let names: Vec<String> = roles
            .iter()
            .map(|role| format!("rh-dh-{role}-{pid}-{n}"))
            .collect();
        for name in &names {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        Self {
            names,
            id: (pid % 100) * 2 + n,
        }
    }

    fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Third octet of the test's subnets: 10.215.X.0/24 and 10.216.X.0/24.
    fn octet(&self) -> u8 {
        (self.id % 250) as u8
    }

    /// Interface name unique to this test; at most 15 bytes.
    fn interface(&self, role: &str) -> String {
        format!("{role}{}x{}", std::process::id() % 100_000, self.id)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("timeout")
                .args(["10", "ip", "netns", "delete", name])
                .output();
        }
    }
}

/// Creates a veth pair with one end in each namespace, both up.
fn veth(ns_a: &str, if_a: &str, ns_b: &str, if_b: &str) {
    ip(&[
        "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
    ]);
    ip(&["-n", ns_a, "link", "set", if_a, "up"]);
    ip(&["-n", ns_b, "link", "set", if_b, "up"]);
}

fn address(ns: &str, interface: &str, cidr: &str) {
    ip(&["-n", ns, "addr", "add", cidr, "dev", interface]);
}

/// A process started in a namespace, killed by PID on drop.
struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn start(name: &'static str, ns: &str, seconds: u32, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "timeout", &seconds.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{name} could not start: {error}"));
        Self { child, name }
    }

    /// Panics with `log` when the process has already exited.
    fn assert_running(&mut self, log: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}:\n{log}", self.name);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM to `timeout(1)`, which forwards it to its child. A SIGKILL
        // would end `timeout` alone and leave the child running.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).output();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `args` in `ns` under `timeout(1)` and returns its output.
async fn run_in(ns: &str, seconds: u32, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", ns, "timeout", &seconds.to_string()])
        .args(args)
        .kill_on_drop(true);
    let limit = Duration::from_secs(u64::from(seconds) + 10);
    tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} outlived its timeout"))
        .unwrap_or_else(|error| panic!("{args:?} could not start: {error}"))
}

/// Our DHCP server running in a namespace.
struct Server {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), String>>,
    leases: LeaseStore,
    _directory: tempfile::TempDir,
}

impl Server {
    fn start(ns: &str, interface: &str, config: DhcpConfig, known: KnownMacs) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let factory = SocketFactory::for_namespace(ns).expect("server namespace");
        let leases = LeaseStore::open(directory.path().join("leases.json")).expect("lease store");
        let options = UdpOptions {
            broadcast: true,
            reuse_addr: true,
            bind_device: Some(interface.to_string()),
        };
        let socket = factory
            .udp(SocketAddr::from(([0, 0, 0, 0], 67)), options.clone())
            .expect("DHCP socket");
        let proxy = config.mode == DhcpMode::Proxy;
        let mut server = DhcpServer::new(config, known, leases.clone(), socket)
            .expect("valid DHCP config")
            .with_ping_factory(factory.clone());
        if proxy {
            let pxe = factory
                .udp(SocketAddr::from(([0, 0, 0, 0], PXE_PORT)), options)
                .expect("proxyDHCP socket");
            server = server.with_pxe_socket(pxe).expect("usable socket");
        }

        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { server.run(token).await.map_err(|e| e.to_string()) });
        Self {
            shutdown,
            task,
            leases,
            _directory: directory,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task does not panic");
        assert_eq!(result, Ok(()));
    }
}

fn base_config(server_ip: Ipv4Addr, interface: &str, http_port: u16) -> DhcpConfig {
    let [a, b, c, _] = server_ip.octets();
    let host = |last| Ipv4Addr::new(a, b, c, last);
    DhcpConfig {
        mode: DhcpMode::Full,
        server_ip,
        interface: Some(interface.to_string()),
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        pool_start: host(100),
        pool_end: host(149),
        router: None,
        dns_servers: Vec::new(),
        lease_time: Duration::from_secs(600),
        boot: rackhand_pxe::dhcp::BootFiles {
            tftp_server: server_ip,
            bios: "undionly.kpxe".to_string(),
            uefi_x64: "snponly.efi".to_string(),
            uefi_arm64: None,
            http_x64: None,
            http_ia32: None,
            http_arm64: None,
            ipxe_script_url: format!("http://{server_ip}:{http_port}/boot/{{mac}}.ipxe"),
        },
        relay_subnets: Vec::new(),
        discovery_pool: None,
        decline_quarantine: Duration::from_secs(600),
        ping_check: None,
        arp_check: None,
    }
}

/// Writes a udhcpc script that appends the lease's fields to `log`.
fn udhcpc_script(directory: &Path, log: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;

    let script = directory.join("udhcpc.sh");
    let body = format!(
        "#!/bin/sh\necho \"$1 ip=$ip router=$router siaddr=$siaddr boot_file=$boot_file\" >> {}\n",
        log.display()
    );
    std::fs::write(&script, body).expect("write udhcpc script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("make script executable");
    script.display().to_string()
}

/// Runs one udhcpc exchange on `interface` in `ns` and returns the "bound"
/// line its script logged.
async fn udhcpc(ns: &str, interface: &str) -> Option<String> {
    let directory = tempfile::tempdir().expect("temporary directory");
    let log = directory.path().join("lease.log");
    let script = udhcpc_script(directory.path(), &log);
    let output = run_in(
        ns,
        30,
        &[
            "busybox", "udhcpc", "-i", interface, "-f", "-q", "-n", "-t", "4", "-T", "2", "-s",
            &script,
        ],
    )
    .await;
    let bound = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("bound "))
        .map(str::to_string);
    assert!(bound.is_some(), "udhcpc got no lease: {}", text(&output));
    bound
}

/// Accepts HTTP requests on a listener in the server namespace and sends
/// each request line with its peer address to the returned channel. Replies
/// with an iPXE script that waits, so the client stays put until killed.
fn http_recorder(
    factory: &SocketFactory,
    address: Ipv4Addr,
) -> (u16, mpsc::Receiver<(SocketAddr, String)>) {
    let listener = factory
        .tcp_listener(SocketAddr::from((address, 0)))
        .expect("HTTP listener");
    let port = listener.local_addr().expect("bound listener").port();
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        // Ends when the test drops the receiver or after 16 connections.
        for _ in 0..16 {
            let Ok((mut stream, peer)) = listener.accept().await else {
                return;
            };
            let mut buffer = vec![0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
            let Ok(Ok(len)) = read else { continue };
            let request = String::from_utf8_lossy(&buffer[..len]);
            let line = request.lines().next().unwrap_or_default().to_string();
            let body = "#!ipxe\nsleep 300\n";
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            if sender.send((peer, line)).await.is_err() {
                return;
            }
        }
    });
    (port, receiver)
}

/// The proxyDHCP lab: our server's namespace and the site DHCP server's
/// (dnsmasq, addresses .150-.199 only) joined by a bridge in the client
/// namespace, where `tap0` takes a qemu VM.
struct ProxyLab {
    namespaces: Namespaces,
    net: String,
    server_ip: Ipv4Addr,
    srv_if: String,
    work: tempfile::TempDir,
    leases_file: std::path::PathBuf,
    dnsmasq_log: std::path::PathBuf,
    dnsmasq: Process,
}

impl ProxyLab {
    fn create() -> Self {
        let namespaces = Namespaces::create(&["srv", "site", "cli"]);
        let (srv, site, cli) = (namespaces.name(0), namespaces.name(1), namespaces.name(2));
        let net = format!("10.215.{}", namespaces.octet());
        let server_ip: Ipv4Addr = format!("{net}.1").parse().expect("address");
        let (srv_if, site_if) = (namespaces.interface("s"), namespaces.interface("d"));
        let (port_srv, port_site) = (namespaces.interface("ps"), namespaces.interface("pd"));
        veth(srv, &srv_if, cli, &port_srv);
        veth(site, &site_if, cli, &port_site);
        address(srv, &srv_if, &format!("{server_ip}/24"));
        address(site, &site_if, &format!("{net}.2/24"));
        ip(&[
            "-n",
            cli,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        ip(&[
            "-n",
            cli,
            "link",
            "set",
            "br0",
            "address",
            &BRIDGE_MAC.to_string(),
        ]);
        ip(&["-n", cli, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        for port in [port_srv.as_str(), port_site.as_str(), "tap0"] {
            ip(&["-n", cli, "link", "set", port, "master", "br0"]);
            ip(&["-n", cli, "link", "set", port, "up"]);
        }
        ip(&["-n", cli, "link", "set", "br0", "up"]);

        // dnsmasq is the site's DHCP server: addresses only, no boot files.
        let work = tempfile::tempdir().expect("temporary directory");
        let leases_file = work.path().join("dnsmasq.leases");
        let dnsmasq_log = work.path().join("dnsmasq.log");
        let dnsmasq = Process::start(
            "dnsmasq",
            site,
            240,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                &format!("--interface={site_if}"),
                "--bind-interfaces",
                "--user=root",
                "--pid-file",
                &format!("--dhcp-range={net}.150,{net}.199,255.255.255.0,10m"),
                &format!("--dhcp-leasefile={}", leases_file.display()),
                "--log-dhcp",
                &format!("--log-facility={}", dnsmasq_log.display()),
            ],
        );
        Self {
            net,
            server_ip,
            srv_if,
            leases_file,
            dnsmasq_log,
            dnsmasq,
            work,
            namespaces,
        }
    }

    fn server_ns(&self) -> &str {
        self.namespaces.name(0)
    }

    fn client_ns(&self) -> &str {
        self.namespaces.name(2)
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(&self.dnsmasq_log).unwrap_or_default()
    }

    /// Returns whether `ip` lies in dnsmasq's range, .150 to .199.
    fn leased_by_dnsmasq(&self, ip: Ipv4Addr) -> bool {
        ip.to_string().starts_with(&format!("{}.", self.net))
            && (150..=199).contains(&ip.octets()[3])
    }

    /// Starts a qemu VM on `tap0` with the NIC MAC `KNOWN_MAC`, under TCG.
    fn qemu(&self, firmware: &[&str], nic_options: &str) -> Process {
        let serial = self.work.path().join("serial.log");
        let serial = format!("file:{}", serial.display());
        let nic = format!("virtio-net-pci,netdev=n0,mac={KNOWN_MAC}{nic_options}");
        let mut args = vec![
            "qemu-system-x86_64",
            "-machine",
            "pc,accel=tcg",
            "-m",
            "256",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-serial",
            &serial,
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            &nic,
        ];
        args.extend_from_slice(firmware);
        Process::start("qemu", self.client_ns(), 180, &args)
    }

    fn serial(&self) -> String {
        std::fs::read_to_string(self.work.path().join("serial.log")).unwrap_or_default()
    }
}

/// Starts our proxyDHCP server in the lab's server namespace.
fn start_proxy(lab: &ProxyLab, http_port: u16) -> Server {
    let config = DhcpConfig {
        mode: DhcpMode::Proxy,
        ..base_config(lab.server_ip, &lab.srv_if, http_port)
    };
    let known = [KNOWN_MAC].into_iter().collect();
    Server::start(lab.server_ns(), &lab.srv_if, config, known)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_beside_dnsmasq_boots_ipxe_with_both() {
    let mut lab = ProxyLab::create();
    let factory = SocketFactory::for_namespace(lab.server_ns()).expect("server namespace");
    let (http_port, mut requests) = http_recorder(&factory, lab.server_ip);
    let server = start_proxy(&lab, http_port);

    // A plain client gets dnsmasq's address and no boot file from us.
    let plain = udhcpc(lab.client_ns(), "br0")
        .await
        .expect("lease from dnsmasq");
    assert!(plain.contains(&format!("ip={}.1", lab.net)), "{plain}");
    assert!(plain.ends_with("boot_file="), "{plain}");
    let log = lab.dnsmasq_log();
    lab.dnsmasq.assert_running(&log);

    // The qemu NIC ROM is iPXE: it takes the address from dnsmasq and the
    // script URL from our proxy offer, then fetches the script.
    let _qemu = lab.qemu(&["-boot", "n"], "");
    let fetched = tokio::time::timeout(Duration::from_secs(150), requests.recv()).await;

    let (dnsmasq_text, serial_text) = (lab.dnsmasq_log(), lab.serial());
    let Ok(Some((peer, line))) = fetched else {
        panic!(
            "iPXE fetched no script within 150 s\ndnsmasq:\n{dnsmasq_text}\nserial:\n{serial_text}"
        );
    };
    assert_eq!(
        line, "GET /boot/52-54-00-62-00-10.ipxe HTTP/1.1",
        "{serial_text}"
    );
    let SocketAddr::V4(peer) = peer else {
        panic!("IPv6 peer {peer}");
    };
    assert!(
        lab.leased_by_dnsmasq(*peer.ip()),
        "script fetched from {peer}, not from dnsmasq's range\n{dnsmasq_text}"
    );
    let leased = std::fs::read_to_string(&lab.leases_file).unwrap_or_default();
    assert!(leased.contains(&KNOWN_MAC.to_string()), "{leased}");
    assert!(server.leases.leases().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_beside_dnsmasq_gives_ovmf_pxe_its_binary() {
    let lab = ProxyLab::create();
    // Stands in for the TFTP server: the first read request shows which file
    // the firmware took from our proxy replies, and from which address.
    let factory = SocketFactory::for_namespace(lab.server_ns()).expect("server namespace");
    let tftp = factory
        .udp(SocketAddr::from((lab.server_ip, 69)), UdpOptions::default())
        .expect("TFTP socket");
    let tftp = tokio::net::UdpSocket::from_std(tftp).expect("tokio socket");
    let server = start_proxy(&lab, 8080);

    let vars = lab.work.path().join("OVMF_VARS.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF is installed");
    let code = "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd";
    let vars = format!("if=pflash,format=raw,file={}", vars.display());
    // Without a NIC ROM, OVMF boots with its own EDK2 PXE client.
    let _qemu = lab.qemu(&["-drive", code, "-drive", &vars], ",romfile=");
    let mut buffer = [0u8; 1500];
    let received =
        tokio::time::timeout(Duration::from_secs(150), tftp.recv_from(&mut buffer)).await;

    let (dnsmasq_text, serial_text) = (lab.dnsmasq_log(), lab.serial());
    let Ok(Ok((len, SocketAddr::V4(peer)))) = received else {
        panic!(
            "OVMF sent no TFTP request within 150 s\ndnsmasq:\n{dnsmasq_text}\nserial:\n{serial_text}"
        );
    };
    let request = &buffer[..len];
    assert_eq!(&request[..2], &[0, 1], "not a read request: {request:?}");
    let name_end = request[2..]
        .iter()
        .position(|byte| *byte == 0)
        .map_or(len, |end| end + 2);
    assert_eq!(&request[2..name_end], b"snponly.efi");
    assert!(
        lab.leased_by_dnsmasq(*peer.ip()),
        "TFTP request from {peer}, not from dnsmasq's range\n{dnsmasq_text}"
    );
    assert!(server.leases.leases().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcrelay_path_leases_from_relay_subnet() {
    let namespaces = Namespaces::create(&["srv", "relay", "cli"]);
    let (srv, relay, cli) = (namespaces.name(0), namespaces.name(1), namespaces.name(2));
    let octet = namespaces.octet();
    let server_ip = Ipv4Addr::new(10, 215, octet, 1);
    let relay_up = Ipv4Addr::new(10, 215, octet, 2);
    let relay_down = Ipv4Addr::new(10, 216, octet, 1);
    let (srv_if, up_if) = (namespaces.interface("s"), namespaces.interface("u"));
    let (down_if, cli_if) = (namespaces.interface("d"), namespaces.interface("c"));
    veth(srv, &srv_if, relay, &up_if);
    veth(relay, &down_if, cli, &cli_if);
    address(srv, &srv_if, &format!("{server_ip}/24"));
    address(relay, &up_if, &format!("{relay_up}/24"));
    address(relay, &down_if, &format!("{relay_down}/24"));
    ip(&[
        "-n",
        srv,
        "route",
        "add",
        &format!("10.216.{octet}.0/24"),
        "via",
        &relay_up.to_string(),
    ]);
    ip(&[
        "-n",
        cli,
        "link",
        "set",
        &cli_if,
        "address",
        &KNOWN_MAC.to_string(),
    ]);

    let work = tempfile::tempdir().expect("temporary directory");
    let pid_file = work.path().join("dhcrelay.pid");
    let mut dhcrelay = Process::start(
        "dhcrelay",
        relay,
        120,
        &[
            "dhcrelay",
            "-d",
            "-4",
            "-a",
            "-pf",
            &pid_file.display().to_string(),
            "-id",
            &down_if,
            "-iu",
            &up_if,
            &server_ip.to_string(),
        ],
    );

    let mut config = base_config(server_ip, &srv_if, 8080);
    config.relay_subnets = vec![RelaySubnet {
        network: Ipv4Addr::new(10, 216, octet, 0),
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        pool: AddressRange {
            start: Ipv4Addr::new(10, 216, octet, 100),
            end: Ipv4Addr::new(10, 216, octet, 149),
        },
        router: Some(relay_down),
        dns_servers: Vec::new(),
    }];
    let server = Server::start(srv, &srv_if, config, [KNOWN_MAC].into_iter().collect());
    // dhcrelay opens its sockets after start-up; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    dhcrelay.assert_running("dhcrelay stopped before the client ran");

    let bound = udhcpc(cli, &cli_if).await.expect("lease through the relay");

    let expected = Ipv4Addr::new(10, 216, octet, 100);
    assert!(bound.contains(&format!("ip={expected} ")), "{bound}");
    assert!(bound.contains(&format!("router={relay_down} ")), "{bound}");
    let lease = server.leases.lease(&KNOWN_MAC).expect("lease recorded");
    assert_eq!(lease.ip, expected);
    server.stop().await;
}

/// Returns the number after `label` in the perfdhcp statistics block that
/// starts with `section`.
fn perfdhcp_count(output: &str, section: &str, label: &str) -> Option<u64> {
    let block = output
        .split("***Statistics for: ")
        .find(|block| block.starts_with(section))?;
    block
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfdhcp_exchanges_all_answered_with_unique_addresses() {
    let namespaces = Namespaces::create(&["srv", "cli"]);
    let (srv, cli) = (namespaces.name(0), namespaces.name(1));
    let octet = namespaces.octet();
    let server_ip = Ipv4Addr::new(10, 215, octet, 1);
    let (srv_if, cli_if) = (namespaces.interface("s"), namespaces.interface("c"));
    veth(srv, &srv_if, cli, &cli_if);
    address(srv, &srv_if, &format!("{server_ip}/24"));
    // perfdhcp acts as a relay: it sends from this address with giaddr set
    // to it, and our server replies to it by unicast on port 67.
    address(cli, &cli_if, &format!("10.215.{octet}.2/24"));

    // perfdhcp makes up its clients' MACs, so they are served from the
    // discovery pool for machines the site does not know.
    let mut config = base_config(server_ip, &srv_if, 8080);
    config.discovery_pool = Some(AddressRange {
        start: Ipv4Addr::new(10, 215, octet, 150),
        end: Ipv4Addr::new(10, 215, octet, 250),
    });
    let server = Server::start(srv, &srv_if, config, KnownMacs::new());

    let output = run_in(
        cli,
        60,
        &[
            "perfdhcp", "-4", "-l", &cli_if, "-r", "50", "-n", "100", "-R", "60", "-W", "2000000",
        ],
    )
    .await;

    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let report = text(&output);
    for section in ["DISCOVER-OFFER", "REQUEST-ACK"] {
        let sent = perfdhcp_count(&stdout, section, "sent packets:");
        let received = perfdhcp_count(&stdout, section, "received packets:");
        assert!(sent.is_some_and(|sent| sent > 0), "{section}: {report}");
        assert_eq!(sent, received, "{section}: {report}");
        assert_eq!(
            perfdhcp_count(&stdout, section, "non unique addresses:"),
            Some(0),
            "{section}: {report}"
        );
        assert_eq!(
            perfdhcp_count(&stdout, section, "rejected leases:"),
            Some(0),
            "{section}: {report}"
        );
    }
    let leases = server.leases.leases();
    let mut addresses: Vec<Ipv4Addr> = leases.iter().map(|lease| lease.ip).collect();
    addresses.dedup();
    assert_eq!(addresses.len(), leases.len());
    assert!(!leases.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_check_skips_address_a_host_uses() {
    let namespaces = Namespaces::create(&["srv", "cli"]);
    let (srv, cli) = (namespaces.name(0), namespaces.name(1));
    let octet = namespaces.octet();
    let server_ip = Ipv4Addr::new(10, 215, octet, 1);
    let squatted = Ipv4Addr::new(10, 215, octet, 100);
    let (srv_if, cli_if) = (namespaces.interface("s"), namespaces.interface("c"));
    veth(srv, &srv_if, cli, &cli_if);
    address(srv, &srv_if, &format!("{server_ip}/24"));
    // The client namespace already uses the pool's first address, as a host
    // with a static configuration would, and replies to ping on it.
    address(cli, &cli_if, &format!("{squatted}/24"));
    ip(&[
        "-n",
        cli,
        "link",
        "set",
        &cli_if,
        "address",
        &KNOWN_MAC.to_string(),
    ]);

    let mut config = base_config(server_ip, &srv_if, 8080);
    config.ping_check = Some(Duration::from_millis(500));
    let server = Server::start(srv, &srv_if, config, [KNOWN_MAC].into_iter().collect());

    let bound = udhcpc(cli, &cli_if)
        .await
        .expect("lease after the ping check");

    let next = Ipv4Addr::new(10, 215, octet, 101);
    assert!(bound.contains(&format!("ip={next} ")), "{bound}");
    let saved = std::fs::read_to_string(server.leases.path().expect("file store"))
        .expect("lease file written");
    assert!(
        saved.contains(&format!("\"ip\": \"{squatted}\"")),
        "quarantine of {squatted} not saved: {saved}"
    );
    server.stop().await;
}

/// Builds the DHCPREQUEST a PXE client sends to a proxyDHCP server's port
/// 4011 once it has an address: the captured OVMF DISCOVER with option 53
/// set to REQUEST and `ciaddr` filled in.
fn pxe_request_from_ovmf(ciaddr: Ipv4Addr) -> Vec<u8> {
    let mut packet = include_bytes!("../fixtures/dhcp-firmware/ovmf-pxe-discover.bin").to_vec();
    packet[12..16].copy_from_slice(&ciaddr.octets());
    // Option 53 is the first option of the capture: 53, 1, 1 (DISCOVER).
    assert_eq!(
        &packet[240..243],
        &[53, 1, 1],
        "capture starts with option 53"
    );
    packet[242] = 3;
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_replies_on_port_4011_from_4011() {
    let namespaces = Namespaces::create(&["srv", "cli"]);
    let (srv, cli) = (namespaces.name(0), namespaces.name(1));
    let octet = namespaces.octet();
    let server_ip = Ipv4Addr::new(10, 215, octet, 1);
    let client_ip = Ipv4Addr::new(10, 215, octet, 160);
    let (srv_if, cli_if) = (namespaces.interface("s"), namespaces.interface("c"));
    veth(srv, &srv_if, cli, &cli_if);
    address(srv, &srv_if, &format!("{server_ip}/24"));
    address(cli, &cli_if, &format!("{client_ip}/24"));
    let config = DhcpConfig {
        mode: DhcpMode::Proxy,
        ..base_config(server_ip, &srv_if, 8080)
    };
    let server = Server::start(srv, &srv_if, config, [KNOWN_MAC].into_iter().collect());
    let client = SocketFactory::for_namespace(cli)
        .expect("client namespace")
        .udp(SocketAddr::from((client_ip, 0)), UdpOptions::default())
        .expect("client socket");
    let client = tokio::net::UdpSocket::from_std(client).expect("tokio socket");

    let request = pxe_request_from_ovmf(client_ip);
    client
        .send_to(&request, SocketAddr::from((server_ip, PXE_PORT)))
        .await
        .expect("request sent");
    let mut buffer = [0u8; 1500];
    let received = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer))
        .await
        .expect("proxyDHCP replied within 5 s")
        .expect("reply received");

    let (len, from) = received;
    let reply = &buffer[..len];
    assert_eq!(from, SocketAddr::from((server_ip, PXE_PORT)));
    assert_eq!(reply[0], 2, "BOOTREPLY");
    assert_eq!(&reply[16..20], &[0, 0, 0, 0], "yiaddr is empty");
    assert_eq!(&reply[108..120], b"snponly.efi\0");
    let ack = reply[240..].windows(3).any(|option| option == [53, 1, 5]);
    assert!(ack, "reply is a DHCPACK: {reply:?}");
    server.stop().await;
}
