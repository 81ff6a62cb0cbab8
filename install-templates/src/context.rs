//! The per-order values that every install template is rendered from,
//! checked when the context is built so no renderer gets an unchecked
//! string.
//!
//! Hostnames, instance ids and MAC addresses are limited to characters that
//! need no quoting anywhere. SSH keys and URLs may contain quotes and `$`, so
//! the renderers quote them for each format.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use url::Url;

use crate::TemplateError;
use crate::crypt;

/// Everything a renderer needs for one order.
///
/// The root password exists here only as its SHA-512-crypt hash, and `Debug`
/// prints neither the hash nor any password.
#[derive(Clone)]
pub struct OrderContext {
    pub(crate) hostname: String,
    pub(crate) domain: String,
    pub(crate) instance_id: String,
    pub(crate) root_password_hash: String,
    pub(crate) ssh_authorized_keys: Vec<String>,
    pub(crate) network: NetworkSettings,
    pub(crate) image: ImageInfo,
    pub(crate) callback_url: Url,
}

/// The unchecked values of an order, as the control plane stores them.
#[derive(Clone)]
pub struct OrderContextInput {
    /// Host label, lowercased; letters, digits and `-`, at most 63 bytes.
    pub hostname: String,
    /// DNS domain that follows the hostname in the FQDN.
    pub domain: String,
    /// Stable id of the machine's installation (a UUID or similar), at most
    /// 64 bytes of letters, digits, `.`, `_` and `-`.
    pub instance_id: String,
    /// The customer's root password in plain text, hashed by
    /// [`OrderContext::new`] and then dropped.
    pub root_password: String,
    /// OpenSSH public keys, one key per entry.
    pub ssh_authorized_keys: Vec<String>,
    pub network: NetworkSettings,
    pub image: ImageInfo,
    /// URL the installed system or installer calls when the install is done;
    /// it carries the order's one-time token.
    pub callback_url: String,
}

impl fmt::Debug for OrderContextInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderContextInput")
            .field("hostname", &self.hostname)
            .field("domain", &self.domain)
            .field("instance_id", &self.instance_id)
            .field("root_password", &"[redacted]")
            .field("ssh_authorized_keys", &self.ssh_authorized_keys)
            .field("network", &self.network)
            .field("image", &self.image)
            .field("callback_url", &"[redacted]")
            .finish()
    }
}

/// The machine's one configured interface.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkSettings {
    /// MAC address as `aa:bb:cc:dd:ee:ff` (lowercased when checked).
    pub mac: String,
    /// Name the interface gets in the installed system, e.g. `eth0`.
    pub interface_name: String,
    pub ipv4: Ipv4Settings,
    pub ipv6: Option<Ipv6Settings>,
    pub dns_servers: Vec<IpAddr>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ipv4Settings {
    pub address: Ipv4Addr,
    /// Prefix length, 1..=32.
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ipv6Settings {
    pub address: Ipv6Addr,
    /// Prefix length, 1..=128.
    pub prefix_len: u8,
    pub gateway: Ipv6Addr,
}

/// The operating system image an order installs.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    /// Catalogue name, e.g. `rocky-9.4`.
    pub name: String,
    pub os_family: OsFamily,
    /// Release, e.g. `9.4` or `12`.
    pub version: String,
    /// Installation tree (kickstart `url`) or package mirror (preseed
    /// `mirror/http/*`), as `http` or `https` URL.
    pub repository_url: String,
}

/// OS family, which decides the network-install format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// RHEL, Rocky, Alma: kickstart.
    Rhel,
    /// Debian and Ubuntu's debian-installer: preseed.
    Debian,
    /// Images that boot straight into cloud-init: NoCloud or configdrive.
    Cloud,
}

impl OrderContext {
    /// Checks every field and hashes the root password. The plain password
    /// is not kept.
    pub fn new(input: OrderContextInput) -> Result<Self, TemplateError> {
        let hostname = input.hostname.to_ascii_lowercase();
        check_label("hostname", &hostname)?;
        let domain = input.domain.to_ascii_lowercase();
        for label in domain.split('.') {
            check_label("domain", label).map_err(|_| invalid("domain", &domain, DNS_RULE))?;
        }
        if hostname.len() + 1 + domain.len() > 253 {
            return Err(invalid(
                "domain",
                &domain,
                "the FQDN must be at most 253 bytes",
            ));
        }
        check_instance_id(&input.instance_id)?;

        let ssh_authorized_keys = input
            .ssh_authorized_keys
            .iter()
            .map(|key| check_ssh_key(key))
            .collect::<Result<Vec<_>, _>>()?;
        let network = check_network(input.network)?;
        let image = check_image(input.image)?;
        let callback_url = check_http_url("callback_url", &input.callback_url)?;
        let root_password_hash = crypt::hash_password(&input.root_password)?;

        Ok(Self {
            hostname,
            domain,
            instance_id: input.instance_id,
            root_password_hash,
            ssh_authorized_keys,
            network,
            image,
            callback_url,
        })
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.hostname, self.domain)
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Returns the `$6$` hash that every renderer writes for root's
    /// `/etc/shadow` entry.
    pub fn root_password_hash(&self) -> &str {
        &self.root_password_hash
    }

