//! DHCPv4 server for a site's provisioning network.
//!
//! # Design
//!
//! The server runs in one of two [`DhcpMode`]s. As the full DHCP server it
//! leases addresses to the MACs in [`KnownMacs`], the machines the control
//! plane assigned to this site, and, when a discovery pool is set, to other
//! MACs from that pool. As proxyDHCP beside the site's own DHCP server it
//! leases nothing and replies only to PXE and UEFI HTTP boot clients with their
//! boot file: DISCOVER on port 67, REQUEST and INFORM on port 4011. Either
//! way it can share a segment with other DHCP servers without taking over
//! their clients. A packet that gets no reply because of its MAC, its
//! architecture or its relay is logged once per MAC per minute.
//!
//! Invariants:
//!
//! - A MAC keeps its address across renewals, reboots and server restarts,
//!   because leases live in a JSON file and its journal ([`LeaseStore`]),
//!   synced to disk before the replies that depend on them are sent. The
//!   loop handles the packets that are waiting as one batch and syncs once
//!   for the batch, on the blocking thread pool. While that sync runs it
//!   handles the next batch, whose replies wait for their own sync, so a
//!   busy server makes bigger batches instead of falling behind. If the
//!   write fails, the error is logged and the replies still go out, so a
//!   full disk does not stop provisioning.
//! - No address is leased to two MACs at once. An expired lease's address
//!   goes to another MAC only when every pool address has been leased before.
//! - Addresses that a client declined, or that sent an echo reply to the
//!   optional ping check, stay out of use for [`DhcpConfig::decline_quarantine`]; the
//!   quarantine is saved in the lease file.
//! - A relayed request (`giaddr` set) is served from the subnet that contains
//!   `giaddr` and answered through the relay on port 67, with its option 82
//!   echoed byte for byte (RFC 3046).
//! - A client already running iPXE gets its script URL, never an iPXE binary
//!   again, which would loop. PXE firmware gets the iPXE binary for its
//!   option 93 architecture, UEFI HTTP boot firmware a URL, and a per-node
//!   [`BootOverride`] wins over both. Netboot firmware whose architecture
//!   has no boot file gets no reply. Other clients, such as the installed
//!   OS, get an address only.
//!
//! Clients are identified by `chaddr` alone, because [`KnownMacs`] lists
//! hardware addresses. Option 61 (client identifier) is ignored, and so is
//! option 52 (option overload), which no netboot client here sends.
//!
//! [`DhcpServer::run`] receives on one socket, which the caller creates bound
//! to 0.0.0.0:67 with `SO_BROADCAST` and `SO_BINDTODEVICE` on the
//! provisioning interface, for example through
//! [`SocketFactory::udp`](crate::netns::SocketFactory::udp), plus in proxy
//! mode a second one on port 4011. Replies leave through the socket the
//! request came in on. Packets are handled one at a time by the packet
//! handler in `handler.rs`, which does no I/O; ping checks run in the
//! background and hand their offer back to the loop.

mod arp;
mod boot;
mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod handler;
mod known;
mod lease;
mod lease_file;
mod lease_journal;
mod packet;
mod ping;
mod reply;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use boot::BootOverride;
pub use config::{
    AddressRange, BootFiles, DhcpConfig, DhcpConfigError, DhcpMode, MAC_PLACEHOLDER,
    MAX_BOOT_FILE_LEN, MAX_PING_WAIT, MAX_POOL_SIZE, MAX_QUARANTINE, MIN_LEASE_TIME, MIN_PING_WAIT,
    RelaySubnet,
};
pub use error::DhcpError;
pub use known::KnownMacs;
pub use lease::{DECLINE_QUARANTINE, Lease, LeaseState, LeaseStore, OFFER_HOLD};
pub use reply::PXE_PORT;

pub(crate) use arp::ETHERTYPE_ARP;

use handler::{Arrival, Handled, Responder};
use reply::ReplySocket;

use crate::netns::SocketFactory;

/// Receive buffer size. DHCP messages from clients fit in 576 bytes unless
/// option 57 allows more, and no client sends more than an Ethernet frame.
const RECEIVE_BUFFER_LEN: usize = 4096;

/// Receive errors in a row after which [`DhcpServer::run`] gives up.
const MAX_CONSECUTIVE_RECEIVE_ERRORS: u32 = 100;

