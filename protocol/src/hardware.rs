//! What a BMC reports about its machine: inventory, sensors and health.
//!
//! The site agent's drivers fill these in and the control plane stores and
//! shows them, so they live here, in the crate both sides share. Every field a
//! BMC may leave out is an `Option` or an empty list: a missing value is shown
//! as unknown, never guessed.

use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// A machine's hardware as its BMC describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    /// The SMBIOS system UUID, which Ironic and installers also report.
    pub uuid: Option<String>,
    pub cpus: Vec<Cpu>,
    /// Installed memory in MiB.
    pub memory_mib: Option<u64>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub firmware: Vec<Firmware>,
    /// Parts the BMC failed to report, each with the reason (for example a
    /// Storage collection answering HTTP 500), so an operator sees why a
    /// list is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// One processor socket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub model: Option<String>,
    /// `x86_64`, `aarch64`, … when the BMC reports it.
    pub architecture: Option<String>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
}

/// One drive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub name: String,
    pub size_bytes: Option<u64>,
    pub model: Option<String>,
    pub serial_number: Option<String>,
    /// `HDD`, `SSD`, `NVMe`, … as the BMC words it.
    pub media_type: Option<String>,
}

/// One network interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: Option<MacAddr>,
    pub speed_mbps: Option<u32>,
    pub link_up: Option<bool>,
}

/// One firmware component (BIOS, BMC, NIC, RAID controller, …).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Firmware {
    pub name: String,
    pub version: String,
}

/// Health as Redfish and IPMI sensor thresholds grade it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Warning,
    Critical,
    #[default]
    Unknown,
}

/// The quantity a sensor measures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    Temperature,
    Fan,
    Voltage,
    Current,
    Power,
    /// Any other kind, with the BMC's own name for it.
    Other(String),
}

/// One sensor's latest reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    pub name: String,
    pub kind: SensorKind,
    /// `None` when the sensor has no reading (absent device, no power).
    pub value: Option<f64>,
    /// `Cel`, `RPM`, `V`, `A`, `W`, … as the BMC reports it (UCUM where the
    /// BMC uses it).
    pub unit: Option<String>,
    pub health: Health,
}

/// A machine's sensor readings and overall health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sensors {
    /// The BMC's rollup health of the whole machine.
    pub health: Health,
    pub readings: Vec<SensorReading>,
}
