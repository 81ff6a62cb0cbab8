//! OpenStack configdrive: the `openstack/latest/` files that cloud-init's
//! ConfigDrive data source and Ironic read, written as a tree or an ISO 9660
//! image labelled `config-2`.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::context::{ipv4_netmask, ipv6_netmask};
use crate::{OrderContext, RenderedFile, TemplateError, nocloud};

/// Volume label cloud-init and Ironic look for.
pub const VOLUME_LABEL: &str = "config-2";

/// Renders `meta_data.json`, `user_data` and `network_data.json` under
/// `openstack/latest/`.
pub fn render(context: &OrderContext) -> Vec<RenderedFile> {
    let pretty = |value: &Value| {
        let mut text =
            serde_json::to_string_pretty(value).expect("serde_json::Value always serializes");
        text.push('\n');
        text
    };
    vec![
        RenderedFile {
            path: "openstack/latest/meta_data.json".to_owned(),
            contents: pretty(&meta_data(context)),
        },
        RenderedFile {
            path: "openstack/latest/network_data.json".to_owned(),
            contents: pretty(&network_data(context)),
        },
        RenderedFile {
            path: "openstack/latest/user_data".to_owned(),
            contents: nocloud::user_data(context),
        },
    ]
}

pub(crate) fn meta_data(context: &OrderContext) -> Value {
    let public_keys: serde_json::Map<String, Value> = context
        .ssh_authorized_keys()
        .iter()
        .enumerate()
        .map(|(index, key)| (format!("key-{index}"), Value::from(key.as_str())))
        .collect();
    json!({
        "uuid": context.instance_id(),
        "name": context.hostname(),
        "hostname": context.fqdn(),
        "launch_index": 0,
        "public_keys": public_keys,
        "meta": {},
    })
}

/// `network_data.json` in the OpenStack schema: one physical link, a static
/// IPv4 network, an optional static IPv6 network and the DNS services.
pub(crate) fn network_data(context: &OrderContext) -> Value {
    let network = context.network();
    let ipv4 = &network.ipv4;
    let mut networks = vec![json!({
        "id": "network0",
        "type": "ipv4",
        "link": network.interface_name,
        "ip_address": ipv4.address.to_string(),
        "netmask": ipv4_netmask(ipv4.prefix_len).to_string(),
        "routes": [{
            "network": "0.0.0.0",
            "netmask": "0.0.0.0",
            "gateway": ipv4.gateway.to_string(),
        }],
        "network_id": "network0",
    })];
    if let Some(ipv6) = &network.ipv6 {
        networks.push(json!({
            "id": "network1",
            "type": "ipv6",
            "link": network.interface_name,
            "ip_address": ipv6.address.to_string(),
            "netmask": ipv6_netmask(ipv6.prefix_len).to_string(),
            "routes": [{
                "network": "::",
                "netmask": "::",
                "gateway": ipv6.gateway.to_string(),
            }],
            "network_id": "network1",
        }));
    }
    let services: Vec<Value> = network
        .dns_servers
        .iter()
        .map(|server| json!({"type": "dns", "address": server.to_string()}))
        .collect();

    json!({
        "links": [{
            "id": network.interface_name,
            "type": "phy",
            "ethernet_mac_address": network.mac,
        }],
        "networks": networks,
        "services": services,
    })
}

/// Writes `files` below `root`, creating folders as needed.
pub fn write_tree(root: &Path, files: &[RenderedFile]) -> Result<(), TemplateError> {
    for file in files {
        let path = root.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| TemplateError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, &file.contents)
            .map_err(|source| TemplateError::Write { path, source })?;
    }
    Ok(())
}

/// Builds an ISO 9660 image with Rock Ridge and Joliet names from the tree
/// at `root` by running `genisoimage`, which must be on `PATH`.
pub fn build_iso(root: &Path, output: &Path) -> Result<(), TemplateError> {
    let tool = "genisoimage";
    let result = Command::new(tool)
        .args(["-quiet", "-J", "-r", "-V", VOLUME_LABEL, "-o"])
        .arg(output)
        .arg(root)
        .output()
        .map_err(|source| TemplateError::IsoToolFailed {
            tool,
            path: output.to_owned(),
            source,
        })?;
    if !result.status.success() {
        return Err(TemplateError::IsoToolExit {
            tool,
            path: output.to_owned(),
            status: result.status,
            stderr: String::from_utf8_lossy(&result.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
