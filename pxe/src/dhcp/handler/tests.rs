//! Packet handling tests: requests built with dhcproto, encoded, and fed to
//! the responder as bytes, the way the server loop does.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption, relay,
};
use dhcproto::{Decodable, Encodable};

use super::Responder;
use crate::MacAddr;
use crate::dhcp::config::DhcpConfig;
use crate::dhcp::config::tests::sample_config;
use crate::dhcp::known::KnownMacs;
use crate::dhcp::lease::{LeaseState, LeaseStore};
use crate::dhcp::reply::Reply;

const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]);
const KNOWN_2: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x11]);
const UNKNOWN: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x99, 0x99, 0x99]);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const START: u64 = 1_700_000_000;

fn responder_with(config: DhcpConfig, macs: &[MacAddr]) -> Responder {
    Responder::new(
        config,
        macs.iter().copied().collect(),
        LeaseStore::in_memory(),
    )
}

fn responder() -> Responder {
    responder_with(sample_config(), &[KNOWN, KNOWN_2])
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn client_source() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 68))
}

fn message(mac: MacAddr, message_type: MessageType) -> Message {
    let mut message = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    message
        .opts_mut()
        .insert(DhcpOption::MessageType(message_type));
    message
}

fn with(mut message: Message, options: Vec<DhcpOption>) -> Message {
    for option in options {
        message.opts_mut().insert(option);
    }
    message
}

fn handle_at(responder: &mut Responder, message: &Message, seconds: u64) -> Option<Reply> {
    let bytes = message.to_vec().expect("test message encodes");
    responder.handle(&bytes, client_source(), at(seconds))
}

fn handle(responder: &mut Responder, message: &Message) -> Option<Reply> {
    handle_at(responder, message, START)
}

fn reply_type(reply: &Reply) -> Option<MessageType> {
    reply.message.opts().msg_type()
}

fn option(reply: &Reply, code: OptionCode) -> Option<&DhcpOption> {
    reply.message.opts().get(code)
}

/// Runs DISCOVER then REQUEST for `mac` and returns the leased address.
fn lease(responder: &mut Responder, mac: MacAddr, seconds: u64) -> Ipv4Addr {
    let offer = handle_at(responder, &message(mac, MessageType::Discover), seconds)
        .expect("known MAC gets an offer");
    let ip = offer.message.yiaddr();
    let request = with(
        message(mac, MessageType::Request),
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    let ack = handle_at(responder, &request, seconds).expect("offered address is acked");
    assert_eq!(reply_type(&ack), Some(MessageType::Ack));
    ip
}

fn pxe_discover(mac: MacAddr, arch: u16) -> Message {
    with(
        message(mac, MessageType::Discover),
        vec![
            DhcpOption::ClassIdentifier(
                format!("PXEClient:Arch:{arch:05}:UNDI:003000").into_bytes(),
            ),
            DhcpOption::ClientSystemArchitecture(Architecture(arch)),
        ],
    )
}

#[test]
fn known_mac_gets_offer_with_network_options() {
    let mut responder = responder();

    let reply = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");

    assert_eq!(reply_type(&reply), Some(MessageType::Offer));
    assert!(sample_config().pool_contains(reply.message.yiaddr()));
    assert_eq!(reply.message.xid(), 0x1234_5678);
    assert_eq!(reply.message.chaddr(), &KNOWN.0);
    assert_eq!(
        option(&reply, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        option(&reply, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        option(&reply, OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 98, 0, 254)]))
    );
    assert_eq!(
        option(&reply, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 98, 0, 53
        )]))
    );
    assert_eq!(
        option(&reply, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        option(&reply, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        option(&reply, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    assert_eq!(
        reply.destination,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    );
}

#[test]
fn unknown_mac_gets_no_reply() {
    let mut responder = responder();

    for message_type in [
        MessageType::Discover,
        MessageType::Request,
        MessageType::Inform,
    ] {
        let request = with(
            message(UNKNOWN, message_type),
            vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                10, 98, 0, 100,
            ))],
        );
        assert!(
            handle(&mut responder, &request).is_none(),
            "{message_type:?}"
        );
    }
    assert!(responder.leases().leases().is_empty());
}

#[test]
fn mac_added_later_is_answered() {
    let known = KnownMacs::new();
    let mut responder = Responder::new(sample_config(), known.clone(), LeaseStore::in_memory());
    assert!(handle(&mut responder, &message(KNOWN, MessageType::Discover)).is_none());

    known.replace([KNOWN]);

    assert!(handle(&mut responder, &message(KNOWN, MessageType::Discover)).is_some());
}

