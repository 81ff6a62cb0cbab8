//! A node's hardware as Ironic stores it: the inventory that inspection
//! stored (API 1.81), else the scheduling `properties`, and its ports' MACs.

use rackhand_protocol::MacAddr;
use rackhand_protocol::hardware::{Cpu, Disk, Inventory, Nic};
use serde::Deserialize;
use serde_json::Value;

use super::client::{INVENTORY_API_VERSION, IronicClient, segment};
use super::error::IronicError;

/// Lists the MACs of the node's ports, in Ironic's order.
pub(super) async fn port_macs(
    client: &IronicClient,
    node: &str,
    uuid: &str,
) -> Result<Vec<MacAddr>, IronicError> {
    #[derive(Deserialize)]
    struct Ports {
        ports: Vec<Port>,
    }
    #[derive(Deserialize)]
    struct Port {
        address: String,
    }

    let path = format!("/v1/ports?node_uuid={}&fields=address", segment(uuid));
    let ports: Ports = client.get_json(node, &path).await?;
    ports
        .ports
        .into_iter()
        .map(|port| {
            port.address.parse().map_err(|_| {
                let problem = crate::driver::ResponseProblem::UnexpectedContent(format!(
                    "port address {:?} is not a MAC address",
                    port.address
                ));
                client.invalid_response(node, &http::Method::GET, &path, problem, b"")
            })
        })
        .collect()
}

/// Reads the inspected inventory when Ironic has one, else maps the node's
/// `properties` (`cpus`, `cpu_arch`, `memory_mb`, `local_gb`).
pub(super) async fn read(client: &IronicClient, node: &str) -> Result<Inventory, IronicError> {
    if client.api_version().await? >= INVENTORY_API_VERSION {
        let path = format!("/v1/nodes/{}/inventory", segment(node));
        if let Some(stored) = client.get_optional::<Value>(node, &path).await?
            && let Some(inventory) = stored.get("inventory")
        {
            return Ok(from_agent_inventory(inventory));
        }
    }
    let current = client.node(node).await?;
    Ok(from_properties(&current.properties, &current.uuid))
}

/// Maps the inventory that the Ironic Python Agent reports.
fn from_agent_inventory(inventory: &Value) -> Inventory {
    let text =
        |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let number = |value: &Value, key: &str| value.get(key).and_then(Value::as_u64);
    let system = inventory
        .get("system_vendor")
        .cloned()
        .unwrap_or(Value::Null);

    let cpus = inventory
        .get("cpu")
        .map(|cpu| Cpu {
            model: text(cpu, "model_name"),
            architecture: text(cpu, "architecture"),
            cores: number(cpu, "count").and_then(|count| u32::try_from(count).ok()),
            threads: None,
        })
        .into_iter()
        .collect();
    let disks = list(inventory, "disks")
        .map(|disk| Disk {
            name: text(disk, "name").unwrap_or_default(),
            size_bytes: number(disk, "size"),
            model: text(disk, "model"),
            serial_number: text(disk, "serial"),
            media_type: disk
                .get("rotational")
                .and_then(Value::as_bool)
                .map(|rotational| if rotational { "HDD" } else { "SSD" }.to_string()),
        })
        .collect();
    let nics = list(inventory, "interfaces")
        .map(|nic| Nic {
            name: text(nic, "name").unwrap_or_default(),
            mac: text(nic, "mac_address").and_then(|mac| mac.parse().ok()),
            speed_mbps: number(nic, "speed_mbps").and_then(|speed| u32::try_from(speed).ok()),
            link_up: nic.get("has_carrier").and_then(Value::as_bool),
        })
        .collect();

    Inventory {
        manufacturer: text(&system, "manufacturer"),
        model: text(&system, "product_name"),
        serial_number: text(&system, "serial_number"),
        uuid: text(&system, "system_uuid"),
        cpus,
        memory_mib: inventory
            .get("memory")
            .and_then(|memory| number(memory, "physical_mb")),
        disks,
        nics,
        firmware: Vec::new(),
        unavailable: Vec::new(),
    }
}

fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Maps the scheduling properties: one CPU entry whose `cores` is Ironic's
/// `cpus` count, memory, and the root disk size as one disk.
fn from_properties(properties: &serde_json::Map<String, Value>, uuid: &str) -> Inventory {
    // Ironic stores properties as given, numbers or numeric strings.
    let number = |key: &str| match properties.get(key) {
        Some(Value::Number(number)) => number.as_u64(),
        Some(Value::String(text)) => text.parse().ok(),
        _ => None,
    };
    let architecture = properties
        .get("cpu_arch")
        .and_then(Value::as_str)
        .map(str::to_string);
    let cpus = number("cpus")
        .map(|count| Cpu {
            model: None,
            architecture,
            cores: u32::try_from(count).ok(),
            threads: None,
        })
        .into_iter()
        .collect();
    let disks = number("local_gb")
        .map(|gb| Disk {
            name: "root".to_string(),
            size_bytes: Some(gb * 1024 * 1024 * 1024),
            ..Disk::default()
        })
        .into_iter()
        .collect();
    Inventory {
        uuid: Some(uuid.to_string()),
        cpus,
        memory_mib: number("memory_mb"),
        disks,
        ..Inventory::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{from_agent_inventory, from_properties};

    #[test]
    fn agent_inventory_maps_cpu_memory_disks_and_nics() {
        let inventory = from_agent_inventory(&json!({
            "cpu": {"model_name": "EPYC 7313", "count": 32, "architecture": "x86_64"},
            "memory": {"physical_mb": 131072, "total": 1},
            "disks": [{"name": "/dev/sda", "size": 480103981056u64, "model": "SSD1", "serial": "S1", "rotational": false}],
            "interfaces": [{"name": "eno1", "mac_address": "52:54:00:5a:00:01", "has_carrier": true}],
            "system_vendor": {"manufacturer": "ACME", "product_name": "R1", "serial_number": "SN1"},
        }));
        assert_eq!(inventory.cpus[0].cores, Some(32));
        assert_eq!(inventory.memory_mib, Some(131072));
        assert_eq!(inventory.disks[0].media_type.as_deref(), Some("SSD"));
        assert_eq!(
            inventory.nics[0].mac.map(|mac| mac.to_string()).as_deref(),
            Some("52:54:00:5a:00:01")
        );
        assert_eq!(inventory.manufacturer.as_deref(), Some("ACME"));
    }

    #[test]
    fn properties_accept_numeric_strings() {
        let properties =
            json!({"cpus": "4", "memory_mb": 2048, "local_gb": 10, "cpu_arch": "x86_64"});
        let inventory = from_properties(properties.as_object().expect("object"), "u1");
        assert_eq!(inventory.cpus[0].cores, Some(4));
        assert_eq!(inventory.memory_mib, Some(2048));
        assert_eq!(inventory.disks[0].size_bytes, Some(10 * 1024 * 1024 * 1024));
    }
}
