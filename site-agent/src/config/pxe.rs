//! The `[pxe]` section: the provisioning network's addresses, the names of
//! its interface and namespace, and the boot files. Everything the DHCP,
//! TFTP and boot HTTP servers would reject at start is rejected here, with
//! the key to fix.

use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rackhand_pxe::dhcp::{MAX_BOOT_FILE_LEN, MAX_POOL_SIZE, MIN_LEASE_TIME};
use serde::Deserialize;

use super::ConfigError;

/// Longest Linux interface name: IFNAMSIZ (16) bytes including the NUL.
const MAX_INTERFACE_NAME_LEN: usize = 15;
/// Directory of the iPXE binaries that the Debian package `ipxe` installs.
const DEFAULT_TFTP_ROOT: &str = "/usr/lib/ipxe";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPxe {
    netns: Option<String>,
    interface: String,
    server_ip: Ipv4Addr,
    prefix_len: u8,
    pool_start: Ipv4Addr,
    pool_end: Ipv4Addr,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns_servers: Vec<Ipv4Addr>,
    lease_seconds: Option<u32>,
    http_port: Option<u16>,
    tftp: Option<bool>,
    tftp_root: Option<PathBuf>,
    bios_boot_file: Option<String>,
    uefi_boot_file: Option<String>,
}

/// The provisioning network the PXE services serve.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    /// Network namespace (`/run/netns/NAME`) holding `interface`; `None`
    /// means the agent's own namespace.
    pub netns: Option<String>,
    pub interface: String,
    pub server_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub lease_time: Duration,
    pub http_port: u16,
    /// Whether to run the TFTP server (PXE firmware that is not iPXE needs it).
    pub tftp: bool,
    /// Directory the TFTP server serves. Loading checks that it exists when
    /// `tftp` is set.
    pub tftp_root: PathBuf,
    /// Boot file for BIOS clients, relative to `tftp_root`. Loading checks
    /// that it exists there when `tftp` is set.
    pub bios_boot_file: String,
    /// Boot file for x64 UEFI clients, relative to `tftp_root`. Loading
    /// checks that it exists there when `tftp` is set.
    pub uefi_boot_file: String,
}

impl PxeConfig {
    /// Returns the base URL of the boot HTTP server as netbooting machines reach it.
    pub fn http_base(&self) -> String {
        format!("http://{}:{}", self.server_ip, self.http_port)
    }
}

/// Builds the error for a key and a message naming the fix.
type Invalid<'a> = &'a dyn Fn(&'static str, String) -> ConfigError;

/// Checks the raw section and fills in the defaults.
pub(super) fn check_pxe(
    raw: RawPxe,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: Invalid<'_>,
) -> Result<PxeConfig, ConfigError> {
    check_interface(&raw.interface, invalid)?;
    if let Some(netns) = &raw.netns {
        check_netns(netns, invalid)?;
    }
    check_addresses(&raw, invalid)?;

    let lease_seconds = raw.lease_seconds.unwrap_or(600);
    if u64::from(lease_seconds) < MIN_LEASE_TIME.as_secs() || lease_seconds == u32::MAX {
        return Err(invalid(
            "pxe.lease_seconds",
            format!(
                "{lease_seconds} is out of range; set at least {} seconds (the default is 600)",
                MIN_LEASE_TIME.as_secs()
            ),
        ));
    }
    let http_port = raw.http_port.unwrap_or(8080);
    if http_port == 0 {
        return Err(invalid(
            "pxe.http_port",
            "0 is not a port the boot HTTP server can listen on; set a fixed port such as 8080 (the default)".to_string(),
        ));
    }

    let tftp = raw.tftp.unwrap_or(true);
    let tftp_root = raw
        .tftp_root
        .map(|p| resolve(&p))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TFTP_ROOT));
    let bios_boot_file = raw
        .bios_boot_file
        .unwrap_or_else(|| "undionly.kpxe".to_string());
    let uefi_boot_file = raw
        .uefi_boot_file
        .unwrap_or_else(|| "snponly.efi".to_string());
    check_boot_file_name("pxe.bios_boot_file", &bios_boot_file, invalid)?;
    check_boot_file_name("pxe.uefi_boot_file", &uefi_boot_file, invalid)?;
    // Without our TFTP server the boot files come from elsewhere, so the
    // local folder need not hold them.
    if tftp {
        check_tftp_root(&tftp_root, invalid)?;
        check_boot_file_exists("pxe.bios_boot_file", &tftp_root, &bios_boot_file, invalid)?;
        check_boot_file_exists("pxe.uefi_boot_file", &tftp_root, &uefi_boot_file, invalid)?;
    }

    Ok(PxeConfig {
        netns: raw.netns,
        interface: raw.interface,
        server_ip: raw.server_ip,
        prefix_len: raw.prefix_len,
        pool_start: raw.pool_start,
        pool_end: raw.pool_end,
        router: raw.router,
        dns_servers: raw.dns_servers,
        lease_time: Duration::from_secs(u64::from(lease_seconds)),
        http_port,
        tftp,
        tftp_root,
        bios_boot_file,
        uefi_boot_file,
    })
}