#[test]
fn unknown_mac_log_is_rate_limited() {
    let mut log = super::IgnoredMacLog::default();

    assert!(log.should_log(UNKNOWN, at(START)));
    assert!(!log.should_log(UNKNOWN, at(START + 59)));
    assert!(log.should_log(KNOWN, at(START + 59)));
    assert!(log.should_log(UNKNOWN, at(START + 60)));
}

#[test]
fn ipxe_client_gets_script_url_and_option_175() {
    let mut responder = responder();
    let request = with(
        message(KNOWN, MessageType::Discover),
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(0)),
        ],
    );

    let reply = handle(&mut responder, &request).expect("offer");

    assert_eq!(
        reply.message.fname_str(),
        Some(Ok("http://10.98.0.1:8080/boot/52-54-00-62-00-10.ipxe"))
    );
    let encapsulated = UnknownOption::new(OptionCode::Unknown(175), vec![176, 1, 1]);
    assert_eq!(
        option(&reply, OptionCode::Unknown(175)),
        Some(&DhcpOption::Unknown(encapsulated))
    );
}

#[test]
fn pxe_bios_client_gets_undionly() {
    let mut responder = responder();

    let reply = handle(&mut responder, &pxe_discover(KNOWN, 0)).expect("offer");

    assert_eq!(reply.message.fname_str(), Some(Ok("undionly.kpxe")));
    assert_eq!(reply.message.siaddr(), SERVER);
    assert!(option(&reply, OptionCode::Unknown(175)).is_none());
}

#[test]
fn pxe_efi_client_gets_snponly() {
    let mut responder = responder();

    for arch in [7, 9] {
        let reply = handle(&mut responder, &pxe_discover(KNOWN, arch)).expect("offer");
        assert_eq!(
            reply.message.fname_str(),
            Some(Ok("snponly.efi")),
            "arch {arch}"
        );
        assert_eq!(reply.message.siaddr(), SERVER, "arch {arch}");
    }
}

#[test]
fn pxe_arm64_client_gets_arm64_binary() {
    let mut responder = responder();

    let reply = handle(&mut responder, &pxe_discover(KNOWN, 11)).expect("offer");

    assert!(sample_config().pool_contains(reply.message.yiaddr()));
    assert_eq!(reply.message.fname_str(), Some(Ok("snponly-arm64.efi")));
}

#[test]
fn pxe_unknown_arch_gets_no_reply() {
    let mut responder = responder();

    for arch in [6, 10, 0x00ff] {
        assert!(
            handle(&mut responder, &pxe_discover(KNOWN, arch)).is_none(),
            "arch {arch}"
        );
    }
    assert!(responder.leases().leases().is_empty());
}

#[test]
fn arm64_without_binary_gets_no_reply() {
    let mut config = sample_config();
    config.boot.uefi_arm64 = None;
    let mut responder = responder_with(config, &[KNOWN]);

    assert!(handle(&mut responder, &pxe_discover(KNOWN, 11)).is_none());
}

#[test]
fn plain_client_gets_no_boot_file() {
    let mut responder = responder();
    let request = with(
        message(KNOWN, MessageType::Discover),
        vec![DhcpOption::ClassIdentifier(b"udhcp 1.35.0".to_vec())],
    );

    let reply = handle(&mut responder, &request).expect("offer");

    assert_eq!(reply.message.fname(), None);
    assert_eq!(reply.message.siaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(option(&reply, OptionCode::Unknown(175)).is_none());
}

#[test]
fn request_after_offer_gets_ack_with_boot_file() {
    let mut responder = responder();
    let offer = handle(&mut responder, &pxe_discover(KNOWN, 7)).expect("offer");
    let request = with(
        pxe_discover(KNOWN, 7),
        vec![
            DhcpOption::MessageType(MessageType::Request),
            DhcpOption::RequestedIpAddress(offer.message.yiaddr()),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );

    let ack = handle(&mut responder, &request).expect("ack");

    assert_eq!(reply_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.message.yiaddr(), offer.message.yiaddr());
    assert_eq!(ack.message.fname_str(), Some(Ok("snponly.efi")));
    let lease = responder.leases().lease(&KNOWN).expect("lease stored");
    assert_eq!(lease.state, LeaseState::Bound);
    assert_eq!(lease.expires_at, START + 3600);
}

#[test]
fn request_for_other_server_withdraws_offer() {
    let mut responder = responder();
    let offer = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");
    let request = with(
        message(KNOWN, MessageType::Request),
        vec![
            DhcpOption::RequestedIpAddress(offer.message.yiaddr()),
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 98, 0, 2)),
        ],
    );

    let reply = handle(&mut responder, &request);

    assert!(reply.is_none());
    assert!(responder.leases().lease(&KNOWN).is_none());
}

