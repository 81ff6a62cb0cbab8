//! RMCP, RMCP+ session and IPMI LAN message framing: building requests and
//! checking every byte of what comes back.
//!
//! Every parser here takes untrusted bytes from the network and returns a
//! [`PacketError`] for anything short, inconsistent or unauthenticated. None
//! of them indexes past the input, which the property tests check with
//! random and mutated bytes.

use super::crypto::{SessionKeys, constant_time_eq};

/// RMCP version 1.0, reserved byte, sequence 0xFF (no RMCP ACK).
const RMCP_HEADER: [u8; 3] = [0x06, 0x00, 0xFF];
/// RMCP message class of IPMI packets.
const CLASS_IPMI: u8 = 0x07;
/// RMCP message class of ASF packets (presence ping and pong).
const CLASS_ASF: u8 = 0x06;
/// The ASF IANA enterprise number, most significant byte first.
const ASF_IANA: [u8; 4] = [0x00, 0x00, 0x11, 0xBE];
/// Authentication type byte of an IPMI 1.5 packet without authentication.
const AUTH_NONE: u8 = 0x00;
/// Authentication type byte that marks an RMCP+ (IPMI 2.0) packet.
const AUTH_RMCP_PLUS: u8 = 0x06;
/// Next-header byte of the integrity trailer.
const NEXT_HEADER: u8 = 0x07;
/// Requester address of a remote console (software id 0x40, shifted).
pub const CONSOLE_ADDRESS: u8 = 0x81;
/// Slave address of the BMC.
pub const BMC_ADDRESS: u8 = 0x20;

/// A defect of a received packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {0} bytes is too short")]
    TooShort(usize),
    #[error("not an RMCP packet (header {0:02x?})")]
    NotRmcp(Vec<u8>),
    #[error("RMCP class {0:#04x} is not IPMI")]
    NotIpmi(u8),
    #[error("authentication type {0:#04x} is neither none nor RMCP+")]
    AuthenticationType(u8),
    #[error("payload length {declared} does not fit the {available} bytes received")]
    Length { declared: usize, available: usize },
    #[error("OEM payloads are not supported")]
    OemPayload,
    #[error("packet is authenticated or encrypted but no session is established")]
    NoSession,
    #[error("packet of an established session is not authenticated and encrypted")]
    NotProtected,
    #[error("invalid integrity trailer: {0}")]
    Trailer(&'static str),
    #[error("integrity code does not match")]
    IntegrityCode,
    #[error("cannot decrypt payload: {0}")]
    Decrypt(&'static str),
    #[error("IPMI message of {0} bytes is too short")]
    MessageTooShort(usize),
    #[error("IPMI message checksum {0} is wrong")]
    Checksum(u8),
    #[error("IPMI message is addressed to {0:#04x}, not to this console")]
    Address(u8),
    #[error("not an ASF presence pong")]
    NotPong,
}

/// RMCP+ payload types (table 13-16 of the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Ipmi,
    Sol,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
    Other(u8),
}

impl PayloadType {
    pub fn code(self) -> u8 {
        match self {
            PayloadType::Ipmi => 0x00,
            PayloadType::Sol => 0x01,
            PayloadType::OpenSessionRequest => 0x10,
            PayloadType::OpenSessionResponse => 0x11,
            PayloadType::Rakp1 => 0x12,
            PayloadType::Rakp2 => 0x13,
            PayloadType::Rakp3 => 0x14,
            PayloadType::Rakp4 => 0x15,
            PayloadType::Other(code) => code,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            0x00 => PayloadType::Ipmi,
            0x01 => PayloadType::Sol,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            other => PayloadType::Other(other),
        }
    }
}

/// A received RMCP+ or IPMI 1.5 packet, checked and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub payload_type: PayloadType,
    /// The session id the packet names: the console's id for RMCP+ packets
    /// inside a session, 0 outside one.
    pub session_id: u32,
    pub sequence: u32,
    pub payload: Vec<u8>,
}

