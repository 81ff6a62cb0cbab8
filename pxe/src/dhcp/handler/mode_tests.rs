//! Tests of proxyDHCP, relayed requests, the discovery pool, UEFI HTTP boot,
//! per-node overrides and the ping check hand-off.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Architecture, DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

use super::{Arrival, Handled, Responder};
use crate::MacAddr;
use crate::dhcp::boot::BootOverride;
use crate::dhcp::config::tests::sample_config;
use crate::dhcp::config::{AddressRange, DhcpConfig, DhcpMode};
use crate::dhcp::known::KnownMacs;
use crate::dhcp::lease::LeaseStore;
use crate::dhcp::reply::{Reply, ReplySocket};

const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]);
const UNKNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x99, 0x99, 0x99]);
const START: u64 = 1_700_000_000;
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 97, 5, 1);

fn responder_with(config: DhcpConfig) -> Responder {
    Responder::new(
        config,
        [KNOWN].into_iter().collect(),
        LeaseStore::in_memory(),
    )
}

fn proxy_config() -> DhcpConfig {
    DhcpConfig {
        mode: DhcpMode::Proxy,
        ..sample_config()
    }
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn message(mac: MacAddr, message_type: MessageType, options: Vec<DhcpOption>) -> Message {
    let mut message = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    message
        .opts_mut()
        .insert(DhcpOption::MessageType(message_type));
    for option in options {
        message.opts_mut().insert(option);
    }
    message
}

fn firmware(vendor_class: &str, arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(vendor_class.as_bytes().to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture(arch)),
    ]
}

fn pxe_options(arch: u16) -> Vec<DhcpOption> {
    firmware(&format!("PXEClient:Arch:{arch:05}:UNDI:003000"), arch)
}

fn handle_on(responder: &mut Responder, message: &Message, arrival: Arrival) -> Option<Reply> {
    let bytes = message.to_vec().expect("test message encodes");
    let source = SocketAddr::from(([10, 98, 0, 77], 68));
    responder.handle_on(&bytes, source, arrival, at(START))
}

fn handle(responder: &mut Responder, message: &Message) -> Option<Reply> {
    handle_on(responder, message, Arrival::ServerPort)
}

fn option(reply: &Reply, code: OptionCode) -> Option<&DhcpOption> {
    reply.message.opts().get(code)
}