/// Applies the rules of Linux's `dev_valid_name` (net/core/dev.c): 1 to 15
/// bytes, not `.` or `..`, and no `/`, `:` or whitespace.
fn check_interface(name: &str, invalid: Invalid<'_>) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > MAX_INTERFACE_NAME_LEN {
        format!(
            "it is {} bytes long and Linux allows at most {MAX_INTERFACE_NAME_LEN}",
            name.len()
        )
    } else if name == "." || name == ".." {
        "it is a directory name".to_string()
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        "it contains '/', ':', whitespace or a control character".to_string()
    } else {
        return Ok(());
    };
    Err(invalid(
        "pxe.interface",
        format!(
            "{name:?} is not a Linux interface name because {reason}; set the name `ip link` shows"
        ),
    ))
}

fn check_netns(name: &str, invalid: Invalid<'_>) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "it is empty; leave pxe.netns out to use the agent's own namespace"
    } else if name.contains('/') || name == "." || name == ".." {
        "it is a path; set the name of a namespace in /run/netns, as `ip netns list` shows it"
    } else if name.contains('\0') {
        "it contains NUL; set the name `ip netns list` shows"
    } else {
        return Ok(());
    };
    Err(invalid(
        "pxe.netns",
        format!("{name:?} is not a namespace name because {reason}"),
    ))
}