/// Packets in one batch. While a save runs and the next batch is full, the
/// loop stops receiving and the packets wait in the kernel's socket buffer.
/// The replies of a batch leave as one burst, and a relay or client with a
/// small receive buffer drops the end of a long one. Small batches also pace
/// the replies by the disk's sync time: in `bench/run` on a loaded 2-core
/// machine, perfdhcp's default receive buffer overflowed with batches of 64
/// at 4,000 leases a second and none did with 16, at about 50 % more server
/// CPU per lease.
const MAX_BATCH: usize = 16;

/// Receive buffer asked for the server socket (`SO_RCVBUF`), so that a burst
/// that arrives during a slow disk sync waits in the kernel instead of being
/// dropped. The kernel caps it at `net.core.rmem_max`.
const SOCKET_RECEIVE_BUFFER: usize = 1 << 20;

/// Pause after a receive error, so a persistent error does not spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Ping checks running at once. A DISCOVER that would start one more is
/// dropped, and the client's retransmission tries again.
const MAX_PINGS_IN_FLIGHT: usize = 64;

/// Addresses tried for one DISCOVER when ping checks keep finding them in
/// use. The client's retransmission starts over.
const MAX_PING_ATTEMPTS: u32 = 3;

/// A DHCPv4 server bound to one provisioning network.
#[derive(Debug)]
pub struct DhcpServer {
    responder: Responder,
    socket: UdpSocket,
    pxe_socket: Option<UdpSocket>,
    ping_factory: Option<SocketFactory>,
}

impl DhcpServer {
    /// Checks `config` and prepares the server. `socket` must be bound to
    /// 0.0.0.0:67 with `SO_BROADCAST`, and to the provisioning interface with
    /// `SO_BINDTODEVICE` when the host has other interfaces.
    pub fn new(
        config: DhcpConfig,
        known: KnownMacs,
        leases: LeaseStore,
        socket: UdpSocket,
    ) -> Result<Self, DhcpError> {
        config.validate()?;
        socket.set_nonblocking(true).map_err(DhcpError::Socket)?;
        if let Err(error) =
            socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_RECEIVE_BUFFER)
        {
            tracing::debug!(%error, "cannot enlarge the DHCP socket's receive buffer");
        }

