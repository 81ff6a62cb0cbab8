//! Reading what a machine is made of (inventory), how it is doing
//! (sensors and health), and where its serial console is.
//!
//! Parts a BMC does not offer are left out of the report instead of failing
//! it: HTTP 404, 405 and 501, and a missing licence (Supermicro requires one
//! for Storage and firmware). A part whose resources fail with a server
//! error or an invalid body (sushy-tools' libvirt driver links a Storage
//! collection that answers 500) is left out too, and named with the reason
//! in [`Inventory::unavailable`]; the ComputerSystem itself, rejected
//! credentials and an unreachable BMC still fail the whole report.

use rackhand_protocol::hardware::{
    Cpu, Disk, Firmware, Health, Inventory, Nic, SensorKind, SensorReading, Sensors,
};
use reqwest::Url;
use serde_json::Value;

use super::client::RedfishClient;
use super::discovery::resolve;
use super::profile::Vendor;
use super::resources::{link_at, str_at};
use super::service::{members, optional};
use crate::driver::{Console, DriverError};

/// Maximum members read from one collection (processors, drives, NICs,
/// firmware components, sensors).
const MAX_MEMBERS: usize = 128;

/// OpenBMC's SSH port for the host console (see [`find_console`]).
const OPENBMC_CONSOLE_PORT: u16 = 2200;

/// Maximum Storage controllers read.
const MAX_STORAGE: usize = 16;

/// Reads the inventory of the system at `system_url`.
pub(crate) async fn read_inventory(
    client: &RedfishClient,
    system_url: &Url,
    system: &Value,
    update_service: Option<&Url>,
    manager: Option<&Value>,
) -> Result<Inventory, DriverError> {
    let text = |pointer: &str| str_at(system, pointer).map(str::to_string);
    let memory_gib = system
        .pointer("/MemorySummary/TotalSystemMemoryGiB")
        .and_then(Value::as_f64);
    let mut unavailable = Vec::new();
    let cpus = part(
        "processors",
        read_cpus(client, system_url, system).await,
        &mut unavailable,
    )?;
    let disks = part(
        "disks",
        read_disks(client, system_url, system).await,
        &mut unavailable,
    )?;
    let nics = part(
        "network interfaces",
        read_nics(client, system_url, system).await,
        &mut unavailable,
    )?;
    let firmware = part(
        "firmware",
        read_firmware(client, update_service, system, manager).await,
        &mut unavailable,
    )?;
    Ok(Inventory {
        manufacturer: text("/Manufacturer"),
        model: text("/Model"),
        serial_number: text("/SerialNumber"),
        uuid: text("/UUID"),
        memory_mib: memory_gib.map(|gib| (gib * 1024.0).round() as u64),
        cpus,
        disks,
        nics,
        firmware,
        unavailable,
    })
}

/// Keeps one part of the inventory, or records why the BMC could not give
/// it: a server error or an invalid body leaves the part empty, anything
/// else (credentials, an unreachable BMC) fails the report.
fn part<T: Default>(
    name: &str,
    result: Result<T, DriverError>,
    unavailable: &mut Vec<String>,
) -> Result<T, DriverError> {
    match result {
        Ok(value) => Ok(value),
        Err(error @ (DriverError::Http { .. } | DriverError::InvalidResponse { .. })) => {
            tracing::warn!(node = error.node(), part = name, error = %error, "inventory part unavailable");
            unavailable.push(format!("{name}: {error}"));
            Ok(T::default())
        }
        Err(error) => Err(error),
    }
}

async fn linked_members(
    client: &RedfishClient,
    base: &Url,
    resource: &Value,
    pointer: &str,
    max: usize,
) -> Result<Vec<(Url, Value)>, DriverError> {
    let Some(id) = link_at(resource, pointer) else {
        return Ok(Vec::new());
    };
    let collection = resolve(client, base, id)?;
    let Some(urls) = optional(members(client, &collection, max).await)? else {
        return Ok(Vec::new());
    };
    let mut items = Vec::with_capacity(urls.len());
    for url in urls {
        if let Some(item) = optional(client.get_json::<Value>(&url).await)? {
            items.push((url, item));
        }
    }
    Ok(items)
}

