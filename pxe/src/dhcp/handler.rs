//! The packet handler: one request in, at most one reply out, no I/O.
//!
//! [`Responder::handle`] reads and updates the in-memory lease table and
//! returns the reply with its destination. The server loop sends it and
//! writes the lease file, which keeps the protocol logic testable without
//! sockets or files.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, MessageType};

use super::boot::{self, BootReply};
use super::config::DhcpConfig;
use super::known::KnownMacs;
use super::lease::{LeaseState, LeaseStore, RequestOutcome};
use super::packet::{self, ClientRequest};
use super::reply::{self, Reply};
use crate::MacAddr;

/// Minimum time between two log lines about the same unknown MAC.
const UNKNOWN_MAC_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Maximum number of unknown MACs remembered for rate limiting. Under a flood
/// of new MACs, lines beyond this are dropped until old entries age out.
const UNKNOWN_MAC_LOG_CAPACITY: usize = 4096;

/// The DHCP protocol logic with its state.
#[derive(Debug)]
pub(crate) struct Responder {
    config: DhcpConfig,
    known: KnownMacs,
    leases: LeaseStore,
    unknown_log: UnknownMacLog,
}

impl Responder {
    /// Creates a responder. `config` must have passed
    /// [`DhcpConfig::validate`].
    pub(crate) fn new(config: DhcpConfig, known: KnownMacs, leases: LeaseStore) -> Self {
        Self {
            config,
            known,
            leases,
            unknown_log: UnknownMacLog::default(),
        }
    }

    pub(crate) fn config(&self) -> &DhcpConfig {
        &self.config
    }

    pub(crate) fn leases(&self) -> &LeaseStore {
        &self.leases
    }

    /// Handles one packet from `source` and returns the reply to send, if any.
    ///
    /// Malformed packets and packets from MACs outside [`KnownMacs`] get no
    /// reply. Retransmitted requests get the same reply again, because every
    /// lease operation returns the existing lease when it matches.
    pub(crate) fn handle(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        now: SystemTime,
    ) -> Option<Reply> {
        let request = match packet::parse(bytes) {
            Ok(request) => request,
            Err(reason) => {
                tracing::debug!(%source, len = bytes.len(), %reason, "dropping malformed DHCP packet");
                return None;
            }
        };

        let span = tracing::info_span!(
            "dhcp_packet",
            mac = %request.mac,
            xid = %format!("{:08x}", request.message.xid()),
            message_type = ?request.message_type,
        );
        let _entered = span.enter();

        if !self.known.contains(&request.mac) {
            if self.unknown_log.should_log(request.mac, now) {
                tracing::info!(%source, "ignoring DHCP from unknown MAC");
            }
            return None;
        }

        let now = unix_seconds(now);
        match request.message_type {
            MessageType::Discover => self.discover(&request, now),
            MessageType::Request => self.request(&request, now),
            MessageType::Release => self.release(&request, now),
            MessageType::Decline => self.decline(&request, now),
            MessageType::Inform => Some(self.inform(&request)),
            other => {
                tracing::debug!(
                    ?other,
                    "ignoring DHCP message type a server does not handle"
                );
                None
            }
        }
    }

    fn discover(&mut self, request: &ClientRequest, now: u64) -> Option<Reply> {
        let requested = request.requested_ip();
        let offered = self
            .leases
            .lock()
            .offer(request.mac, requested, &self.config, now);
        let Some(ip) = offered else {
            tracing::error!(
                mac = %request.mac,
                pool_start = %self.config.pool_start,
                pool_end = %self.config.pool_end,
                "DHCP pool exhausted; no address to offer",
            );
            return None;
        };

        let boot = boot::decide(
            boot::classify(request.message.opts()),
            &self.config.boot,
            &request.mac,
        );
        tracing::debug!(%ip, ?boot, "offering address");
        Some(self.lease_reply(request, MessageType::Offer, ip, &boot))
    }

    fn request(&mut self, request: &ClientRequest, now: u64) -> Option<Reply> {
        if let Some(server_id) = request.server_id()
            && server_id != self.config.server_ip
        {
            if self.leases.lock().withdraw_offer(request.mac) {
                tracing::debug!(%server_id, "client chose another server; offer withdrawn");
            }
            return None;
        }

        let Some(ip) = request.requested_ip().or(request.ciaddr()) else {
            tracing::debug!("dropping DHCPREQUEST without option 50 or ciaddr");
            return None;
        };

        let mut leases = self.leases.lock();
        let was_bound = leases
            .by_mac
            .get(&request.mac)
            .is_some_and(|lease| lease.ip == ip && lease.state == LeaseState::Bound);
        let outcome = leases.request(request.mac, ip, &self.config, self.config.lease_time, now);
        drop(leases);

        match outcome {
            RequestOutcome::Ack => {
                if was_bound {
                    tracing::debug!(%ip, "lease renewed");
                } else {
                    tracing::info!(mac = %request.mac, %ip, "address leased");
                }
                let boot = boot::decide(
                    boot::classify(request.message.opts()),
                    &self.config.boot,
                    &request.mac,
                );
                Some(self.lease_reply(request, MessageType::Ack, ip, &boot))
            }
            RequestOutcome::Nak(reason) => {
                tracing::info!(mac = %request.mac, %ip, reason, "rejecting DHCPREQUEST");
                Some(self.nak(request, reason))
            }
        }
    }

