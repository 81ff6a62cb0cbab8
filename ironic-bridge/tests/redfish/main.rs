//! The Redfish driver against Redfish services: the sushy-tools emulator
//! for the common path, and the vendor-shaped mock of the `tests` crate for
//! each vendor profile.

mod emulator;
mod vendors;