/// Reads `Processors`, or builds the list from `ProcessorSummary` when the
/// collection is missing (sushy-tools returns 501 for it).
async fn read_cpus(
    client: &RedfishClient,
    system_url: &Url,
    system: &Value,
) -> Result<Vec<Cpu>, DriverError> {
    let processors = linked_members(client, system_url, system, "/Processors", MAX_MEMBERS).await?;
    let cpus: Vec<Cpu> = processors
        .iter()
        .filter(|(_, cpu)| {
            // GPUs and FPGAs are Processors too.
            str_at(cpu, "/ProcessorType").is_none_or(|kind| kind == "CPU")
        })
        .filter(|(_, cpu)| str_at(cpu, "/Status/State") != Some("Absent"))
        .map(|(_, cpu)| Cpu {
            model: str_at(cpu, "/Model").map(str::to_string),
            architecture: str_at(cpu, "/InstructionSet")
                .or_else(|| str_at(cpu, "/ProcessorArchitecture"))
                .map(architecture_name),
            cores: u32_at(cpu, "/TotalCores"),
            threads: u32_at(cpu, "/TotalThreads"),
        })
        .collect();
    if !cpus.is_empty() {
        return Ok(cpus);
    }

    let count = u32_at(system, "/ProcessorSummary/Count").unwrap_or(0);
    let model = str_at(system, "/ProcessorSummary/Model").map(str::to_string);
    // The summary's core and thread totals (Redfish 2019.x) are per system;
    // they are given to the first CPU so the sums stay right.
    let cores = u32_at(system, "/ProcessorSummary/CoreCount");
    let threads = u32_at(system, "/ProcessorSummary/LogicalProcessorCount");
    Ok((0..count.min(MAX_MEMBERS as u32))
        .map(|index| Cpu {
            model: model.clone(),
            cores: cores.filter(|_| index == 0),
            threads: threads.filter(|_| index == 0),
            ..Cpu::default()
        })
        .collect())
}

/// Maps Redfish `InstructionSet` (`x86-64`, `ARM-A64`) to the names
/// installers use.
fn architecture_name(value: &str) -> String {
    match value {
        "x86-64" => "x86_64".to_string(),
        "ARM-A64" => "aarch64".to_string(),
        "PowerISA" => "ppc64le".to_string(),
        other => other.to_string(),
    }
}

/// Reads `Storage/*/Drives`, or `SimpleStorage` devices when the System
/// has no Storage.
async fn read_disks(
    client: &RedfishClient,
    system_url: &Url,
    system: &Value,
) -> Result<Vec<Disk>, DriverError> {
    let mut disks = Vec::new();
    let storages = linked_members(client, system_url, system, "/Storage", MAX_STORAGE).await?;
    for (storage_url, storage) in &storages {
        let drives = storage.get("Drives").and_then(Value::as_array);
        for drive in drives.into_iter().flatten().take(MAX_MEMBERS) {
            let Some(id) = drive.get("@odata.id").and_then(Value::as_str) else {
                continue;
            };
            let url = resolve(client, storage_url, id)?;
            if let Some(drive) = optional(client.get_json::<Value>(&url).await)? {
                disks.push(Disk {
                    name: name_of(&drive),
                    size_bytes: drive.get("CapacityBytes").and_then(Value::as_u64),
                    model: str_at(&drive, "/Model").map(str::to_string),
                    serial_number: str_at(&drive, "/SerialNumber").map(str::to_string),
                    media_type: media_type(&drive),
                });
            }
        }
    }
    if !storages.is_empty() {
        return Ok(disks);
    }

    let simple = linked_members(client, system_url, system, "/SimpleStorage", MAX_STORAGE).await?;
    for (_, controller) in &simple {
        let devices = controller.get("Devices").and_then(Value::as_array);
        for device in devices.into_iter().flatten().take(MAX_MEMBERS) {
            if str_at(device, "/Status/State") == Some("Absent") {
                continue;
            }
            disks.push(Disk {
                name: name_of(device),
                size_bytes: device.get("CapacityBytes").and_then(Value::as_u64),
                model: str_at(device, "/Model").map(str::to_string),
                ..Disk::default()
            });
        }
    }
    Ok(disks)
}

