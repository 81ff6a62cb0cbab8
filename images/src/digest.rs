//! SHA-256 digests as the store names blobs, and the hashing loops that
//! compute them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use ring::digest::{Context, SHA256};

/// Size of each read while hashing. Large reads keep the cost of the `read`
/// calls small next to the cost of hashing the bytes.
pub(crate) const HASH_BUFFER_SIZE: usize = 1024 * 1024;

/// A SHA-256 digest, the name of a blob in the store.
///
/// Displays, serializes and names files as 64 lowercase hex characters.
/// Parsing also accepts upper case, because some image catalogues publish
/// digests that way.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Returns the 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Returns the lowercase hex form, the blob's file name.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// A string that is not a hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 digest {value:?}: {reason}; expected 64 hex characters")]
pub struct ParseDigestError {
    /// The rejected input.
    pub value: String,
    /// The reason the input was rejected.
    pub reason: &'static str,
}

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ParseDigestError {
            value: s.to_string(),
            reason,
        };
        if s.len() != 64 {
            return Err(invalid("wrong length"));
        }

        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| invalid("not hex"))?;
        Ok(Sha256Digest(bytes))
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes `reader` from its current position to end of file and returns the
/// digest and the number of bytes read.
pub(crate) fn hash_reader(reader: &mut impl Read) -> io::Result<(Sha256Digest, u64)> {
    copy_hashing(reader, &mut io::sink())
}

/// Copies `reader` to `writer` to end of file, hashing on the way, and
/// returns the digest of what was copied and its length.
///
/// The loop ends at end of file, so callers pass regular files only: a pipe
/// or a character device such as `/dev/zero` may never end.
pub(crate) fn copy_hashing(
    reader: &mut impl Read,
    writer: &mut impl Write,
) -> io::Result<(Sha256Digest, u64)> {
    let mut context = Context::new(&SHA256);
    let mut buffer = vec![0u8; HASH_BUFFER_SIZE];
    let mut total: u64 = 0;

    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        context.update(&buffer[..read]);
        writer.write_all(&buffer[..read])?;
        total += read as u64;
    }

    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(context.finish().as_ref());
    Ok((Sha256Digest(bytes), total))
}

#[cfg(test)]
mod tests {
    use super::{Sha256Digest, hash_reader};

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn empty_input_hashes_to_known_digest() {
        let (digest, size) = hash_reader(&mut &b""[..]).expect("reading a slice cannot fail");
        assert_eq!(digest.to_string(), EMPTY_SHA256);
        assert_eq!(size, 0);
    }

    #[test]
    fn input_longer_than_buffer_hashes_like_one_shot() {
        let data = vec![0x5au8; super::HASH_BUFFER_SIZE * 2 + 17];
        let (digest, size) = hash_reader(&mut &data[..]).expect("reading a slice cannot fail");
        let expected = ring::digest::digest(&ring::digest::SHA256, &data);
        assert_eq!(&digest.0[..], expected.as_ref());
        assert_eq!(size, data.len() as u64);
    }

    #[test]
    fn parse_accepts_upper_case_and_displays_lower() {
        let digest: Sha256Digest = EMPTY_SHA256.to_uppercase().parse().expect("valid digest");
        assert_eq!(digest.to_string(), EMPTY_SHA256);
    }

    #[test]
    fn parse_error_names_short_value() {
        let error = "abc123".parse::<Sha256Digest>().expect_err("too short");
        assert_eq!(error.value, "abc123");
        assert!(error.to_string().contains("\"abc123\""), "{error}");
        assert!(error.to_string().contains("wrong length"), "{error}");
    }

    #[test]
    fn parse_error_names_non_hex_value() {
        let value = "g".repeat(64);
        let error = value.parse::<Sha256Digest>().expect_err("not hex");
        assert!(error.to_string().contains(&value), "{error}");
        assert!(error.to_string().contains("not hex"), "{error}");
    }

    #[test]
    fn serde_round_trips_as_hex_string() {
        let digest: Sha256Digest = EMPTY_SHA256.parse().expect("valid digest");
        let json = serde_json::to_string(&digest).expect("digest serializes");
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        let back: Sha256Digest = serde_json::from_str(&json).expect("digest deserializes");
        assert_eq!(back, digest);
    }

    #[test]
    fn deserialize_rejects_invalid_hex_with_value() {
        let error = serde_json::from_str::<Sha256Digest>("\"xyz\"").expect_err("invalid");
        assert!(error.to_string().contains("xyz"), "{error}");
    }
}
