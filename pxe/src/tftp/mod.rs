//! Read-only TFTP server for the first-stage boot loaders (`undionly.kpxe`,
//! `snponly.efi`).
//!
//! # Design
//!
//! PXE firmware can fetch its network boot program only over TFTP, so this
//! server implements only what firmware needs. It serves read requests in
//! octet mode, negotiates `blksize` (RFC 2348), `tsize` and `timeout`
//! (RFC 2349) and `windowsize` (RFC 7440) as RFC 2347 describes, retransmits,
//! and rolls block numbers over. Everything after the first stage goes over
//! HTTP.
//!
//! Invariants:
//!
//! - Nothing outside the root is served: `..`, absolute paths (after one
//!   leading `/` is stripped), NUL bytes and symlinks that resolve outside
//!   the root are rejected with error 2 (access violation).
//! - Write requests are rejected with error 2. The server never writes.
//! - `netascii` and `mail` modes are rejected with error 4 (illegal
//!   operation). Boot firmware always uses octet, and netascii conversion
//!   would corrupt binaries, so serving them as octet would be wrong.
//! - Every transfer ends: each window is resent at most
//!   [`TftpOptions::max_retries`] times, and at most
//!   [`TftpOptions::max_transfers`] run at once.
//!
//! Each transfer gets its own socket from the [`SocketFactory`], bound to the
//! server's address and an ephemeral port (the transfer ID of RFC 1350), and
//! connected to the client so that the kernel drops packets from other
//! ports. The factory places that socket in the provisioning namespace.
//! The granted `blksize` is also clamped to the kernel's path MTU for that
//! connected socket (IPv4), so blocks never need IP fragmentation.

mod negotiate;
mod packet;
mod path;
mod session;
mod transfer;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::netns::SocketFactory;
use negotiate::{BLKSIZE_RANGE, MAX_WINDOWSIZE};
use packet::{ErrorCode, Packet};

/// Receive buffer for requests. RFC 2347 limits requests to 512 bytes; the
/// extra room lets oversized ones be parsed and rejected rather than cut.
const RECEIVE_BUFFER_LEN: usize = 2048;

/// Receive errors in a row after which [`TftpServer::run`] gives up.
const MAX_CONSECUTIVE_RECEIVE_ERRORS: u32 = 100;

/// Pause after a receive error, so a persistent error does not spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Time running transfers get to finish after shutdown before they are
/// aborted. They stop at their next wait anyway, so this is rarely reached.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors from setting up or running the TFTP server.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("invalid TFTP root {}", path.display())]
    InvalidRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("TFTP root {} is not a directory", path.display())]
    RootNotDirectory { path: PathBuf },

    #[error("invalid TFTP option {field} = {value}: {reason}")]
    InvalidOption {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("failed to set up the TFTP socket")]
    Socket(#[source] io::Error),

    #[error("receiving on the TFTP socket failed {count} times in a row")]
    Receive {
        count: u32,
        #[source]
        source: io::Error,
    },
}

/// Limits and socket settings of the TFTP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TftpOptions {
    /// Largest `blksize` granted; larger requests are lowered to it. Must lie
    /// in 8..=65464. The default, 1468, fills a 1500-byte Ethernet frame
    /// (1468 + 4 TFTP + 8 UDP + 20 IP).
    pub max_blksize: u16,
    /// Largest `windowsize` granted, 1 to 64. 1 turns windows off. The
    /// default, 16, needs half the acknowledgement round trips of 8, and a
    /// lost packet still costs a resend of at most 16 blocks (23 KiB at
    /// blksize 1468).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not negotiate `timeout`.
    pub default_timeout: Duration,
    /// Resends of one window (or of the OACK) before a transfer is abandoned.
    pub max_retries: u32,
    /// Maximum number of transfers at once. Further requests get error 0.
    pub max_transfers: usize,
    /// Interface that transfer sockets are bound to (`SO_BINDTODEVICE`).
    pub bind_device: Option<String>,
}

impl Default for TftpOptions {
    fn default() -> Self {
        Self {
            max_blksize: 1468,
            max_windowsize: 16,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
            max_transfers: 64,
            bind_device: None,
        }
    }
}

impl TftpOptions {
    /// Checks every limit and returns the first invalid one.
    pub fn validate(&self) -> Result<(), TftpError> {
        let invalid = |field, value: String, reason| {
            Err(TftpError::InvalidOption {
                field,
                value,
                reason,
            })
        };
        if !BLKSIZE_RANGE.contains(&self.max_blksize) {
            return invalid(
                "max_blksize",
                self.max_blksize.to_string(),
                "expected 8 to 65464",
            );
        }
        if !(1..=MAX_WINDOWSIZE).contains(&self.max_windowsize) {
            return invalid(
                "max_windowsize",
                self.max_windowsize.to_string(),
                "expected 1 to 64",
            );
        }
        let timeout = self.default_timeout;
        if timeout.is_zero() || timeout > Duration::from_secs(255) {
            return invalid(
                "default_timeout",
                format!("{timeout:?}"),
                "expected more than 0 s and at most 255 s",
            );
        }
        if self.max_transfers == 0 {
            return invalid("max_transfers", "0".to_string(), "expected at least 1");
        }
        Ok(())
    }
}

