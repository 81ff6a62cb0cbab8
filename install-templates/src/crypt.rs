//! SHA-512-crypt (`$6$`) password hashes, the scheme glibc `crypt(3)`
//! implements (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512").
//!
//! Installers and cloud-init write the hash to `/etc/shadow` unchanged, so
//! the plain password never has to reach a rendered file.

use ring::digest::{Context, SHA512};
use ring::rand::{SecureRandom, SystemRandom};

use crate::TemplateError;

/// Rounds used when the caller does not choose; glibc uses the same default
/// and then omits `rounds=` from the hash.
pub const DEFAULT_ROUNDS: u32 = 5_000;
const MIN_ROUNDS: u32 = 1_000;
const MAX_ROUNDS: u32 = 999_999_999;
const MAX_SALT_LEN: usize = 16;

/// The crypt alphabet, in the order of the 6-bit values it encodes.
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Byte triples of the final digest in the order the specification encodes
/// them; byte 63 follows alone.
const ENCODE_ORDER: [(usize, usize, usize); 21] = [
    (0, 21, 42),
    (22, 43, 1),
    (44, 2, 23),
    (3, 24, 45),
    (25, 46, 4),
    (47, 5, 26),
    (6, 27, 48),
    (28, 49, 7),
    (50, 8, 29),
    (9, 30, 51),
    (31, 52, 10),
    (53, 11, 32),
    (12, 33, 54),
    (34, 55, 13),
    (56, 14, 35),
    (15, 36, 57),
    (37, 58, 16),
    (59, 17, 38),
    (18, 39, 60),
    (40, 61, 19),
    (62, 20, 41),
];

/// Hashes `password` with a fresh 16-character salt from the operating
/// system's random source and [`DEFAULT_ROUNDS`].
pub fn hash_password(password: &str) -> Result<String, TemplateError> {
    if password.is_empty() {
        return Err(TemplateError::EmptyRootPassword);
    }

    let mut random = [0u8; MAX_SALT_LEN];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| TemplateError::RandomUnavailable)?;

    // 256 is a multiple of 64, so taking each byte modulo 64 keeps every
    // alphabet character equally likely.
    let salt: String = random
        .iter()
        .map(|byte| char::from(CRYPT_ALPHABET[usize::from(byte % 64)]))
        .collect();
    Ok(sha512_crypt(password.as_bytes(), salt.as_bytes(), None))
}

/// Computes the `$6$` hash of `password` with `salt` (cut to 16 bytes) and
/// `rounds` (clamped to 1,000..=999,999,999). `None` means the default 5,000
/// rounds and leaves `rounds=` out of the output, as glibc does.
pub fn sha512_crypt(password: &[u8], salt: &[u8], rounds: Option<u32>) -> String {
    let salt = &salt[..salt.len().min(MAX_SALT_LEN)];
    let round_count = rounds.map_or(DEFAULT_ROUNDS, |r| r.clamp(MIN_ROUNDS, MAX_ROUNDS));

    let digest_b = sha512(&[password, salt, password]);

    let mut context_a = Context::new(&SHA512);
    context_a.update(password);
    context_a.update(salt);
    update_repeated(&mut context_a, &digest_b, password.len());
    let mut length = password.len();
    while length > 0 {
        if length & 1 == 1 {
            context_a.update(&digest_b);
        } else {
            context_a.update(password);
        }
        length >>= 1;
    }
    let digest_a = context_a.finish();

    let mut context_p = Context::new(&SHA512);
    for _ in 0..password.len() {
        context_p.update(password);
    }
    let sequence_p = repeat_to_length(context_p.finish().as_ref(), password.len());

    let mut context_s = Context::new(&SHA512);
    for _ in 0..16 + usize::from(digest_a.as_ref()[0]) {
        context_s.update(salt);
    }
    let sequence_s = repeat_to_length(context_s.finish().as_ref(), salt.len());

    let mut digest_c = digest_a.as_ref().to_vec();
    for round in 0..round_count {
        let mut context = Context::new(&SHA512);
        if round % 2 == 1 {
            context.update(&sequence_p);
        } else {
            context.update(&digest_c);
        }
        if round % 3 != 0 {
            context.update(&sequence_s);
        }
        if round % 7 != 0 {
            context.update(&sequence_p);
        }
        if round % 2 == 1 {
            context.update(&digest_c);
        } else {
            context.update(&sequence_p);
        }
        digest_c = context.finish().as_ref().to_vec();
    }

    let mut output = String::from("$6$");
    if rounds.is_some() {
        output.push_str(&format!("rounds={round_count}$"));
    }
    output.push_str(&String::from_utf8_lossy(salt));
    output.push('$');
    for (high, middle, low) in ENCODE_ORDER {
        encode_24_bits(
            &mut output,
            digest_c[high],
            digest_c[middle],
            digest_c[low],
            4,
        );
    }
    encode_24_bits(&mut output, 0, 0, digest_c[63], 2);
    output
}

