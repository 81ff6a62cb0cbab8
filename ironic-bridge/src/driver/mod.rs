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
use rackhand_protocol::hardware::{Inventory, Sensors};

pub use endpoint::{BmcEndpoint, DEFAULT_TIMEOUT, DriverKind, ParseDriverKindError};
pub use error::{DriverError, ResponseProblem};

use crate::ipmi::IpmiDriver;
use crate::ironic::IronicDriver;
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

/// The firmware interface a boot override asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    /// BIOS (legacy) boot.
    Legacy,
}

/// A boot device override: where the node boots next, for how long, and in
/// which firmware mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    pub target: BootTarget,
    pub persistence: BootPersistence,
    /// `None` leaves the node's current mode as it is.
    pub mode: Option<BootMode>,
}

impl BootOverride {
    /// Boots from `target` on the next boot only, in the current mode.
    pub fn once(target: BootTarget) -> Self {
        BootOverride {
            target,
            persistence: BootPersistence::Once,
            mode: None,
        }
    }
}

/// A serial console session, or where to find one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Console {
    /// The console's byte stream (IPMI Serial-over-LAN). Reading yields the
    /// node's serial output and writing sends keystrokes; dropping the
    /// stream ends the session on the BMC.
    Stream(tokio::io::DuplexStream),
    /// The BMC serves the console itself, for example over SSH; the caller
    /// connects there with the BMC credentials.
    Remote {
        /// `ssh`, `telnet` or `ipmi`, as the BMC names it.
        protocol: String,
        host: String,
        port: u16,
    },
}

/// Operations on one node's BMC.
///
/// Only the power and boot operations are required. The others have
/// default bodies that return [`DriverError::Unsupported`] naming the
/// operation, so a driver states plainly what its protocol or BMC cannot do.
pub trait BmcDriver: Send + Sync {
    /// Returns the node name or id the driver was created for.
    fn node(&self) -> &str;

    /// Returns the kind of driver, for errors and logs.
    fn kind(&self) -> DriverKind;

    /// Reads the current power state.
    fn power_state(&self) -> impl Future<Output = Result<PowerState, DriverError>> + Send;

    /// Powers the node on, unless it is already on or powering on.
    fn power_on(&self) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Powers the node off: a hard power cut when `force`, else an orderly
    /// shutdown through the operating system. Does nothing when the node is
    /// already off or powering off.
    fn power_off(&self, force: bool) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Restarts a running node at once (a hard reset). A node that is off is
    /// powered on instead, so the call always ends with the node starting.
    fn reset(&self) -> impl Future<Output = Result<(), DriverError>> + Send {
        async { Err(unsupported(self, "reset")) }
    }

    /// Sets the boot device override. Sends nothing when the BMC already
    /// holds the same override.
    fn set_next_boot(
        &self,
        boot: BootOverride,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Lists the MAC addresses of the node's network interfaces, in the
    /// order the BMC lists them.
    fn boot_macs(&self) -> impl Future<Output = Result<Vec<MacAddr>, DriverError>> + Send;

    /// Inserts the image at `image_url` as the node's virtual CD, ejecting
    /// another image first. Does nothing when that image is already inserted.
    fn insert_media(
        &self,
        image_url: &str,
    ) -> impl Future<Output = Result<(), DriverError>> + Send {
        let _ = image_url;
        async { Err(unsupported(self, "virtual media")) }
    }

    /// Ejects the virtual CD. Does nothing when none is inserted.
    fn eject_media(&self) -> impl Future<Output = Result<(), DriverError>> + Send {
        async { Err(unsupported(self, "virtual media")) }
    }

    /// Reads the hardware inventory: CPUs, memory, disks, NICs, firmware.
    fn inventory(&self) -> impl Future<Output = Result<Inventory, DriverError>> + Send {
        async { Err(unsupported(self, "inventory")) }
    }

    /// Reads the sensors and the overall health.
    fn sensors(&self) -> impl Future<Output = Result<Sensors, DriverError>> + Send {
        async { Err(unsupported(self, "sensor readings")) }
    }

    /// Opens the node's serial console.
    fn open_console(&self) -> impl Future<Output = Result<Console, DriverError>> + Send {
        async { Err(unsupported(self, "serial console")) }
    }
}

/// The error a driver returns for an operation it does not offer.
pub fn unsupported<D: BmcDriver + ?Sized>(driver: &D, operation: &str) -> DriverError {
    DriverError::Unsupported {
        node: driver.node().to_string(),
        kind: driver.kind(),
        operation: operation.to_string(),
    }
}

/// A connected driver of any kind, as [`connect`] returns it.
// One `Driver` exists per node and step, so boxing the larger variants
// would save nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Driver {
    /// Plain Redfish, and the vendor profiles built on it (`idrac`, `ilo`).
    Redfish(RedfishDriver),
    Ipmi(IpmiDriver),
    Ironic(IronicDriver),
}