/// Returns `MediaType` (`SSD`, `HDD`), or `NVMe` for the NVMe protocol.
fn media_type(drive: &Value) -> Option<String> {
    if str_at(drive, "/Protocol") == Some("NVMe") {
        return Some("NVMe".to_string());
    }
    str_at(drive, "/MediaType").map(str::to_string)
}

async fn read_nics(
    client: &RedfishClient,
    system_url: &Url,
    system: &Value,
) -> Result<Vec<Nic>, DriverError> {
    let interfaces = linked_members(
        client,
        system_url,
        system,
        "/EthernetInterfaces",
        MAX_MEMBERS,
    )
    .await?;
    let mut nics = Vec::new();
    for (url, interface) in &interfaces {
        let text =
            str_at(interface, "/MACAddress").or_else(|| str_at(interface, "/PermanentMACAddress"));
        let mac = match text {
            Some(text) => Some(text.trim().parse().map_err(|_| {
                let problem = crate::driver::ResponseProblem::UnexpectedContent(format!(
                    "invalid MACAddress {text:?}"
                ));
                client.invalid_response(&http::Method::GET, url, problem, b"")
            })?),
            None => None,
        };
        nics.push(Nic {
            name: name_of(interface),
            mac,
            speed_mbps: u32_at(interface, "/SpeedMbps"),
            link_up: str_at(interface, "/LinkStatus").map(|status| status == "LinkUp"),
        });
    }
    Ok(nics)
}

/// Reads `UpdateService/FirmwareInventory`; without it, the System's
/// `BiosVersion` and the Manager's `FirmwareVersion`.
async fn read_firmware(
    client: &RedfishClient,
    update_service: Option<&Url>,
    system: &Value,
    manager: Option<&Value>,
) -> Result<Vec<Firmware>, DriverError> {
    if let Some(update_url) = update_service
        && let Some(update) = optional(client.get_json::<Value>(update_url).await)?
    {
        let items = linked_members(
            client,
            update_url,
            &update,
            "/FirmwareInventory",
            MAX_MEMBERS,
        )
        .await?;
        let firmware: Vec<Firmware> = items
            .iter()
            .filter_map(|(_, item)| {
                Some(Firmware {
                    name: name_of(item),
                    version: str_at(item, "/Version")?.to_string(),
                })
            })
            .collect();
        if !firmware.is_empty() {
            return Ok(firmware);
        }
    }

    let mut firmware = Vec::new();
    if let Some(version) = str_at(system, "/BiosVersion") {
        firmware.push(Firmware {
            name: "BIOS".to_string(),
            version: version.to_string(),
        });
    }
    if let Some(version) = manager.and_then(|manager| str_at(manager, "/FirmwareVersion")) {
        firmware.push(Firmware {
            name: "BMC".to_string(),
            version: version.to_string(),
        });
    }
    Ok(firmware)
}

