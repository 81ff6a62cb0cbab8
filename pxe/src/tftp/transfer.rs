//! One read transfer: the optional OACK, then DATA blocks in windows until
//! the client acknowledges the last block.
//!
//! With `windowsize` 1 this is the lockstep of RFC 1350. A repeated ACK then
//! triggers no resend, which avoids the Sorcerer's Apprentice bug (every
//! duplicate ACK doubling the DATA stream); only a timeout resends. With a
//! larger window (RFC 7440) the server sends up to `windowsize` blocks, and
//! an ACK for block N means the next window starts at N + 1. A repeated ACK
//! there means the client lost the window and triggers a resend.
//!
//! Block numbers are 16 bits on the wire and wrap from 65535 to 0, which
//! tftp-hpa, atftp and iPXE accept. Internally they are u64.
//!
//! The transfer runs on a thread of its own (the caller uses tokio's
//! blocking pool) with a blocking socket. Driven by the async runtime, every
//! ACK cost an epoll wake-up and a hand-over between worker threads, which
//! held windowsize 16 to about 0.7x atftpd 0.8.0 on 2 cores (`bench/run`).
//! A blocking receive returns straight into the loop.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::UdpSocket;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::negotiate::Negotiated;
use super::packet::{self, ErrorCode, Packet};

/// Receive buffer for client packets. ACKs are 4 bytes and ERRORs short.
const RECEIVE_BUFFER_LEN: usize = 1024;

/// Maximum time a blocking receive waits before the transfer checks for
/// shutdown, so a stopping server ends its transfers within this time.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Counters of a finished transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransferStats {
    pub(crate) bytes: u64,
    pub(crate) blocks: u64,
    pub(crate) retransmissions: u32,
}

/// Reason a transfer ended before the last block was acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    #[error("timed out waiting for the acknowledgement of block {block} after {attempts} attempts")]
    TimedOut { block: u64, attempts: u32 },

    #[error("client ended the transfer with error {code}: {message}")]
    ClientError { code: u16, message: String },

    #[error("client sent {0} where an ACK was expected")]
    UnexpectedPacket(String),

    #[error("client port is unreachable")]
    ClientGone,

    #[error("failed to read the file")]
    Read(#[source] io::Error),

    #[error("failed to send to the client")]
    Send(#[source] io::Error),

    #[error("server is shutting down")]
    Cancelled,

    #[error("transfer thread failed")]
    Thread(#[source] tokio::task::JoinError),
}

/// Settings of one transfer.
#[derive(Clone, Debug)]
pub(crate) struct TransferPlan<'a> {
    pub(crate) negotiated: &'a Negotiated,
    /// Resends of one window (or of the OACK) before giving up.
    pub(crate) max_retries: u32,
}

enum Progress {
    /// The client acknowledged up to this block.
    Acked(u64),
    /// The client repeated its last acknowledgement (windowsize > 1 only).
    Repeated,
    TimedOut,
}

/// Sends `file` to the client that `socket` is connected to. Blocks the
/// calling thread until the transfer ends; `socket` must be in blocking mode.
pub(crate) fn send_file<R: Read>(
    socket: &UdpSocket,
    mut file: R,
    plan: TransferPlan<'_>,
    cancel: &CancellationToken,
) -> Result<TransferStats, TransferError> {
    let negotiated = plan.negotiated;
    let blksize = usize::from(negotiated.blksize);
    let window_size = usize::from(negotiated.windowsize);
    let mut stats = TransferStats::default();
    let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
    socket
        .set_read_timeout(Some(CANCEL_CHECK_INTERVAL))
        .map_err(TransferError::Send)?;

    if !negotiated.accepted.is_empty() {
        let oack = packet::option_ack(&negotiated.accepted);
        let mut waiter = AckWaiter::new(socket, &mut buffer, negotiated, cancel);
        let mut attempts = 0;
        // Block 0 stands for the OACK; the client's ACK 0 confirms it.
        loop {
            send(socket, &oack)?;
            attempts += 1;
            match waiter.wait(0..=0, None)? {
                Progress::Acked(_) => break,
                Progress::Repeated | Progress::TimedOut if attempts <= plan.max_retries => {
                    stats.retransmissions += 1;
                }
                Progress::Repeated | Progress::TimedOut => {
                    return Err(TransferError::TimedOut { block: 0, attempts });
                }
            }
        }
    }

    let mut window: VecDeque<(u64, Vec<u8>)> = VecDeque::with_capacity(window_size);
    // Packets of acknowledged blocks, reused for the next ones.
    let mut spare: Vec<Vec<u8>> = Vec::with_capacity(window_size);
    let mut next_block: u64 = 1;
    let mut last_block: Option<u64> = None;
    let mut acked: u64 = 0;
    let mut attempts: u32 = 0;
    // Each pass sends one window. Progress resets `attempts`; without
    // progress the pass count is bounded by max_retries.
    loop {
        while window.len() < window_size && last_block.is_none() {
            // The DATA packet is built once and kept for resends.
            let mut data = spare.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(&packet::data(next_block as u16, &[]));
            let len = read_block(&mut file, &mut data, blksize).map_err(TransferError::Read)?;
            if len < blksize {
                last_block = Some(next_block);
            }
            stats.bytes += len as u64;
            window.push_back((next_block, data));
            next_block += 1;
        }

        for (_, data) in &window {
            send(socket, data)?;
        }
        attempts += 1;

        let mut waiter = AckWaiter::new(socket, &mut buffer, negotiated, cancel);
        let in_flight = acked + 1..=acked + window.len() as u64;
        match waiter.wait(in_flight, Some(acked))? {
            Progress::Acked(block) => {
                acked = block;
                attempts = 0;
                while window.front().is_some_and(|(number, _)| *number <= block) {
                    let (_, data) = window
                        .pop_front()
                        .expect("the loop condition saw a front block");
                    spare.push(data);
                }
                if Some(block) == last_block {
                    stats.blocks = block;
                    return Ok(stats);
                }
            }
            Progress::Repeated | Progress::TimedOut if attempts <= plan.max_retries => {
                stats.retransmissions += 1;
            }
            Progress::Repeated | Progress::TimedOut => {
                return Err(TransferError::TimedOut {
                    block: acked + 1,
                    attempts,
                });
            }
        }
    }
}

/// Appends up to `blksize` bytes to `packet` and returns their number;
/// fewer only at the end of the file.
fn read_block<R: Read>(file: &mut R, packet: &mut Vec<u8>, blksize: usize) -> io::Result<usize> {
    let header = packet.len();
    packet.resize(header + blksize, 0);
    let mut filled = 0;
    // Each pass reads at least one byte or stops, so at most blksize passes.
    while filled < blksize {
        let read = match file.read(&mut packet[header + filled..]) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if read == 0 {
            break;
        }
        filled += read;
    }
    packet.truncate(header + filled);
    Ok(filled)
}

fn send(socket: &UdpSocket, bytes: &[u8]) -> Result<(), TransferError> {
    match socket.send(bytes) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            Err(TransferError::ClientGone)
        }
        Err(error) => Err(TransferError::Send(error)),
    }
}

