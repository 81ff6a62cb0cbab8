//! RMCP+ cryptography: the RAKP authentication codes, the session keys (SIK,
//! K1, K2), the integrity codes and AES-CBC-128, for cipher suites 3 and 17.
//!
//! The formulas are those of the IPMI 2.0 specification, section 13.31
//! (RAKP), 13.32 (SIK and K1/K2), 13.28.4 (integrity) and 13.29
//! (AES-CBC-128). HMAC comes from `ring`, the AES block cipher from `aes`; the
//! CBC chaining is written here because IPMI pads the plaintext its own way.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use ring::hmac;

/// The length of a BMC user key (K_UID): passwords are zero-padded to it.
pub const USER_KEY_LEN: usize = 20;

/// A cipher suite the driver implements.
///
/// Both use AES-CBC-128 for confidentiality. Suites without encryption, or
/// with MD5, are weak and deliberately missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    /// Returns the cipher suite id of table 22-20 of the specification.
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    /// Returns the suite with this id, if the driver implements it.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    /// Returns the authentication algorithm number (RAKP-HMAC-SHA1 = 1,
    /// RAKP-HMAC-SHA256 = 3).
    pub fn authentication_algorithm(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 0x01,
            CipherSuite::Suite17 => 0x03,
        }
    }

    /// Returns the integrity algorithm number (HMAC-SHA1-96 = 1,
    /// HMAC-SHA256-128 = 4).
    pub fn integrity_algorithm(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 0x01,
            CipherSuite::Suite17 => 0x04,
        }
    }

    /// Returns the confidentiality algorithm number (AES-CBC-128 = 1).
    pub fn confidentiality_algorithm(self) -> u8 {
        0x01
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            CipherSuite::Suite3 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            CipherSuite::Suite17 => hmac::HMAC_SHA256,
        }
    }

    /// Returns the length of the RAKP 2 and RAKP 3 authentication codes, the
    /// SIK and K1/K2: the full HMAC output (20 or 32 bytes).
    pub fn hmac_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 20,
            CipherSuite::Suite17 => 32,
        }
    }

    /// Returns the length of the RAKP 4 integrity check value and of each
    /// packet's integrity code: HMAC-SHA1 truncated to 12 bytes, HMAC-SHA256
    /// truncated to 16.
    pub fn integrity_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// Computes the full HMAC of `parts` with `key`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut context = hmac::Context::with_key(&key);
        for part in parts {
            context.update(part);
        }
        context.sign().as_ref().to_vec()
    }
}

/// The values both sides exchanged in Open Session and RAKP 1/2, which every
/// RAKP code covers.
#[derive(Debug, Clone)]
pub struct RakpExchange {
    /// SID_M: the session id the console chose.
    pub console_session_id: u32,
    /// SID_C: the session id the BMC chose.
    pub bmc_session_id: u32,
    /// R_M: the console's random number from RAKP 1.
    pub console_random: [u8; 16],
    /// R_C: the BMC's random number from RAKP 2.
    pub bmc_random: [u8; 16],
    /// GUID_C: the BMC's GUID from RAKP 2.
    pub bmc_guid: [u8; 16],
    /// Role_M: the privilege byte of RAKP 1, lookup bit included.
    pub role: u8,
    /// UName_M: at most 16 bytes.
    pub username: Vec<u8>,
}

impl RakpExchange {
    fn username_length(&self) -> [u8; 1] {
        // The caller checked that the name fits in 16 bytes.
        [self.username.len() as u8]
    }