        Ok(Self {
            responder: Responder::new(config, known, leases),
            socket,
            pxe_socket: None,
            ping_factory: None,
        })
    }

    /// Adds the socket for port 4011 (0.0.0.0:4011, bound to the interface),
    /// where PXE clients send their DHCPREQUEST to a proxyDHCP server. Only
    /// [`DhcpMode::Proxy`] reads it.
    pub fn with_pxe_socket(mut self, socket: UdpSocket) -> Result<Self, DhcpError> {
        socket.set_nonblocking(true).map_err(DhcpError::Socket)?;
        self.pxe_socket = Some(socket);
        Ok(self)
    }

    /// Sets where the ping check's ICMP sockets are created: the namespace of
    /// the provisioning interface. Without it, [`DhcpConfig::ping_check`]
    /// pings from the caller's namespace.
    pub fn with_ping_factory(mut self, factory: SocketFactory) -> Self {
        self.ping_factory = Some(factory);
        self
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// Returns an error only when a socket cannot be used with tokio or
    /// fails to receive 100 times in a row.
    /// Send errors and lease file errors are logged and serving goes on.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DhcpError> {
        let DhcpServer {
            mut responder,
            socket,
            pxe_socket,
            ping_factory,
        } = self;
        let local_addr = socket.local_addr().map_err(DhcpError::Socket)?;
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(DhcpError::Socket)?;
        let pxe_socket = match pxe_socket {
            Some(pxe) => Some(tokio::net::UdpSocket::from_std(pxe).map_err(DhcpError::Socket)?),
            None => None,
        };
        log_start(responder.config(), local_addr, pxe_socket.is_some());

        let (sender, mut ping_results) = mpsc::channel::<PingResult>(MAX_PINGS_IN_FLIGHT);
        let mut pings = PingChecks {
            sender,
            factory: ping_factory.unwrap_or_else(SocketFactory::host),
            in_flight: 0,
        };
        let sockets = Sockets {
            server: &socket,
            pxe: pxe_socket.as_ref(),
        };
        let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
        let mut pxe_buffer = vec![0u8; RECEIVE_BUFFER_LEN];
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut commit = Commit::default();
        let mut consecutive_errors = 0;
        // Runs until shutdown; each pass handles one batch of packets, one
        // finished save, one ping result or one error.
        loop {
            let receiving = batch.len() < MAX_BATCH;
            let (received, arrival) = tokio::select! {
                () = shutdown.cancelled() => break,
                () = commit.saved(), if commit.is_saving() => {
                    commit.send_waiting(&mut responder, &mut pings, &sockets).await;
                    commit.start(&mut responder, &mut pings, &sockets, &mut batch).await;
                    continue;
                }
                Some(result) = ping_results.recv() => {
                    pings.finished(&mut responder, result, &sockets).await;
                    continue;
                }
                received = socket.recv_from(&mut buffer), if receiving => (received, Arrival::ServerPort),
                received = receive_optional(pxe_socket.as_ref(), &mut pxe_buffer), if receiving => (received, Arrival::PxePort),
            };
            let (len, source) = match received {
                Ok(received) => received,
                Err(error) => {
                    consecutive_errors += 1;
                    receive_failed(&error, consecutive_errors).map_err(|count| {
                        DhcpError::Receive {
                            count,
                            source: error,
                        }
                    })?;
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(RECEIVE_ERROR_PAUSE) => continue,
                    }
                }
            };
            consecutive_errors = 0;

            let packet = match arrival {
                Arrival::ServerPort => &buffer[..len],
                Arrival::PxePort => &pxe_buffer[..len],
            };
            let now = SystemTime::now();
            handle_into(&mut responder, packet, source, arrival, now, &mut batch);
            // The packets that arrived meanwhile join the batch; a receive
            // error ends it and the next pass reports it.
            while batch.len() < MAX_BATCH {
                let (received, arrival) = match socket.try_recv_from(&mut buffer) {
                    Ok(received) => (received, Arrival::ServerPort),
                    Err(_) => match pxe_socket
                        .as_ref()
                        .map(|pxe| pxe.try_recv_from(&mut pxe_buffer))
                    {
                        Some(Ok(received)) => (received, Arrival::PxePort),
                        _ => break,
                    },
                };
                let (len, source) = received;
                let packet = match arrival {
                    Arrival::ServerPort => &buffer[..len],
                    Arrival::PxePort => &pxe_buffer[..len],
                };
                handle_into(&mut responder, packet, source, arrival, now, &mut batch);
            }

            if !commit.is_saving() {
                commit
                    .start(&mut responder, &mut pings, &sockets, &mut batch)
                    .await;
            }
        }

        commit.finish().await;
        tracing::info!(%local_addr, "dhcp server stopped");
        Ok(())
    }
}

/// The lease save on the blocking thread pool and the replies that wait for
/// it. At most one save runs, so replies leave in the order of their saves.
#[derive(Debug, Default)]
struct Commit {
    saving: Option<tokio::task::JoinHandle<Result<(), DhcpError>>>,
    waiting: Vec<Batched>,
    /// Set when the running save finished and its replies may go.
    done: bool,
}

impl Commit {
    fn is_saving(&self) -> bool {
        self.saving.is_some() && !self.done
    }

    /// Starts saving the batch's lease changes, or sends its replies now when
    /// it changed nothing. Leaves `batch` empty.
    async fn start(
        &mut self,
        responder: &mut Responder,
        pings: &mut PingChecks,
        sockets: &Sockets<'_>,
        batch: &mut Vec<Batched>,
    ) {
        if batch.is_empty() {
            return;
        }
        if !responder.leases().has_unsaved_changes() {
            send_batch(responder, pings, sockets, batch).await;
            return;
        }
        let store = responder.leases().clone();
        self.saving = Some(tokio::task::spawn_blocking(move || store.save()));
        self.done = false;
        std::mem::swap(&mut self.waiting, batch);
    }