fn sha512(parts: &[&[u8]]) -> Vec<u8> {
    let mut context = Context::new(&SHA512);
    for part in parts {
        context.update(part);
    }
    context.finish().as_ref().to_vec()
}

/// Feeds `length` bytes of `block` repeated end to end into `context`.
fn update_repeated(context: &mut Context, block: &[u8], length: usize) {
    let mut remaining = length;
    while remaining > 0 {
        let take = remaining.min(block.len());
        context.update(&block[..take]);
        remaining -= take;
    }
}

fn repeat_to_length(block: &[u8], length: usize) -> Vec<u8> {
    block.iter().copied().cycle().take(length).collect()
}

fn encode_24_bits(output: &mut String, high: u8, middle: u8, low: u8, characters: usize) {
    let mut word = (u32::from(high) << 16) | (u32::from(middle) << 8) | u32::from(low);
    for _ in 0..characters {
        output.push(char::from(CRYPT_ALPHABET[(word & 0x3f) as usize]));
        word >>= 6;
    }
}

/// Reports whether `value` has the shape of a `$6$` hash: an optional
/// `rounds=N$`, a salt of 1 to 16 crypt characters without `$`, and an
/// 86-character digest.
pub fn is_sha512_crypt(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("$6$") else {
        return false;
    };
    let rest = match rest.strip_prefix("rounds=") {
        Some(after) => match after.split_once('$') {
            Some((digits, tail)) if digits.parse::<u32>().is_ok() => tail,
            _ => return false,
        },
        None => rest,
    };
    let Some((salt, digest)) = rest.split_once('$') else {
        return false;
    };
    let in_alphabet = |text: &str| text.bytes().all(|b| CRYPT_ALPHABET.contains(&b));
    (1..=MAX_SALT_LEN).contains(&salt.len())
        && in_alphabet(salt)
        && digest.len() == 86
        && in_alphabet(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-512 test vectors published with the scheme. glibc's
    /// `crypt(3)` and `openssl passwd -6` return the same hashes.
    #[test]
    fn specification_vectors_match() {
        let vectors: [(&str, Option<u32>, &str, &str); 7] = [
            (
                "saltstring",
                None,
                "Hello world!",
                "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            ),
            (
                "saltstringsaltstring",
                Some(10_000),
                "Hello world!",
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
            ),
            (
                "toolongsaltstring",
                Some(5_000),
                "This is just a test",
                "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
            ),
            (
                "anotherlongsaltstring",
                Some(1_400),
                "a very much longer text to encrypt.  This one even stretches over morethan one line.",
                "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
            ),
            (
                "short",
                Some(77_777),
                "we have a short salt string but not a short password",
                "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0",
            ),
            (
                "asaltof16chars..",
                Some(123_456),
                "a short string",
                "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1",
            ),
            (
                "roundstoolow",
                Some(10),
                "the minimum number is still observed",
                "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
            ),
        ];
        for (salt, rounds, password, expected) in vectors {
            assert_eq!(
                sha512_crypt(password.as_bytes(), salt.as_bytes(), rounds),
                expected,
                "salt {salt}"
            );
        }
    }

    #[test]
    fn generated_hash_has_crypt_shape() {
        let hash = hash_password("correct horse").expect("the system random source works");
        assert!(is_sha512_crypt(&hash), "{hash}");
    }

    #[test]
    fn generated_hash_verifies_with_its_salt() {
        let hash = hash_password("correct horse").expect("the system random source works");
        let salt = hash.split('$').nth(2).expect("a $6$ hash has a salt field");
        assert_eq!(sha512_crypt(b"correct horse", salt.as_bytes(), None), hash);
    }

    #[test]
    fn generated_salts_differ() {
        let first = hash_password("same").expect("the system random source works");
        let second = hash_password("same").expect("the system random source works");
        assert_ne!(first, second);
    }

    #[test]
    fn generated_hash_matches_openssl() {
        let password = "Cross-Check 42!";
        let hash = hash_password(password).expect("the system random source works");
        let salt = hash.split('$').nth(2).expect("a $6$ hash has a salt field");
        let output = std::process::Command::new("openssl")
            .args(["passwd", "-6", "-salt", salt, password])
            .output();
        let Ok(output) = output else {
            eprintln!("SKIPPED: openssl is not installed, so the hash is not cross-checked");
            return;
        };
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), hash);
    }

    #[test]
    fn empty_password_is_rejected() {
        assert!(matches!(
            hash_password(""),
            Err(TemplateError::EmptyRootPassword)
        ));
    }

    #[test]
    fn shape_check_rejects_other_schemes() {
        assert!(!is_sha512_crypt("$5$salt$abc"));
        assert!(!is_sha512_crypt("plain"));
        assert!(!is_sha512_crypt("$6$salt$short"));
    }
}