    pub fn ssh_authorized_keys(&self) -> &[String] {
        &self.ssh_authorized_keys
    }

    pub fn network(&self) -> &NetworkSettings {
        &self.network
    }

    pub fn image(&self) -> &ImageInfo {
        &self.image
    }

    pub fn callback_url(&self) -> &Url {
        &self.callback_url
    }

    /// Replaces the hash with a fixed one so golden files stay stable; the
    /// value must have the `$6$` shape.
    pub fn with_root_password_hash(mut self, hash: &str) -> Result<Self, TemplateError> {
        if !crypt::is_sha512_crypt(hash) {
            return Err(TemplateError::InvalidRootPasswordHash);
        }
        hash.clone_into(&mut self.root_password_hash);
        Ok(self)
    }
}

impl fmt::Debug for OrderContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderContext")
            .field("hostname", &self.hostname)
            .field("domain", &self.domain)
            .field("instance_id", &self.instance_id)
            .field("root_password_hash", &"[redacted]")
            .field("ssh_authorized_keys", &self.ssh_authorized_keys)
            .field("network", &self.network)
            .field("image", &self.image)
            .field("callback_url", &"[redacted]")
            .finish()
    }
}

const DNS_RULE: &str = "use 1 to 63 of a-z, 0-9 and '-' per label, not starting or ending with '-'";

fn invalid(field: &'static str, value: &str, reason: &'static str) -> TemplateError {
    TemplateError::InvalidContext {
        field,
        value: value.escape_debug().to_string(),
        reason,
    }
}

fn check_label(field: &'static str, label: &str) -> Result<(), TemplateError> {
    let valid = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(invalid(field, label, DNS_RULE))
    }
}

fn check_instance_id(id: &str) -> Result<(), TemplateError> {
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "instance_id",
            id,
            "use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

const SSH_KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// Accepts `TYPE BASE64 [COMMENT]` on one line of printable characters and
/// returns it trimmed. Options before the type (`from="..."`) are not
/// accepted.
pub fn check_ssh_key(key: &str) -> Result<String, TemplateError> {
    let key = key.trim();
    let reason = "use one OpenSSH public key line: type, base64 key, optional comment";
    if key.chars().any(char::is_control) {
        return Err(invalid("ssh_authorized_keys", key, reason));
    }

    let mut parts = key.splitn(3, ' ');
    let key_type = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let body_valid = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if !SSH_KEY_TYPES.contains(&key_type) || !body_valid {
        return Err(invalid("ssh_authorized_keys", key, reason));
    }
    Ok(key.to_owned())
}

fn check_network(mut network: NetworkSettings) -> Result<NetworkSettings, TemplateError> {
    network.mac = network.mac.to_ascii_lowercase();
    let octets: Vec<&str> = network.mac.split(':').collect();
    let mac_valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !mac_valid {
        return Err(invalid(
            "network.mac",
            &network.mac,
            "use aa:bb:cc:dd:ee:ff",
        ));
    }

    let name = &network.interface_name;
    let name_valid = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_valid {
        return Err(invalid(
            "network.interface_name",
            name,
            "use 1 to 15 of A-Z, a-z, 0-9, '-', '_' and '.'",
        ));
    }

    let prefix = network.ipv4.prefix_len;
    if !(1..=32).contains(&prefix) {
        return Err(invalid(
            "network.ipv4.prefix_len",
            &prefix.to_string(),
            "use 1 to 32",
        ));
    }
    if let Some(ipv6) = &network.ipv6
        && !(1..=128).contains(&ipv6.prefix_len)
    {
        let value = ipv6.prefix_len.to_string();
        return Err(invalid("network.ipv6.prefix_len", &value, "use 1 to 128"));
    }
    if network.dns_servers.is_empty() {
        return Err(invalid(
            "network.dns_servers",
            "",
            "give at least one DNS server",
        ));
    }
    Ok(network)
}

fn check_image(image: ImageInfo) -> Result<ImageInfo, TemplateError> {
    let printable = |text: &str| {
        !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic())
    };
    if !printable(&image.name) {
        return Err(invalid(
            "image.name",
            &image.name,
            "use 1 to 128 printable ASCII characters without spaces",
        ));
    }
    if !printable(&image.version) {
        return Err(invalid(
            "image.version",
            &image.version,
            "use 1 to 128 printable ASCII characters without spaces",
        ));
    }
    let url = check_http_url("image.repository_url", &image.repository_url)?;
    Ok(ImageInfo {
        repository_url: url.to_string(),
        ..image
    })
}

fn check_http_url(field: &'static str, text: &str) -> Result<Url, TemplateError> {
    let reason = "use an absolute http:// or https:// URL with a host";
    let url = Url::parse(text).map_err(|_| invalid(field, text, reason))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(field, text, reason));
    }
    Ok(url)
}

/// Dotted-quad netmask for an IPv4 prefix length of 1..=32.
pub(crate) fn ipv4_netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix_len)))
}

/// Expanded netmask for an IPv6 prefix length of 1..=128.
pub(crate) fn ipv6_netmask(prefix_len: u8) -> Ipv6Addr {
    Ipv6Addr::from(u128::MAX << (128 - u32::from(prefix_len)))
}
