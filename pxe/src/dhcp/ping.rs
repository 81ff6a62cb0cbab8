//! The ping check: an ICMP echo request to an address before it is offered.
//!
//! RFC 2131 section 2.2 recommends that a server probe an address before
//! allocating it. A host that sends an echo reply uses the address without a lease from
//! us (a static configuration, or a lease from a DHCP server we lost), and
//! offering it would give two hosts one address. A host whose firewall
//! drops ICMP echo passes this check, which is why the ARP probe
//! (`arp.rs`) exists beside it.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::SockAddr;

use crate::netns::SocketFactory;

/// ICMP message types (RFC 792).
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;

/// Maximum packets read while waiting, so a flood of unrelated ICMP on the
/// link cannot keep the check running past its wait.
const MAX_PACKETS_READ: usize = 256;

/// Sends one echo request to `ip` and returns whether an echo reply from
/// `ip` arrived within `wait`. Blocks the calling thread for up to `wait`.
pub(crate) fn answers_ping(
    factory: &SocketFactory,
    ip: Ipv4Addr,
    wait: Duration,
) -> io::Result<bool> {
    let socket = factory.icmp().map_err(io::Error::other)?;
    // A random identifier keeps concurrent checks from taking each other's
    // replies.
    let identifier = fastrand::u16(..);
    let request = echo_request(identifier, 1);
    socket.send_to(&request, &SockAddr::from(SocketAddrV4::new(ip, 0)))?;

    let deadline = Instant::now() + wait;
    let mut buffer = [0u8; 1500];
    let mut socket = socket;
    for _ in 0..MAX_PACKETS_READ {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        socket.set_read_timeout(Some(left))?;
        let len = match socket.read(&mut buffer) {
            Ok(len) => len,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(false);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if is_echo_reply(&buffer[..len], ip, identifier) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Builds an echo request with an 8-byte payload.
fn echo_request(identifier: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&identifier.to_be_bytes());
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(b"rackhand");
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// Returns whether `packet`, an IPv4 datagram as a raw socket delivers it,
/// is an echo reply from `from` with `identifier`.
fn is_echo_reply(packet: &[u8], from: Ipv4Addr, identifier: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header_len = usize::from(first & 0x0f) * 4;
    if packet.len() < header_len + 8 || header_len < 20 {
        return false;
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let icmp = &packet[header_len..];
    source == from && icmp[0] == ECHO_REPLY && icmp[4..6] == identifier.to_be_bytes()
}

/// Computes the Internet checksum: the one's-complement sum of RFC 1071.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let packet = echo_request(0x1234, 1);

        assert_eq!(internet_checksum(&packet), 0);
    }

    #[test]
    fn echo_reply_from_other_host_does_not_match() {
        let mut packet = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1,
        ];
        packet.extend_from_slice(&[ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 1]);

        assert!(is_echo_reply(&packet, Ipv4Addr::new(10, 0, 0, 9), 0x1234));
        assert!(!is_echo_reply(&packet, Ipv4Addr::new(10, 0, 0, 8), 0x1234));
        assert!(!is_echo_reply(&packet, Ipv4Addr::new(10, 0, 0, 9), 0x4321));
    }

    #[test]
    fn truncated_packet_does_not_match() {
        assert!(!is_echo_reply(&[0x45, 0, 0], Ipv4Addr::LOCALHOST, 1));
        assert!(!is_echo_reply(&[], Ipv4Addr::LOCALHOST, 1));
    }
}