/// Reads the sensors of `chassis` (each a URL and its resource): the newer
/// `Sensors` collection when a chassis has one, else `Thermal` and `Power`.
/// `health` is the System's `Status.HealthRollup` (or `Health`), else the
/// worst chassis health.
pub(crate) async fn read_sensors(
    client: &RedfishClient,
    system: &Value,
    chassis: &[(Url, Value)],
) -> Result<Sensors, DriverError> {
    let mut readings = Vec::new();
    for (url, resource) in chassis {
        if link_at(resource, "/Sensors").is_some() {
            let sensors = linked_members(client, url, resource, "/Sensors", MAX_MEMBERS).await?;
            readings.extend(sensors.iter().map(|(_, sensor)| sensor_reading(sensor)));
            continue;
        }
        if let Some(id) = link_at(resource, "/Thermal") {
            let thermal_url = resolve(client, url, id)?;
            if let Some(thermal) = optional(client.get_json::<Value>(&thermal_url).await)? {
                readings.extend(thermal_readings(&thermal));
            }
        }
        if let Some(id) = link_at(resource, "/Power") {
            let power_url = resolve(client, url, id)?;
            if let Some(power) = optional(client.get_json::<Value>(&power_url).await)? {
                readings.extend(power_readings(&power));
            }
        }
    }

    let rollup =
        str_at(system, "/Status/HealthRollup").or_else(|| str_at(system, "/Status/Health"));
    let health = match rollup {
        Some(health) => health_of(Some(health)),
        None => chassis
            .iter()
            .map(|(_, resource)| status_health(resource))
            .max_by_key(|health| severity(*health))
            .unwrap_or(Health::Unknown),
    };
    Ok(Sensors { health, readings })
}

