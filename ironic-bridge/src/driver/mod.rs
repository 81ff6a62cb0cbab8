//! The BMC driver interface: what the site agent can ask of any machine's
//! management controller, whatever protocol drives it.
//!
//! # Design
//!
//! [`BmcDriver`] is a trait with `async` methods whose futures are `Send`, so
//! callers can drive a node from any tokio task. The trait is not object
//! safe (native async trait methods cannot be called through `dyn`), so
//! [`connect`] returns the enum [`Driver`], which has one variant per
//! implemented driver and forwards each call to it. This keeps the crate
//! free of boxed futures. A test double implements [`BmcDriver`] and is
//! passed to generic code in place of a [`Driver`].
//!
//! Contracts every driver keeps:
//!
//! - A method returns once the BMC accepted the request. Power changes become
//!   visible later (seconds on real hardware), so callers poll
//!   [`BmcDriver::power_state`] with a bound.
//! - `power_on` and `power_off` read the power state first and send nothing
//!   when the node is already in the requested state, so a retried step does
//!   not reset a node twice.
//! - A power state is reported only as the BMC states it. Anything
//!   unrecognised is [`PowerState::Unknown`] with the BMC's word, and a
//!   missing one is an error.
//! - Errors tell whether a retry can help ([`DriverError::is_retryable`]) and
//!   never contain the BMC password.
//!
//! Adding a driver: write a type implementing [`BmcDriver`] in its own
//! module, add a [`Driver`] variant and forward to it, and map its
//! [`DriverKind`] in [`connect`].

mod endpoint;
mod error;

use std::fmt;
use std::future::Future;

use rackhand_protocol::MacAddr;

pub use endpoint::{BmcEndpoint, DEFAULT_TIMEOUT, DriverKind, ParseDriverKindError};
pub use error::{DriverError, ResponseProblem};

use crate::redfish::RedfishDriver;

/// A node's power state as its BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    /// A state the driver does not map (Redfish `Paused`, a vendor value),
    /// with the BMC's own word.
    Unknown(String),
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerState::On => f.write_str("on"),
            PowerState::Off => f.write_str("off"),
            PowerState::PoweringOn => f.write_str("powering on"),
            PowerState::PoweringOff => f.write_str("powering off"),
            PowerState::Unknown(state) => write!(f, "unknown ({state})"),
        }
    }
}

/// The device a node boots from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTarget {
    /// Network boot (PXE).
    Pxe,
    /// The first local disk.
    Disk,
    /// The optical drive, real or virtual media.
    Cd,
    /// UEFI HTTP boot.
    UefiHttp,
    /// The firmware setup screen.
    BiosSetup,
}

/// How long a boot override lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPersistence {
    /// The next boot only.
    Once,
    /// Every boot until changed.
    Continuous,
}

/// Operations on one node's BMC.
pub trait BmcDriver: Send + Sync {
    /// Reads the current power state.
    fn power_state(&self) -> impl Future<Output = Result<PowerState, DriverError>> + Send;

    /// Powers the node on, unless it is already on or powering on.
    fn power_on(&self) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Powers the node off: a hard power cut when `force`, else an orderly
    /// shutdown through the operating system. Does nothing when the node is
    /// already off or powering off.
    fn power_off(&self, force: bool) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Sets the device for the next boot (`Once`) or every boot
    /// (`Continuous`).
    fn set_next_boot(
        &self,
        target: BootTarget,
        persistence: BootPersistence,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Lists the MAC addresses of the node's network interfaces, in the
    /// order the BMC lists them.
    fn boot_macs(&self) -> impl Future<Output = Result<Vec<MacAddr>, DriverError>> + Send;
}

/// A connected driver of any kind, as [`connect`] returns it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Driver {
    Redfish(RedfishDriver),
}

impl Driver {
    /// Returns the kind of driver behind this value.
    pub fn kind(&self) -> DriverKind {
        match self {
            Driver::Redfish(_) => DriverKind::Redfish,
        }
    }
}

impl BmcDriver for Driver {
    async fn power_state(&self) -> Result<PowerState, DriverError> {
        match self {
            Driver::Redfish(driver) => driver.power_state().await,
        }
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        match self {
            Driver::Redfish(driver) => driver.power_on().await,
        }
    }

    async fn power_off(&self, force: bool) -> Result<(), DriverError> {
        match self {
            Driver::Redfish(driver) => driver.power_off(force).await,
        }
    }

    async fn set_next_boot(
        &self,
        target: BootTarget,
        persistence: BootPersistence,
    ) -> Result<(), DriverError> {
        match self {
            Driver::Redfish(driver) => driver.set_next_boot(target, persistence).await,
        }
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        match self {
            Driver::Redfish(driver) => driver.boot_macs().await,
        }
    }
}

/// Creates the driver for `endpoint.kind`.
///
/// This checks the endpoint and builds the HTTP client but sends nothing: the
/// first operation contacts the BMC (and discovers the ComputerSystem when
/// `url` is a service root).
pub fn connect(endpoint: BmcEndpoint) -> Result<Driver, DriverError> {
    let unsupported = |endpoint: BmcEndpoint| DriverError::Unsupported {
        node: endpoint.node,
        kind: endpoint.kind,
        operation: "connect".to_string(),
    };

    match endpoint.kind {
        DriverKind::Redfish => Ok(Driver::Redfish(RedfishDriver::new(endpoint)?)),
        // TODO: add an iDRAC driver: RedfishDriver plus Dell OEM parts (job
        // queue for BIOS and boot settings, virtual media under Managers).
        DriverKind::Idrac => Err(unsupported(endpoint)),
        // TODO: add an iLO driver: RedfishDriver plus HPE OEM parts (ETag
        // `If-Match` on PATCH, virtual media under Managers).
        DriverKind::Ilo => Err(unsupported(endpoint)),
        // TODO: add an IPMI 2.0 driver over RMCP+ (cipher suite 3 and 17,
        // chassis power and boot device commands).
        DriverKind::Ipmi => Err(unsupported(endpoint)),
        // TODO: add an Ironic driver that drives the node through the Ironic
        // REST API (power and boot device endpoints, `provision_state`).
        DriverKind::Ironic => Err(unsupported(endpoint)),
    }
}

#[cfg(test)]
mod tests {
    use rackhand_protocol::Secret;

    use super::{BmcEndpoint, DriverError, DriverKind, connect};

    #[test]
    fn connect_rejects_unimplemented_kinds() {
        for kind in [
            DriverKind::Idrac,
            DriverKind::Ilo,
            DriverKind::Ipmi,
            DriverKind::Ironic,
        ] {
            let endpoint = BmcEndpoint::new(
                kind,
                "https://bmc.example",
                "admin",
                Secret::new("pw".to_string()),
                "node-7",
            );
            let error = connect(endpoint).expect_err("not implemented yet");
            assert!(
                matches!(&error, DriverError::Unsupported { node, kind: k, .. } if node == "node-7" && *k == kind),
                "{error:?}"
            );
            assert!(!error.is_retryable());
        }
    }

    #[test]
    fn connect_builds_redfish_driver_without_traffic() {
        // Port 9 (discard) on loopback: nothing is sent before the first call.
        let endpoint = BmcEndpoint::new(
            DriverKind::Redfish,
            "http://127.0.0.1:9",
            "admin",
            Secret::new("pw".to_string()),
            "node-1",
        );
        let driver = connect(endpoint).expect("redfish driver");
        assert_eq!(driver.kind(), DriverKind::Redfish);
    }
}
