//! One packet through every handler mode, with the checks each reply must
//! pass. The `cargo fuzz` target in `pxe/fuzz` calls [`check_packet`], and
//! the unit test below replays the inputs the fuzzer found.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use super::config::{AddressRange, BootFiles, DhcpConfig, DhcpMode, RelaySubnet};
use super::handler::{Arrival, Responder};
use super::lease::LeaseStore;
use crate::MacAddr;

/// Server address of the configuration the fuzzer runs against.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);

/// MACs in the fuzzed server's [`KnownMacs`](super::KnownMacs): the chaddr
/// of the captured firmware packets and a second one.
const KNOWN: [MacAddr; 2] = [
    MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]),
    MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x11]),
];

fn config(mode: DhcpMode) -> DhcpConfig {
    DhcpConfig {
        mode,
        server_ip: SERVER_IP,
        interface: None,
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        pool_start: Ipv4Addr::new(10, 98, 0, 100),
        pool_end: Ipv4Addr::new(10, 98, 0, 109),
        router: Some(Ipv4Addr::new(10, 98, 0, 254)),
        dns_servers: vec![SERVER_IP],
        lease_time: Duration::from_secs(600),
        boot: BootFiles {
            tftp_server: SERVER_IP,
            bios: "undionly.kpxe".to_string(),
            uefi_x64: "snponly.efi".to_string(),
            uefi_arm64: Some("snponly-arm64.efi".to_string()),
            http_x64: Some("http://10.98.0.1:8080/ipxe.efi".to_string()),
            http_ia32: None,
            http_arm64: Some("http://10.98.0.1:8080/ipxe-arm64.efi".to_string()),
            ipxe_script_url: "http://10.98.0.1:8080/boot/{mac}.ipxe".to_string(),
        },
        relay_subnets: vec![RelaySubnet {
            network: Ipv4Addr::new(10, 97, 5, 0),
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            pool: AddressRange {
                start: Ipv4Addr::new(10, 97, 5, 100),
                end: Ipv4Addr::new(10, 97, 5, 109),
            },
            router: Some(Ipv4Addr::new(10, 97, 5, 1)),
            dns_servers: Vec::new(),
        }],
        discovery_pool: Some(AddressRange {
            start: Ipv4Addr::new(10, 98, 0, 200),
            end: Ipv4Addr::new(10, 98, 0, 209),
        }),
        decline_quarantine: Duration::from_secs(600),
        ping_check: None,
        arp_check: None,
    }
}

/// Feeds `bytes` to a full server and to a proxyDHCP server on both ports,
/// twice each so that the second pass meets the lease the first one made.
///
/// # Panics
///
/// Panics when the handler panics, or when a reply fails to encode, is not
/// a BOOTREPLY for the request's `xid` and `chaddr`, is shorter than 300
/// bytes, or (from the proxy) carries an address.
pub fn check_packet(bytes: &[u8]) {
    let source = SocketAddr::from(([10, 98, 0, 50], 68));
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for mode in [DhcpMode::Full, DhcpMode::Proxy] {
        let known = KNOWN.into_iter().collect();
        let mut responder = Responder::new(config(mode), known, LeaseStore::in_memory());
        for arrival in [Arrival::ServerPort, Arrival::PxePort, Arrival::ServerPort] {
            let Some(reply) = responder.handle_on(bytes, source, arrival, now) else {
                continue;
            };
            let encoded = reply.encode().expect("every reply encodes");
            assert!(encoded.len() >= 300, "reply shorter than a BOOTP message");
            assert_eq!(encoded[0], 2, "reply is not a BOOTREPLY");
            assert_eq!(
                encoded[4..8],
                bytes[4..8],
                "reply xid differs from the request's"
            );
            assert_eq!(encoded[28..34], bytes[28..34], "reply chaddr differs");
            if mode == DhcpMode::Proxy {
                assert_eq!(encoded[16..20], [0; 4], "proxyDHCP reply carries yiaddr");
            }
            if let Some(sent) = option_82(bytes) {
                assert_eq!(
                    option_82(&encoded),
                    Some(sent),
                    "option 82 not echoed unchanged"
                );
            }
        }
    }
}

/// Returns the joined data of every option 82 instance in a DHCP message,
/// or `None` when it has none or its options are truncated.
fn option_82(message: &[u8]) -> Option<Vec<u8>> {
    let mut position = 240;
    let mut found: Option<Vec<u8>> = None;
    // Each pass consumes at least one byte.
    while position < message.len() {
        match message[position] {
            0 => position += 1,
            255 => break,
            code => {
                let len = usize::from(*message.get(position + 1)?);
                let data = message.get(position + 2..position + 2 + len)?;
                if code == 82 {
                    found.get_or_insert_with(Vec::new).extend_from_slice(data);
                }
                position += 2 + len;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Replays every input under `tests/fixtures/dhcp-regressions`: the
    /// minimized cases `cargo fuzz` found, and the firmware captures.
    #[test]
    fn fuzz_regressions_replay_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut replayed = 0;
        for folder in ["dhcp-regressions", "dhcp-firmware"] {
            let entries = std::fs::read_dir(root.join(folder)).expect("fixture folder exists");
            for entry in entries {
                let path = entry.expect("readable entry").path();
                let is_packet = path.extension().is_none_or(|extension| extension == "bin");
                if !is_packet || path.is_dir() {
                    continue;
                }
                let bytes = std::fs::read(&path).expect("readable fixture");
                check_packet(&bytes);
                replayed += 1;
            }
        }
        assert!(replayed >= 4, "only {replayed} fixtures found");
    }
}