    /// Waits until the running save ends and logs its failure.
    async fn saved(&mut self) {
        let Some(saving) = self.saving.as_mut() else {
            return;
        };
        let error = match saving.await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(crate::error_chain(&error)),
            Err(join_error) => Some(format!("lease file writer task failed: {join_error}")),
        };
        self.saving = None;
        self.done = true;
        if let Some(error) = error {
            tracing::error!(
                error,
                "failed to persist DHCP leases; the replies are sent anyway"
            );
        }
    }

    /// Sends the replies whose save finished.
    async fn send_waiting(
        &mut self,
        responder: &mut Responder,
        pings: &mut PingChecks,
        sockets: &Sockets<'_>,
    ) {
        self.done = false;
        send_batch(responder, pings, sockets, &mut self.waiting).await;
    }

    /// Waits for a running save at shutdown; its replies are not sent.
    async fn finish(&mut self) {
        if self.is_saving() {
            self.saved().await;
        }
    }
}

/// Sends the replies of a saved batch and starts its ping checks.
async fn send_batch(
    responder: &mut Responder,
    pings: &mut PingChecks,
    sockets: &Sockets<'_>,
    batch: &mut Vec<Batched>,
) {
    for item in batch.drain(..) {
        match item {
            Batched::Reply(reply) => send_reply(sockets, &reply).await,
            Batched::Probe(pending) => pings.start(responder, pending),
        }
    }
}

/// A handled packet whose reply waits for the batch's lease save.
#[derive(Debug)]
enum Batched {
    Reply(reply::Reply),
    Probe(PendingOffer),
}

/// Handles one packet and adds its reply or ping check to `batch`.
fn handle_into(
    responder: &mut Responder,
    packet: &[u8],
    source: SocketAddr,
    arrival: Arrival,
    now: SystemTime,
    batch: &mut Vec<Batched>,
) {
    match responder.handle_packet(packet, source, arrival, now) {
        Handled::Nothing => {}
        Handled::Reply(reply) => batch.push(Batched::Reply(reply)),
        Handled::Probe { ip, mac, reply } => batch.push(Batched::Probe(PendingOffer {
            ip,
            mac,
            reply,
            packet: packet.to_vec(),
            source,
            attempt: 1,
        })),
    }
}

fn log_start(config: &DhcpConfig, local_addr: SocketAddr, has_pxe_socket: bool) {
    if config.mode == DhcpMode::Proxy && !has_pxe_socket {
        tracing::warn!(
            "proxyDHCP runs without a port 4011 socket; PXE clients that send their request there get no boot file"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %local_addr,
        mode = ?config.mode,
        interface = config.interface.as_deref().unwrap_or("-"),
        server_ip = %config.server_ip,
        pool_start = %config.pool_start,
        pool_end = %config.pool_end,
        relay_subnets = config.relay_subnets.len(),
        ping_check = ?config.ping_check,
        "dhcp server started",
    );
}

/// An offer waiting for its ping check.
#[derive(Debug)]
struct PendingOffer {
    ip: Ipv4Addr,
    mac: crate::MacAddr,
    reply: reply::Reply,
    /// The DISCOVER, handled again when the address is in use.
    packet: Vec<u8>,
    source: SocketAddr,
    attempt: u32,
}

/// The ping checks running in the background.
#[derive(Debug)]
struct PingChecks {
    sender: mpsc::Sender<PingResult>,
    factory: SocketFactory,
    in_flight: usize,
}

impl PingChecks {
    /// Starts the ARP and ping checks of the offer's address, or drops the
    /// offer when too many checks run. The ARP probe runs only for addresses
    /// of the local subnet, which sit on the serving interface's link.
    fn start(&mut self, responder: &mut Responder, pending: PendingOffer) {
        let config = responder.config();
        let ping = config.ping_check;
        let arp = config
            .arp_check
            .filter(|_| config.is_host_in_subnet(pending.ip))
            .zip(config.interface.clone());
        let (ip, mac) = (pending.ip, pending.mac);
        if self.in_flight >= MAX_PINGS_IN_FLIGHT {
            tracing::warn!(%mac, %ip, "too many address checks running; dropping DISCOVER");
            responder.address_free(ip);
            return;
        }
        self.in_flight += 1;

        let factory = self.factory.clone();
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let checked =
                tokio::task::spawn_blocking(move || address_in_use(&factory, ip, mac, arp, ping))
                    .await;
            let in_use = checked.unwrap_or_else(|error| {
                tracing::warn!(%mac, %ip, %error, "address check task failed; offering the address unchecked");
                false
            });
            // The receiver lives as long as the server loop; after shutdown
            // the result has nowhere to go.
            let _ = sender.send(PingResult { pending, in_use }).await;
        });
    }

    /// Sends the offer whose address is free, or quarantines the address and
    /// handles the DISCOVER again.
    async fn finished(
        &mut self,
        responder: &mut Responder,
        result: PingResult,
        sockets: &Sockets<'_>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let pending = result.pending;
        if !result.in_use {
            responder.address_free(pending.ip);
            send_reply(sockets, &pending.reply).await;
            return;
        }

        let now = SystemTime::now();
        responder.address_in_use(pending.ip, pending.mac, now);
        if pending.attempt >= MAX_PING_ATTEMPTS {
            persist_leases(responder.leases()).await;
            return;
        }
        let handled =
            responder.handle_packet(&pending.packet, pending.source, Arrival::ServerPort, now);
        persist_leases(responder.leases()).await;
        match handled {
            Handled::Nothing => {}
            Handled::Reply(reply) => send_reply(sockets, &reply).await,
            Handled::Probe { ip, mac, reply } => {
                let next = PendingOffer {
                    ip,
                    mac,
                    reply,
                    attempt: pending.attempt + 1,
                    ..pending
                };
                self.start(responder, next);
            }
        }
    }
}

