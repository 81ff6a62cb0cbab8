//! Replays of DHCPDISCOVER packets that real firmware sent, captured into
//! `tests/fixtures/dhcp-firmware/`, whose README describes how each was made.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, UNIX_EPOCH};

use dhcproto::Decodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};

use super::{Arrival, Responder};
use crate::MacAddr;
use crate::dhcp::config::tests::sample_config;
use crate::dhcp::config::{DhcpConfig, DhcpMode};
use crate::dhcp::lease::LeaseStore;
use crate::dhcp::reply::Reply;

const FIRMWARE_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x62, 0x00, 0x10]);

const IPXE_BIOS: &[u8] =
    include_bytes!("../../../tests/fixtures/dhcp-firmware/ipxe-bios-discover.bin");
const OVMF_PXE: &[u8] =
    include_bytes!("../../../tests/fixtures/dhcp-firmware/ovmf-pxe-discover.bin");
const OVMF_HTTP: &[u8] =
    include_bytes!("../../../tests/fixtures/dhcp-firmware/ovmf-http-discover.bin");
const BIOS_PXE_ROM: &[u8] =
    include_bytes!("../../../tests/fixtures/dhcp-firmware/bios-pxe-rom-discover.bin");

/// Each fixture with the boot file name a full server must send back.
const CASES: [(&str, &[u8], &str); 4] = [
    (
        "ipxe-bios",
        IPXE_BIOS,
        "http://10.98.0.1:8080/boot/52-54-00-62-00-10.ipxe",
    ),
    ("ovmf-pxe", OVMF_PXE, "snponly.efi"),
    ("ovmf-http", OVMF_HTTP, "http://10.98.0.1:8080/ipxe.efi"),
    ("bios-pxe-rom", BIOS_PXE_ROM, "undionly.kpxe"),
];

fn responder(config: DhcpConfig) -> Responder {
    Responder::new(
        config,
        [FIRMWARE_MAC].into_iter().collect(),
        LeaseStore::in_memory(),
    )
}

fn replay(responder: &mut Responder, bytes: &[u8]) -> Option<Reply> {
    let source = SocketAddr::from(([0, 0, 0, 0], 68));
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    responder.handle_on(bytes, source, Arrival::ServerPort, now)
}

/// Returns the NUL-terminated `file` field of the encoded reply.
fn wire_file(reply: &Reply) -> String {
    let bytes = reply.encode().expect("reply encodes");
    let field = &bytes[108..236];
    let end = field
        .iter()
        .position(|byte| *byte == 0)
        .expect("NUL inside the field");
    String::from_utf8_lossy(&field[..end]).to_string()
}

/// Decodes what the server would put on the wire.
fn wire(reply: &Reply) -> Message {
    let bytes = reply.encode().expect("reply encodes");
    Message::from_bytes(&bytes).expect("reply decodes")
}

#[test]
fn firmware_discover_gets_offer_with_boot_file() {
    for (name, bytes, file) in CASES {
        let mut responder = responder(sample_config());

        let reply = replay(&mut responder, bytes).unwrap_or_else(|| panic!("{name}: no reply"));
        let sent = wire(&reply);

        assert_eq!(sent.opts().msg_type(), Some(MessageType::Offer), "{name}");
        assert_eq!(wire_file(&reply), file, "{name}");
        assert!(sample_config().pool_contains(sent.yiaddr()), "{name}");
        assert_eq!(&sent.chaddr()[..6], &FIRMWARE_MAC.0, "{name}");
    }
}

#[test]
fn firmware_discover_gets_proxy_offer_without_address() {
    let config = DhcpConfig {
        mode: DhcpMode::Proxy,
        ..sample_config()
    };
    for (name, bytes, file) in CASES {
        let mut responder = responder(config.clone());

        let reply = replay(&mut responder, bytes).unwrap_or_else(|| panic!("{name}: no reply"));
        let sent = wire(&reply);

        assert_eq!(sent.yiaddr(), Ipv4Addr::UNSPECIFIED, "{name}");
        assert_eq!(wire_file(&reply), file, "{name}");
        assert!(
            matches!(
                sent.opts().get(OptionCode::ClassIdentifier),
                Some(DhcpOption::ClassIdentifier(class))
                    if class == b"PXEClient" || class == b"HTTPClient"
            ),
            "{name}"
        );
    }
}

#[test]
fn uefi_firmware_gets_machine_identifier_back_from_proxy() {
    let config = DhcpConfig {
        mode: DhcpMode::Proxy,
        ..sample_config()
    };
    let mut responder = responder(config);

    let reply = replay(&mut responder, OVMF_PXE).expect("proxy offer");

    assert!(
        wire(&reply)
            .opts()
            .get(OptionCode::ClientMachineIdentifier)
            .is_some()
    );
}

#[test]
fn http_boot_offer_carries_http_client_class() {
    let mut responder = responder(sample_config());

    let reply = replay(&mut responder, OVMF_HTTP).expect("offer");

    assert_eq!(
        wire(&reply).opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
}

#[test]
fn relayed_firmware_discover_goes_to_relay() {
    let relay = Ipv4Addr::new(10, 97, 5, 1);
    for (name, bytes, _) in CASES {
        let mut relayed = bytes.to_vec();
        relayed[3] = 1;
        relayed[24..28].copy_from_slice(&relay.octets());
        let mut responder = responder(sample_config());

        let reply = replay(&mut responder, &relayed).unwrap_or_else(|| panic!("{name}: no reply"));

        assert_eq!(reply.destination, SocketAddrV4::new(relay, 67), "{name}");
        assert_eq!(
            reply.message.yiaddr(),
            Ipv4Addr::new(10, 97, 5, 100),
            "{name}"
        );
    }
}

#[test]
fn unknown_firmware_mac_gets_no_reply() {
    for (name, bytes, _) in CASES {
        let mut other = bytes.to_vec();
        other[33] ^= 0xff;
        let mut responder = responder(sample_config());

        assert!(replay(&mut responder, &other).is_none(), "{name}");
    }
}
