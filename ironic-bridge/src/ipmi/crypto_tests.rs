//! Known-answer tests of the RMCP+ key derivation for suites 3 and 17.
//!
//! The expected values were computed by `crypto_kat.py` in this folder with
//! Python's `hmac`/`hashlib` and the `openssl enc -aes-128-cbc` command, not
//! with the code under test. The inputs: SID_M 0x11223344, SID_C 0x55667788,
//! R_M 00..0f, R_C 10..1f, GUID_C 20..2f, role 0x14, user `admin`, password
//! `password`.

use super::{CipherSuite, RakpExchange, SessionKeys, constant_time_eq, user_key};

fn exchange() -> RakpExchange {
    RakpExchange {
        console_session_id: 0x1122_3344,
        bmc_session_id: 0x5566_7788,
        console_random: std::array::from_fn(|i| i as u8),
        bmc_random: std::array::from_fn(|i| 0x10 + i as u8),
        bmc_guid: std::array::from_fn(|i| 0x20 + i as u8),
        role: 0x14,
        username: b"admin".to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test hex"))
        .collect()
}

struct Expected {
    rakp2: &'static str,
    rakp3: &'static str,
    sik: &'static str,
    rakp4: &'static str,
    k1: &'static str,
    k2_first_16: &'static str,
    integrity: &'static str,
    aes_ciphertext: &'static str,
}

const SUITE3: Expected = Expected {
    rakp2: "2e7fd8a738d32c333efbda301c8586c399efde2b",
    rakp3: "4402012e214da511895a399bd77d5396e7998a4d",
    sik: "122c77c4b11ccd93251cbae6c34a9cb6310da154",
    rakp4: "c2046b16cbbd0ccff6e65c49",
    k1: "e4472be78f9a81fa68297aab696a7be8c97fc9f8",
    k2_first_16: "2b6552012a2517cb3b5713901d757a6e",
    integrity: "2ad68cedf5950fa5e3b56d20",
    aes_ciphertext: "f79a75ab1a372a917e961116d529da71",
};

const SUITE17: Expected = Expected {
    rakp2: "745e52259d2e4dbcabfd78edc43348de04be340f218253b94668e3b3799411f0",
    rakp3: "e6f17841e92f8c11cbc4fd1cafcc9c21e3d814e713e13e9ee640103b50c0ef15",
    sik: "e5935f7199865ad961063477b0662684e2ce9b1da8f2b8d41c5ce127d37e9bcf",
    rakp4: "b67f9b97c9b2cefb65aeebe0633c96d2",
    k1: "d2bb1919caf11253c1d7849dd7aa00825470ea0bec22df7ead719e11435b5d02",
    k2_first_16: "fba574e70f910546e8a56bafa690a03b",
    integrity: "30435ea6190b861404c5e1fe4c872c9e",
    aes_ciphertext: "b24b1514a8ee89b7d14d45765573dffe",
};

/// The integrity-covered bytes used by `crypto_kat.py`.
const INTEGRITY_DATA: &str = "06c0443322110100000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fffff0207";

fn check_suite(suite: CipherSuite, expected: &Expected) {
    let exchange = exchange();
    let kuid = user_key(b"password");

    assert_eq!(hex(&exchange.rakp2_code(suite, &kuid)), expected.rakp2);
    assert_eq!(hex(&exchange.rakp3_code(suite, &kuid)), expected.rakp3);
    let sik = exchange.session_integrity_key(suite, &kuid);
    assert_eq!(hex(&sik), expected.sik);
    assert_eq!(hex(&exchange.rakp4_code(suite, &sik)), expected.rakp4);

    let keys = SessionKeys::derive(suite, &sik);
    assert_eq!(hex(&keys.k1), expected.k1);
    assert_eq!(hex(&keys.aes_key), expected.k2_first_16);
    assert_eq!(
        hex(&keys.integrity_code(&unhex(INTEGRITY_DATA))),
        expected.integrity
    );

    let iv: [u8; 16] = std::array::from_fn(|i| 0x30 + i as u8);
    let payload = unhex("2018c8810401");
    let encrypted = keys.encrypt(iv, &payload);
    assert_eq!(hex(&encrypted[..16]), hex(&iv));
    assert_eq!(hex(&encrypted[16..]), expected.aes_ciphertext);
    assert_eq!(keys.decrypt(&encrypted), Ok(payload));
}

#[test]
fn suite3_matches_known_answers() {
    check_suite(CipherSuite::Suite3, &SUITE3);
}

#[test]
fn suite17_matches_known_answers() {
    check_suite(CipherSuite::Suite17, &SUITE17);
}

#[test]
fn encryption_round_trips_every_length() {
    let keys = SessionKeys::derive(CipherSuite::Suite17, &[7; 32]);
    for len in 0..70 {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let encrypted = keys.encrypt([9; 16], &payload);
        assert_eq!(encrypted.len() % 16, 0, "length {len}");
        assert_eq!(keys.decrypt(&encrypted), Ok(payload), "length {len}");
    }
}

#[test]
fn decrypt_rejects_partial_blocks() {
    let keys = SessionKeys::derive(CipherSuite::Suite3, &[7; 20]);
    assert!(keys.decrypt(&[0; 31]).is_err());
    assert!(keys.decrypt(&[0; 16]).is_err());
}

#[test]
fn session_keys_debug_hides_keys() {
    let keys = SessionKeys::derive(CipherSuite::Suite3, &[7; 20]);
    let debug = format!("{keys:?}");
    assert!(!debug.contains(&format!("{:?}", keys.k1)), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[test]
fn constant_time_eq_compares_length_and_bytes() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}
