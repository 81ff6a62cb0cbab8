//! Serial-over-LAN: payload type 1 inside an RMCP+ session, bridged to a
//! tokio duplex stream.
//!
//! A task owns the session. Each SOL packet from the BMC that carries data
//! is acknowledged and its data written to the stream, once even when the
//! BMC resends it. Keystrokes read from the stream go out one packet at a
//! time, each resent until the BMC acknowledges it (bounded). When the
//! caller drops its end of the stream, the task deactivates the payload and
//! closes the session.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::packet::PayloadType;
use super::session::{Session, net_fn};
use crate::driver::DriverError;

/// Buffer of the duplex stream in each direction.
const STREAM_BUFFER: usize = 8192;
/// Sends of one console packet before the task gives up.
const MAX_SENDS: u32 = 8;
/// Time to wait for an acknowledgement before resending.
const ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// Activates SOL (payload type 1, instance 1, encrypted and authenticated)
/// and returns the largest payload the BMC accepts from the console.
pub async fn activate(session: &mut Session) -> Result<usize, DriverError> {
    const COMMAND: &str = "Activate Payload (SOL)";
    let data = match session
        .request(net_fn::APP, 0x48, &[0x01, 0x01, 0xC0, 0, 0, 0], COMMAND)
        .await
    {
        // IPMI 2.0 table 24-2: 0x80 means the payload is already active
        // in another session.
        Err(DriverError::IpmiCommand {
            node, code: 0x80, ..
        }) => {
            return Err(DriverError::Unsupported {
                node,
                kind: crate::driver::DriverKind::Ipmi,
                operation: "a second console session (Serial-over-LAN is already active in another session; close it, or run `ipmitool sol deactivate` against the BMC)".to_string(),
            });
        }
        other => other?,
    };
    if data.len() < 12 {
        let problem = format!("response data of {} bytes, expected 12", data.len());
        return Err(session.target.invalid(COMMAND, problem));
    }
    // NOTE: the response names a UDP port for SOL (bytes 9-10); BMCs
    // normally give the session's own port, and this driver stays on it.
    let inbound = usize::from(u16::from_le_bytes([data[4], data[5]]));
    Ok(inbound.saturating_sub(4).clamp(1, 255))
}

async fn deactivate(session: &mut Session) -> Result<(), DriverError> {
    session
        .request(
            net_fn::APP,
            0x49,
            &[0x01, 0x01, 0, 0, 0, 0],
            "Deactivate Payload (SOL)",
        )
        .await
        .map(|_| ())
}

/// Starts the task that bridges an activated SOL session and returns the
/// caller's end of the stream.
pub fn spawn(session: Session, max_data: usize) -> DuplexStream {
    let (caller, ours) = tokio::io::duplex(STREAM_BUFFER);
    tokio::spawn(async move {
        let node = session.target.node.clone();
        if let Err(error) = run(session, ours, max_data).await {
            tracing::warn!(node_id = %node, error = %error, "ipmi serial-over-lan session ended with an error");
        }
    });
    caller
}

/// A console packet waiting for the BMC's acknowledgement.
struct Pending {
    sequence: u8,
    data: Vec<u8>,
    sends: u32,
    resend_at: Instant,
}

struct Bridge {
    session: Session,
    stream: DuplexStream,
    next_sequence: u8,
    last_bmc_sequence: u8,
    pending: Option<Pending>,
}

async fn run(session: Session, stream: DuplexStream, max_data: usize) -> Result<(), DriverError> {
    let mut bridge = Bridge {
        session,
        stream,
        next_sequence: 1,
        last_bmc_sequence: 0,
        pending: None,
    };
    let result = bridge.pump(max_data).await;

    let mut session = bridge.session;
    if let Err(error) = deactivate(&mut session).await {
        tracing::debug!(node_id = %session.target.node, error = %error, "ipmi deactivate payload failed");
    }
    session.close().await;
    result
}

impl Bridge {
    async fn pump(&mut self, max_data: usize) -> Result<(), DriverError> {
        let mut datagram = vec![0u8; 1500];
        let mut keys = vec![0u8; max_data];
        loop {
            while let Some(payload) = self.session.sol_inbox.pop_front() {
                if !self.handle_bmc_packet(&payload).await? {
                    return Ok(());
                }
            }
            let resend_at = self.pending.as_ref().map(|pending| pending.resend_at);

            tokio::select! {
                received = self.session.receive(&mut datagram) => {
                    let Ok(length) = received else { continue };
                    match self.session.open_packet(&datagram[..length]) {
                        Ok(packet) if packet.payload_type == PayloadType::Sol => {
                            if !self.handle_bmc_packet(&packet.payload).await? {
                                return Ok(());
                            }
                        }
                        Ok(_) => {}
                        Err(problem) => {
                            tracing::debug!(node_id = %self.session.target.node, %problem, "ipmi dropped invalid packet");
                        }
                    }
                }
                read = self.stream.read(&mut keys), if self.pending.is_none() => {
                    match read {
                        Ok(0) | Err(_) => return Ok(()),
                        Ok(length) => self.send_data(keys[..length].to_vec()).await?,
                    }
                }
                _ = sleep_until_option(resend_at) => self.resend().await?,
            }
        }
    }

    /// Handles one SOL payload from the BMC. Returns `false` when the
    /// caller's end of the stream is gone.
    async fn handle_bmc_packet(&mut self, payload: &[u8]) -> Result<bool, DriverError> {
        if payload.len() < 4 {
            tracing::debug!(node_id = %self.session.target.node, "ipmi dropped short SOL packet");
            return Ok(true);
        }
        let (sequence, ack_sequence, accepted, status) =
            (payload[0], payload[1], payload[2], payload[3]);

        if let Some(pending) = &self.pending
            && ack_sequence == pending.sequence
            && status & 0x40 == 0
        {
            let rest = pending.data[usize::from(accepted).min(pending.data.len())..].to_vec();
            self.pending = None;
            if !rest.is_empty() {
                self.send_data(rest).await?;
            }
        }

        if sequence == 0 {
            return Ok(true);
        }
        let data = &payload[4..];
        let accepted = u8::try_from(data.len()).unwrap_or(u8::MAX);
        self.session
            .send_payload(PayloadType::Sol, &[0, sequence, accepted, 0])
            .await?;
        if sequence == self.last_bmc_sequence {
            // A resend because our acknowledgement was lost.
            return Ok(true);
        }
        self.last_bmc_sequence = sequence;
        Ok(self.stream.write_all(data).await.is_ok())
    }

    async fn send_data(&mut self, data: Vec<u8>) -> Result<(), DriverError> {
        let sequence = self.next_sequence;
        // Sequence numbers run 1..=15; 0 marks a packet without data.
        self.next_sequence = sequence % 15 + 1;
        self.pending = Some(Pending {
            sequence,
            data,
            sends: 0,
            resend_at: Instant::now(),
        });
        self.resend().await
    }

    async fn resend(&mut self) -> Result<(), DriverError> {
        let Some(pending) = &mut self.pending else {
            return Ok(());
        };
        if pending.sends >= MAX_SENDS {
            return Err(self.session.target.invalid(
                "SOL data",
                format!("no acknowledgement after {MAX_SENDS} sends"),
            ));
        }
        pending.sends += 1;
        pending.resend_at = Instant::now() + ACK_TIMEOUT;
        let mut payload = vec![pending.sequence, 0, 0, 0];
        payload.extend_from_slice(&pending.data);
        self.session.send_payload(PayloadType::Sol, &payload).await
    }
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
