//! One RMCP+ session over UDP: Get Channel Authentication Capabilities, Open
//! Session, RAKP 1-4, requests with retransmission, Close Session.
//!
//! Each request is sent up to [`Target::attempts`] times and each attempt
//! waits [`Target::attempt_timeout`]. Packets that fail a check (not RMCP,
//! another session, a bad integrity code, an old sequence number, a reply to
//! another request) are dropped and the wait goes on, because a stale or
//! forged datagram must not end the exchange. When no valid reply arrives,
//! the error names the last invalid packet's problem, or else the timeout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rackhand_protocol::Secret;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::address::Privilege;
use super::crypto::{CipherSuite, RakpExchange, SessionKeys, constant_time_eq, user_key};
use super::packet::{self, PayloadType};
use crate::driver::DriverError;

/// Maximum packets read while waiting for one reply, valid or not.
const MAX_PACKETS_PER_ATTEMPT: usize = 64;
/// Receive buffer size: larger than any IPMI LAN packet.
const RECEIVE_BUFFER: usize = 1500;

/// IPMI network functions (requests; responses add 1).
pub mod net_fn {
    pub const CHASSIS: u8 = 0x00;
    pub const SENSOR: u8 = 0x04;
    pub const APP: u8 = 0x06;
    pub const STORAGE: u8 = 0x0A;
}

/// Where and as whom to open sessions, shared by a driver and its SOL task.
#[derive(Debug)]
pub struct Target {
    pub node: String,
    /// `host:port` for messages.
    pub address: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub privilege: Privilege,
    pub attempts: u32,
    pub attempt_timeout: Duration,
}

impl Target {
    pub fn invalid(&self, command: &str, problem: impl Into<String>) -> DriverError {
        DriverError::IpmiInvalidResponse {
            node: self.node.clone(),
            address: self.address.clone(),
            command: command.to_string(),
            problem: problem.into(),
        }
    }

    pub fn authentication(&self, reason: impl Into<String>) -> DriverError {
        DriverError::IpmiAuthentication {
            node: self.node.clone(),
            address: self.address.clone(),
            username: self.username.clone(),
            reason: reason.into(),
        }
    }

    fn unreachable(&self, source: std::io::Error) -> DriverError {
        DriverError::IpmiUnreachable {
            node: self.node.clone(),
            address: self.address.clone(),
            source,
        }
    }
}

/// Why Open Session failed before any session existed.
#[derive(Debug)]
pub enum OpenError {
    /// The BMC rejected the cipher suite's algorithms (RMCP+ status code).
    SuiteRejected(u8),
    Other(DriverError),
}

impl From<DriverError> for OpenError {
    fn from(error: DriverError) -> Self {
        OpenError::Other(error)
    }
}

/// An established, authenticated and encrypted RMCP+ session.
#[derive(Debug)]
pub struct Session {
    socket: UdpSocket,
    pub target: Arc<Target>,
    keys: Option<SessionKeys>,
    console_session_id: u32,
    bmc_session_id: u32,
    sequence: u32,
    highest_received: u32,
    rq_seq: u8,
    /// SOL payloads that arrived while a request waited for its reply.
    pub sol_inbox: VecDeque<Vec<u8>>,
}

/// Fills a buffer from the OS random number generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random number generator is available");
    bytes
}

/// Returns the meaning of an RMCP+ status code (table 13-15).
pub fn rmcp_status_meaning(code: u8) -> &'static str {
    match code {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "reserved status code",
    }
}

