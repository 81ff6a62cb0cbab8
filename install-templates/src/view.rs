//! The data passed to operator templates: the checked context flattened into
//! strings, with derived values (FQDN, netmask, CIDR, mirror host) that a
//! template could not compute itself.

use serde::Serialize;

use crate::OrderContext;
use crate::context::{ipv4_netmask, ipv6_netmask};

/// No `Debug`, because the struct contains the password hash and the
/// callback URL with its token.
#[derive(Serialize)]
pub(crate) struct TemplateData {
    hostname: String,
    domain: String,
    fqdn: String,
    instance_id: String,
    root_password_hash: String,
    ssh_authorized_keys: Vec<String>,
    callback_url: String,
    network: NetworkData,
    image: ImageData,
}

#[derive(Debug, Serialize)]
struct NetworkData {
    interface_name: String,
    mac: String,
    ipv4: Ipv4Data,
    ipv6: Option<Ipv6Data>,
    dns_servers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Ipv4Data {
    address: String,
    prefix_len: u8,
    netmask: String,
    cidr: String,
    gateway: String,
}

#[derive(Debug, Serialize)]
struct Ipv6Data {
    address: String,
    prefix_len: u8,
    netmask: String,
    cidr: String,
    gateway: String,
}

#[derive(Debug, Serialize)]
struct ImageData {
    name: String,
    os_family: String,
    version: String,
    repository_url: String,
    mirror_host: String,
    mirror_directory: String,
}

impl TemplateData {
    pub(crate) fn new(context: &OrderContext) -> Self {
        let network = context.network();
        let ipv4 = &network.ipv4;
        let image = context.image();
        let (mirror_host, mirror_directory) = mirror_parts(&image.repository_url);

        Self {
            hostname: context.hostname().to_owned(),
            domain: context.domain.clone(),
            fqdn: context.fqdn(),
            instance_id: context.instance_id().to_owned(),
            root_password_hash: context.root_password_hash().to_owned(),
            ssh_authorized_keys: context.ssh_authorized_keys().to_vec(),
            callback_url: context.callback_url().to_string(),
            network: NetworkData {
                interface_name: network.interface_name.clone(),
                mac: network.mac.clone(),
                ipv4: Ipv4Data {
                    address: ipv4.address.to_string(),
                    prefix_len: ipv4.prefix_len,
                    netmask: ipv4_netmask(ipv4.prefix_len).to_string(),
                    cidr: format!("{}/{}", ipv4.address, ipv4.prefix_len),
                    gateway: ipv4.gateway.to_string(),
                },
                ipv6: network.ipv6.as_ref().map(|ipv6| Ipv6Data {
                    address: ipv6.address.to_string(),
                    prefix_len: ipv6.prefix_len,
                    netmask: ipv6_netmask(ipv6.prefix_len).to_string(),
                    cidr: format!("{}/{}", ipv6.address, ipv6.prefix_len),
                    gateway: ipv6.gateway.to_string(),
                }),
                dns_servers: network
                    .dns_servers
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            image: ImageData {
                name: image.name.clone(),
                os_family: serde_json::to_value(image.os_family)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                version: image.version.clone(),
                repository_url: image.repository_url.clone(),
                mirror_host,
                mirror_directory,
            },
        }
    }
}

/// Splits a checked repository URL into the host (with a port when one is
/// given) and the path, as debian-installer's `mirror/http/*` keys want them.
pub(crate) fn mirror_parts(repository_url: &str) -> (String, String) {
    let Ok(url) = url::Url::parse(repository_url) else {
        return (String::new(), String::new());
    };
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    };
    (host, url.path().to_owned())
}