/// Receives client packets until one acknowledges progress.
struct AckWaiter<'a> {
    socket: &'a UdpSocket,
    buffer: &'a mut [u8],
    timeout: Duration,
    windowed: bool,
    cancel: &'a CancellationToken,
}

impl<'a> AckWaiter<'a> {
    fn new(
        socket: &'a UdpSocket,
        buffer: &'a mut [u8],
        negotiated: &Negotiated,
        cancel: &'a CancellationToken,
    ) -> Self {
        Self {
            socket,
            buffer,
            timeout: negotiated.timeout,
            windowed: negotiated.windowsize > 1,
            cancel,
        }
    }

    /// Waits for an ACK of a block in `in_flight`, or in a windowed transfer
    /// for a repeated ACK of `repeat`. Stale ACKs are skipped. The deadline
    /// stays fixed, so the wait ends within the timeout (plus at most
    /// [`CANCEL_CHECK_INTERVAL`]) however many packets arrive.
    fn wait(
        &mut self,
        in_flight: RangeInclusive<u64>,
        repeat: Option<u64>,
    ) -> Result<Progress, TransferError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let len = match self.socket.recv(self.buffer) {
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(TransferError::ClientGone);
                }
                // The read timeout ended the receive, or it failed for a
                // transient reason; the deadline bounds the wait either way.
                Err(error) => {
                    if !matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        tracing::debug!(%error, "receive from TFTP client failed");
                    }
                    if self.cancel.is_cancelled() {
                        return Err(TransferError::Cancelled);
                    }
                    if Instant::now() >= deadline {
                        return Ok(Progress::TimedOut);
                    }
                    continue;
                }
            };

            match packet::parse(&self.buffer[..len]) {
                Ok(Packet::Ack { block }) => {
                    if let Some(number) = ack_to_block(block, in_flight.clone()) {
                        return Ok(Progress::Acked(number));
                    }
                    let repeated = repeat.is_some_and(|number| number as u16 == block);
                    if repeated && self.windowed {
                        return Ok(Progress::Repeated);
                    }
                }
                Ok(Packet::Error { code, message }) => {
                    return Err(TransferError::ClientError { code, message });
                }
                Ok(other) => return Err(self.reject(format!("{other:?}"))),
                Err(error) => return Err(self.reject(error.to_string())),
            }
            // A stream of stale ACKs must not hold the transfer past its
            // deadline.
            if Instant::now() >= deadline {
                return Ok(Progress::TimedOut);
            }
        }
    }

    fn reject(&self, description: String) -> TransferError {
        let reply = packet::error(ErrorCode::IllegalOperation, "expected an ACK");
        // The transfer ends either way; a failed send changes nothing.
        let _ = self.socket.send(&reply);
        TransferError::UnexpectedPacket(description)
    }
}

/// Maps a 16-bit ACK number to the block in `in_flight` it acknowledges.
/// Windows are at most 64 blocks, far below the 65536 at which two blocks
/// would share a wire number.
fn ack_to_block(wire: u16, mut in_flight: RangeInclusive<u64>) -> Option<u64> {
    in_flight.find(|block| *block as u16 == wire)
}

#[cfg(test)]
mod tests {
    use super::ack_to_block;

    #[test]
    fn ack_maps_into_window() {
        assert_eq!(ack_to_block(5, 5..=8), Some(5));
        assert_eq!(ack_to_block(8, 5..=8), Some(8));
    }

    #[test]
    fn ack_outside_window_is_stale() {
        assert_eq!(ack_to_block(4, 5..=8), None);
        assert_eq!(ack_to_block(9, 5..=8), None);
    }

    #[test]
    fn ack_wraps_past_65535() {
        assert_eq!(ack_to_block(0, 65_536..=65_536), Some(65_536));
        assert_eq!(ack_to_block(1, 65_534..=65_537), Some(65_537));
        assert_eq!(ack_to_block(65_535, 65_534..=65_537), Some(65_535));
    }
}
