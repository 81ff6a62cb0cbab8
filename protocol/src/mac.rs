//! Ethernet MAC addresses as the boot network sees them.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address.
///
/// Displays as lowercase colon-separated hex (`52:54:00:62:00:10`), the form
/// DHCP logs, iPXE's `${net0/mac}` and Redfish `MACAddress` use. Parsing also
/// accepts `-` separators and upper case, because iPXE's `${mac:hexhyp}` and
/// many BMCs write them that way.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Returns the address with `-` separators, safe in URL paths and file names.
    pub fn to_hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a MAC address.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?}; expected six hex octets such as 52:54:00:62:00:10")]
pub struct MacAddrError(pub String);

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || MacAddrError(s.to_string());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(invalid());
        }

        let mut octets = [0u8; 6];
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(invalid());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        Ok(MacAddr(octets))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::MacAddr;

    #[test]
    fn parses_colons_and_hyphens() {
        let colon: MacAddr = "52:54:00:62:00:10".parse().expect("valid MAC");
        let hyphen: MacAddr = "52-54-00-62-00-10".parse().expect("valid MAC");
        assert_eq!(colon, hyphen);
    }

    #[test]
    fn displays_lowercase() {
        let mac: MacAddr = "AA:BB:CC:00:11:FF".parse().expect("valid MAC");
        assert_eq!(mac.to_string(), "aa:bb:cc:00:11:ff");
    }

    #[test]
    fn rejects_wrong_length() {
        assert!("52:54:00:62:00".parse::<MacAddr>().is_err());
        assert!("52:54:00:62:00:10:11".parse::<MacAddr>().is_err());
        assert!("525:4:00:62:00:10".parse::<MacAddr>().is_err());
    }
}