    /// Computes the key-exchange authentication code the BMC must send in
    /// RAKP 2: HMAC_K_UID(SID_M | SID_C | R_M | R_C | GUID_C | Role_M |
    /// ULength_M | UName_M).
    pub fn rakp2_code(&self, suite: CipherSuite, user_key: &[u8]) -> Vec<u8> {
        suite.hmac(
            user_key,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                &[self.role],
                &self.username_length(),
                &self.username,
            ],
        )
    }

    /// Computes the console's RAKP 3 authentication code: HMAC_K_UID(R_C |
    /// SID_M | Role_M | ULength_M | UName_M).
    pub fn rakp3_code(&self, suite: CipherSuite, user_key: &[u8]) -> Vec<u8> {
        suite.hmac(
            user_key,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                &[self.role],
                &self.username_length(),
                &self.username,
            ],
        )
    }

    /// Computes the session integrity key: HMAC_K_G(R_M | R_C | Role_M |
    /// ULength_M | UName_M), where K_G is the user key when the BMC has no
    /// Kg set.
    pub fn session_integrity_key(&self, suite: CipherSuite, kg: &[u8]) -> Vec<u8> {
        suite.hmac(
            kg,
            &[
                &self.console_random,
                &self.bmc_random,
                &[self.role],
                &self.username_length(),
                &self.username,
            ],
        )
    }

    /// Computes the integrity check value the BMC must send in RAKP 4:
    /// HMAC_SIK(R_M | SID_C | GUID_C), truncated to the suite's integrity
    /// length.
    pub fn rakp4_code(&self, suite: CipherSuite, sik: &[u8]) -> Vec<u8> {
        let mut code = suite.hmac(
            sik,
            &[
                &self.console_random,
                &self.bmc_session_id.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        code.truncate(suite.integrity_len());
        code
    }
}

/// Pads a password with zeros to the 20-byte K_UID. The caller checked that
/// it is at most 20 bytes.
pub fn user_key(password: &[u8]) -> Vec<u8> {
    let mut key = password.to_vec();
    key.resize(USER_KEY_LEN.max(password.len()), 0);
    key
}

/// The keys of an established session.
pub struct SessionKeys {
    pub suite: CipherSuite,
    /// K1 = HMAC_SIK(0x01 repeated): the integrity key.
    pub k1: Vec<u8>,
    /// The first 16 bytes of K2 = HMAC_SIK(0x02 repeated): the AES key.
    pub aes_key: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .field("k1", &"[redacted]")
            .field("aes_key", &"[redacted]")
            .finish()
    }
}

impl SessionKeys {
    /// Derives K1 and K2 from the SIK. The constants are as long as the HMAC
    /// output (20 bytes for SHA-1, 32 for SHA-256).
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> Self {
        let k1 = suite.hmac(sik, &[&vec![0x01; suite.hmac_len()]]);
        let k2 = suite.hmac(sik, &[&vec![0x02; suite.hmac_len()]]);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&k2[..16]);
        SessionKeys { suite, k1, aes_key }
    }

    /// Computes a packet's integrity code over `data` (from the
    /// authentication type byte through the next-header byte).
    pub fn integrity_code(&self, data: &[u8]) -> Vec<u8> {
        let mut code = self.suite.hmac(&self.k1, &[data]);
        code.truncate(self.suite.integrity_len());
        code
    }

    /// Encrypts a payload: the IV followed by AES-CBC-128 of the payload,
    /// the pad bytes 1, 2, 3, … and the pad length.
    pub fn encrypt(&self, iv: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let pad_len = (16 - (payload.len() + 1) % 16) % 16;
        let mut plain = payload.to_vec();
        plain.extend((1..=pad_len as u8).collect::<Vec<_>>());
        plain.push(pad_len as u8);

        let cipher = Aes128::new(&Array::from(self.aes_key));
        let mut out = iv.to_vec();
        let mut previous = iv;
        for chunk in plain.chunks_exact(16) {
            let mut block = [0u8; 16];
            for (i, byte) in block.iter_mut().enumerate() {
                *byte = chunk[i] ^ previous[i];
            }
            let mut block = Array::from(block);
            cipher.encrypt_block(&mut block);
            previous = block.into();
            out.extend_from_slice(&previous);
        }
        out
    }

    /// Decrypts an encrypted payload field (IV and ciphertext) and removes
    /// the confidentiality trailer.
    pub fn decrypt(&self, field: &[u8]) -> Result<Vec<u8>, &'static str> {
        if field.len() < 32 || !field.len().is_multiple_of(16) {
            return Err("encrypted payload is not an IV plus whole AES blocks");
        }
        let cipher = Aes128::new(&Array::from(self.aes_key));
        let (iv, ciphertext) = field.split_at(16);
        let mut previous: [u8; 16] = iv.try_into().expect("split_at(16) gives 16 bytes");
        let mut plain = Vec::with_capacity(ciphertext.len());
        for chunk in ciphertext.chunks_exact(16) {
            let current: [u8; 16] = chunk.try_into().expect("chunks_exact(16)");
            let mut block = Array::from(current);
            cipher.decrypt_block(&mut block);
            let block: [u8; 16] = block.into();
            plain.extend(block.iter().zip(previous).map(|(b, p)| b ^ p));
            previous = current;
        }

        let pad_len = usize::from(*plain.last().expect("at least one block"));
        if pad_len > 15 || pad_len + 1 > plain.len() {
            return Err("invalid confidentiality pad length");
        }
        plain.truncate(plain.len() - 1 - pad_len);
        Ok(plain)
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