impl Session {
    /// Opens a UDP socket towards the BMC. Sends nothing.
    pub async fn connect(target: Arc<Target>) -> Result<Session, DriverError> {
        let remote: SocketAddr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|error| target.unreachable(error))?
            .next()
            .ok_or_else(|| {
                target.unreachable(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the host name resolved to no address",
                ))
            })?;
        let local: SocketAddr = if remote.is_ipv6() {
            "[::]:0".parse().expect("valid literal")
        } else {
            "0.0.0.0:0".parse().expect("valid literal")
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|error| target.unreachable(error))?;
        socket
            .connect(remote)
            .await
            .map_err(|error| target.unreachable(error))?;

        Ok(Session {
            socket,
            target,
            keys: None,
            console_session_id: u32::from_le_bytes(random_bytes()) | 1,
            bmc_session_id: 0,
            sequence: 0,
            highest_received: 0,
            rq_seq: 0,
            sol_inbox: VecDeque::new(),
        })
    }

    /// Sends what `build` returns until `accept` returns a value, with the
    /// target's retransmission limits. `accept` returns `Ok(None)` for a
    /// packet that belongs to something else and `Err` for an invalid one.
    async fn round_trip<T>(
        &mut self,
        command: &str,
        mut build: impl FnMut(&mut Session) -> Vec<u8> + Send,
        mut accept: impl FnMut(&mut Session, &[u8]) -> Result<Option<T>, String> + Send,
    ) -> Result<T, DriverError> {
        let mut last_problem: Option<String> = None;
        let mut last_io_error: Option<std::io::Error> = None;
        let mut buffer = vec![0u8; RECEIVE_BUFFER];

        for attempt in 1..=self.target.attempts {
            if attempt > 1 {
                tracing::debug!(node_id = %self.target.node, command, attempt, "ipmi retransmitting request");
            }
            let bytes = build(self);
            if let Err(error) = self.socket.send(&bytes).await {
                return Err(self.target.unreachable(error));
            }

            let deadline = Instant::now() + self.target.attempt_timeout;
            for _ in 0..MAX_PACKETS_PER_ATTEMPT {
                let received = match timeout_at(deadline, self.socket.recv(&mut buffer)).await {
                    Err(_elapsed) => break,
                    Ok(Err(error)) => {
                        // A connected UDP socket reports an ICMP port
                        // unreachable as ConnectionRefused on the next recv.
                        last_io_error = Some(error);
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                    Ok(Ok(length)) => length,
                };
                match accept(self, &buffer[..received]) {
                    Ok(Some(value)) => return Ok(value),
                    Ok(None) => {}
                    Err(problem) => {
                        tracing::debug!(node_id = %self.target.node, command, %problem, "ipmi dropped invalid packet");
                        last_problem = Some(problem);
                    }
                }
            }
        }

        if let Some(problem) = last_problem {
            return Err(self.target.invalid(command, problem));
        }
        if let Some(error) = last_io_error {
            return Err(self.target.unreachable(error));
        }
        Err(DriverError::IpmiTimeout {
            node: self.target.node.clone(),
            address: self.target.address.clone(),
            command: command.to_string(),
            attempts: self.target.attempts,
            per_attempt: self.target.attempt_timeout,
        })
    }

    /// Sends Get Channel Authentication Capabilities as an IPMI 1.5 packet
    /// and checks that the channel offers IPMI 2.0 and has no Kg set.
    pub async fn check_channel(&mut self) -> Result<(), DriverError> {
        const COMMAND: &str = "Get Channel Authentication Capabilities";
        let privilege = self.target.privilege.code();
        // Channel 0x0E (this channel) with bit 7 set: IPMI 2.0 extended data.
        let message = packet::encode_request(net_fn::APP, 0, 0, 0x38, &[0x8E, privilege]);
        let request = packet::encode_v15(&message);

        let response = self
            .round_trip(
                COMMAND,
                |_| request.clone(),
                |_, bytes| {
                    let packet = packet::decode(bytes, None).map_err(|e| e.to_string())?;
                    let response =
                        packet::decode_response(&packet.payload).map_err(|e| e.to_string())?;
                    if response.command != 0x38 {
                        return Ok(None);
                    }
                    Ok(Some(response))
                },
            )
            .await?;

        self.check_completion(COMMAND, response.completion_code)?;
        let data = &response.data;
        if data.len() < 8 {
            return Err(self.target.invalid(
                COMMAND,
                format!("response data of {} bytes, expected 8", data.len()),
            ));
        }
        if data[1] & 0x80 == 0 || data[3] & 0x02 == 0 {
            return Err(self.target.invalid(
                COMMAND,
                "the channel does not offer IPMI 2.0 (RMCP+) sessions",
            ));
        }
        if data[2] & 0x20 != 0 {
            // TODO: accept a Kg (BMC key) in the endpoint and use it for the
            // session integrity key; BMCs with a non-zero Kg fail here.
            return Err(self
                .target
                .authentication("the BMC has a Kg key set, which this driver does not support"));
        }
        Ok(())
    }

    /// Sends Open Session Request for `suite` and keeps the BMC's session id.
    pub async fn open_session(&mut self, suite: CipherSuite) -> Result<(), OpenError> {
        const COMMAND: &str = "Open Session Request";
        let tag = random_bytes::<1>()[0];
        let console_id = self.console_session_id;
        let mut request = vec![tag, self.target.privilege.code(), 0, 0];
        request.extend_from_slice(&console_id.to_le_bytes());
        for (kind, algorithm) in [
            (0x00, suite.authentication_algorithm()),
            (0x01, suite.integrity_algorithm()),
            (0x02, suite.confidentiality_algorithm()),
        ] {
            request.extend_from_slice(&[kind, 0, 0, 0x08, algorithm, 0, 0, 0]);
        }
        let bytes = packet::encode(PayloadType::OpenSessionRequest, 0, 0, &request, None);

        let response = self
            .round_trip(
                COMMAND,
                |_| bytes.clone(),
                |_, bytes| {
                    let packet = packet::decode(bytes, None).map_err(|e| e.to_string())?;
                    if packet.payload_type != PayloadType::OpenSessionResponse {
                        return Ok(None);
                    }
                    let payload = packet.payload;
                    // A rejection may carry only the tag and the status
                    // (ipmi_sim 2.0.33 sends 2 bytes).
                    if payload.len() < 2 || payload[0] != tag {
                        return Ok(None);
                    }
                    Ok(Some(payload))
                },
            )
            .await?;

        let status = response[1];
        if status != 0 {
            if matches!(status, 0x04 | 0x05 | 0x10 | 0x11) {
                return Err(OpenError::SuiteRejected(status));
            }
            return Err(OpenError::Other(self.target.authentication(format!(
                "Open Session failed with status {status:#04x} ({})",
                rmcp_status_meaning(status)
            ))));
        }
        if response.len() < 36 {
            let problem = format!("response of {} bytes, expected 36", response.len());
            return Err(self.target.invalid(COMMAND, problem).into());
        }
        let echoed = u32::from_le_bytes(response[4..8].try_into().expect("4 bytes"));
        if echoed != console_id {
            let problem = format!("console session id {echoed:#x}, expected {console_id:#x}");
            return Err(self.target.invalid(COMMAND, problem).into());
        }
        let algorithms = [response[16], response[24], response[32]];
        let expected = [
            suite.authentication_algorithm(),
            suite.integrity_algorithm(),
            suite.confidentiality_algorithm(),
        ];
        if algorithms != expected {
            let problem = format!("algorithms {algorithms:?}, proposed {expected:?}");
            return Err(self.target.invalid(COMMAND, problem).into());
        }
        self.bmc_session_id = u32::from_le_bytes(response[8..12].try_into().expect("4 bytes"));
        Ok(())
    }

    /// Runs RAKP 1-4, checks both of the BMC's codes and derives the keys.
    pub async fn authenticate(&mut self, suite: CipherSuite) -> Result<(), DriverError> {
        let username = self.target.username.as_bytes().to_vec();
        let password = self.target.password.expose().as_bytes();
        if username.len() > 16 {
            return Err(self
                .target
                .authentication("IPMI user names have at most 16 bytes"));
        }
        if password.len() > 20 {
            return Err(self
                .target
                .authentication("IPMI passwords have at most 20 bytes"));
        }
        let kuid = user_key(password);

        let mut exchange = RakpExchange {
            console_session_id: self.console_session_id,
            bmc_session_id: self.bmc_session_id,
            console_random: random_bytes(),
            bmc_random: [0; 16],
            bmc_guid: [0; 16],
            // Bit 4: look the user up by name only (not by name and role).
            role: 0x10 | self.target.privilege.code(),
            username,
        };
        self.rakp1_and_2(suite, &mut exchange, &kuid).await?;
        let sik = exchange.session_integrity_key(suite, &kuid);
        self.rakp3_and_4(suite, &exchange, &kuid, &sik).await?;

        self.keys = Some(SessionKeys::derive(suite, &sik));
        Ok(())
    }

    async fn rakp1_and_2(
        &mut self,
        suite: CipherSuite,
        exchange: &mut RakpExchange,
        kuid: &[u8],
    ) -> Result<(), DriverError> {
        const COMMAND: &str = "RAKP 1";
        let tag = random_bytes::<1>()[0];
        let mut request = vec![tag, 0, 0, 0];
        request.extend_from_slice(&exchange.bmc_session_id.to_le_bytes());
        request.extend_from_slice(&exchange.console_random);
        request.extend_from_slice(&[exchange.role, 0, 0, exchange.username.len() as u8]);
        request.extend_from_slice(&exchange.username);
        let bytes = packet::encode(PayloadType::Rakp1, 0, 0, &request, None);
        let console_id = self.console_session_id;

        let response = self
            .round_trip(
                COMMAND,
                |_| bytes.clone(),
                |_, bytes| accept_rakp(bytes, PayloadType::Rakp2, tag, console_id),
            )
            .await?;

        let status = response[1];
        if status != 0 {
            return Err(self.target.authentication(format!(
                "RAKP 2 status {status:#04x} ({})",
                rmcp_status_meaning(status)
            )));
        }
        let expected_len = 40 + suite.hmac_len();
        if response.len() < expected_len {
            let problem = format!(
                "RAKP 2 of {} bytes, expected {expected_len}",
                response.len()
            );
            return Err(self.target.invalid(COMMAND, problem));
        }
        exchange.bmc_random.copy_from_slice(&response[8..24]);
        exchange.bmc_guid.copy_from_slice(&response[24..40]);
        let code = &response[40..expected_len];
        if !constant_time_eq(code, &exchange.rakp2_code(suite, kuid)) {
            return Err(self.target.authentication(
                "the BMC's RAKP 2 authentication code does not match this password",
            ));
        }
        Ok(())
    }

    async fn rakp3_and_4(
        &mut self,
        suite: CipherSuite,
        exchange: &RakpExchange,
        kuid: &[u8],
        sik: &[u8],
    ) -> Result<(), DriverError> {
        const COMMAND: &str = "RAKP 3";
        let tag = random_bytes::<1>()[0];
        let mut request = vec![tag, 0, 0, 0];
        request.extend_from_slice(&exchange.bmc_session_id.to_le_bytes());
        request.extend_from_slice(&exchange.rakp3_code(suite, kuid));
        let bytes = packet::encode(PayloadType::Rakp3, 0, 0, &request, None);
        let console_id = self.console_session_id;

        let response = self
            .round_trip(
                COMMAND,
                |_| bytes.clone(),
                |_, bytes| accept_rakp(bytes, PayloadType::Rakp4, tag, console_id),
            )
            .await?;

        let status = response[1];
        if status != 0 {
            return Err(self.target.authentication(format!(
                "RAKP 4 status {status:#04x} ({})",
                rmcp_status_meaning(status)
            )));
        }
        let expected_len = 8 + suite.integrity_len();
        if response.len() < expected_len {
            let problem = format!(
                "RAKP 4 of {} bytes, expected {expected_len}",
                response.len()
            );
            return Err(self.target.invalid(COMMAND, problem));
        }
        if !constant_time_eq(&response[8..expected_len], &exchange.rakp4_code(suite, sik)) {
            return Err(self
                .target
                .authentication("the BMC's RAKP 4 integrity check value does not match"));
        }
        Ok(())
    }

    /// Builds the next protected packet of this session.
    pub fn seal(&mut self, payload_type: PayloadType, payload: &[u8]) -> Vec<u8> {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let keys = self
            .keys
            .as_ref()
            .expect("seal is called only on an established session");
        packet::encode(
            payload_type,
            self.bmc_session_id,
            self.sequence,
            payload,
            Some((keys, random_bytes())),
        )
    }

    /// Checks a packet of this session: integrity, encryption, session id
    /// and sequence number window (16 packets back, as the specification
    /// suggests).
    pub fn open_packet(&mut self, bytes: &[u8]) -> Result<packet::Packet, String> {
        let packet = packet::decode(bytes, self.keys.as_ref()).map_err(|e| e.to_string())?;
        if packet.session_id != self.console_session_id {
            return Err(format!(
                "packet for session {:#x}, expected {:#x}",
                packet.session_id, self.console_session_id
            ));
        }
        if packet.sequence == 0 {
            return Err("session sequence number 0 inside a session".to_string());
        }
        if self.highest_received > 16 && packet.sequence <= self.highest_received - 16 {
            return Err(format!(
                "session sequence number {} is older than the window ending at {}",
                packet.sequence, self.highest_received
            ));
        }
        self.highest_received = self.highest_received.max(packet.sequence);
        Ok(packet)
    }

    /// Sends an IPMI request inside the session and returns the response
    /// data after the completion code, which must be 0x00.
    pub async fn request(
        &mut self,
        net_fn: u8,
        command: u8,
        data: &[u8],
        name: &str,
    ) -> Result<Vec<u8>, DriverError> {
        self.rq_seq = (self.rq_seq % 63) + 1;
        let rq_seq = self.rq_seq;
        let message = packet::encode_request(net_fn, 0, rq_seq, command, data);

        let response = self
            .round_trip(
                name,
                |session| session.seal(PayloadType::Ipmi, &message),
                |session, bytes| {
                    let packet = session.open_packet(bytes)?;
                    match packet.payload_type {
                        PayloadType::Ipmi => {}
                        PayloadType::Sol => {
                            session.sol_inbox.push_back(packet.payload);
                            return Ok(None);
                        }
                        other => return Err(format!("unexpected payload type {other:?}")),
                    }
                    let response =
                        packet::decode_response(&packet.payload).map_err(|e| e.to_string())?;
                    if response.rq_seq != rq_seq || response.command != command {
                        return Ok(None);
                    }
                    if response.net_fn != net_fn + 1 {
                        return Err(format!(
                            "response network function {:#04x}",
                            response.net_fn
                        ));
                    }
                    Ok(Some(response))
                },
            )
            .await?;

        self.check_completion(name, response.completion_code)?;
        Ok(response.data)
    }

    fn check_completion(&self, command: &str, code: u8) -> Result<(), DriverError> {
        if code == 0 {
            return Ok(());
        }
        Err(DriverError::IpmiCommand {
            node: self.target.node.clone(),
            address: self.target.address.clone(),
            command: command.to_string(),
            code,
        })
    }

    /// Raises the session to the target's privilege level: RMCP+ sessions
    /// start at User level whatever RAKP requested.
    pub async fn set_privilege(&mut self) -> Result<(), DriverError> {
        let privilege = self.target.privilege.code();
        self.request(
            net_fn::APP,
            0x3B,
            &[privilege],
            "Set Session Privilege Level",
        )
        .await
        .map(|_| ())
    }

    /// Sends Close Session. Errors are logged, not returned: the BMC ends
    /// idle sessions itself after its timeout.
    pub async fn close(mut self) {
        let id = self.bmc_session_id.to_le_bytes();
        if let Err(error) = self.request(net_fn::APP, 0x3C, &id, "Close Session").await {
            tracing::debug!(node_id = %self.target.node, error = %error, "ipmi close session failed");
        }
    }

    /// Sends a protected payload without waiting for anything (SOL).
    pub async fn send_payload(
        &mut self,
        payload_type: PayloadType,
        payload: &[u8],
    ) -> Result<(), DriverError> {
        let bytes = self.seal(payload_type, payload);
        self.socket
            .send(&bytes)
            .await
            .map(|_| ())
            .map_err(|error| self.target.unreachable(error))
    }

    /// Receives one datagram into `buffer` (cancel safe).
    pub async fn receive(&self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.socket.recv(buffer).await
    }
}

