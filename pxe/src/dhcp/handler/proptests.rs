//! Property tests: arbitrary input never panics the handler, and unknown MACs
//! never get a reply.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use dhcproto::Encodable;
use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
};
use proptest::prelude::*;

use super::Responder;
use crate::MacAddr;
use crate::dhcp::config::tests::sample_config;
use crate::dhcp::lease::LeaseStore;

const KNOWN: [MacAddr; 2] = [
    MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]),
    MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x11]),
];
const UNKNOWN: [MacAddr; 2] = [
    MacAddr([0x52, 0x54, 0x00, 0x99, 0x00, 0x01]),
    MacAddr([0xde, 0xad, 0xc0, 0xde, 0xca, 0xfe]),
];

fn responder() -> Responder {
    Responder::new(
        sample_config(),
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

/// Addresses around the sample pool (10.98.0.100-199), plus a few elsewhere.
fn address_strategy() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (95u8..205).prop_map(|last| Ipv4Addr::new(10, 98, 0, last)),
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
        giaddr in prop_oneof![Just(Ipv4Addr::UNSPECIFIED), address_strategy()],
        broadcast in any::<bool>(),
        vendor_class in vendor_class_strategy(),
        user_class in proptest::option::of(prop_oneof![
            Just(b"iPXE".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ]),
        arch in proptest::option::of(prop_oneof![Just(0u16), Just(7), Just(9), any::<u16>()]),
        ipxe_encapsulated in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        seconds in 0u64..20_000,
    ) -> ClientMessage {
        ClientMessage {
            mac, message_type, requested, server_id, ciaddr, giaddr, broadcast,
            vendor_class, user_class, arch, ipxe_encapsulated, seconds,
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
        message.to_vec().expect("generated message encodes")
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
        for lease in &leases {
            prop_assert!(KNOWN.contains(&lease.mac));
            prop_assert!(sample_config().is_assignable(lease.ip));
        }
    }
}