#[test]
fn proxy_offer_has_boot_file_and_no_address() {
    let mut responder = responder_with(proxy_config());
    let discover = message(KNOWN, MessageType::Discover, pxe_options(7));

    let reply = handle(&mut responder, &discover).expect("proxy offer");

    assert_eq!(reply.message.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.message.fname_str(), Some(Ok("snponly.efi")));
    assert_eq!(
        option(&reply, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert!(option(&reply, OptionCode::VendorExtensions).is_some());
    assert!(option(&reply, OptionCode::AddressLeaseTime).is_none());
    assert!(option(&reply, OptionCode::SubnetMask).is_none());
    assert_eq!(reply.socket, ReplySocket::Server);
    assert!(responder.leases().leases().is_empty());
}

#[test]
fn proxy_request_on_port_4011_gets_ack_to_source() {
    let mut responder = responder_with(proxy_config());
    let mut request = message(KNOWN, MessageType::Request, pxe_options(0));
    request.set_ciaddr(Ipv4Addr::new(10, 98, 0, 77));

    let reply = handle_on(&mut responder, &request, Arrival::PxePort).expect("proxy ack");

    assert_eq!(reply.message.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.message.fname_str(), Some(Ok("undionly.kpxe")));
    assert_eq!(reply.socket, ReplySocket::Pxe);
    assert_eq!(
        reply.destination,
        SocketAddrV4::new(Ipv4Addr::new(10, 98, 0, 77), 68)
    );
}

#[test]
fn proxy_ignores_everything_but_netboot_discover() {
    let mut responder = responder_with(proxy_config());
    let plain = message(
        KNOWN,
        MessageType::Discover,
        vec![DhcpOption::ClassIdentifier(b"udhcp 1.35.0".to_vec())],
    );
    let request_on_67 = message(KNOWN, MessageType::Request, pxe_options(7));
    let unknown = message(UNKNOWN, MessageType::Discover, pxe_options(7));
    let release = message(KNOWN, MessageType::Release, pxe_options(7));

    assert!(handle(&mut responder, &plain).is_none());
    assert!(handle(&mut responder, &request_on_67).is_none());
    assert!(handle(&mut responder, &unknown).is_none());
    assert!(handle_on(&mut responder, &release, Arrival::PxePort).is_none());
    assert!(responder.leases().leases().is_empty());
}

#[test]
fn proxy_ipxe_client_gets_script_url() {
    let mut responder = responder_with(proxy_config());
    let mut options = firmware("PXEClient:Arch:00000:UNDI:002001", 0);
    options.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let discover = message(KNOWN, MessageType::Discover, options);

    let reply = handle(&mut responder, &discover).expect("proxy offer");

    assert_eq!(
        reply.message.fname_str(),
        Some(Ok("http://10.98.0.1:8080/boot/52-54-00-62-00-10.ipxe"))
    );
    assert_eq!(
        option(&reply, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
}

#[test]
fn proxy_echoes_client_machine_identifier() {
    let mut responder = responder_with(proxy_config());
    let mut options = pxe_options(7);
    let machine_id = [0u8; 17].to_vec();
    options.push(DhcpOption::ClientMachineIdentifier(machine_id.clone()));
    let discover = message(KNOWN, MessageType::Discover, options);

    let reply = handle(&mut responder, &discover).expect("proxy offer");

    assert_eq!(
        option(&reply, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(machine_id))
    );
}

#[test]
fn http_boot_client_gets_url_and_http_client_class() {
    let mut responder = responder_with(sample_config());
    let discover = message(
        KNOWN,
        MessageType::Discover,
        firmware("HTTPClient:Arch:00016:UNDI:003000", 16),
    );

    let reply = handle(&mut responder, &discover).expect("offer");

    assert_eq!(
        reply.message.fname_str(),
        Some(Ok("http://10.98.0.1:8080/ipxe.efi"))
    );
    assert_eq!(
        option(&reply, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert!(sample_config().pool_contains(reply.message.yiaddr()));
}

#[test]
fn http_boot_without_url_gets_no_reply() {
    let mut responder = responder_with(sample_config());
    let discover = message(
        KNOWN,
        MessageType::Discover,
        firmware("HTTPClient:Arch:00015:UNDI:003000", 15),
    );

    assert!(handle(&mut responder, &discover).is_none());
}

#[test]
fn node_override_wins_over_arch() {
    let known: KnownMacs = [KNOWN].into_iter().collect();
    known
        .set_boot_override(
            KNOWN,
            Some(BootOverride {
                tftp_file: Some("ipxe-custom.efi".to_string()),
                ..BootOverride::default()
            }),
        )
        .expect("valid override");
    let mut responder = Responder::new(sample_config(), known, LeaseStore::in_memory());
    let discover = message(KNOWN, MessageType::Discover, pxe_options(7));

    let reply = handle(&mut responder, &discover).expect("offer");

    assert_eq!(reply.message.fname_str(), Some(Ok("ipxe-custom.efi")));
}

#[test]
fn relayed_discover_uses_relay_subnet_pool() {
    let mut responder = responder_with(sample_config());
    let mut discover = message(KNOWN, MessageType::Discover, Vec::new());
    discover.set_giaddr(RELAY).set_hops(1);

    let reply = handle(&mut responder, &discover).expect("offer");

    assert_eq!(reply.message.yiaddr(), Ipv4Addr::new(10, 97, 5, 100));
    assert_eq!(reply.destination, SocketAddrV4::new(RELAY, 67));
    assert_eq!(
        option(&reply, OptionCode::Router),
        Some(&DhcpOption::Router(vec![RELAY]))
    );
}

#[test]
fn relayed_request_from_unknown_subnet_gets_no_reply() {
    let mut responder = responder_with(sample_config());
    let mut discover = message(KNOWN, MessageType::Discover, Vec::new());
    discover.set_giaddr(Ipv4Addr::new(172, 16, 0, 1));

    assert!(handle(&mut responder, &discover).is_none());
}

#[test]
fn relay_information_is_echoed_byte_for_byte() {
    let mut responder = responder_with(sample_config());
    let mut discover = message(KNOWN, MessageType::Discover, Vec::new());
    discover.set_giaddr(RELAY);
    let mut bytes = discover.to_vec().expect("encodes");
    let end = bytes.iter().rposition(|byte| *byte == 255).expect("End");
    bytes.truncate(end);
    // Sub-option 2 (remote ID) before sub-option 1, plus unknown sub-option 151.
    let raw = [2, 2, 0xaa, 0xbb, 1, 1, 7, 151, 1, 0];
    bytes.extend_from_slice(&[82, raw.len() as u8]);
    bytes.extend_from_slice(&raw);
    bytes.push(255);

    let source = SocketAddr::from((RELAY, 67));
    let reply = responder.handle(&bytes, source, at(START)).expect("offer");
    let sent = reply.encode().expect("reply encodes");

    let mut option = vec![82, raw.len() as u8];
    option.extend_from_slice(&raw);
    option.push(255);
    let end = sent
        .iter()
        .rposition(|byte| *byte != 0)
        .expect("End option")
        + 1;
    let echoed = sent[..end].ends_with(&option);
    let instances = sent[240..]
        .windows(2)
        .filter(|window| window[0] == 82 && usize::from(window[1]) == raw.len())
        .count();

    assert!(echoed, "option 82 is not the last option, unchanged");
    assert_eq!(instances, 1, "option 82 sent more than once");
    assert!(Message::from_bytes(&sent).is_ok());
}

#[test]
fn unknown_mac_gets_discovery_address_when_enabled() {
    let config = DhcpConfig {
        discovery_pool: Some(AddressRange {
            start: Ipv4Addr::new(10, 98, 0, 210),
            end: Ipv4Addr::new(10, 98, 0, 219),
        }),
        ..sample_config()
    };
    let mut responder = responder_with(config);
    let discover = message(UNKNOWN, MessageType::Discover, pxe_options(0));

    let reply = handle(&mut responder, &discover).expect("discovery offer");

    assert_eq!(reply.message.yiaddr(), Ipv4Addr::new(10, 98, 0, 210));
    assert_eq!(reply.message.fname_str(), Some(Ok("undionly.kpxe")));
}

#[test]
fn relayed_unknown_mac_gets_no_discovery_address() {
    let config = DhcpConfig {
        discovery_pool: Some(AddressRange {
            start: Ipv4Addr::new(10, 98, 0, 210),
            end: Ipv4Addr::new(10, 98, 0, 219),
        }),
        ..sample_config()
    };
    let mut responder = responder_with(config);
    let mut discover = message(UNKNOWN, MessageType::Discover, Vec::new());
    discover.set_giaddr(RELAY);

    assert!(handle(&mut responder, &discover).is_none());
}

#[test]
fn decline_quarantine_follows_config() {
    let config = DhcpConfig {
        decline_quarantine: Duration::from_secs(120),
        ..sample_config()
    };
    let mut responder = responder_with(config);
    let offer = handle(
        &mut responder,
        &message(KNOWN, MessageType::Discover, Vec::new()),
    )
    .expect("offer");
    let declined = offer.message.yiaddr();
    let decline = message(
        KNOWN,
        MessageType::Decline,
        vec![DhcpOption::RequestedIpAddress(declined)],
    );
    handle(&mut responder, &decline);

    let until = responder
        .leases()
        .lock()
        .quarantined
        .get(&declined)
        .copied();

    assert_eq!(until, Some(START + 120));
}

#[test]
fn ping_check_holds_new_offer_and_skips_busy_address() {
    let config = DhcpConfig {
        ping_check: Some(Duration::from_millis(300)),
        arp_check: None,
        ..sample_config()
    };
    let mut responder = responder_with(config);
    let bytes = message(KNOWN, MessageType::Discover, Vec::new())
        .to_vec()
        .expect("encodes");
    let source = SocketAddr::from(([0, 0, 0, 0], 68));

    let first = responder.handle_packet(&bytes, source, Arrival::ServerPort, at(START));
    let Handled::Probe { ip, mac, .. } = first else {
        panic!("new address is pinged first: {first:?}");
    };
    let repeated = responder.handle_packet(&bytes, source, Arrival::ServerPort, at(START));
    responder.address_in_use(ip, mac, at(START));
    let second = responder.handle_packet(&bytes, source, Arrival::ServerPort, at(START));

    assert!(matches!(repeated, Handled::Nothing), "{repeated:?}");
    let Handled::Probe { ip: next, .. } = second else {
        panic!("another address is pinged: {second:?}");
    };
    assert_ne!(next, ip);
    assert!(responder.leases().lock().quarantined.contains_key(&ip));
}
