//! Decoding of client packets, with the checks that keep malformed input away
//! from code that would panic on it.
//!
//! dhcproto 0.15 asserts option lengths with `debug_assert!` (options 80, 81,
//! 94 and 151 to 155) and slices `chaddr` by the untrusted `hlen`. Those
//! assertions are active in debug builds, so [`parse`] checks the raw bytes
//! before handing them to dhcproto.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};

use crate::MacAddr;

/// Length of the fixed BOOTP header, up to and including `file`.
const HEADER_LEN: usize = 236;

/// Option 82, relay agent information (RFC 3046).
const RELAY_AGENT_INFORMATION: u8 = 82;

/// The magic cookie that starts the DHCP options (RFC 2131 section 3).
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Reason for dropping a packet before any processing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Malformed {
    #[error("packet of {len} bytes is shorter than a DHCP header")]
    TooShort { len: usize },

    #[error("op {op} is not BOOTREQUEST")]
    NotRequest { op: u8 },

    #[error("hardware type {htype} with length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },

    #[error("magic cookie is missing, so this is BOOTP or garbage")]
    NoMagicCookie,

    #[error("option {code} is truncated")]
    TruncatedOption { code: u8 },

    #[error("option {code} has invalid length {len}")]
    InvalidOptionLength { code: u8, len: usize },

    #[error("dhcproto rejected the packet: {0}")]
    Decode(String),

    #[error("option 53 (message type) is missing")]
    NoMessageType,
}

/// A decoded client message with the fields every handler needs.
#[derive(Debug, Clone)]
pub(crate) struct ClientRequest {
    pub(crate) message: Message,
    pub(crate) mac: MacAddr,
    pub(crate) message_type: MessageType,
    /// Option 82 as the relay agent sent it, split parts joined (RFC 3396).
    /// Replies echo these bytes, not dhcproto's re-encoding, because RFC 3046
    /// requires the server to return the option unchanged.
    pub(crate) relay_agent_information: Option<Vec<u8>>,
}

impl ClientRequest {
    /// Option 50, the address the client asks for.
    pub(crate) fn requested_ip(&self) -> Option<Ipv4Addr> {
        match self.message.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// Option 54, the server the client addresses.
    pub(crate) fn server_id(&self) -> Option<Ipv4Addr> {
        match self.message.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// `ciaddr`, or `None` when it is 0.0.0.0.
    pub(crate) fn ciaddr(&self) -> Option<Ipv4Addr> {
        Some(self.message.ciaddr()).filter(|ip| !ip.is_unspecified())
    }
}

/// Decodes a packet received on the server port.
pub(crate) fn parse(bytes: &[u8]) -> Result<ClientRequest, Malformed> {
    if bytes.len() < HEADER_LEN + MAGIC_COOKIE.len() {
        return Err(Malformed::TooShort { len: bytes.len() });
    }
    if bytes[0] != 1 {
        return Err(Malformed::NotRequest { op: bytes[0] });
    }
    // Known MACs are Ethernet addresses, so other hardware types cannot match.
    let (htype, hlen) = (bytes[1], bytes[2]);
    if htype != 1 || hlen != 6 {
        return Err(Malformed::NotEthernet { htype, hlen });
    }
    if bytes[HEADER_LEN..HEADER_LEN + 4] != MAGIC_COOKIE {
        return Err(Malformed::NoMagicCookie);
    }
    let relay_agent_information = check_option_lengths(&bytes[HEADER_LEN + 4..])?;

    let mut message = Message::decode(&mut Decoder::new(bytes))
        .map_err(|error| Malformed::Decode(error.to_string()))?;
    let message_type = message.opts().msg_type().ok_or(Malformed::NoMessageType)?;
    // dhcproto parses option 82 into sub-options, and its decoder stops at
    // the first option it cannot parse; the raw bytes are what replies need.
    message.opts_mut().remove(OptionCode::RelayAgentInformation);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[28..34]);

    Ok(ClientRequest {
        message,
        mac: MacAddr(mac),
        message_type,
        relay_agent_information,
    })
}

/// Walks the options area, rejects lengths that dhcproto asserts on, and
/// returns the raw data of option 82.
///
/// Consecutive instances of one option are concatenated first (RFC 3396), as
/// dhcproto does, and the check applies to the total length.
fn check_option_lengths(options: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
    let mut position = 0;
    let mut run: Option<(u8, usize)> = None;
    let mut relay_agent_information: Option<Vec<u8>> = None;

    // Each pass consumes at least one byte, so this ends within options.len().
    while position < options.len() {
        let code = options[position];
        if code == 0 {
            check_run(run.take())?;
            position += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let Some(&len) = options.get(position + 1) else {
            return Err(Malformed::TruncatedOption { code });
        };
        let len = usize::from(len);
        if position + 2 + len > options.len() {
            return Err(Malformed::TruncatedOption { code });
        }

        run = match run {
            Some((run_code, total)) if run_code == code => Some((code, total + len)),
            previous => {
                check_run(previous)?;
                Some((code, len))
            }
        };
        if code == RELAY_AGENT_INFORMATION {
            relay_agent_information
                .get_or_insert_with(Vec::new)
                .extend_from_slice(&options[position + 2..position + 2 + len]);
        }
        position += 2 + len;
    }
    check_run(run)?;
    // Instances need not be adjacent, so the joined length is checked here:
    // RFC 3046 allows at most 255 bytes, and the reply must echo them all.
    if let Some(data) = relay_agent_information
        .as_ref()
        .filter(|data| data.len() > 255)
    {
        return Err(Malformed::InvalidOptionLength {
            code: RELAY_AGENT_INFORMATION,
            len: data.len(),
        });
    }
    Ok(relay_agent_information)
}

fn check_run(run: Option<(u8, usize)>) -> Result<(), Malformed> {
    let Some((code, len)) = run else {
        return Ok(());
    };
    let valid = match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        // RFC 3046 limits the option to 255 bytes, so the echo fits one
        // instance and needs no splitting.
        RELAY_AGENT_INFORMATION => len <= 255,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    if valid {
        Ok(())
    } else {
        Err(Malformed::InvalidOptionLength { code, len })
    }
}

#[cfg(test)]
mod tests {
    use dhcproto::Encodable;
    use dhcproto::v4::{DhcpOption, Message, MessageType};

    use super::*;

    fn discover_bytes() -> Vec<u8> {
        let mut message = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 0, 0, 1],
        );
        message
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        message.to_vec().expect("valid message encodes")
    }

