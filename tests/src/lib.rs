//! Harness for Rackhand's cross-crate tests: starts the real peers under
//! `tests/peers/` (Redfish BMC emulator, PowerDNS, SMTP sink, libvirt lab, …)
//! and finds the workspace's binaries; also a Redfish BMC mock in several
//! vendors' shapes for the hardware drivers' tests, cloud-init as a
//! checker of served NoCloud files, and a reader of Ironic's configdrives.

pub mod cloud_init;
pub mod configdrive;
pub mod peers;
pub mod redfish_mock;
pub mod stack;
pub mod test_disk;
pub mod workspace;