/// Forwards a call to the driver inside a [`Driver`].
macro_rules! forward {
    ($self:ident, $driver:ident => $call:expr) => {
        match $self {
            Driver::Redfish($driver) => $call,
            Driver::Ipmi($driver) => $call,
            Driver::Ironic($driver) => $call,
        }
    };
}

impl BmcDriver for Driver {
    fn node(&self) -> &str {
        forward!(self, driver => driver.node())
    }

    fn kind(&self) -> DriverKind {
        forward!(self, driver => driver.kind())
    }

    async fn power_state(&self) -> Result<PowerState, DriverError> {
        forward!(self, driver => driver.power_state().await)
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        forward!(self, driver => driver.power_on().await)
    }

    async fn power_off(&self, force: bool) -> Result<(), DriverError> {
        forward!(self, driver => driver.power_off(force).await)
    }

    async fn reset(&self) -> Result<(), DriverError> {
        forward!(self, driver => driver.reset().await)
    }

    async fn set_next_boot(&self, boot: BootOverride) -> Result<(), DriverError> {
        forward!(self, driver => driver.set_next_boot(boot).await)
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        forward!(self, driver => driver.boot_macs().await)
    }

    async fn insert_media(&self, image_url: &str) -> Result<(), DriverError> {
        forward!(self, driver => driver.insert_media(image_url).await)
    }

    async fn eject_media(&self) -> Result<(), DriverError> {
        forward!(self, driver => driver.eject_media().await)
    }

    async fn inventory(&self) -> Result<Inventory, DriverError> {
        forward!(self, driver => driver.inventory().await)
    }

    async fn sensors(&self) -> Result<Sensors, DriverError> {
        forward!(self, driver => driver.sensors().await)
    }

    async fn open_console(&self) -> Result<Console, DriverError> {
        forward!(self, driver => driver.open_console().await)
    }
}

/// Creates the driver for `endpoint.kind`.
///
/// This checks the endpoint and builds the HTTP client but sends nothing: the
/// first operation contacts the BMC (and discovers the ComputerSystem when
/// `url` is a service root).
pub fn connect(endpoint: BmcEndpoint) -> Result<Driver, DriverError> {
    match endpoint.kind {
        // `idrac` and `ilo` are the Redfish driver with the Dell or HPE
        // profile fixed instead of detected (see `redfish::Vendor`).
        DriverKind::Redfish | DriverKind::Idrac | DriverKind::Ilo => {
            Ok(Driver::Redfish(RedfishDriver::new(endpoint)?))
        }
        DriverKind::Ipmi => Ok(Driver::Ipmi(IpmiDriver::new(endpoint)?)),
        DriverKind::Ironic => Ok(Driver::Ironic(IronicDriver::new(endpoint)?)),
    }
}

#[cfg(test)]
mod tests {
    use rackhand_protocol::Secret;

    use super::{BmcDriver, BmcEndpoint, Driver, DriverError, DriverKind, connect};

    #[test]
    fn connect_builds_vendor_kinds_on_redfish() {
        for kind in [DriverKind::Idrac, DriverKind::Ilo] {
            let endpoint = BmcEndpoint::new(
                kind,
                "https://bmc.example",
                "admin",
                Secret::new("pw".to_string()),
                "node-7",
            );
            let driver = connect(endpoint).expect("vendor kinds are implemented");
            assert!(matches!(driver, Driver::Redfish(_)), "{driver:?}");
            assert_eq!(driver.kind(), kind);
        }
    }

    #[test]
    fn connect_rejects_invalid_fingerprint() {
        let endpoint = BmcEndpoint {
            fingerprint: Some("not-hex".to_string()),
            ..BmcEndpoint::new(
                DriverKind::Idrac,
                "https://bmc.example",
                "admin",
                Secret::new("pw".to_string()),
                "node-7",
            )
        };
        let error = connect(endpoint).expect_err("invalid fingerprint");
        assert!(
            matches!(&error, DriverError::InvalidEndpoint { node, .. } if node == "node-7"),
            "{error:?}"
        );
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