    /// Replaces the End option with `extra` followed by End.
    fn with_raw_options(extra: &[u8]) -> Vec<u8> {
        let mut bytes = discover_bytes();
        let end = bytes
            .iter()
            .rposition(|byte| *byte == 255)
            .expect("End option");
        bytes.truncate(end);
        bytes.extend_from_slice(extra);
        bytes.push(255);
        bytes
    }

    #[test]
    fn discover_parses_with_mac() {
        let request = parse(&discover_bytes()).expect("valid DISCOVER");

        assert_eq!(request.mac, MacAddr([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(request.message_type, MessageType::Discover);
    }

    #[test]
    fn short_packet_is_rejected() {
        assert_eq!(
            parse(&[1, 1, 6]).map(|_| ()),
            Err(Malformed::TooShort { len: 3 })
        );
    }

    #[test]
    fn oversized_hlen_is_rejected() {
        let mut bytes = discover_bytes();
        bytes[2] = 200;

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::NotEthernet {
                htype: 1,
                hlen: 200
            })
        );
    }

    #[test]
    fn reply_packet_is_rejected() {
        let mut bytes = discover_bytes();
        bytes[0] = 2;

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::NotRequest { op: 2 })
        );
    }

    #[test]
    fn missing_magic_cookie_is_rejected() {
        let mut bytes = discover_bytes();
        bytes[236] = 0;

        assert_eq!(parse(&bytes).map(|_| ()), Err(Malformed::NoMagicCookie));
    }

    #[test]
    fn option_94_with_wrong_length_is_rejected() {
        let bytes = with_raw_options(&[94, 2, 1, 2]);

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::InvalidOptionLength { code: 94, len: 2 })
        );
    }

    #[test]
    fn empty_option_151_is_rejected() {
        let bytes = with_raw_options(&[151, 0]);

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::InvalidOptionLength { code: 151, len: 0 })
        );
    }

    #[test]
    fn short_option_81_is_rejected() {
        let bytes = with_raw_options(&[81, 1, 0]);

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::InvalidOptionLength { code: 81, len: 1 })
        );
    }

    #[test]
    fn rapid_commit_with_payload_is_rejected() {
        let bytes = with_raw_options(&[80, 1, 0]);

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::InvalidOptionLength { code: 80, len: 1 })
        );
    }

    #[test]
    fn split_option_94_is_checked_after_concatenation() {
        let bytes = with_raw_options(&[94, 2, 1, 2, 94, 1, 3]);

        let request = parse(&bytes).expect("3 bytes in total are valid");

        assert_eq!(
            request
                .message
                .opts()
                .get(OptionCode::ClientNetworkInterface),
            Some(&DhcpOption::ClientNetworkInterface(1, 2, 3))
        );
    }

    #[test]
    fn relay_information_keeps_raw_bytes() {
        // Circuit ID "eth1" followed by an unknown sub-option 9 that a
        // parser could reorder or drop.
        let raw = [1, 4, b'e', b't', b'h', b'1', 9, 2, 0xab, 0xcd];
        let mut option = vec![82, raw.len() as u8];
        option.extend_from_slice(&raw);
        let bytes = with_raw_options(&option);

        let request = parse(&bytes).expect("valid option 82");

        assert_eq!(request.relay_agent_information.as_deref(), Some(&raw[..]));
    }

    #[test]
    fn option_82_over_255_bytes_in_total_is_rejected() {
        let mut options = vec![82, 200];
        options.extend_from_slice(&[1; 200]);
        options.extend_from_slice(&[12, 1, b'x', 82, 100]);
        options.extend_from_slice(&[2; 100]);
        let bytes = with_raw_options(&options);

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::InvalidOptionLength { code: 82, len: 300 })
        );
    }

    #[test]
    fn truncated_option_is_rejected() {
        let mut bytes = discover_bytes();
        bytes.truncate(bytes.len() - 1);
        bytes.extend_from_slice(&[60, 9, b'P']);

        assert_eq!(
            parse(&bytes).map(|_| ()),
            Err(Malformed::TruncatedOption { code: 60 })
        );
    }

    #[test]
    fn missing_message_type_is_rejected() {
        let mut message = Message::default();
        message.set_chaddr(&[0x52, 0x54, 0, 0, 0, 1]);
        message
            .opts_mut()
            .insert(DhcpOption::Hostname("node".to_string()));
        let bytes = message.to_vec().expect("valid message encodes");

        assert_eq!(parse(&bytes).map(|_| ()), Err(Malformed::NoMessageType));
    }
}
