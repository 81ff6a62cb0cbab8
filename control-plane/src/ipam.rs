//! IPv4 address management for service addresses: parsing subnets and
//! choosing the next free address.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network in CIDR notation, with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// Returns whether `address` lies inside the network.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    /// Returns the first and last usable host addresses. /31 and /32 networks have
    /// no network or broadcast address (RFC 3021), so every address counts.
    pub fn host_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let network = u32::from(self.network);
        let broadcast = network | !self.mask();
        if self.prefix_len >= 31 {
            (Ipv4Addr::from(network), Ipv4Addr::from(broadcast))
        } else {
            (Ipv4Addr::from(network + 1), Ipv4Addr::from(broadcast - 1))
        }
    }

    /// Returns the reverse zone that contains this network's PTR records, rounded out
    /// to a whole octet (`10.99.0.0/24` → `0.99.10.in-addr.arpa.`).
    pub fn reverse_zone(&self) -> String {
        let octets = self.network.octets();
        let whole = usize::from(self.prefix_len / 8);
        let mut labels: Vec<String> = octets[..whole].iter().rev().map(u8::to_string).collect();
        labels.push("in-addr.arpa.".to_string());
        labels.join(".")
    }
}

/// A subnet string that is not a valid IPv4 CIDR.
#[derive(Debug, thiserror::Error)]
#[error("invalid IPv4 network {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| CidrError {
            input: s.to_string(),
            reason,
        };
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| error("expected address/prefix such as 10.0.0.0/24"))?;
        let network: Ipv4Addr = address.parse().map_err(|_| error("bad address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| error("bad prefix length"))?;
        if prefix_len > 32 {
            return Err(error("prefix length exceeds 32"));
        }
        let cidr = Ipv4Cidr {
            network,
            prefix_len,
        };
        if u32::from(network) & !cidr.mask() != 0 {
            return Err(error("host bits are set; give the network address"));
        }
        Ok(cidr)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Returns the PTR owner name of `address` (`10.99.0.5` → `5.0.99.10.in-addr.arpa.`).
pub fn ptr_name(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// Returns the lowest address in `first..=last` that is not `used` and not
/// `excluded`.
pub fn next_free(
    first: Ipv4Addr,
    last: Ipv4Addr,
    used: &std::collections::HashSet<Ipv4Addr>,
    excluded: &[Ipv4Addr],
) -> Option<Ipv4Addr> {
    (u32::from(first)..=u32::from(last))
        .map(Ipv4Addr::from)
        .find(|address| !used.contains(address) && !excluded.contains(address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn parses_network_and_rejects_host_bits() {
        let cidr: Ipv4Cidr = "10.99.0.0/24".parse().expect("valid");
        assert_eq!(cidr.prefix_len, 24);
        let error = "10.99.0.1/24".parse::<Ipv4Cidr>().expect_err("host bits");
        assert!(error.to_string().contains("10.99.0.1/24"));
    }

    #[test]
    fn host_range_skips_network_and_broadcast() {
        let cidr: Ipv4Cidr = "10.99.0.0/24".parse().expect("valid");
        assert_eq!(
            cidr.host_range(),
            (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 254))
        );
    }

    #[test]
    fn reverse_zone_rounds_to_octets() {
        let cidr: Ipv4Cidr = "10.99.0.0/24".parse().expect("valid");
        assert_eq!(cidr.reverse_zone(), "0.99.10.in-addr.arpa.");
        let wide: Ipv4Cidr = "10.99.0.0/20".parse().expect("valid");
        assert_eq!(wide.reverse_zone(), "99.10.in-addr.arpa.");
    }

    #[test]
    fn next_free_skips_used_and_excluded() {
        let used: HashSet<_> = [Ipv4Addr::new(10, 0, 0, 2)].into_iter().collect();
        let next = next_free(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 5),
            &used,
            &[Ipv4Addr::new(10, 0, 0, 1)],
        );
        assert_eq!(next, Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn ptr_name_reverses_octets() {
        assert_eq!(
            ptr_name(Ipv4Addr::new(10, 99, 0, 5)),
            "5.0.99.10.in-addr.arpa."
        );
    }
}
