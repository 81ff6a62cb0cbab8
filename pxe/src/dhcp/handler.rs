//! The packet handler: one request in, at most one reply out, no I/O.
//!
//! [`Responder::handle_packet`] reads and updates the in-memory lease table
//! and returns the reply with its destination, or an offer that waits for a
//! ping check. The server loop sends it and writes the lease file, which
//! keeps the protocol logic testable without sockets or files.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, MessageType};

use super::boot::{self, BootClient, BootReply, NoBootFile};
use super::config::{DhcpConfig, DhcpMode, RelaySubnet, Scope};
use super::known::KnownMacs;
use super::lease::{LeaseState, LeaseStore, RequestOutcome};
use super::packet::{self, ClientRequest};
use super::reply::{self, NetworkOptions, Reply, ReplySocket};
use crate::MacAddr;

/// Minimum time between two log lines about the same MAC being ignored.
const IGNORED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Maximum number of MACs remembered for rate limiting. Under a flood of new
/// MACs, lines beyond this are dropped until old entries age out.
const IGNORED_LOG_CAPACITY: usize = 4096;

/// The socket a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Port 67, where clients and relay agents send.
    ServerPort,
    /// Port 4011, where PXE clients send to a proxyDHCP server.
    PxePort,
}

/// Outcome of one packet for the server loop.
#[derive(Debug)]
pub(crate) enum Handled {
    /// Nothing to send.
    Nothing,
    /// Send this reply.
    Reply(Reply),
    /// Ping `ip` first. Without an echo reply, send `reply`. With one, report
    /// it with [`Responder::address_in_use`] and handle the packet again.
    Probe {
        ip: Ipv4Addr,
        mac: MacAddr,
        reply: Reply,
    },
}

/// The subnet a request is served from and the options that go with it.
struct Served {
    scope: Scope,
    network: NetworkOptions,
}

/// The DHCP protocol logic with its state.
#[derive(Debug)]
pub(crate) struct Responder {
    config: DhcpConfig,
    known: KnownMacs,
    leases: LeaseStore,
    ignored_log: IgnoredMacLog,
    /// Addresses with a ping check running, so a retransmitted DISCOVER does
    /// not start a second one.
    probing: HashSet<Ipv4Addr>,
}

impl Responder {
    /// Creates a responder. `config` must have passed
    /// [`DhcpConfig::validate`].
    pub(crate) fn new(config: DhcpConfig, known: KnownMacs, leases: LeaseStore) -> Self {
        Self {
            config,
            known,
            leases,
            ignored_log: IgnoredMacLog::default(),
            probing: HashSet::new(),
        }
    }

    pub(crate) fn config(&self) -> &DhcpConfig {
        &self.config
    }

    pub(crate) fn leases(&self) -> &LeaseStore {
        &self.leases
    }

    /// Handles one packet that arrived on port 67 and returns the reply to
    /// send, if any. An offer that waits for a ping check is returned as if
    /// the check had found the address free.
    #[cfg(test)]
    pub(crate) fn handle(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        now: SystemTime,
    ) -> Option<Reply> {
        self.handle_on(bytes, source, Arrival::ServerPort, now)
    }