/// Runs the ARP probe, then the ping check, and returns whether either found
/// `ip` in use. A check that fails to run is logged and counts as free, so a
/// missing capability does not stop provisioning.
fn address_in_use(
    factory: &SocketFactory,
    ip: Ipv4Addr,
    mac: crate::MacAddr,
    arp: Option<(Duration, String)>,
    ping: Option<Duration>,
) -> bool {
    if let Some((wait, interface)) = arp {
        match arp::answers_arp(factory, &interface, ip, wait) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%mac, %ip, interface, %error, "ARP check failed; not probing the address with ARP");
            }
        }
    }
    if let Some(wait) = ping {
        match ping::answers_ping(factory, ip, wait) {
            Ok(in_use) => return in_use,
            Err(error) => {
                tracing::warn!(%mac, %ip, %error, "ping check failed; offering the address unpinged");
            }
        }
    }
    false
}

/// A finished ping check.
#[derive(Debug)]
struct PingResult {
    pending: PendingOffer,
    in_use: bool,
}

/// Receives from `socket`, or waits forever when there is none.
async fn receive_optional(
    socket: Option<&tokio::net::UdpSocket>,
    buffer: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

/// The sockets replies leave from.
struct Sockets<'a> {
    server: &'a tokio::net::UdpSocket,
    pxe: Option<&'a tokio::net::UdpSocket>,
}

/// Logs a receive error and returns `Err(count)` once the limit is reached.
fn receive_failed(error: &io::Error, count: u32) -> Result<(), u32> {
    if count >= MAX_CONSECUTIVE_RECEIVE_ERRORS {
        return Err(count);
    }
    tracing::warn!(%error, count, "receiving on the DHCP socket failed; retrying");
    Ok(())
}

/// Saves the lease changes of the last batch and waits until they are on
/// disk. A failed write is logged and retried after the next batch.
async fn persist_leases(leases: &LeaseStore) {
    if !leases.has_unsaved_changes() {
        return;
    }
    let store = leases.clone();
    let error = match tokio::task::spawn_blocking(move || store.save()).await {
        Ok(Ok(())) => return,
        Ok(Err(error)) => crate::error_chain(&error),
        Err(join_error) => format!("lease file writer task failed: {join_error}"),
    };
    tracing::error!(
        error,
        "failed to persist DHCP leases; the reply is sent anyway"
    );
}

async fn send_reply(sockets: &Sockets<'_>, reply: &reply::Reply) {
    let socket = match (reply.socket, sockets.pxe) {
        (ReplySocket::Pxe, Some(pxe)) => pxe,
        _ => sockets.server,
    };
    let mac = crate::MacAddr(copy_mac(reply.message.chaddr()));
    let bytes = match reply.encode() {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%mac, %error, "failed to encode DHCP reply");
            return;
        }
    };

    let destination = SocketAddr::V4(reply.destination);
    if let Err(error) = socket.send_to(&bytes, destination).await {
        tracing::warn!(%mac, %destination, %error, "failed to send DHCP reply");
    }
}

fn copy_mac(chaddr: &[u8]) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let len = chaddr.len().min(6);
    mac[..len].copy_from_slice(&chaddr[..len]);
    mac
}
