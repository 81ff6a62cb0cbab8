//! Tests that create their own network namespaces; they need root.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{NetnsError, SocketFactory, UdpOptions};

/// A namespace created for one test and deleted on drop, also when the test
/// fails.
struct TestNamespace {
    name: String,
}

impl TestNamespace {
    fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rh-pxe-t-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    /// Adds `addr`/32 to this namespace's loopback interface, so the address
    /// exists only here.
    fn add_address(&self, addr: Ipv4Addr) {
        ip(&["-n", &self.name, "link", "set", "lo", "up"]);
        let cidr = format!("{addr}/32");
        ip(&["-n", &self.name, "addr", "add", &cidr, "dev", "lo"]);
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = run_ip(&["netns", "delete", &self.name]);
    }
}

fn run_ip(args: &[&str]) -> std::io::Result<Output> {
    Command::new("timeout")
        .arg("10")
        .arg("ip")
        .args(args)
        .output()
}

fn ip(args: &[&str]) {
    let output = run_ip(args).expect("timeout and ip(8) are installed");
    assert!(
        output.status.success(),
        "ip {} failed (these tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An address from the benchmarking range 198.18.0.0/15 that no interface of
/// the host should carry, unique per test process.
fn namespace_only_address() -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(198, 19, (pid >> 8) as u8, (pid as u8).max(1))
}

#[test]
fn udp_socket_lives_in_namespace() {
    let namespace = TestNamespace::create();
    let address = namespace_only_address();
    namespace.add_address(address);
    let factory = SocketFactory::for_namespace(&namespace.name).expect("namespace exists");

    let bind_to = SocketAddr::new(IpAddr::V4(address), 0);
    let socket = factory
        .udp(bind_to, UdpOptions::default())
        .expect("address exists in the namespace");

    assert_eq!(
        socket.local_addr().expect("bound").ip(),
        IpAddr::V4(address)
    );
}

#[test]
fn host_factory_cannot_bind_namespace_address() {
    let namespace = TestNamespace::create();
    let address = namespace_only_address();
    namespace.add_address(address);

    let bind_to = SocketAddr::new(IpAddr::V4(address), 0);
    let result = SocketFactory::host().udp(bind_to, UdpOptions::default());

    assert!(matches!(result, Err(NetnsError::Bind { .. })), "{result:?}");
}

#[test]
fn later_sockets_still_land_in_namespace() {
    let namespace = TestNamespace::create();
    let address = namespace_only_address();
    namespace.add_address(address);
    let factory = SocketFactory::for_namespace(&namespace.name).expect("namespace exists");
    let clone = factory.clone();

    let bind_to = SocketAddr::new(IpAddr::V4(address), 0);
    for _ in 0..3 {
        let thread_factory = clone.clone();
        let socket = std::thread::spawn(move || thread_factory.udp(bind_to, UdpOptions::default()))
            .join()
            .expect("thread does not panic")
            .expect("address exists in the namespace");
        assert_eq!(
            socket.local_addr().expect("bound").ip(),
            IpAddr::V4(address)
        );
    }
    let listener = factory.tcp_listener(bind_to).expect("address exists");

    assert_eq!(
        listener.local_addr().expect("bound").ip(),
        IpAddr::V4(address)
    );
}

#[test]
fn udp_options_apply_inside_namespace() {
    let namespace = TestNamespace::create();
    namespace.add_address(namespace_only_address());
    let factory = SocketFactory::for_namespace(&namespace.name).expect("namespace exists");
    let options = UdpOptions {
        broadcast: true,
        reuse_addr: true,
        bind_device: Some("lo".to_string()),
    };

    let socket = factory
        .udp(SocketAddr::from(([0, 0, 0, 0], 0)), options)
        .expect("device exists in the namespace");

    assert!(socket.broadcast().expect("readable option"));
}

#[test]
fn bind_device_missing_names_device() {
    let namespace = TestNamespace::create();
    let factory = SocketFactory::for_namespace(&namespace.name).expect("namespace exists");
    let options = UdpOptions {
        bind_device: Some("rhnosuchdev0".to_string()),
        ..UdpOptions::default()
    };

    let error = factory
        .udp(SocketAddr::from(([0, 0, 0, 0], 0)), options)
        .expect_err("device does not exist");

    assert!(error.to_string().contains("rhnosuchdev0"), "{error}");
}

#[test]
fn missing_namespace_error_names_it() {
    let error = SocketFactory::for_namespace("rh-pxe-no-such-namespace")
        .expect_err("namespace does not exist");

    assert!(matches!(error, NetnsError::Open { .. }), "{error:?}");
    assert!(
        error.to_string().contains("rh-pxe-no-such-namespace"),
        "{error}"
    );
}

#[test]
fn namespace_name_with_slash_is_rejected() {
    let error = SocketFactory::for_namespace("../etc").expect_err("invalid name");

    assert!(matches!(error, NetnsError::InvalidName { .. }), "{error:?}");
}

#[test]
fn host_factory_creates_nonblocking_socket() {
    let socket = SocketFactory::host()
        .udp(SocketAddr::from(([127, 0, 0, 1], 0)), UdpOptions::default())
        .expect("loopback is always available");
    let mut buffer = [0u8; 8];

    let error = socket.recv_from(&mut buffer).expect_err("nothing was sent");

    assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
}
