//! Property tests over whole packets: arbitrary input never panics the
//! handler, replies are well formed, unknown MACs never get a reply, no
//! address is granted to two MACs at once, and replies to relayed requests
//! go through their relay.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};
use proptest::prelude::*;

use std::collections::HashMap;
use std::net::SocketAddrV4;

use super::{Arrival, Responder};
use crate::MacAddr;
use crate::dhcp::config::tests::sample_config;
use crate::dhcp::config::{DhcpConfig, DhcpMode};
use crate::dhcp::lease::{LeaseStore, OFFER_HOLD};
use crate::dhcp::reply::Reply;

const KNOWN: [MacAddr; 2] = [
    MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]),
    MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x11]),
];
const UNKNOWN: [MacAddr; 2] = [
    MacAddr([0x52, 0x54, 0x00, 0x99, 0x00, 0x01]),
    MacAddr([0xde, 0xad, 0xc0, 0xde, 0xca, 0xfe]),
];

fn responder() -> Responder {
    responder_with(sample_config())
}

fn responder_with(config: DhcpConfig) -> Responder {
    Responder::new(
        config,
        KNOWN.iter().copied().collect(),
        LeaseStore::in_memory(),
    )
}

fn source() -> SocketAddr {
    SocketAddr::from(([10, 98, 0, 50], 68))
}

fn mac_strategy() -> impl Strategy<Value = MacAddr> {
    prop_oneof![
        Just(KNOWN[0]),
        Just(KNOWN[1]),
        Just(UNKNOWN[0]),
        Just(UNKNOWN[1]),
        any::<[u8; 6]>().prop_map(MacAddr),
    ]
}

fn message_type_strategy() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Discover),
        Just(MessageType::Request),
        Just(MessageType::Release),
        Just(MessageType::Decline),
        Just(MessageType::Inform),
        Just(MessageType::Offer),
        Just(MessageType::Ack),
        any::<u8>().prop_map(MessageType::from),
    ]
}

/// Addresses around the sample pool (10.98.0.100-199) and the relay
/// subnet's pool (10.97.5.100-199), plus a few elsewhere.
fn address_strategy() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (95u8..205).prop_map(|last| Ipv4Addr::new(10, 98, 0, last)),
        (95u8..105).prop_map(|last| Ipv4Addr::new(10, 97, 5, last)),
        Just(Ipv4Addr::new(10, 98, 0, 1)),
        Just(Ipv4Addr::new(10, 98, 0, 255)),
        Just(Ipv4Addr::UNSPECIFIED),
        any::<u32>().prop_map(Ipv4Addr::from_bits),
    ]
}

fn vendor_class_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(b"PXEClient:Arch:00000:UNDI:002001".to_vec())),
        Just(Some(b"PXEClient:Arch:00007:UNDI:003000".to_vec())),
        Just(Some(b"HTTPClient:Arch:00016:UNDI:003000".to_vec())),
        Just(Some(b"HTTPClient:Arch:00019:UNDI:003000".to_vec())),
        Just(Some(b"udhcp 1.35.0".to_vec())),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Some),
    ]
}

/// Everything a well-formed client message can vary in.
#[derive(Debug, Clone)]
struct ClientMessage {
    mac: MacAddr,
    message_type: MessageType,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    broadcast: bool,
    vendor_class: Option<Vec<u8>>,
    user_class: Option<Vec<u8>>,
    arch: Option<u16>,
    ipxe_encapsulated: Option<Vec<u8>>,
    relay_information: Option<Vec<u8>>,
    seconds: u64,
}