    /// Like [`Responder::handle`], for a packet that arrived on `arrival`.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn handle_on(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        arrival: Arrival,
        now: SystemTime,
    ) -> Option<Reply> {
        match self.handle_packet(bytes, source, arrival, now) {
            Handled::Nothing => None,
            Handled::Reply(reply) => Some(reply),
            Handled::Probe { ip, reply, .. } => {
                self.probing.remove(&ip);
                Some(reply)
            }
        }
    }

    /// Handles one packet from `source` that arrived on `arrival`.
    ///
    /// Malformed packets, packets from MACs outside [`KnownMacs`] (unless a
    /// discovery pool is set) and netboot clients without a boot file get no
    /// reply. Retransmitted requests get the same reply again, because every
    /// lease operation returns the existing lease when it matches.
    pub(crate) fn handle_packet(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        arrival: Arrival,
        now: SystemTime,
    ) -> Handled {
        let request = match packet::parse(bytes) {
            Ok(request) => request,
            Err(reason) => {
                tracing::debug!(%source, len = bytes.len(), %reason, "dropping malformed DHCP packet");
                return Handled::Nothing;
            }
        };

        let span = tracing::debug_span!(
            "dhcp_packet",
            mac = %request.mac,
            xid = %format!("{:08x}", request.message.xid()),
            message_type = ?request.message_type,
            giaddr = %request.message.giaddr(),
        );
        let _entered = span.enter();

        let client = boot::classify(request.message.opts());
        match self.config.mode {
            DhcpMode::Proxy => self.proxy(&request, client, source, arrival, now),
            DhcpMode::Full if arrival == Arrival::ServerPort => self.full(&request, client, now),
            DhcpMode::Full => Handled::Nothing,
        }
    }

    /// Records that a ping check found `ip`, offered to `mac`, in use: the
    /// address is quarantined like a declined one. The caller handles the
    /// packet again to offer another address.
    pub(crate) fn address_in_use(&mut self, ip: Ipv4Addr, mac: MacAddr, now: SystemTime) {
        self.probing.remove(&ip);
        tracing::warn!(
            %mac,
            %ip,
            "another host answered the ARP or ping check of an address about to be offered; address quarantined",
        );
        self.leases
            .lock()
            .quarantine(ip, unix_seconds(now), self.config.decline_quarantine);
    }

    /// Records that a ping check found `ip` free.
    pub(crate) fn address_free(&mut self, ip: Ipv4Addr) {
        self.probing.remove(&ip);
    }

    fn full(&mut self, request: &ClientRequest, client: BootClient, now: SystemTime) -> Handled {
        let known = self.known.contains(&request.mac);
        let Some(served) = self.served(request, known, now) else {
            return Handled::Nothing;
        };

        let needs_boot = matches!(
            request.message_type,
            MessageType::Discover | MessageType::Request | MessageType::Inform
        );
        let boot = if needs_boot {
            match self.boot_reply(request, client, now) {
                Some(boot) => boot,
                None => return Handled::Nothing,
            }
        } else {
            BootReply::None
        };

        let seconds = unix_seconds(now);
        match request.message_type {
            MessageType::Discover => self.discover(request, &served, &boot, seconds),
            MessageType::Request => self.request(request, &served, &boot, seconds),
            MessageType::Release => self.release(request, seconds),
            MessageType::Decline => self.decline(request, seconds),
            MessageType::Inform => Handled::Reply(self.inform(request, &served, &boot)),
            other => {
                tracing::debug!(
                    ?other,
                    "ignoring DHCP message type a server does not handle"
                );
                Handled::Nothing
            }
        }
    }

    /// Picks the subnet and pool for a request, or logs why it gets none.
    fn served(&mut self, request: &ClientRequest, known: bool, now: SystemTime) -> Option<Served> {
        let giaddr = request.message.giaddr();
        let (scope, relay) = if giaddr.is_unspecified() {
            (self.config.local_scope(), None)
        } else {
            match self
                .config
                .scope_for_giaddr(giaddr)
                .map(|(scope, relay)| (scope, relay.cloned()))
            {
                Some(found) => found,
                None => {
                    if self.ignored_log.should_log(request.mac, now) {
                        tracing::info!(mac = %request.mac, %giaddr, "ignoring DHCP relayed from a subnet with no relay_subnets entry");
                    }
                    return None;
                }
            }
        };

        let scope = if known {
            scope
        } else {
            match self.config.discovery_scope().filter(|_| relay.is_none()) {
                Some(discovery) => discovery,
                None => {
                    if self.ignored_log.should_log(request.mac, now) {
                        tracing::info!(mac = %request.mac, "ignoring DHCP from unknown MAC");
                    }
                    return None;
                }
            }
        };
        Some(Served {
            scope,
            network: self.network_options(relay.as_ref()),
        })
    }

    fn network_options(&self, relay: Option<&RelaySubnet>) -> NetworkOptions {
        match relay {
            None => NetworkOptions {
                subnet_mask: self.config.subnet_mask,
                router: self.config.router,
                dns_servers: self.config.dns_servers.clone(),
                lease_time: self.config.lease_time,
            },
            Some(subnet) => NetworkOptions {
                subnet_mask: subnet.subnet_mask,
                router: subnet.router,
                dns_servers: subnet.dns_servers.clone(),
                lease_time: self.config.lease_time,
            },
        }
    }

    /// Decides the boot file, or logs that the client's architecture has
    /// none and returns `None`.
    fn boot_reply(
        &mut self,
        request: &ClientRequest,
        client: BootClient,
        now: SystemTime,
    ) -> Option<BootReply> {
        let node = self.known.boot_override(&request.mac);
        match boot::decide(client, &self.config.boot, node.as_ref(), &request.mac) {
            Ok(boot) => Some(boot),
            Err(NoBootFile { client }) => {
                if self.ignored_log.should_log(request.mac, now) {
                    tracing::info!(
                        mac = %request.mac,
                        ?client,
                        "ignoring netboot client whose architecture has no boot file",
                    );
                }
                None
            }
        }
    }

    fn discover(
        &mut self,
        request: &ClientRequest,
        served: &Served,
        boot: &BootReply,
        now: u64,
    ) -> Handled {
        let requested = request.requested_ip();
        let mut leases = self.leases.lock();
        let previous = leases.by_mac.get(&request.mac).map(|lease| lease.ip);
        let offered = leases.offer(request.mac, requested, &served.scope, now);
        drop(leases);
        let Some(ip) = offered else {
            tracing::error!(
                mac = %request.mac,
                giaddr = %request.message.giaddr(),
                "DHCP pool exhausted; no address to offer",
            );
            return Handled::Nothing;
        };

        tracing::debug!(%ip, ?boot, "offering address");
        let reply = self.lease_reply(request, MessageType::Offer, ip, &served.network, boot);
        if self.probing.contains(&ip) {
            tracing::debug!(%ip, "ping check of this address still running; dropping DISCOVER");
            return Handled::Nothing;
        }
        // Only an address new to this MAC is checked: a MAC that keeps its
        // address may well be the host that replies to the ping.
        let checked = self.config.ping_check.is_some() || self.config.arp_check.is_some();
        if !checked || previous == Some(ip) {
            return Handled::Reply(reply);
        }
        self.probing.insert(ip);
        Handled::Probe {
            ip,
            mac: request.mac,
            reply,
        }
    }

    fn request(
        &mut self,
        request: &ClientRequest,
        served: &Served,
        boot: &BootReply,
        now: u64,
    ) -> Handled {
        if let Some(server_id) = request.server_id()
            && server_id != self.config.server_ip
        {
            if self.leases.lock().withdraw_offer(request.mac) {
                tracing::debug!(%server_id, "client chose another server; offer withdrawn");
            }
            return Handled::Nothing;
        }

        let Some(ip) = request.requested_ip().or(request.ciaddr()) else {
            tracing::debug!("dropping DHCPREQUEST without option 50 or ciaddr");
            return Handled::Nothing;
        };

        let mut leases = self.leases.lock();
        let was_bound = leases
            .by_mac
            .get(&request.mac)
            .is_some_and(|lease| lease.ip == ip && lease.state == LeaseState::Bound);
        let outcome = leases.request(
            request.mac,
            ip,
            &served.scope,
            served.network.lease_time,
            now,
        );
        drop(leases);

        match outcome {
            RequestOutcome::Ack => {
                if was_bound {
                    tracing::debug!(%ip, "lease renewed");
                } else {
                    tracing::info!(mac = %request.mac, %ip, "address leased");
                }
                let reply = self.lease_reply(request, MessageType::Ack, ip, &served.network, boot);
                Handled::Reply(reply)
            }
            RequestOutcome::Nak(reason) => {
                tracing::info!(mac = %request.mac, %ip, reason, "rejecting DHCPREQUEST");
                Handled::Reply(self.nak(request, reason))
            }
        }
    }

    fn release(&mut self, request: &ClientRequest, now: u64) -> Handled {
        if !self.addressed_to_us(request) {
            return Handled::Nothing;
        }
        let Some(ip) = request.ciaddr() else {
            tracing::debug!("dropping DHCPRELEASE without ciaddr");
            return Handled::Nothing;
        };

        if self.leases.lock().release(request.mac, ip, now) {
            tracing::info!(mac = %request.mac, %ip, "address released");
        } else {
            tracing::debug!(%ip, "ignoring DHCPRELEASE for an address the client does not hold");
        }
        Handled::Nothing
    }

    fn decline(&mut self, request: &ClientRequest, now: u64) -> Handled {
        if !self.addressed_to_us(request) {
            return Handled::Nothing;
        }
        let Some(ip) = request.requested_ip() else {
            tracing::debug!("dropping DHCPDECLINE without option 50");
            return Handled::Nothing;
        };

        let quarantine = self.config.decline_quarantine;
        if self.leases.lock().decline(request.mac, ip, now, quarantine) {
            tracing::warn!(
                mac = %request.mac,
                %ip,
                quarantine_seconds = quarantine.as_secs(),
                "client declined address because another host uses it; address quarantined",
            );
        } else {
            tracing::debug!(%ip, "ignoring DHCPDECLINE for an address the client does not hold");
        }
        Handled::Nothing
    }

    /// Builds the DHCPACK for a DHCPINFORM, with configuration only: no `yiaddr` and no lease
    /// time (RFC 2131 section 3.4).
    fn inform(&mut self, request: &ClientRequest, served: &Served, boot: &BootReply) -> Reply {
        let mut message = reply::new_reply(request, MessageType::Ack, self.config.server_ip);
        message.set_ciaddr(request.message.ciaddr());
        reply::add_network_options(&mut message, &served.network, false);
        reply::add_boot(&mut message, boot, self.config.boot.tftp_server);

        Reply::to_request(
            request,
            message,
            reply::destination(&request.message, MessageType::Ack),
            ReplySocket::Server,
        )
    }

    /// Builds a DHCPOFFER or DHCPACK that gives `ip` to the client.
    fn lease_reply(
        &self,
        request: &ClientRequest,
        message_type: MessageType,
        ip: Ipv4Addr,
        network: &NetworkOptions,
        boot: &BootReply,
    ) -> Reply {
        let mut message = reply::new_reply(request, message_type, self.config.server_ip);
        message.set_yiaddr(ip);
        if message_type == MessageType::Ack {
            message.set_ciaddr(request.message.ciaddr());
        }
        reply::add_network_options(&mut message, network, true);
        reply::add_boot(&mut message, boot, self.config.boot.tftp_server);

        Reply::to_request(
            request,
            message,
            reply::destination(&request.message, message_type),
            ReplySocket::Server,
        )
    }

    fn nak(&self, request: &ClientRequest, reason: &str) -> Reply {
        let mut message = reply::new_reply(request, MessageType::Nak, self.config.server_ip);
        message
            .opts_mut()
            .insert(DhcpOption::Message(reason.to_string()));
        if !request.message.giaddr().is_unspecified() {
            reply::set_broadcast_flag(&mut message);
        }

        Reply::to_request(
            request,
            message,
            reply::destination(&request.message, MessageType::Nak),
            ReplySocket::Server,
        )
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

    /// Replies to a netbooting client as a proxyDHCP server: a DISCOVER on port
    /// 67 gets a DHCPOFFER, a REQUEST or INFORM on port 4011 a DHCPACK, both
    /// with the boot file and without an address. Everything else, including
    /// a REQUEST on port 67 (which belongs to the site's DHCP server), gets
    /// nothing.
    fn proxy(
        &mut self,
        request: &ClientRequest,
        client: BootClient,
        source: SocketAddr,
        arrival: Arrival,
        now: SystemTime,
    ) -> Handled {
        let message_type = match (arrival, request.message_type) {
            (Arrival::ServerPort, MessageType::Discover) => MessageType::Offer,
            (Arrival::PxePort, MessageType::Request | MessageType::Inform) => MessageType::Ack,
            _ => return Handled::Nothing,
        };
        if !client.is_netboot() || !has_netboot_vendor_class(request) {
            tracing::debug!("proxyDHCP ignores a client without PXEClient or HTTPClient");
            return Handled::Nothing;
        }
        if !self.known.contains(&request.mac) {
            if self.ignored_log.should_log(request.mac, now) {
                tracing::info!(mac = %request.mac, "ignoring DHCP from unknown MAC");
            }
            return Handled::Nothing;
        }
        let Some(boot) = self.boot_reply(request, client, now) else {
            return Handled::Nothing;
        };

        let mut message = reply::new_reply(request, message_type, self.config.server_ip);
        if message_type == MessageType::Ack {
            message.set_ciaddr(request.message.ciaddr());
        }
        reply::add_boot(&mut message, &boot, self.config.boot.tftp_server);
        reply::add_proxy_options(&mut message, request, &boot);
        tracing::debug!(?boot, ?arrival, "sending proxyDHCP boot information");

        let (destination, socket) = match (arrival, source) {
            (Arrival::PxePort, SocketAddr::V4(source)) => (source, ReplySocket::Pxe),
            (Arrival::PxePort, SocketAddr::V6(_)) => return Handled::Nothing,
            (Arrival::ServerPort, _) => (
                reply::destination(&request.message, message_type),
                ReplySocket::Server,
            ),
        };
        Handled::Reply(Reply::to_request(request, message, destination, socket))
    }
}

