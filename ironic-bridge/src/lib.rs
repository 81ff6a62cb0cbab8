//! Rackhand's hardware drivers: power and boot control of bare-metal nodes
//! through their BMCs.
//!
//! # Design
//!
//! The site agent drives hardware only through [`BmcDriver`], built by
//! [`connect`] from a [`BmcEndpoint`]. Each driver kind lives in its own
//! module and implements one protocol:
//!
//! | kind | module | state |
//! |---|---|---|
//! | `redfish` | [`redfish`] | implemented: DMTF Redfish with basic auth |
//! | `idrac`, `ilo` | none yet | will wrap [`redfish::RedfishDriver`] and add the vendor OEM parts |
//! | `ipmi` | [`ipmi`] | implemented: IPMI 2.0 over RMCP+ (suites 17 and 3), power, boot flags, FRU, sensors, SOL |
//! | `ironic` | none yet | an Ironic REST client that drives the node through an Ironic conductor |
//!
//! [`connect`] returns [`DriverError::Unsupported`] for the kinds without a
//! driver. The interface, its contracts (idempotent power calls, no guessed
//! power state, retryable errors, no password in any error) and the way a
//! new driver plugs in are described in [`driver`].

// DriverError carries the node, URL, status and body excerpt that an
// operator needs, so it is larger than clippy's default limit. Each one comes
// from a BMC request, whose network round trip costs far more than moving
// the error.
#![allow(clippy::result_large_err)]

pub mod driver;
pub mod ipmi;
pub mod ironic;
pub mod redfish;

pub use driver::{
    BmcDriver, BmcEndpoint, BootMode, BootOverride, BootPersistence, BootTarget, Console, Driver,
    DriverError, DriverKind, PowerState, connect,
};
pub use rackhand_protocol::hardware;
