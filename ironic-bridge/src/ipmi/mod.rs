//! The IPMI 2.0 driver: power, boot device, inventory, sensors and
//! Serial-over-LAN over RMCP+ (`lanplus`).
//!
//! # Design
//!
//! The protocol is implemented here rather than with the `ipmi-rs` crate.
//! Checked against ipmi-rs 0.6.0: its RMCP transport is a blocking
//! `std::net::UdpSocket` (each call would need `spawn_blocking`), its
//! HMAC-SHA256-128 integrity path is `todo!()` (a panic on cipher suite 17),
//! it has no Serial-over-LAN, and it brings hmac 0.12, sha1 0.10 and rand 0.8
//! next to the workspace's newer majors. The parts written here are small:
//! RMCP+ framing ([`packet`]), RAKP and key derivation with `ring`'s HMAC and
//! the `aes` block cipher ([`crypto`]), and async UDP sessions on tokio
//! ([`session`]).
//!
//! Each operation opens a session, runs its commands and closes it, so no
//! session outlives a call and a BMC restart between calls costs nothing.
//! The console is the exception: its task keeps the session until the
//! caller drops the stream.
//!
//! Cipher suites: 17 (RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128) is
//! tried first and 3 (the SHA-1 variants with AES-CBC-128) when the BMC
//! rejects 17's algorithms in Open Session; the endpoint URL can fix either
//! (see [`address`] for the URL forms). The suite that worked is kept for
//! later calls. Suites without encryption are not offered.
//!
//! Contracts on top of [`BmcDriver`]'s: power calls read Get Chassis Status
//! first and send Chassis Control only when the state differs;
//! `set_next_boot` reads boot flags parameter 5 and writes it only when it
//! differs. IPMI reports no host NIC MACs, so `boot_macs` is unsupported.

mod address;
mod chassis;
mod crypto;
mod fru;
mod packet;
mod sdr;
mod session;
mod sol;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackhand_protocol::MacAddr;
use rackhand_protocol::hardware::{Inventory, Sensors};
use tracing::Instrument;

use crate::driver::{
    BmcDriver, BmcEndpoint, BootOverride, Console, DriverError, DriverKind, PowerState,
};
pub use address::{DEFAULT_PORT, IpmiAddress, Privilege};
use chassis::{BootFlags, ChassisControl};
pub use crypto::CipherSuite;
use session::{OpenError, Session, Target};

/// Sends of one request (the first and three retransmissions).
const ATTEMPTS: u32 = 4;
/// The longest wait for one reply before a retransmission.
const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// A driver for one node's IPMI 2.0 BMC.
#[derive(Debug)]
pub struct IpmiDriver {
    target: Arc<Target>,
    /// The suite fixed by the URL, or the one that worked last.
    suite: Mutex<Option<CipherSuite>>,
    suite_fixed: bool,
}

impl IpmiDriver {
    /// Checks the endpoint. Sends nothing.
    ///
    /// Each request waits up to a quarter of `endpoint.timeout` (at most
    /// 2 s) for a reply and is sent at most 4 times.
    pub fn new(endpoint: BmcEndpoint) -> Result<Self, DriverError> {
        let address =
            IpmiAddress::parse(&endpoint.url).map_err(|reason| DriverError::InvalidEndpoint {
                node: endpoint.node.clone(),
                url: endpoint.url.clone(),
                reason,
            })?;
        let attempt_timeout = (endpoint.timeout / ATTEMPTS).min(MAX_ATTEMPT_TIMEOUT);
        let target = Target {
            node: endpoint.node,
            address: address.display(),
            host: address.host,
            port: address.port,
            username: endpoint.username,
            password: endpoint.password,
            privilege: address.privilege,
            attempts: ATTEMPTS,
            attempt_timeout,
        };
        Ok(IpmiDriver {
            target: Arc::new(target),
            suite: Mutex::new(address.cipher_suite),
            suite_fixed: address.cipher_suite.is_some(),
        })
    }

    /// Returns the cipher suite of the last session, if one was opened.
    pub fn cipher_suite(&self) -> Option<CipherSuite> {
        *self.suite.lock().expect("suite lock is never poisoned")
    }

    /// Opens an authenticated, encrypted session at the target privilege.
    async fn open(&self) -> Result<Session, DriverError> {
        let mut session = Session::connect(self.target.clone()).await?;
        session.check_channel().await?;

        let first = self.cipher_suite().unwrap_or(CipherSuite::Suite17);
        let suite = match session.open_session(first).await {
            Ok(()) => first,
            Err(OpenError::SuiteRejected(status))
                if !self.suite_fixed && first == CipherSuite::Suite17 =>
            {
                tracing::debug!(node_id = %self.target.node, status, "ipmi cipher suite 17 rejected, trying 3");
                match session.open_session(CipherSuite::Suite3).await {
                    Ok(()) => CipherSuite::Suite3,
                    Err(error) => return Err(self.open_error(error, CipherSuite::Suite3)),
                }
            }
            Err(error) => return Err(self.open_error(error, first)),
        };

        session.authenticate(suite).await?;
        *self.suite.lock().expect("suite lock is never poisoned") = Some(suite);
        session.set_privilege().await?;
        Ok(session)
    }

    fn open_error(&self, error: OpenError, suite: CipherSuite) -> DriverError {
        match error {
            OpenError::Other(error) => error,
            OpenError::SuiteRejected(status) => self.target.invalid(
                "Open Session Request",
                format!(
                    "the BMC rejected cipher suite {} with status {status:#04x} ({})",
                    suite.id(),
                    session::rmcp_status_meaning(status)
                ),
            ),
        }
    }