prop_compose! {
    fn client_message_strategy()(
        mac in mac_strategy(),
        message_type in message_type_strategy(),
        requested in proptest::option::of(address_strategy()),
        server_id in proptest::option::of(prop_oneof![
            Just(Ipv4Addr::new(10, 98, 0, 1)),
            address_strategy(),
        ]),
        ciaddr in prop_oneof![Just(Ipv4Addr::UNSPECIFIED), address_strategy()],
        giaddr in prop_oneof![
            Just(Ipv4Addr::UNSPECIFIED),
            Just(Ipv4Addr::new(10, 97, 5, 1)),
            Just(Ipv4Addr::new(10, 98, 0, 2)),
            address_strategy(),
        ],
        broadcast in any::<bool>(),
        vendor_class in vendor_class_strategy(),
        user_class in proptest::option::of(prop_oneof![
            Just(b"iPXE".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ]),
        arch in proptest::option::of(prop_oneof![
            Just(0u16), Just(7), Just(9), Just(11), Just(16), Just(19), any::<u16>(),
        ]),
        ipxe_encapsulated in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        relay_information in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
        seconds in 0u64..20_000,
    ) -> ClientMessage {
        ClientMessage {
            mac, message_type, requested, server_id, ciaddr, giaddr, broadcast,
            vendor_class, user_class, arch, ipxe_encapsulated, relay_information, seconds,
        }
    }
}

impl ClientMessage {
    fn encode(&self) -> Vec<u8> {
        let mut message = Message::new(
            self.ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr,
            &self.mac.0,
        );
        if self.broadcast {
            message.set_flags(Flags::default().set_broadcast());
        }

        let options = message.opts_mut();
        options.insert(DhcpOption::MessageType(self.message_type));
        if let Some(ip) = self.requested {
            options.insert(DhcpOption::RequestedIpAddress(ip));
        }
        if let Some(ip) = self.server_id {
            options.insert(DhcpOption::ServerIdentifier(ip));
        }
        if let Some(class) = &self.vendor_class {
            options.insert(DhcpOption::ClassIdentifier(class.clone()));
        }
        if let Some(class) = &self.user_class {
            options.insert(DhcpOption::UserClass(class.clone()));
        }
        if let Some(arch) = self.arch {
            options.insert(DhcpOption::ClientSystemArchitecture(Architecture(arch)));
        }
        if let Some(data) = &self.ipxe_encapsulated {
            let option = UnknownOption::new(OptionCode::Unknown(175), data.clone());
            options.insert(DhcpOption::Unknown(option));
        }
        let mut bytes = message.to_vec().expect("generated message encodes");
        // Written by hand, because dhcproto 0.15 encodes a raw option 82 twice.
        if let Some(data) = &self.relay_information {
            bytes.pop();
            bytes.push(82);
            bytes.push(data.len() as u8);
            bytes.extend_from_slice(data);
            bytes.push(255);
        }
        bytes
    }

    fn time(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + self.seconds)
    }
}

/// Builds a valid header from a known MAC followed by arbitrary option bytes.
fn header_with_options(options: &[u8]) -> Vec<u8> {
    let mut message = Message::default();
    message.set_chaddr(&KNOWN[0].0);
    let mut bytes = message.to_vec().expect("empty message encodes");
    bytes.truncate(240);
    bytes.extend_from_slice(options);
    bytes
}

/// Checks what every reply must satisfy, whatever the request: it encodes,
/// fits a BOOTP message, carries the request's `xid` and `chaddr`, names our
/// server, and goes to a DHCP port.
fn check_well_formed(reply: &Reply, request: &Message) -> Result<(), TestCaseError> {
    let bytes = reply
        .encode()
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    prop_assert!(bytes.len() >= 300);
    prop_assert_eq!(bytes[0], 2, "op is BOOTREPLY");
    prop_assert_eq!(&bytes[236..240], &[99, 130, 83, 99]);
    prop_assert_eq!(reply.message.xid(), request.xid());
    prop_assert_eq!(&reply.message.chaddr()[..6], &request.chaddr()[..6]);
    prop_assert!(reply.message.opts().msg_type().is_some());
    prop_assert_eq!(
        reply.message.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 98, 0, 1)))
    );
    prop_assert!(bytes[108..236].contains(&0), "file field is NUL-terminated");
    prop_assert!([67, 68].contains(&reply.destination.port()));
    Ok(())
}

/// Returns the data of every instance of option `code` in an encoded
/// message, joined (RFC 3396), or `None` when it has none.
fn option_instances(bytes: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut position = 240;
    let mut found: Option<Vec<u8>> = None;
    while position + 1 < bytes.len() {
        match bytes[position] {
            0 => position += 1,
            255 => break,
            current => {
                let len = usize::from(bytes[position + 1]);
                let data = bytes.get(position + 2..position + 2 + len)?;
                if current == code {
                    found.get_or_insert_with(Vec::new).extend_from_slice(data);
                }
                position += 2 + len;
            }
        }
    }
    found
}