/// Builds an RMCP+ packet. With `keys`, the payload is encrypted with
/// AES-CBC-128 under `iv` and the packet carries an integrity code.
pub fn encode(
    payload_type: PayloadType,
    session_id: u32,
    sequence: u32,
    payload: &[u8],
    keys: Option<(&SessionKeys, [u8; 16])>,
) -> Vec<u8> {
    let mut out = RMCP_HEADER.to_vec();
    out.push(CLASS_IPMI);
    out.push(AUTH_RMCP_PLUS);
    let protected = if keys.is_some() { 0xC0 } else { 0x00 };
    out.push(payload_type.code() | protected);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());

    let body = match keys {
        Some((keys, iv)) => keys.encrypt(iv, payload),
        None => payload.to_vec(),
    };
    let body_len = u16::try_from(body.len()).expect("payloads are built well under 64 KiB");
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&body);

    if let Some((keys, _)) = keys {
        // Pad so that the integrity-covered part (from the authentication
        // type through the next header) is a multiple of 4 bytes.
        let covered = out.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xFF, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER);
        let code = keys.integrity_code(&out[4..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Builds an IPMI 1.5 packet outside a session, as Get Channel
/// Authentication Capabilities is sent before RMCP+ is negotiated.
pub fn encode_v15(message: &[u8]) -> Vec<u8> {
    let mut out = RMCP_HEADER.to_vec();
    out.push(CLASS_IPMI);
    out.push(AUTH_NONE);
    out.extend_from_slice(&[0; 8]); // session sequence and session id
    out.push(u8::try_from(message.len()).expect("pre-session messages are short"));
    out.extend_from_slice(message);
    out
}

/// Checks and unwraps a received packet. `keys` are the session's keys once
/// it is established; from then on every packet must be authenticated and
/// encrypted.
pub fn decode(bytes: &[u8], keys: Option<&SessionKeys>) -> Result<Packet, PacketError> {
    if bytes.len() < 5 {
        return Err(PacketError::TooShort(bytes.len()));
    }
    // The RMCP sequence byte (2) is not checked: IPMI packets carry 0xFF.
    if bytes[..2] != RMCP_HEADER[..2] {
        return Err(PacketError::NotRmcp(bytes[..4].to_vec()));
    }
    if bytes[3] != CLASS_IPMI {
        return Err(PacketError::NotIpmi(bytes[3]));
    }
    match bytes[4] {
        AUTH_NONE => decode_v15(bytes),
        AUTH_RMCP_PLUS => decode_v20(bytes, keys),
        other => Err(PacketError::AuthenticationType(other)),
    }
}

fn decode_v15(bytes: &[u8]) -> Result<Packet, PacketError> {
    // RMCP (4), auth type (1), sequence (4), session id (4), length (1).
    if bytes.len() < 14 {
        return Err(PacketError::TooShort(bytes.len()));
    }
    let sequence = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes"));
    let session_id = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
    let declared = usize::from(bytes[13]);
    let available = bytes.len() - 14;
    if declared > available {
        return Err(PacketError::Length {
            declared,
            available,
        });
    }
    Ok(Packet {
        payload_type: PayloadType::Ipmi,
        session_id,
        sequence,
        payload: bytes[14..14 + declared].to_vec(),
    })
}

fn decode_v20(bytes: &[u8], keys: Option<&SessionKeys>) -> Result<Packet, PacketError> {
    // RMCP (4), auth type (1), payload type (1), session id (4), sequence
    // (4), payload length (2).
    if bytes.len() < 16 {
        return Err(PacketError::TooShort(bytes.len()));
    }
    let type_byte = bytes[5];
    let encrypted = type_byte & 0x80 != 0;
    let authenticated = type_byte & 0x40 != 0;
    let payload_type = PayloadType::from_code(type_byte & 0x3F);
    if payload_type == PayloadType::Other(0x02) {
        return Err(PacketError::OemPayload);
    }
    let session_id = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes"));
    let sequence = u32::from_le_bytes(bytes[10..14].try_into().expect("4 bytes"));
    let declared = usize::from(u16::from_le_bytes([bytes[14], bytes[15]]));
    let available = bytes.len() - 16;
    if declared > available {
        return Err(PacketError::Length {
            declared,
            available,
        });
    }
    let body = &bytes[16..16 + declared];

    let keys = match (keys, encrypted || authenticated) {
        (None, false) => {
            return Ok(Packet {
                payload_type,
                session_id,
                sequence,
                payload: body.to_vec(),
            });
        }
        (None, true) => return Err(PacketError::NoSession),
        (Some(_), false) => return Err(PacketError::NotProtected),
        (Some(keys), true) => keys,
    };
    if !(encrypted && authenticated) {
        return Err(PacketError::NotProtected);
    }

    check_trailer(bytes, 16 + declared, keys)?;
    let payload = keys.decrypt(body).map_err(PacketError::Decrypt)?;
    Ok(Packet {
        payload_type,
        session_id,
        sequence,
        payload,
    })
}

/// Checks the integrity pad, pad length, next header and integrity code that
/// follow the payload at `end`.
fn check_trailer(bytes: &[u8], end: usize, keys: &SessionKeys) -> Result<(), PacketError> {
    let code_len = keys.suite.integrity_len();
    let trailer = &bytes[end..];
    if trailer.len() < code_len + 2 {
        return Err(PacketError::Trailer("shorter than the integrity code"));
    }
    let pad = trailer.len() - code_len - 2;
    if pad > 3 {
        return Err(PacketError::Trailer("more than 3 pad bytes"));
    }
    if usize::from(trailer[pad]) != pad {
        return Err(PacketError::Trailer("pad length does not match"));
    }
    if trailer[pad + 1] != NEXT_HEADER {
        return Err(PacketError::Trailer("next header is not 0x07"));
    }
    let covered = &bytes[4..bytes.len() - code_len];
    if !covered.len().is_multiple_of(4) {
        return Err(PacketError::Trailer(
            "covered length is not a multiple of 4",
        ));
    }
    let expected = keys.integrity_code(covered);
    if !constant_time_eq(&expected, &bytes[bytes.len() - code_len..]) {
        return Err(PacketError::IntegrityCode);
    }
    Ok(())
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
        .wrapping_neg()
}

/// Builds an IPMI request message to the BMC (LUN 0).
pub fn encode_request(net_fn: u8, lun: u8, rq_seq: u8, command: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![BMC_ADDRESS, (net_fn << 2) | (lun & 0x03)];
    out.push(checksum(&out));
    let start = out.len();
    out.extend_from_slice(&[CONSOLE_ADDRESS, rq_seq << 2, command]);
    out.extend_from_slice(data);
    out.push(checksum(&out[start..]));
    out
}

/// A checked IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub net_fn: u8,
    pub rq_seq: u8,
    pub command: u8,
    pub completion_code: u8,
    pub data: Vec<u8>,
}

/// Checks an IPMI response message: length, both checksums, the requester
/// address.
pub fn decode_response(bytes: &[u8]) -> Result<Response, PacketError> {
    // rqAddr, netFn/LUN, checksum, rsAddr, rqSeq/LUN, cmd, completion code,
    // checksum.
    if bytes.len() < 8 {
        return Err(PacketError::MessageTooShort(bytes.len()));
    }
    if checksum(&bytes[..2]) != bytes[2] {
        return Err(PacketError::Checksum(1));
    }
    let last = bytes.len() - 1;
    if checksum(&bytes[3..last]) != bytes[last] {
        return Err(PacketError::Checksum(2));
    }
    if bytes[0] != CONSOLE_ADDRESS {
        return Err(PacketError::Address(bytes[0]));
    }
    Ok(Response {
        net_fn: bytes[1] >> 2,
        rq_seq: bytes[4] >> 2,
        command: bytes[5],
        completion_code: bytes[6],
        data: bytes[7..last].to_vec(),
    })
}

/// Builds an ASF presence ping with `tag` (RMCP class 6).
pub fn encode_presence_ping(tag: u8) -> Vec<u8> {
    let mut out = RMCP_HEADER.to_vec();
    out.push(CLASS_ASF);
    out.extend_from_slice(&ASF_IANA);
    out.extend_from_slice(&[0x80, tag, 0x00, 0x00]);
    out
}

/// Checks an ASF presence pong for `tag` and returns whether it announces
/// IPMI support (bit 7 of the supported entities).
pub fn decode_presence_pong(bytes: &[u8], tag: u8) -> Result<bool, PacketError> {
    // RMCP (4), IANA (4), type, tag, reserved, length (4), then 16 data
    // bytes: IANA (4), OEM (4), entities, interactions, reserved (6).
    if bytes.len() < 12 + 16 {
        return Err(PacketError::TooShort(bytes.len()));
    }
    if bytes[..2] != RMCP_HEADER[..2] || bytes[3] != CLASS_ASF {
        return Err(PacketError::NotPong);
    }
    if bytes[4..8] != ASF_IANA || bytes[8] != 0x40 || bytes[9] != tag {
        return Err(PacketError::NotPong);
    }
    Ok(bytes[20] & 0x80 != 0)
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