    fn release(&mut self, request: &ClientRequest, now: u64) -> Option<Reply> {
        if !self.addressed_to_us(request) {
            return None;
        }
        let Some(ip) = request.ciaddr() else {
            tracing::debug!("dropping DHCPRELEASE without ciaddr");
            return None;
        };

        if self.leases.lock().release(request.mac, ip, now) {
            tracing::info!(mac = %request.mac, %ip, "address released");
        } else {
            tracing::debug!(%ip, "ignoring DHCPRELEASE for an address the client does not hold");
        }
        None
    }

    fn decline(&mut self, request: &ClientRequest, now: u64) -> Option<Reply> {
        if !self.addressed_to_us(request) {
            return None;
        }
        let Some(ip) = request.requested_ip() else {
            tracing::debug!("dropping DHCPDECLINE without option 50");
            return None;
        };

        if self.leases.lock().decline(request.mac, ip, now) {
            tracing::warn!(
                mac = %request.mac,
                %ip,
                "client declined address because another host uses it; address quarantined",
            );
        } else {
            tracing::debug!(%ip, "ignoring DHCPDECLINE for an address the client does not hold");
        }
        None
    }

    /// Builds the DHCPACK for a DHCPINFORM, with configuration only: no `yiaddr` and no lease
    /// time (RFC 2131 section 3.4).
    fn inform(&mut self, request: &ClientRequest) -> Reply {
        let mut message = reply::new_reply(request, MessageType::Ack, self.config.server_ip);
        message.set_ciaddr(request.message.ciaddr());
        reply::add_network_options(&mut message, &self.config, false);
        let boot = boot::decide(
            boot::classify(request.message.opts()),
            &self.config.boot,
            &request.mac,
        );
        reply::add_boot(&mut message, &boot, self.config.boot.tftp_server);

        Reply {
            destination: reply::destination(&request.message, MessageType::Ack),
            message,
        }
    }

    /// Builds a DHCPOFFER or DHCPACK that gives `ip` to the client.
    fn lease_reply(
        &self,
        request: &ClientRequest,
        message_type: MessageType,
        ip: Ipv4Addr,
        boot: &BootReply,
    ) -> Reply {
        let mut message = reply::new_reply(request, message_type, self.config.server_ip);
        message.set_yiaddr(ip);
        if message_type == MessageType::Ack {
            message.set_ciaddr(request.message.ciaddr());
        }
        reply::add_network_options(&mut message, &self.config, true);
        reply::add_boot(&mut message, boot, self.config.boot.tftp_server);

        Reply {
            destination: reply::destination(&request.message, message_type),
            message,
        }
    }

    fn nak(&self, request: &ClientRequest, reason: &str) -> Reply {
        let mut message = reply::new_reply(request, MessageType::Nak, self.config.server_ip);
        message
            .opts_mut()
            .insert(DhcpOption::Message(reason.to_string()));
        if !request.message.giaddr().is_unspecified() {
            reply::set_broadcast_flag(&mut message);
        }

        Reply {
            destination: reply::destination(&request.message, MessageType::Nak),
            message,
        }
    }

    /// Returns false, with a debug line, when option 54 names another server.
    fn addressed_to_us(&self, request: &ClientRequest) -> bool {
        match request.server_id() {
            Some(server_id) if server_id != self.config.server_ip => {
                tracing::debug!(%server_id, "ignoring message for another server");
                false
            }
            _ => true,
        }
    }
}

/// Remembers when each unknown MAC was last logged.
#[derive(Debug, Default)]
struct UnknownMacLog {
    last_logged: HashMap<MacAddr, SystemTime>,
}

impl UnknownMacLog {
    /// Returns whether to log `mac` now, and records it if so.
    fn should_log(&mut self, mac: MacAddr, now: SystemTime) -> bool {
        // A clock that went backwards counts as "long ago", so it costs at
        // most one extra line per MAC.
        let recent = |last: &SystemTime| {
            now.duration_since(*last)
                .is_ok_and(|elapsed| elapsed < UNKNOWN_MAC_LOG_INTERVAL)
        };

        if self.last_logged.get(&mac).is_some_and(recent) {
            return false;
        }
        if self.last_logged.len() >= UNKNOWN_MAC_LOG_CAPACITY {
            self.last_logged.retain(|_, last| recent(last));
            if self.last_logged.len() >= UNKNOWN_MAC_LOG_CAPACITY {
                return false;
            }
        }
        self.last_logged.insert(mac, now);
        true
    }
}

/// Converts `time` to Unix seconds, clamping times before 1970 to 0.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
