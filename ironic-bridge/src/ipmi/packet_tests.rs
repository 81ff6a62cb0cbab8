use proptest::prelude::*;

use super::super::crypto::{CipherSuite, SessionKeys};
use super::{
    PacketError, PayloadType, decode, decode_presence_pong, decode_response, encode,
    encode_presence_ping, encode_request, encode_v15,
};

fn keys(suite: CipherSuite) -> SessionKeys {
    SessionKeys::derive(suite, &[0x42; 32])
}

/// A response message as a BMC builds it, for the round-trip tests.
fn response_bytes(rq_seq: u8, command: u8, code: u8, data: &[u8]) -> Vec<u8> {
    let mut message = encode_request(0x01, 0, rq_seq, command, &[code]);
    // Turn the request into a response: swap addresses and recompute the
    // checksums.
    message.pop();
    message[0] = 0x81;
    message[1] = 0x07 << 2;
    message[2] = (0u8).wrapping_sub(message[0].wrapping_add(message[1]));
    message[3] = 0x20;
    message.extend_from_slice(data);
    let sum = message[3..]
        .iter()
        .fold(0u8, |acc, byte| acc.wrapping_add(*byte));
    message.push(sum.wrapping_neg());
    message
}

#[test]
fn protected_packet_round_trips_both_suites() {
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let keys = keys(suite);
        let bytes = encode(
            PayloadType::Ipmi,
            0xAABB_CCDD,
            7,
            b"hello",
            Some((&keys, [3; 16])),
        );
        let packet = decode(&bytes, Some(&keys)).expect("own packet decodes");
        assert_eq!(packet.payload, b"hello");
        assert_eq!(packet.session_id, 0xAABB_CCDD);
        assert_eq!(packet.sequence, 7);
        assert_eq!((bytes.len() - 4 - suite.integrity_len()) % 4, 0);
    }
}

#[test]
fn flipped_byte_fails_integrity_check() {
    let keys = keys(CipherSuite::Suite3);
    let mut bytes = encode(PayloadType::Ipmi, 1, 1, b"x", Some((&keys, [0; 16])));
    bytes[20] ^= 0x01;
    assert_eq!(decode(&bytes, Some(&keys)), Err(PacketError::IntegrityCode));
}

#[test]
fn unprotected_packet_in_session_is_rejected() {
    let keys = keys(CipherSuite::Suite3);
    let bytes = encode(PayloadType::Ipmi, 1, 1, b"x", None);
    assert_eq!(decode(&bytes, Some(&keys)), Err(PacketError::NotProtected));
}

#[test]
fn protected_packet_without_session_is_rejected() {
    let keys = keys(CipherSuite::Suite3);
    let bytes = encode(PayloadType::Ipmi, 1, 1, b"x", Some((&keys, [0; 16])));
    assert_eq!(decode(&bytes, None), Err(PacketError::NoSession));
}

#[test]
fn short_packet_is_rejected() {
    assert_eq!(decode(&[0x06, 0x00], None), Err(PacketError::TooShort(2)));
}

#[test]
fn asf_packet_is_not_ipmi() {
    let ping = encode_presence_ping(1);
    assert_eq!(decode(&ping, None), Err(PacketError::NotIpmi(0x06)));
}

#[test]
fn v15_packet_decodes_message() {
    let bytes = encode_v15(&[1, 2, 3]);
    let packet = decode(&bytes, None).expect("v1.5 packet");
    assert_eq!(packet.payload, vec![1, 2, 3]);
}

#[test]
fn v15_length_past_end_is_rejected() {
    let mut bytes = encode_v15(&[1, 2, 3]);
    bytes[13] = 9;
    assert_eq!(
        decode(&bytes, None),
        Err(PacketError::Length {
            declared: 9,
            available: 3
        })
    );
}

#[test]
fn response_decodes_fields() {
    let bytes = response_bytes(5, 0x01, 0x00, &[0x20, 0x01]);
    let response = decode_response(&bytes).expect("valid response");
    assert_eq!(response.rq_seq, 5);
    assert_eq!(response.command, 0x01);
    assert_eq!(response.net_fn, 0x07);
    assert_eq!(response.completion_code, 0x00);
    assert_eq!(response.data, vec![0x20, 0x01]);
}

#[test]
fn response_with_bad_checksum_is_rejected() {
    let mut bytes = response_bytes(5, 0x01, 0x00, &[0x20]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    assert_eq!(decode_response(&bytes), Err(PacketError::Checksum(2)));
}

#[test]
fn pong_without_ipmi_bit_reports_false() {
    let mut pong = vec![
        0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x40, 9, 0, 16,
    ];
    pong.extend_from_slice(&[0; 16]);
    assert_eq!(decode_presence_pong(&pong, 9), Ok(false));
    pong[20] = 0x81;
    assert_eq!(decode_presence_pong(&pong, 9), Ok(true));
    assert_eq!(decode_presence_pong(&pong, 8), Err(PacketError::NotPong));
}

proptest! {
    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let keys3 = keys(CipherSuite::Suite3);
        let keys17 = keys(CipherSuite::Suite17);
        let _ = decode(&bytes, None);
        let _ = decode(&bytes, Some(&keys3));
        let _ = decode(&bytes, Some(&keys17));
        let _ = decode_response(&bytes);
        let _ = decode_presence_pong(&bytes, 0);
    }

    #[test]
    fn decode_never_panics_on_mutated_packets(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        position in any::<usize>(),
        value in any::<u8>(),
        cut in any::<usize>(),
    ) {
        // Random bytes rarely pass the RMCP header check, so mutate valid
        // packets as well: one byte changed, then truncated somewhere.
        let keys = keys(CipherSuite::Suite17);
        let mut bytes = encode(PayloadType::Sol, 9, 9, &payload, Some((&keys, [1; 16])));
        let index = position % bytes.len();
        bytes[index] = value;
        let _ = decode(&bytes, Some(&keys));
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = decode(&bytes, Some(&keys));
        let _ = decode(&bytes, None);
    }

    #[test]
    fn protected_round_trip_keeps_payload(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let keys = keys(CipherSuite::Suite3);
        let bytes = encode(PayloadType::Ipmi, 1, 2, &payload, Some((&keys, [5; 16])));
        let packet = decode(&bytes, Some(&keys)).expect("own packet decodes");
        prop_assert_eq!(packet.payload, payload);
    }
}