#[test]
fn request_for_wrong_address_gets_nak() {
    let mut responder = responder();
    let offer = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");
    let wrong = Ipv4Addr::new(10, 98, 0, 150);
    assert_ne!(offer.message.yiaddr(), wrong);
    let request = with(
        message(KNOWN, MessageType::Request),
        vec![
            DhcpOption::RequestedIpAddress(wrong),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );

    let reply = handle(&mut responder, &request).expect("nak");

    assert_eq!(reply_type(&reply), Some(MessageType::Nak));
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(option(&reply, OptionCode::Message).is_some());
    assert!(option(&reply, OptionCode::AddressLeaseTime).is_none());
    assert_eq!(
        reply.destination,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    );
}

#[test]
fn init_reboot_from_other_network_gets_nak() {
    let mut responder = responder();
    let request = with(
        message(KNOWN, MessageType::Request),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 1, 20,
        ))],
    );

    let reply = handle(&mut responder, &request).expect("nak");

    assert_eq!(reply_type(&reply), Some(MessageType::Nak));
}

#[test]
fn init_reboot_for_free_pool_address_is_acked() {
    let mut responder = responder();
    let remembered = Ipv4Addr::new(10, 98, 0, 120);
    let request = with(
        message(KNOWN, MessageType::Request),
        vec![DhcpOption::RequestedIpAddress(remembered)],
    );

    let reply = handle(&mut responder, &request).expect("ack");

    assert_eq!(reply_type(&reply), Some(MessageType::Ack));
    assert_eq!(reply.message.yiaddr(), remembered);
}

#[test]
fn renew_keeps_same_address() {
    let mut responder = responder();
    let ip = lease(&mut responder, KNOWN, START);
    let mut renew = message(KNOWN, MessageType::Request);
    renew.set_ciaddr(ip);

    let ack = handle_at(&mut responder, &renew, START + 1800).expect("ack");

    assert_eq!(reply_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.message.yiaddr(), ip);
    assert_eq!(ack.message.ciaddr(), ip);
    assert_eq!(ack.destination, SocketAddrV4::new(ip, 68));
    let lease = responder.leases().lease(&KNOWN).expect("lease stored");
    assert_eq!(lease.expires_at, START + 1800 + 3600);
}

#[test]
fn renew_with_broadcast_flag_is_broadcast() {
    let mut responder = responder();
    let ip = lease(&mut responder, KNOWN, START);
    let mut renew = message(KNOWN, MessageType::Request);
    renew
        .set_ciaddr(ip)
        .set_flags(Flags::default().set_broadcast());

    let ack = handle(&mut responder, &renew).expect("ack");

    assert_eq!(ack.destination, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
}

#[test]
fn rediscover_keeps_address_after_restart() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("leases.json");
    let store = LeaseStore::open(&path).expect("empty store");
    let mut first = Responder::new(sample_config(), [KNOWN].into_iter().collect(), store);
    let ip = lease(&mut first, KNOWN, START);
    first.leases().save().expect("lease file written");

    let reopened = LeaseStore::open(&path).expect("lease file readable");
    let mut second = Responder::new(sample_config(), [KNOWN].into_iter().collect(), reopened);
    let offer = handle_at(
        &mut second,
        &message(KNOWN, MessageType::Discover),
        START + 7200,
    )
    .expect("offer");

    assert_eq!(offer.message.yiaddr(), ip);
}

#[test]
fn retransmitted_discover_gets_same_offer() {
    let mut responder = responder();

    let first = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");
    let second = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");

    assert_eq!(first.message.yiaddr(), second.message.yiaddr());
}