/// Accepts a RAKP 2 or 4 message with our tag and console session id.
fn accept_rakp(
    bytes: &[u8],
    expected: PayloadType,
    tag: u8,
    console_id: u32,
) -> Result<Option<Vec<u8>>, String> {
    let packet = packet::decode(bytes, None).map_err(|e| e.to_string())?;
    if packet.payload_type != expected {
        return Ok(None);
    }
    let payload = packet.payload;
    if payload.len() < 2 || payload[0] != tag {
        return Ok(None);
    }
    if payload[1] != 0 {
        return Ok(Some(payload));
    }
    if payload.len() < 8 {
        return Err(format!("{expected:?} of {} bytes", payload.len()));
    }
    let echoed = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes"));
    if echoed != console_id {
        return Err(format!(
            "{expected:?} for session {echoed:#x}, expected {console_id:#x}"
        ));
    }
    Ok(Some(payload))
}

/// Sends an ASF presence ping (RMCP class 6) and returns whether the pong
/// announces IPMI support.
pub async fn presence_ping(target: &Arc<Target>) -> Result<bool, DriverError> {
    const COMMAND: &str = "ASF Presence Ping";
    let mut session = Session::connect(target.clone()).await?;
    let tag = random_bytes::<1>()[0];
    let ping = packet::encode_presence_ping(tag);
    session
        .round_trip(
            COMMAND,
            |_| ping.clone(),
            |_, bytes| {
                packet::decode_presence_pong(bytes, tag)
                    .map(Some)
                    .map_err(|e| e.to_string())
            },
        )
        .await
}
