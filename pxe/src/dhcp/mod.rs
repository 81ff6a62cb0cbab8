//! DHCPv4 server for a site's provisioning network.
//!
//! # Design
//!
//! The server replies only to MACs in [`KnownMacs`], the machines the control
//! plane assigned to this site, so it can share a network segment with other
//! DHCP servers without taking over their clients. A packet from any other MAC
//! gets no reply and one log line per MAC per minute.
//!
//! Invariants:
//!
//! - A MAC keeps its address across renewals, reboots and server restarts,
//!   because leases live in a JSON file ([`LeaseStore`]) written before the
//!   reply that depends on it is sent. If that write fails, the error is
//!   logged and the reply still goes out, so a full disk does not stop
//!   provisioning.
//! - No address is leased to two MACs at once. An expired lease's address
//!   goes to another MAC only when every pool address has been leased before.
//! - Declined addresses stay out of use for [`DECLINE_QUARANTINE`].
//! - A client already running iPXE gets its script URL, never an iPXE binary
//!   again, which would loop. PXE firmware gets the iPXE binary for its
//!   option 93 architecture. Other clients, such as the installed OS, get an
//!   address only.
//!
//! Clients are identified by `chaddr` alone, because [`KnownMacs`] lists
//! hardware addresses. Option 61 (client identifier) is ignored, and so is
//! option 52 (option overload), which no netboot client here sends.
//!
//! [`DhcpServer::run`] receives on one socket, which the caller creates bound
//! to 0.0.0.0:67 with `SO_BROADCAST` and `SO_BINDTODEVICE` on the
//! provisioning interface, for example through
//! [`SocketFactory::udp`](crate::netns::SocketFactory::udp). Replies leave
//! through the same socket. Packets are handled one at a time by
//! the packet handler in `handler.rs`, which does no I/O.

mod boot;
mod config;
mod error;
mod handler;
mod known;
mod lease;
mod lease_file;
mod packet;
mod reply;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use config::{
    BootFiles, DhcpConfig, DhcpConfigError, MAC_PLACEHOLDER, MAX_BOOT_FILE_LEN, MAX_POOL_SIZE,
    MIN_LEASE_TIME,
};
pub use error::DhcpError;
pub use known::KnownMacs;
pub use lease::{DECLINE_QUARANTINE, Lease, LeaseState, LeaseStore, OFFER_HOLD};

use handler::Responder;

/// Receive buffer size. DHCP messages from clients fit in 576 bytes unless
/// option 57 allows more, and no client sends more than an Ethernet frame.
const RECEIVE_BUFFER_LEN: usize = 4096;

/// Receive errors in a row after which [`DhcpServer::run`] gives up.
const MAX_CONSECUTIVE_RECEIVE_ERRORS: u32 = 100;

/// Pause after a receive error, so a persistent error does not spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A DHCPv4 server bound to one provisioning network.
#[derive(Debug)]
pub struct DhcpServer {
    responder: Responder,
    socket: UdpSocket,
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

        Ok(Self {
            responder: Responder::new(config, known, leases),
            socket,
        })
    }

    /// Serves until `shutdown` is cancelled.
    ///
    /// Returns an error only when the socket cannot be used with tokio or
    /// fails to receive 100 times in a row.
    /// Send errors and lease file errors are logged and serving goes on.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DhcpError> {
        let local_addr = self.socket.local_addr().map_err(DhcpError::Socket)?;
        let socket = tokio::net::UdpSocket::from_std(self.socket).map_err(DhcpError::Socket)?;
        let config = self.responder.config();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            %local_addr,
            interface = config.interface.as_deref().unwrap_or("-"),
            server_ip = %config.server_ip,
            pool_start = %config.pool_start,
            pool_end = %config.pool_end,
            "dhcp server started",
        );

        let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
        let mut consecutive_errors = 0;
        // Runs until shutdown; each pass handles one packet or one error.
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = socket.recv_from(&mut buffer) => received,
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

            let reply = self
                .responder
                .handle(&buffer[..len], source, SystemTime::now());
            persist_leases(self.responder.leases()).await;
            if let Some(reply) = reply {
                send_reply(&socket, &reply).await;
            }
        }

        tracing::info!(%local_addr, "dhcp server stopped");
        Ok(())
    }
}

/// Logs a receive error and returns `Err(count)` once the limit is reached.
fn receive_failed(error: &io::Error, count: u32) -> Result<(), u32> {
    if count >= MAX_CONSECUTIVE_RECEIVE_ERRORS {
        return Err(count);
    }
    tracing::warn!(%error, count, "receiving on the DHCP socket failed; retrying");
    Ok(())
}

/// Writes the lease file if the last packet changed a lease. A failed write
/// is logged and retried after the next packet.
async fn persist_leases(leases: &LeaseStore) {
    let Some((path, bytes)) = leases.take_snapshot() else {
        return;
    };

    let write = tokio::task::spawn_blocking(move || lease_file::write_atomic(&path, &bytes)).await;
    let error = match write {
        Ok(Ok(())) => return,
        Ok(Err(error)) => crate::error_chain(&error),
        Err(join_error) => format!("lease file writer task failed: {join_error}"),
    };
    leases.mark_changed();
    tracing::error!(
        error,
        "failed to persist DHCP leases; the reply is sent anyway"
    );
}

async fn send_reply(socket: &tokio::net::UdpSocket, reply: &reply::Reply) {
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
