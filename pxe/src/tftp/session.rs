//! Serving one read request: its socket, checks, negotiation and log line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::TftpOptions;
use super::negotiate::{Limits, Negotiated, negotiate};
use super::packet::{self, ErrorCode, Request};
use super::path::open_in_root;
use super::transfer::{self, TransferError, TransferPlan, TransferStats};
use crate::error_chain;
use crate::netns::{SocketFactory, UdpOptions};

/// Bytes read from the served file at a time: about 170 blocks of 1468
/// bytes, so a read syscall serves many blocks.
const FILE_READ_BUFFER_LEN: usize = 256 * 1024;

/// Settings shared by every transfer of one server.
#[derive(Debug)]
pub(crate) struct Context {
    /// Canonical root directory.
    pub(crate) root: PathBuf,
    pub(crate) factory: SocketFactory,
    pub(crate) options: TftpOptions,
    /// Address the transfer sockets bind to: the request socket's address.
    pub(crate) transfer_ip: IpAddr,
}

/// Serves `request` from `client` to the end and logs the outcome.
pub(crate) async fn serve(
    context: Arc<Context>,
    request: Request,
    client: SocketAddr,
    cancel: CancellationToken,
) {
    let file = String::from_utf8_lossy(&request.filename).into_owned();
    let span = tracing::info_span!("tftp_transfer", %client, file);
    serve_in_span(context, request, client, file, cancel)
        .instrument(span)
        .await;
}

async fn serve_in_span(
    context: Arc<Context>,
    request: Request,
    client: SocketAddr,
    file: String,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let Some(socket) = transfer_socket(&context, client).await else {
        return;
    };

    if request.mode != "octet" {
        tracing::info!(%client, file, mode = request.mode, "rejecting tftp read request: only octet mode is served");
        send_error(
            &socket,
            ErrorCode::IllegalOperation,
            "only octet (binary) mode is supported",
        )
        .await;
        return;
    }

    let root = context.root.clone();
    let filename = request.filename.clone();
    let opened = tokio::task::spawn_blocking(move || open_in_root(&root, &filename)).await;
    let served = match opened {
        Ok(Ok(served)) => served,
        Ok(Err(rejection)) => {
            tracing::info!(%client, file, %rejection, "rejecting tftp read request");
            send_error(&socket, rejection.code(), &rejection.to_string()).await;
            return;
        }
        Err(error) => {
            tracing::error!(%client, file, %error, "tftp file open task failed");
            send_error(&socket, ErrorCode::NotDefined, "internal error").await;
            return;
        }
    };

    let limits = Limits {
        max_blksize: path_blksize(&socket, client).map_or(context.options.max_blksize, |fits| {
            fits.min(context.options.max_blksize)
        }),
        max_windowsize: context.options.max_windowsize,
        default_timeout: context.options.default_timeout,
    };
    let negotiated = negotiate(&request.options, served.size, limits);
    let plan = TransferPlan {
        negotiated: &negotiated,
        max_retries: context.options.max_retries,
    };
    let path = served.path.clone();
    let result = send_on_blocking_pool(
        socket,
        served.file,
        negotiated.clone(),
        plan.max_retries,
        cancel,
    )
    .await;
    match result {
        Ok(stats) => tracing::info!(
            %client,
            file,
            path = %path.display(),
            bytes = stats.bytes,
            blocks = stats.blocks,
            blksize = negotiated.blksize,
            windowsize = negotiated.windowsize,
            retransmissions = stats.retransmissions,
            duration_ms = started.elapsed().as_millis() as u64,
            "tftp transfer finished",
        ),
        // EDK2 (OVMF 2022.11) requests the size with tsize, ends that
        // transfer with error 8 and then requests the file again, so this
        // is not a failure.
        Err(TransferError::ClientError { code, message })
            if code == ErrorCode::OptionNegotiation as u16 =>
        {
            tracing::debug!(%client, file, message, "client ended the transfer after option negotiation");
        }
        Err(TransferError::Cancelled) => {
            tracing::debug!(%client, file, "tftp transfer stopped by shutdown");
        }
        Err(error) => tracing::warn!(
            %client,
            file,
            error = %error_chain(&error),
            duration_ms = started.elapsed().as_millis() as u64,
            "tftp transfer failed",
        ),
    }
}

/// Runs the transfer on tokio's blocking pool with a blocking socket (see
/// `transfer.rs` for why), in the caller's span.
async fn send_on_blocking_pool(
    socket: UdpSocket,
    file: std::fs::File,
    negotiated: Negotiated,
    max_retries: u32,
    cancel: CancellationToken,
) -> Result<TransferStats, TransferError> {
    let socket = socket.into_std().map_err(TransferError::Send)?;
    socket.set_nonblocking(false).map_err(TransferError::Send)?;
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let reader = std::io::BufReader::with_capacity(FILE_READ_BUFFER_LEN, file);
            let plan = TransferPlan {
                negotiated: &negotiated,
                max_retries,
            };
            transfer::send_file(&socket, reader, plan, &cancel)
        })
    });
    task.await.map_err(TransferError::Thread)?
}

/// Bytes of IPv4, UDP and TFTP DATA headers in front of each block.
const DATA_OVERHEAD: i32 = 20 + 8 + 4;

/// Returns the largest block that fits the path MTU to `client` without IP
/// fragmentation, as the kernel knows it for the connected transfer socket,
/// or `None` when it cannot tell (IPv6 clients, a failed query). Firmware
/// TFTP clients often cannot reassemble fragments, so `blksize` is clamped
/// to this.
fn path_blksize(socket: &UdpSocket, client: SocketAddr) -> Option<u16> {
    if !client.is_ipv4() {
        return None;
    }
    let mtu = nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::IpMtu).ok()?;
    let fits = mtu.checked_sub(DATA_OVERHEAD)?;
    u16::try_from(fits).ok().filter(|blksize| *blksize >= 8)
}

/// Creates the transfer socket and connects it to `client`. Logs and returns
/// `None` on failure; the client then retries its request.
async fn transfer_socket(context: &Context, client: SocketAddr) -> Option<UdpSocket> {
    let factory = context.factory.clone();
    let bind_to = SocketAddr::new(context.transfer_ip, 0);
    let options = UdpOptions {
        bind_device: context.options.bind_device.clone(),
        ..UdpOptions::default()
    };

    // A namespace factory blocks on its thread's reply, so keep it off the
    // runtime's worker threads.
    let created = tokio::task::spawn_blocking(move || factory.udp(bind_to, options)).await;
    let socket = match created {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => {
            tracing::error!(%client, error = %error_chain(&error), "failed to create tftp transfer socket");
            return None;
        }
        Err(error) => {
            tracing::error!(%client, %error, "tftp socket task failed");
            return None;
        }
    };

    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::error!(%client, %error, "failed to register tftp transfer socket");
            return None;
        }
    };
    if let Err(error) = socket.connect(client).await {
        tracing::warn!(%client, %error, "failed to connect tftp transfer socket");
        return None;
    }
    Some(socket)
}

async fn send_error(socket: &UdpSocket, code: ErrorCode, message: &str) {
    if let Err(error) = socket.send(&packet::error(code, message)).await {
        tracing::debug!(%error, "failed to send tftp error");
    }
}