#[test]
fn two_macs_never_share_address() {
    let macs: Vec<MacAddr> = (0..50u8)
        .map(|i| MacAddr([0x52, 0x54, 0, 1, 0, i]))
        .collect();
    let mut responder = responder_with(sample_config(), &macs);

    let mut addresses: Vec<Ipv4Addr> = macs
        .iter()
        .map(|mac| lease(&mut responder, *mac, START))
        .collect();
    addresses.sort();
    addresses.dedup();

    assert_eq!(addresses.len(), macs.len());
}

#[test]
fn requested_address_of_other_mac_is_not_given() {
    let mut responder = responder();
    let taken = lease(&mut responder, KNOWN, START);
    let request = with(
        message(KNOWN_2, MessageType::Discover),
        vec![DhcpOption::RequestedIpAddress(taken)],
    );

    let offer = handle(&mut responder, &request).expect("offer");

    assert_ne!(offer.message.yiaddr(), taken);
}

#[test]
fn init_reboot_for_other_macs_address_gets_nak() {
    let mut responder = responder();
    let taken = lease(&mut responder, KNOWN, START);
    let request = with(
        message(KNOWN_2, MessageType::Request),
        vec![DhcpOption::RequestedIpAddress(taken)],
    );

    let reply = handle(&mut responder, &request).expect("nak");

    assert_eq!(reply_type(&reply), Some(MessageType::Nak));
}

fn two_address_config() -> DhcpConfig {
    DhcpConfig {
        pool_start: Ipv4Addr::new(10, 98, 0, 100),
        pool_end: Ipv4Addr::new(10, 98, 0, 101),
        ..sample_config()
    }
}

#[test]
fn exhausted_pool_gives_no_offer() {
    let third = MacAddr([0x52, 0x54, 0, 0, 0, 3]);
    let mut responder = responder_with(two_address_config(), &[KNOWN, KNOWN_2, third]);
    lease(&mut responder, KNOWN, START);
    lease(&mut responder, KNOWN_2, START);

    let reply = handle(&mut responder, &message(third, MessageType::Discover));

    assert!(reply.is_none());
}

#[test]
fn expired_lease_is_reclaimed_when_pool_is_full() {
    let third = MacAddr([0x52, 0x54, 0, 0, 0, 3]);
    let mut responder = responder_with(two_address_config(), &[KNOWN, KNOWN_2, third]);
    let first = lease(&mut responder, KNOWN, START);
    lease(&mut responder, KNOWN_2, START + 100);

    let later = START + 3600 + 200;
    let offer = handle_at(
        &mut responder,
        &message(third, MessageType::Discover),
        later,
    )
    .expect("offer from reclaimed lease");

    assert_eq!(offer.message.yiaddr(), first);
    assert!(responder.leases().lease(&KNOWN).is_none());
}