fn thermal_readings(thermal: &Value) -> Vec<SensorReading> {
    let mut readings = Vec::new();
    let list = |key: &str| {
        thermal
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for item in list("Temperatures").iter().take(MAX_MEMBERS) {
        readings.push(SensorReading {
            name: name_of(item),
            kind: SensorKind::Temperature,
            value: item.get("ReadingCelsius").and_then(Value::as_f64),
            unit: Some("Cel".to_string()),
            health: status_health(item),
        });
    }
    for item in list("Fans").iter().take(MAX_MEMBERS) {
        readings.push(SensorReading {
            name: str_at(item, "/FanName").map_or_else(|| name_of(item), str::to_string),
            kind: SensorKind::Fan,
            value: item.get("Reading").and_then(Value::as_f64),
            unit: str_at(item, "/ReadingUnits").map(|unit| match unit {
                "Percent" => "%".to_string(),
                other => other.to_string(),
            }),
            health: status_health(item),
        });
    }
    readings
}

fn power_readings(power: &Value) -> Vec<SensorReading> {
    let mut readings = Vec::new();
    let list = |key: &str| {
        power
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for item in list("PowerControl").iter().take(MAX_MEMBERS) {
        readings.push(SensorReading {
            name: name_of(item),
            kind: SensorKind::Power,
            value: item.get("PowerConsumedWatts").and_then(Value::as_f64),
            unit: Some("W".to_string()),
            health: status_health(item),
        });
    }
    for item in list("Voltages").iter().take(MAX_MEMBERS) {
        readings.push(SensorReading {
            name: name_of(item),
            kind: SensorKind::Voltage,
            value: item.get("ReadingVolts").and_then(Value::as_f64),
            unit: Some("V".to_string()),
            health: status_health(item),
        });
    }
    readings
}

/// Maps a `Sensor` resource (`ReadingType`, `Reading`, `ReadingUnits`).
fn sensor_reading(sensor: &Value) -> SensorReading {
    let kind = match str_at(sensor, "/ReadingType") {
        Some("Temperature") => SensorKind::Temperature,
        Some("Rotational") => SensorKind::Fan,
        Some("Voltage") => SensorKind::Voltage,
        Some("Current") => SensorKind::Current,
        Some("Power") => SensorKind::Power,
        Some(other) => SensorKind::Other(other.to_string()),
        None => SensorKind::Other("unknown".to_string()),
    };
    SensorReading {
        name: name_of(sensor),
        kind,
        value: sensor.get("Reading").and_then(Value::as_f64),
        unit: str_at(sensor, "/ReadingUnits").map(str::to_string),
        health: status_health(sensor),
    }
}

fn status_health(resource: &Value) -> Health {
    health_of(str_at(resource, "/Status/Health"))
}

fn health_of(value: Option<&str>) -> Health {
    match value {
        Some("OK") => Health::Ok,
        Some("Warning") => Health::Warning,
        Some("Critical") => Health::Critical,
        _ => Health::Unknown,
    }
}

/// Orders health for the rollup: a known bad state outweighs an unknown one.
fn severity(health: Health) -> u8 {
    match health {
        Health::Unknown => 0,
        Health::Ok => 1,
        Health::Warning => 2,
        Health::Critical => 3,
    }
}

/// Finds the serial console the Manager advertises.
///
/// `SerialConsole` of Manager v1.10 and later has one object per protocol
/// (`SSH`, `Telnet`, `IPMI`) with `ServiceEnabled` and `Port`. Older
/// managers list `ConnectTypesSupported`, and the port comes from
/// `ManagerNetworkProtocol`. SSH is preferred, then Telnet, then IPMI
/// Serial-over-LAN. `host` is the BMC's host from `manager_url`.
///
/// OpenBMC serves the host console over SSH on port 2200, apart from the BMC
/// shell on the port that `ManagerNetworkProtocol` lists. NVIDIA's guide for
/// its OpenBMC-based IGX BMC ("MCU / IGX Host UART Access") connects with
/// `ssh root@<BMC IP> -p 2200`. So 2200 is used when the Manager names no
/// console port.
// NOTE: on iDRAC and iLO the advertised SSH port is the BMC's command line,
// where a vendor command (iDRAC `console com2`, iLO `vsp`; vendor knowledge,
// not checked here) reaches the serial console. Console::Remote cannot carry
// that command, so the caller must know it.
pub(crate) async fn find_console(
    client: &RedfishClient,
    vendor: Vendor,
    manager_url: &Url,
    manager: &Value,
) -> Result<Option<Console>, DriverError> {
    let Some(console) = manager.get("SerialConsole") else {
        return Ok(None);
    };
    let host = manager_url.host_str().unwrap_or_default().to_string();
    let protocols = [
        ("SSH", "ssh", 22),
        ("Telnet", "telnet", 23),
        ("IPMI", "ipmi", 623),
    ];

    for (key, protocol, _) in protocols {
        let Some(entry) = console.get(key) else {
            continue;
        };
        if entry.get("ServiceEnabled").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if let Some(port) = entry
            .get("Port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        {
            return Ok(Some(Console::Remote {
                protocol: protocol.to_string(),
                host,
                port,
            }));
        }
    }

    if console.get("ServiceEnabled").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    let supported: Vec<&str> = console
        .get("ConnectTypesSupported")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let network = match link_at(manager, "/NetworkProtocol") {
        Some(id) => optional(
            client
                .get_json::<Value>(&resolve(client, manager_url, id)?)
                .await,
        )?,
        None => None,
    };
    for (key, protocol, default_port) in protocols {
        if !supported.contains(&key) {
            continue;
        }
        if vendor == Vendor::OpenBmc && key == "SSH" {
            return Ok(Some(Console::Remote {
                protocol: protocol.to_string(),
                host,
                port: OPENBMC_CONSOLE_PORT,
            }));
        }
        let port = network
            .as_ref()
            .and_then(|network| network.pointer(&format!("/{key}/Port")))
            .and_then(Value::as_u64)
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or(default_port);
        return Ok(Some(Console::Remote {
            protocol: protocol.to_string(),
            host,
            port,
        }));
    }
    Ok(None)
}

fn name_of(resource: &Value) -> String {
    str_at(resource, "/Name")
        .or_else(|| str_at(resource, "/Id"))
        .unwrap_or("unnamed")
        .to_string()
}

/// Reads a count. A number written as a string is accepted too: the
/// schema requires an integer, but sushy-tools' libvirt driver sends
/// `"TotalCores": "1"`.
fn u32_at(resource: &Value, pointer: &str) -> Option<u32> {
    let value = resource.pointer(pointer)?;
    let number = match value {
        Value::String(text) => text.trim().parse::<u64>().ok()?,
        other => other.as_u64()?,
    };
    u32::try_from(number).ok()
}
