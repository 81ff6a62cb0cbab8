//! Harness for Rackhand's cross-crate tests: starts the real peers under
//! `tests/peers/` (Redfish BMC emulator, PowerDNS, SMTP sink, libvirt lab, …)
//! and finds the workspace's binaries.

pub mod peers;
pub mod stack;
pub mod workspace;