    /// Runs `operation` in a new session and closes the session afterwards,
    /// whatever the result.
    async fn with_session<T>(
        &self,
        operation: &str,
        body: impl AsyncFnOnce(&mut Session) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let span = tracing::debug_span!("ipmi", node_id = %self.target.node, address = %self.target.address, operation);
        async {
            let mut session = self.open().await?;
            let result = body(&mut session).await;
            session.close().await;
            result
        }
        .instrument(span)
        .await
    }

    /// Power cycles the node: off, then on again after the BMC's interval.
    /// A node that is off is powered on instead, because IPMI rejects a
    /// cycle of a node without power.
    pub async fn power_cycle(&self) -> Result<(), DriverError> {
        self.with_session("power cycle", async |session| {
            let action = if chassis::power_is_on(session).await? {
                ChassisControl::PowerCycle
            } else {
                ChassisControl::PowerUp
            };
            chassis::control(session, action).await
        })
        .await
    }

    /// Sends an ASF presence ping and returns whether the pong announces
    /// IPMI. Needs no credentials.
    pub async fn presence_ping(&self) -> Result<bool, DriverError> {
        session::presence_ping(&self.target).await
    }
}

impl BmcDriver for IpmiDriver {
    fn node(&self) -> &str {
        &self.target.node
    }

    fn kind(&self) -> DriverKind {
        DriverKind::Ipmi
    }

    async fn power_state(&self) -> Result<PowerState, DriverError> {
        let on = self
            .with_session("power state", async |session| {
                chassis::power_is_on(session).await
            })
            .await?;
        Ok(if on { PowerState::On } else { PowerState::Off })
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        self.with_session("power on", async |session| {
            if chassis::power_is_on(session).await? {
                return Ok(());
            }
            chassis::control(session, ChassisControl::PowerUp).await?;
            tracing::info!(node_id = %session.target.node, "ipmi powered on");
            Ok(())
        })
        .await
    }

    async fn power_off(&self, force: bool) -> Result<(), DriverError> {
        self.with_session("power off", async |session| {
            if !chassis::power_is_on(session).await? {
                return Ok(());
            }
            let action = if force {
                ChassisControl::PowerDown
            } else {
                ChassisControl::SoftShutdown
            };
            chassis::control(session, action).await?;
            tracing::info!(node_id = %session.target.node, force, "ipmi powered off");
            Ok(())
        })
        .await
    }

    async fn reset(&self) -> Result<(), DriverError> {
        self.with_session("reset", async |session| {
            let action = if chassis::power_is_on(session).await? {
                ChassisControl::HardReset
            } else {
                ChassisControl::PowerUp
            };
            chassis::control(session, action).await
        })
        .await
    }

    async fn set_next_boot(&self, boot: BootOverride) -> Result<(), DriverError> {
        let node = self.target.node.clone();
        self.with_session("boot device", async |session| {
            let current = chassis::boot_flags(session).await?;
            let Some(wanted) = BootFlags::for_override(boot, current) else {
                return Err(DriverError::Unsupported {
                    node,
                    kind: DriverKind::Ipmi,
                    operation: format!("boot target {:?} (IPMI has no such device)", boot.target),
                });
            };
            if wanted == current {
                tracing::debug!(node_id = %node, "ipmi boot flags already set");
                return Ok(());
            }
            chassis::set_boot_flags(session, wanted).await
        })
        .await
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        // IPMI 2.0 has no standard command for the host's NIC MACs (LAN
        // configuration parameter 5 is the BMC's own MAC); only OEM
        // commands of some vendors report them.
        Err(crate::driver::unsupported(
            self,
            "listing host MAC addresses (IPMI has no standard command for them)",
        ))
    }

    async fn inventory(&self) -> Result<Inventory, DriverError> {
        self.with_session("inventory", async |session| {
            fru::read_inventory(session).await
        })
        .await
    }

    async fn sensors(&self) -> Result<Sensors, DriverError> {
        self.with_session("sensors", async |session| sdr::read_sensors(session).await)
            .await
    }

    async fn open_console(&self) -> Result<Console, DriverError> {
        let mut session = self.open().await?;
        let max_data = match sol::activate(&mut session).await {
            Ok(max_data) => max_data,
            Err(error) => {
                session.close().await;
                return Err(error);
            }
        };
        tracing::info!(node_id = %self.target.node, "ipmi serial-over-lan activated");
        Ok(Console::Stream(sol::spawn(session, max_data)))
    }
}

#[cfg(test)]
mod tests {
    use rackhand_protocol::Secret;

    use super::IpmiDriver;
    use crate::driver::{BmcEndpoint, DriverError, DriverKind};

    #[test]
    fn invalid_url_names_node_and_omits_password() {
        let endpoint = BmcEndpoint::new(
            DriverKind::Ipmi,
            "https://bmc.example",
            "admin",
            Secret::new("hunter2-secret".to_string()),
            "node-4",
        );
        let error = IpmiDriver::new(endpoint).expect_err("https is not IPMI");
        assert!(matches!(&error, DriverError::InvalidEndpoint { node, .. } if node == "node-4"));
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn driver_debug_hides_password() {
        let endpoint = BmcEndpoint::new(
            DriverKind::Ipmi,
            "ipmi://127.0.0.1:6230",
            "admin",
            Secret::new("hunter2-secret".to_string()),
            "node-4",
        );
        let driver = IpmiDriver::new(endpoint).expect("valid endpoint");
        let debug = format!("{driver:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