#[test]
fn release_keeps_address_for_same_mac() {
    let mut responder = responder();
    let ip = lease(&mut responder, KNOWN, START);
    let mut release = with(
        message(KNOWN, MessageType::Release),
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    release.set_ciaddr(ip);

    assert!(handle(&mut responder, &release).is_none());
    let lease = responder.leases().lease(&KNOWN).expect("lease kept");
    assert_eq!(lease.state, LeaseState::Released);

    let offer = handle_at(
        &mut responder,
        &message(KNOWN, MessageType::Discover),
        START + 10,
    )
    .expect("offer");
    assert_eq!(offer.message.yiaddr(), ip);
}

#[test]
fn decline_quarantines_address() {
    let mut responder = responder();
    let declined = lease(&mut responder, KNOWN, START);
    let decline = with(
        message(KNOWN, MessageType::Decline),
        vec![
            DhcpOption::RequestedIpAddress(declined),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );

    assert!(handle(&mut responder, &decline).is_none());

    let retry = handle_at(
        &mut responder,
        &message(KNOWN, MessageType::Discover),
        START + 1,
    )
    .expect("offer of another address");
    assert_ne!(retry.message.yiaddr(), declined);
    let other = with(
        message(KNOWN_2, MessageType::Discover),
        vec![DhcpOption::RequestedIpAddress(declined)],
    );
    let other_offer = handle_at(&mut responder, &other, START + 2).expect("offer");
    assert_ne!(other_offer.message.yiaddr(), declined);
    let request = with(
        message(KNOWN_2, MessageType::Request),
        vec![DhcpOption::RequestedIpAddress(declined)],
    );
    let nak = handle_at(&mut responder, &request, START + 3).expect("nak");
    assert_eq!(reply_type(&nak), Some(MessageType::Nak));
}

#[test]
fn quarantine_ends_after_an_hour() {
    let mut responder = responder();
    let declined = lease(&mut responder, KNOWN, START);
    let decline = with(
        message(KNOWN, MessageType::Decline),
        vec![DhcpOption::RequestedIpAddress(declined)],
    );
    handle(&mut responder, &decline);
    let request = with(
        message(KNOWN_2, MessageType::Discover),
        vec![DhcpOption::RequestedIpAddress(declined)],
    );

    let offer = handle_at(&mut responder, &request, START + 3600).expect("offer");

    assert_eq!(offer.message.yiaddr(), declined);
}

#[test]
fn inform_gets_ack_without_lease() {
    let mut responder = responder();
    let client = Ipv4Addr::new(10, 98, 0, 20);
    let mut inform = message(KNOWN, MessageType::Inform);
    inform.set_ciaddr(client);

    let reply = handle(&mut responder, &inform).expect("ack");

    assert_eq!(reply_type(&reply), Some(MessageType::Ack));
    assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(option(&reply, OptionCode::AddressLeaseTime).is_none());
    assert!(option(&reply, OptionCode::SubnetMask).is_some());
    assert_eq!(reply.destination, SocketAddrV4::new(client, 68));
    assert!(responder.leases().lease(&KNOWN).is_none());
}

#[test]
fn relayed_discover_goes_to_giaddr() {
    let mut responder = responder();
    let relay_address = Ipv4Addr::new(10, 98, 0, 2);
    let mut information = relay::RelayAgentInformation::default();
    information.insert(relay::RelayInfo::AgentCircuitId(b"port7".to_vec()));
    let mut discover = with(
        message(KNOWN, MessageType::Discover),
        vec![DhcpOption::RelayAgentInformation(information.clone())],
    );
    discover.set_giaddr(relay_address).set_hops(1);

    let reply = handle(&mut responder, &discover).expect("offer");

    assert_eq!(reply.destination, SocketAddrV4::new(relay_address, 67));
    assert_eq!(reply.message.giaddr(), relay_address);
    let sent = reply.encode().expect("reply encodes");
    let decoded = Message::from_bytes(&sent).expect("reply decodes");
    assert_eq!(
        decoded.opts().get(OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(information))
    );
}

#[test]
fn relayed_nak_sets_broadcast_flag() {
    let mut responder = responder();
    let relay_address = Ipv4Addr::new(10, 98, 0, 2);
    let mut request = with(
        message(KNOWN, MessageType::Request),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 1, 20,
        ))],
    );
    request.set_giaddr(relay_address);

    let reply = handle(&mut responder, &request).expect("nak");

    assert_eq!(reply_type(&reply), Some(MessageType::Nak));
    assert_eq!(reply.destination, SocketAddrV4::new(relay_address, 67));
    assert!(reply.message.flags().broadcast());
}

#[test]
fn malformed_packets_get_no_reply() {
    let mut responder = responder();
    let valid = message(KNOWN, MessageType::Discover)
        .to_vec()
        .expect("test message encodes");
    let mut reply_op = valid.clone();
    reply_op[0] = 2;
    let mut long_hlen = valid.clone();
    long_hlen[2] = 17;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", vec![0xff; 100]),
        ("header only", valid[..236].to_vec()),
        ("reply op", reply_op),
        ("hlen 17", long_hlen),
    ];

    for (name, bytes) in cases {
        assert!(
            responder
                .handle(&bytes, client_source(), at(START))
                .is_none(),
            "{name}"
        );
    }
}

#[test]
fn offer_is_padded_to_300_bytes() {
    let mut responder = responder();

    let reply = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");
    let bytes = reply.encode().expect("reply encodes");

    assert!(bytes.len() >= 300, "{} bytes", bytes.len());
}

#[test]
fn reservation_outside_pool_is_offered() {
    let mut responder = responder();
    let reserved = Ipv4Addr::new(10, 98, 0, 10);
    responder
        .leases()
        .reserve(KNOWN, reserved)
        .expect("address is free");

    let offer = handle(&mut responder, &message(KNOWN, MessageType::Discover)).expect("offer");

    assert_eq!(offer.message.yiaddr(), reserved);
}

#[test]
fn reservation_of_taken_address_is_rejected() {
    let mut responder = responder();
    let taken = lease(&mut responder, KNOWN, START);

    let result = responder.leases().reserve(KNOWN_2, taken);

    assert!(result.is_err());
}