/// A read-only TFTP server for one root directory.
#[derive(Debug)]
pub struct TftpServer {
    context: Arc<session::Context>,
    socket: UdpSocket,
}

impl TftpServer {
    /// Prepares a server for the files under `root`.
    ///
    /// `socket` receives the requests, usually bound to the server's address
    /// and port 69. Transfer sockets from `factory` are bound to the same
    /// address, so replies come from the address the client contacted.
    pub fn new(
        root: PathBuf,
        socket: UdpSocket,
        factory: SocketFactory,
        options: TftpOptions,
    ) -> Result<Self, TftpError> {
        options.validate()?;
        let canonical = root
            .canonicalize()
            .map_err(|source| TftpError::InvalidRoot {
                path: root.clone(),
                source,
            })?;
        if !canonical.is_dir() {
            return Err(TftpError::RootNotDirectory { path: root });
        }
        socket.set_nonblocking(true).map_err(TftpError::Socket)?;
        let transfer_ip = socket.local_addr().map_err(TftpError::Socket)?.ip();

        Ok(Self {
            context: Arc::new(session::Context {
                root: canonical,
                factory,
                options,
                transfer_ip,
            }),
            socket,
        })
    }

    /// Serves until `shutdown` is cancelled, then stops running transfers.
    ///
    /// Returns an error only when the socket cannot be used with tokio or
    /// fails to receive 100 times in a row.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TftpError> {
        let Self { context, socket } = self;
        let local_addr = socket.local_addr().map_err(TftpError::Socket)?;
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(TftpError::Socket)?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            %local_addr,
            root = %context.root.display(),
            namespace = context.factory.namespace(),
            "tftp server started",
        );

        let mut transfers = JoinSet::new();
        let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
        let mut consecutive_errors = 0;
        // Runs until shutdown; each pass handles one packet, one finished
        // transfer or one error.
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(joined) = transfers.join_next(), if !transfers.is_empty() => {
                    if let Err(error) = joined {
                        tracing::error!(%error, "tftp transfer task failed");
                    }
                }
                received = socket.recv_from(&mut buffer) => match received {
                    Ok((len, client)) => {
                        consecutive_errors = 0;
                        let request = &buffer[..len];
                        dispatch(&context, &socket, request, client, &mut transfers, &shutdown).await;
                    }
                    Err(error) => {
                        consecutive_errors += 1;
                        if consecutive_errors >= MAX_CONSECUTIVE_RECEIVE_ERRORS {
                            return Err(TftpError::Receive { count: consecutive_errors, source: error });
                        }
                        tracing::warn!(%error, count = consecutive_errors, "receiving on the TFTP socket failed; retrying");
                        tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    }
                },
            }
        }

        // Transfers watch the same token and stop at their next wait.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while transfers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = transfers.len(),
                "aborting tftp transfers after shutdown"
            );
            transfers.abort_all();
        }
        tracing::info!(%local_addr, "tftp server stopped");
        Ok(())
    }
}

/// Starts a transfer for a read request, or replies with an error.
async fn dispatch(
    context: &Arc<session::Context>,
    socket: &tokio::net::UdpSocket,
    bytes: &[u8],
    client: SocketAddr,
    transfers: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let (code, message) = match packet::parse(bytes) {
        Ok(Packet::ReadRequest(request)) => {
            if transfers.len() < context.options.max_transfers {
                let context = Arc::clone(context);
                transfers.spawn(session::serve(context, request, client, shutdown.clone()));
                return;
            }
            tracing::warn!(%client, running = transfers.len(), "rejecting tftp read request: too many transfers");
            (ErrorCode::NotDefined, "too many transfers; retry later")
        }
        Ok(Packet::WriteRequest(request)) => {
            let file = String::from_utf8_lossy(&request.filename).into_owned();
            tracing::info!(%client, file, "rejecting tftp write request");
            (
                ErrorCode::AccessViolation,
                "write requests are not supported",
            )
        }
        // No reply to an ERROR, so two servers cannot send errors in a loop.
        Ok(Packet::Error { .. }) => return,
        Ok(Packet::Data { .. } | Packet::Ack { .. } | Packet::OptionAck) => {
            (ErrorCode::UnknownTransferId, "no transfer on this port")
        }
        Err(error) => {
            tracing::debug!(%client, %error, "rejecting malformed tftp packet");
            (ErrorCode::IllegalOperation, "illegal TFTP operation")
        }
    };

    if let Err(error) = socket.send_to(&packet::error(code, message), client).await {
        tracing::debug!(%client, %error, "failed to send tftp error");
    }
}

#[cfg(test)]
mod tests;