fn reply_mac(reply: &super::Reply) -> MacAddr {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&reply.message.chaddr()[..6]);
    MacAddr(mac)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let mut responder = responder();

        if let Some(reply) = responder.handle(&bytes, source(), UNIX_EPOCH) {
            prop_assert!(KNOWN.contains(&reply_mac(&reply)));
            prop_assert!(reply.encode().is_ok());
        }
    }

    #[test]
    fn arbitrary_options_never_panic(options in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut responder = responder();
        let mut proxy = responder_with(DhcpConfig { mode: DhcpMode::Proxy, ..sample_config() });
        let packet = header_with_options(&options);
        let _ = proxy.handle_on(&packet, source(), Arrival::PxePort, UNIX_EPOCH);

        if let Some(reply) = responder.handle(&header_with_options(&options), source(), UNIX_EPOCH) {
            prop_assert!(reply.encode().is_ok());
        }
    }

    #[test]
    fn unknown_macs_never_get_replies(
        messages in proptest::collection::vec(client_message_strategy(), 1..30),
    ) {
        let mut responder = responder();

        for message in &messages {
            let reply = responder.handle(&message.encode(), source(), message.time());
            let known = KNOWN.contains(&message.mac);
            prop_assert!(known || reply.is_none(), "reply to unknown {}", message.mac);
            if let Some(reply) = reply {
                prop_assert_eq!(reply_mac(&reply), message.mac);
                prop_assert!(reply.encode().is_ok());
            }
        }
    }

    #[test]
    fn leases_never_share_an_address(
        messages in proptest::collection::vec(client_message_strategy(), 1..60),
    ) {
        let mut responder = responder();

        for message in &messages {
            responder.handle(&message.encode(), source(), message.time());
        }

        let leases = responder.leases().leases();
        let mut addresses: Vec<Ipv4Addr> = leases.iter().map(|lease| lease.ip).collect();
        addresses.dedup();
        prop_assert_eq!(addresses.len(), leases.len());
        let config = sample_config();
        let relay = config.relay_subnets[0].scope();
        for lease in &leases {
            prop_assert!(KNOWN.contains(&lease.mac));
            prop_assert!(config.is_assignable(lease.ip) || relay.is_assignable(lease.ip));
        }
    }

    #[test]
    fn replies_are_well_formed(
        messages in proptest::collection::vec(client_message_strategy(), 1..30),
    ) {
        let mut responder = responder();

        for message in &messages {
            let bytes = message.encode();
            let request = Message::from_bytes(&bytes).expect("generated message decodes");
            if let Some(reply) = responder.handle(&bytes, source(), message.time()) {
                check_well_formed(&reply, &request)?;
            }
        }
    }

    #[test]
    fn relayed_replies_go_to_giaddr(
        messages in proptest::collection::vec(client_message_strategy(), 1..30),
    ) {
        let mut responder = responder();

        for message in &messages {
            let reply = responder.handle(&message.encode(), source(), message.time());
            if let Some(reply) = reply.filter(|_| !message.giaddr.is_unspecified()) {
                prop_assert_eq!(reply.destination, SocketAddrV4::new(message.giaddr, 67));
                prop_assert_eq!(reply.message.giaddr(), message.giaddr);
                let bytes = reply.encode().map_err(|error| TestCaseError::fail(error.to_string()))?;
                prop_assert_eq!(option_instances(&bytes, 82), message.relay_information.clone());
            }
        }
    }

    #[test]
    fn no_address_is_granted_to_two_macs_at_once(
        mut messages in proptest::collection::vec(client_message_strategy(), 1..80),
    ) {
        messages.sort_by_key(|message| message.seconds);
        let mut responder = responder();
        let lease_seconds = sample_config().lease_time.as_secs();
        // Address -> (MAC, Unix second until which the grant holds).
        let mut grants: HashMap<Ipv4Addr, (MacAddr, u64)> = HashMap::new();

        for message in &messages {
            let now = 1_700_000_000 + message.seconds;
            let reply = responder.handle(&message.encode(), source(), message.time());
            // A client that gives up, declines or picks another server ends
            // its grants; that is when the server may hand them on.
            let gives_up = matches!(message.message_type, MessageType::Release | MessageType::Decline)
                || (message.message_type == MessageType::Request
                    && message.server_id.is_some_and(|id| id != Ipv4Addr::new(10, 98, 0, 1)));
            if gives_up {
                grants.retain(|_, (mac, _)| *mac != message.mac);
            }
            let Some(reply) = reply else { continue };
            let ip = reply.message.yiaddr();
            let until = match reply.message.opts().msg_type() {
                Some(MessageType::Offer) => now + OFFER_HOLD.as_secs(),
                Some(MessageType::Ack) if !ip.is_unspecified() => now + lease_seconds,
                _ => continue,
            };
            if let Some((holder, holder_until)) = grants.get(&ip) {
                prop_assert!(
                    *holder == message.mac || *holder_until <= now,
                    "{} granted to {} while {} holds it until {}", ip, message.mac, holder, holder_until
                );
            }
            // A MAC has one lease, so its other grants end here.
            grants.retain(|_, (mac, _)| *mac != message.mac);
            grants.insert(ip, (message.mac, until));
        }
    }

    #[test]
    fn proxy_never_leases_an_address(
        messages in proptest::collection::vec(client_message_strategy(), 1..30),
        on_pxe_port in proptest::collection::vec(any::<bool>(), 30),
    ) {
        let config = DhcpConfig { mode: DhcpMode::Proxy, ..sample_config() };
        let mut responder = responder_with(config);

        for (message, pxe_port) in messages.iter().zip(on_pxe_port) {
            let arrival = if pxe_port { Arrival::PxePort } else { Arrival::ServerPort };
            let bytes = message.encode();
            let reply = responder.handle_on(&bytes, source(), arrival, message.time());
            if let Some(reply) = reply {
                prop_assert_eq!(reply.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
                prop_assert!(reply.message.opts().get(OptionCode::AddressLeaseTime).is_none());
                prop_assert!(KNOWN.contains(&message.mac));
                prop_assert!(reply.encode().is_ok());
            }
        }
        prop_assert!(responder.leases().leases().is_empty());
    }
}
