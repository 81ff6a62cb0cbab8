//! cloud-init NoCloud seed: `user-data` (`#cloud-config`), `meta-data` and
//! `network-config` (version 2), served over HTTP or put on a `cidata`
//! volume.

use serde_json::{Value, json};

use crate::yaml::to_yaml;
use crate::{OrderContext, RenderedFile};

/// The three files of a NoCloud seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoCloudSeed {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
}

impl NoCloudSeed {
    /// Lists the files under the names NoCloud reads.
    pub fn files(&self) -> Vec<RenderedFile> {
        [
            ("user-data", &self.user_data),
            ("meta-data", &self.meta_data),
            ("network-config", &self.network_config),
        ]
        .into_iter()
        .map(|(path, contents)| RenderedFile {
            path: path.to_owned(),
            contents: contents.clone(),
        })
        .collect()
    }
}

/// Renders the seed for one order.
pub fn render(context: &OrderContext) -> NoCloudSeed {
    NoCloudSeed {
        user_data: user_data(context),
        meta_data: to_yaml(&meta_data_document(context)),
        network_config: to_yaml(&network_config_document(context)),
    }
}

/// `#cloud-config` that sets the names, root's password hash and keys, and
/// posts to the callback URL through `phone_home` once the system is up.
pub fn user_data(context: &OrderContext) -> String {
    format!(
        "#cloud-config\n{}",
        to_yaml(&cloud_config_document(context))
    )
}

pub(crate) fn cloud_config_document(context: &OrderContext) -> Value {
    json!({
        "hostname": context.hostname(),
        "fqdn": context.fqdn(),
        "prefer_fqdn_over_hostname": false,
        "manage_etc_hosts": true,
        "disable_root": false,
        "ssh_pwauth": false,
        "users": [{
            "name": "root",
            "lock_passwd": false,
            "hashed_passwd": context.root_password_hash(),
            "ssh_authorized_keys": context.ssh_authorized_keys(),
        }],
        "phone_home": {
            "url": context.callback_url().as_str(),
            "post": ["instance_id", "hostname", "fqdn"],
            "tries": 10,
        },
    })
}

pub(crate) fn meta_data_document(context: &OrderContext) -> Value {
    json!({
        "instance-id": context.instance_id(),
        "local-hostname": context.hostname(),
    })
}

/// Netplan-style version 2 configuration matching the NIC by MAC.
///
/// Default gateways use `gateway4`/`gateway6`, which netplan deprecates,
/// because cloud-init 22.4 (Debian 12) turns a `routes` entry to `::/0` into
/// a route to `::/64` when it renders for sysconfig or ifupdown.
pub(crate) fn network_config_document(context: &OrderContext) -> Value {
    let network = context.network();
    let ipv4 = &network.ipv4;
    let dns: Vec<String> = network
        .dns_servers
        .iter()
        .map(ToString::to_string)
        .collect();

    let mut ethernet = json!({
        "match": {"macaddress": network.mac},
        "set-name": network.interface_name,
        "dhcp4": false,
        "dhcp6": false,
        "addresses": [format!("{}/{}", ipv4.address, ipv4.prefix_len)],
        "gateway4": ipv4.gateway.to_string(),
        "nameservers": {"addresses": dns},
    });
    if let Some(ipv6) = &network.ipv6 {
        ethernet["addresses"]
            .as_array_mut()
            .expect("addresses is built as a list above")
            .push(Value::from(format!("{}/{}", ipv6.address, ipv6.prefix_len)));
        ethernet["gateway6"] = Value::from(ipv6.gateway.to_string());
    }

    json!({
        "version": 2,
        "ethernets": {network.interface_name.as_str(): ethernet},
    })
}