/// Returns whether option 60 starts with `PXEClient` or `HTTPClient`. iPXE
/// sends `PXEClient` too, so this also admits iPXE.
fn has_netboot_vendor_class(request: &ClientRequest) -> bool {
    matches!(
        request.message.opts().get(dhcproto::v4::OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(class))
            if class.starts_with(boot::PXE_CLIENT) || class.starts_with(boot::HTTP_CLIENT)
    )
}

/// Remembers when each ignored MAC was last logged, so the reason appears
/// once per MAC and minute. Memory is bounded by [`IGNORED_LOG_CAPACITY`].
#[derive(Debug, Default)]
struct IgnoredMacLog {
    last_logged: HashMap<MacAddr, SystemTime>,
}

impl IgnoredMacLog {
    /// Returns whether to log `mac` now, and records it if so.
    fn should_log(&mut self, mac: MacAddr, now: SystemTime) -> bool {
        // A clock that went backwards counts as "long ago", so it costs at
        // most one extra line per MAC.
        let recent = |last: &SystemTime| {
            now.duration_since(*last)
                .is_ok_and(|elapsed| elapsed < IGNORED_LOG_INTERVAL)
        };

        if self.last_logged.get(&mac).is_some_and(recent) {
            return false;
        }
        if self.last_logged.len() >= IGNORED_LOG_CAPACITY {
            self.last_logged.retain(|_, last| recent(last));
            if self.last_logged.len() >= IGNORED_LOG_CAPACITY {
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
mod firmware_tests;
#[cfg(test)]
mod mode_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
