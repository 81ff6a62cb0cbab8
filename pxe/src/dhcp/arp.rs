//! The ARP probe: an ARP request for an address before it is offered,
//! sent from an `AF_PACKET` socket on the serving interface.
//!
//! A host whose firewall drops ICMP echo passes the ping check while it
//! still uses the address, but it must answer ARP to use IPv4 on the link.
//! The probe follows RFC 5227 section 2.1.1: sender hardware address ours,
//! sender IP 0.0.0.0, so the probe changes no neighbour's ARP cache. An ARP
//! packet from the probed address, reply or request, means a host uses it.
//! The probe only reaches hosts on the serving interface's own link, so
//! addresses behind a relay are left to the ping check.

use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::netns::SocketFactory;

/// EtherType of ARP (IEEE 802 numbers).
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const HARDWARE_ETHERNET: u16 = 1;
const OPERATION_REQUEST: u16 = 1;

/// Ethernet frames shorter than this are padded (60 bytes without the FCS).
const MIN_FRAME_LEN: usize = 60;

/// Maximum frames read while waiting, so a flood of unrelated ARP on the
/// link cannot keep the probe running past its wait.
const MAX_FRAMES_READ: usize = 256;

/// Sends one ARP probe for `ip` on `interface` and returns whether an ARP
/// packet from `ip` arrived within `wait`. Blocks the calling thread for up
/// to `wait`.
pub(crate) fn answers_arp(
    factory: &SocketFactory,
    interface: &str,
    ip: Ipv4Addr,
    wait: Duration,
) -> io::Result<bool> {
    let (socket, mac) = factory.arp(interface).map_err(io::Error::other)?;
    socket.send(&probe_frame(mac, ip))?;

    let deadline = Instant::now() + wait;
    let mut buffer = [0u8; 1514];
    let mut socket = socket;
    for _ in 0..MAX_FRAMES_READ {
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
        if is_from(&buffer[..len], ip) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Builds the Ethernet frame of an ARP probe for `ip` from `mac`.
fn probe_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MIN_FRAME_LEN);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&HARDWARE_ETHERNET.to_be_bytes());
    frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&OPERATION_REQUEST.to_be_bytes());
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&Ipv4Addr::UNSPECIFIED.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&ip.octets());
    frame.resize(MIN_FRAME_LEN, 0);
    frame
}

/// Returns whether `frame` is an Ethernet ARP packet for IPv4 whose sender
/// IP is `ip`.
fn is_from(frame: &[u8], ip: Ipv4Addr) -> bool {
    if frame.len() < 42 {
        return false;
    }
    let field = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    field(12) == ETHERTYPE_ARP
        && field(14) == HARDWARE_ETHERNET
        && field(16) == ETHERTYPE_IPV4
        && frame[18] == 6
        && frame[19] == 4
        && frame[28..32] == ip.octets()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn probe_frame_has_zero_sender_ip() {
        let frame = probe_frame(MAC, Ipv4Addr::new(10, 0, 0, 7));

        assert_eq!(frame.len(), MIN_FRAME_LEN);
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[22..28], &MAC);
        assert_eq!(&frame[28..32], &[0, 0, 0, 0]);
        assert_eq!(&frame[38..42], &[10, 0, 0, 7]);
    }

    #[test]
    fn reply_from_probed_address_is_recognized() {
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        let mut reply = probe_frame(MAC, Ipv4Addr::new(10, 0, 0, 1));
        reply[28..32].copy_from_slice(&ip.octets());

        assert!(is_from(&reply, ip));
    }

    #[test]
    fn own_probe_is_not_a_conflict() {
        let ip = Ipv4Addr::new(10, 0, 0, 7);

        assert!(!is_from(&probe_frame(MAC, ip), ip));
    }

    #[test]
    fn short_or_non_arp_frame_is_ignored() {
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        let mut frame = probe_frame(MAC, ip);
        frame[28..32].copy_from_slice(&ip.octets());
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

        assert!(!is_from(&frame, ip));
        assert!(!is_from(&frame[..41], ip));
    }
}