/// Checks the server, pool and router addresses against the subnet given by
/// `server_ip` and `prefix_len`. Each address is checked against the subnet
/// before the pool's order, so the error names the address that is wrong.
fn check_addresses(raw: &RawPxe, invalid: Invalid<'_>) -> Result<(), ConfigError> {
    if raw.prefix_len == 0 || raw.prefix_len > 30 {
        return Err(invalid(
            "pxe.prefix_len",
            format!("{} must be between 1 and 30", raw.prefix_len),
        ));
    }
    let subnet = Subnet::new(raw.server_ip, raw.prefix_len);
    if let Some(role) = subnet.reserved_role(raw.server_ip) {
        return Err(invalid(
            "pxe.server_ip",
            format!(
                "{} is the {role} address of {subnet}; set the agent's host address on the interface",
                raw.server_ip
            ),
        ));
    }
    check_pool_bound("pxe.pool_start", raw.pool_start, &subnet, invalid)?;
    check_pool_bound("pxe.pool_end", raw.pool_end, &subnet, invalid)?;
    if raw.pool_start > raw.pool_end {
        return Err(invalid(
            "pxe.pool_end",
            format!("{} is before pool_start {}", raw.pool_end, raw.pool_start),
        ));
    }
    let pool_size = u64::from(raw.pool_end.to_bits()) - u64::from(raw.pool_start.to_bits()) + 1;
    if pool_size > u64::from(MAX_POOL_SIZE) {
        return Err(invalid(
            "pxe.pool_end",
            format!(
                "the pool {}-{} has {pool_size} addresses and the DHCP server handles at most {MAX_POOL_SIZE}; shrink it",
                raw.pool_start, raw.pool_end
            ),
        ));
    }

    let pool = raw.pool_start..=raw.pool_end;
    if pool.contains(&raw.server_ip) {
        return Err(invalid(
            "pxe.server_ip",
            format!(
                "{} is inside the DHCP pool {}-{}, so a node could be leased the agent's own address; move the pool or server_ip so the pool leaves it out",
                raw.server_ip, raw.pool_start, raw.pool_end
            ),
        ));
    }
    if let Some(router) = raw.router {
        let problem = if !subnet.contains(router) {
            Some(format!(
                "is outside the subnet {subnet} of server_ip and prefix_len; nodes reach only a router on their own subnet"
            ))
        } else if let Some(role) = subnet.reserved_role(router) {
            Some(format!("is the {role} address of {subnet}"))
        } else if pool.contains(&router) {
            Some(format!(
                "is inside the DHCP pool {}-{}, so a node could be leased the router's address",
                raw.pool_start, raw.pool_end
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(invalid(
                "pxe.router",
                format!(
                    "{router} {problem}; set the gateway's address on the provisioning network, or leave pxe.router out"
                ),
            ));
        }
    }
    Ok(())
}

fn check_pool_bound(
    key: &'static str,
    address: Ipv4Addr,
    subnet: &Subnet,
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    if !subnet.contains(address) {
        return Err(invalid(
            key,
            format!(
                "{address} is outside the subnet {subnet} of server_ip and prefix_len; set an address inside it, or fix server_ip or prefix_len"
            ),
        ));
    }
    if let Some(role) = subnet.reserved_role(address) {
        return Err(invalid(
            key,
            format!(
                "{address} is the {role} address of {subnet}, which no node can use; the pool must lie between {} and {}",
                subnet.first_host(),
                subnet.last_host()
            ),
        ));
    }
    Ok(())
}

/// An IPv4 subnet with a prefix of 1 to 30 bits, so it has a network and a
/// broadcast address distinct from its hosts.
struct Subnet {
    network: u32,
    mask: u32,
    prefix_len: u8,
}

impl Subnet {
    fn new(address: Ipv4Addr, prefix_len: u8) -> Subnet {
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        Subnet {
            network: address.to_bits() & mask,
            mask,
            prefix_len,
        }
    }

    fn contains(&self, address: Ipv4Addr) -> bool {
        address.to_bits() & self.mask == self.network
    }

    fn broadcast(&self) -> u32 {
        self.network | !self.mask
    }

    /// Returns "network" or "broadcast" for those two addresses.
    fn reserved_role(&self, address: Ipv4Addr) -> Option<&'static str> {
        match address.to_bits() {
            bits if bits == self.network => Some("network"),
            bits if bits == self.broadcast() => Some("broadcast"),
            _ => None,
        }
    }

    fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network + 1)
    }

    fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.broadcast() - 1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            Ipv4Addr::from_bits(self.network),
            self.prefix_len
        )
    }
}

/// Checks that a boot file name is a plain path relative to `tftp_root` that
/// fits the BOOTP `file` field.
fn check_boot_file_name(
    key: &'static str,
    name: &str,
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name.starts_with('/') {
        "it is an absolute path".to_string()
    } else if Path::new(name)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        "it contains a `..` component, which leaves tftp_root".to_string()
    } else if name.contains('\0') {
        "it contains NUL".to_string()
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or a control character, which the DHCP server does not send"
            .to_string()
    } else if name.len() > MAX_BOOT_FILE_LEN {
        format!(
            "it is {} bytes long and the DHCP boot file field holds at most {MAX_BOOT_FILE_LEN}",
            name.len()
        )
    } else {
        return Ok(());
    };
    Err(invalid(
        key,
        format!(
            "{name:?} is not a file name relative to tftp_root because {reason}; set one such as undionly.kpxe or snponly.efi"
        ),
    ))
}

fn check_tftp_root(root: &Path, invalid: Invalid<'_>) -> Result<(), ConfigError> {
    let problem = match std::fs::metadata(root) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => "is not a directory".to_string(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(error) => format!("cannot be read ({error})"),
    };
    Err(invalid(
        "pxe.tftp_root",
        format!(
            "{} {problem}; install the Debian package `ipxe`, which ships the boot files in {DEFAULT_TFTP_ROOT}, or set tftp_root to a directory that contains them, or set tftp = false",
            root.display()
        ),
    ))
}

fn check_boot_file_exists(
    key: &'static str,
    root: &Path,
    name: &str,
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    let path = root.join(name);
    if path.is_file() {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "{} is not a file; put the boot file there or set {key} to a file in tftp_root (the Debian package `ipxe` ships undionly.kpxe and snponly.efi)",
            path.display()
        ),
    ))
}

#[cfg(test)]
mod tests;
