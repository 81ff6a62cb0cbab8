//! TFTP packet formats (RFC 1350) with option extensions (RFC 2347).

/// TFTP opcodes.
const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// TFTP error codes (RFC 1350 and RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    OptionNegotiation = 8,
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// File name as sent, without the terminating NUL. Not necessarily UTF-8.
    pub(crate) filename: Vec<u8>,
    /// Transfer mode, lowercased.
    pub(crate) mode: String,
    /// Options in request order, names lowercased. A repeated name keeps its
    /// first value.
    pub(crate) options: Vec<(String, String)>,
}

/// A decoded TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Packet {
    ReadRequest(Request),
    WriteRequest(Request),
    Data { block: u16, len: usize },
    Ack { block: u16 },
    Error { code: u16, message: String },
    OptionAck,
}

/// Reason a packet could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PacketError {
    #[error("packet of {len} bytes is too short")]
    TooShort { len: usize },
    #[error("unknown opcode {opcode}")]
    UnknownOpcode { opcode: u16 },
    #[error("request is not a NUL-terminated file name and mode")]
    MalformedRequest,
}

/// Decodes one packet.
pub(crate) fn parse(bytes: &[u8]) -> Result<Packet, PacketError> {
    let [high, low, body @ ..] = bytes else {
        return Err(PacketError::TooShort { len: bytes.len() });
    };

    match u16::from_be_bytes([*high, *low]) {
        RRQ => parse_request(body).map(Packet::ReadRequest),
        WRQ => parse_request(body).map(Packet::WriteRequest),
        DATA => match body {
            [high, low, payload @ ..] => Ok(Packet::Data {
                block: u16::from_be_bytes([*high, *low]),
                len: payload.len(),
            }),
            _ => Err(PacketError::TooShort { len: bytes.len() }),
        },
        ACK => match body {
            [high, low, ..] => Ok(Packet::Ack {
                block: u16::from_be_bytes([*high, *low]),
            }),
            _ => Err(PacketError::TooShort { len: bytes.len() }),
        },
        ERROR => match body {
            [high, low, message @ ..] => Ok(Packet::Error {
                code: u16::from_be_bytes([*high, *low]),
                message: String::from_utf8_lossy(message.split(|b| *b == 0).next().unwrap_or(&[]))
                    .into_owned(),
            }),
            _ => Err(PacketError::TooShort { len: bytes.len() }),
        },
        OACK => Ok(Packet::OptionAck),
        opcode => Err(PacketError::UnknownOpcode { opcode }),
    }
}

fn parse_request(body: &[u8]) -> Result<Request, PacketError> {
    // Every field ends with NUL, so the last split piece is empty.
    let pieces: Vec<&[u8]> = body.split(|byte| *byte == 0).collect();
    let Some((last, fields)) = pieces.split_last() else {
        return Err(PacketError::MalformedRequest);
    };
    let (filename, mode, options) = match fields {
        [filename, mode, options @ ..] if last.is_empty() => (filename, mode, options),
        _ => return Err(PacketError::MalformedRequest),
    };

    let mut parsed: Vec<(String, String)> = Vec::new();
    // A trailing name without a value is ignored, as RFC 2347 servers may.
    for pair in options.chunks_exact(2) {
        let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
        if !parsed.iter().any(|(existing, _)| *existing == name) {
            parsed.push((name, String::from_utf8_lossy(pair[1]).into_owned()));
        }
    }

    Ok(Request {
        filename: filename.to_vec(),
        mode: String::from_utf8_lossy(mode).to_ascii_lowercase(),
        options: parsed,
    })
}

/// Encodes a DATA packet.
pub(crate) fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend_from_slice(&DATA.to_be_bytes());
    bytes.extend_from_slice(&block.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Encodes an ERROR packet. `message` must not contain NUL.
pub(crate) fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + message.len());
    bytes.extend_from_slice(&ERROR.to_be_bytes());
    bytes.extend_from_slice(&(code as u16).to_be_bytes());
    bytes.extend_from_slice(message.as_bytes());
    bytes.push(0);
    bytes
}

/// Encodes an OACK packet with the accepted options.
pub(crate) fn option_ack(options: &[(String, String)]) -> Vec<u8> {
    let mut bytes = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Encodes an ACK packet. The server sends none; tests use it as a client.
#[cfg(test)]
pub(crate) fn ack(block: u16) -> Vec<u8> {
    let mut bytes = ACK.to_be_bytes().to_vec();
    bytes.extend_from_slice(&block.to_be_bytes());
    bytes
}

/// Encodes a read request. Tests use it as a client.
#[cfg(test)]
pub(crate) fn read_request(filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = RRQ.to_be_bytes().to_vec();
    for field in [filename, mode]
        .into_iter()
        .chain(options.iter().flat_map(|(name, value)| [*name, *value]))
    {
        bytes.extend_from_slice(field.as_bytes());
        bytes.push(0);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_request_with_options_parses() {
        let bytes = read_request(
            "undionly.kpxe",
            "OCTET",
            &[("BLKSIZE", "1432"), ("tsize", "0")],
        );

        let packet = parse(&bytes).expect("valid RRQ");

        assert_eq!(
            packet,
            Packet::ReadRequest(Request {
                filename: b"undionly.kpxe".to_vec(),
                mode: "octet".to_string(),
                options: vec![
                    ("blksize".to_string(), "1432".to_string()),
                    ("tsize".to_string(), "0".to_string()),
                ],
            })
        );
    }

    #[test]
    fn repeated_option_keeps_first_value() {
        let bytes = read_request("f", "octet", &[("blksize", "512"), ("blksize", "1468")]);

        let Ok(Packet::ReadRequest(request)) = parse(&bytes) else {
            panic!("valid RRQ");
        };

        assert_eq!(
            request.options,
            vec![("blksize".to_string(), "512".to_string())]
        );
    }

    #[test]
    fn request_without_final_nul_is_rejected() {
        let mut bytes = read_request("f", "octet", &[]);
        bytes.pop();

        assert_eq!(parse(&bytes), Err(PacketError::MalformedRequest));
    }

    #[test]
    fn request_without_mode_is_rejected() {
        assert_eq!(
            parse(b"\x00\x01file\x00"),
            Err(PacketError::MalformedRequest)
        );
    }

    #[test]
    fn ack_and_error_parse() {
        assert_eq!(parse(&ack(7)), Ok(Packet::Ack { block: 7 }));
        assert_eq!(
            parse(&error(
                ErrorCode::OptionNegotiation,
                "User aborted the transfer"
            )),
            Ok(Packet::Error {
                code: 8,
                message: "User aborted the transfer".to_string()
            })
        );
    }

    #[test]
    fn short_and_unknown_packets_are_rejected() {
        assert_eq!(parse(&[0]), Err(PacketError::TooShort { len: 1 }));
        assert_eq!(parse(&[0, 4, 1]), Err(PacketError::TooShort { len: 3 }));
        assert_eq!(
            parse(&[0, 9]),
            Err(PacketError::UnknownOpcode { opcode: 9 })
        );
    }

    #[test]
    fn option_ack_encodes_pairs() {
        let bytes = option_ack(&[("blksize".to_string(), "1468".to_string())]);

        assert_eq!(bytes, b"\x00\x06blksize\x001468\x00");
    }
}
