//! The `[pxe]` section: the provisioning network's addresses, the names of
//! its interface and namespace, and the boot files. Everything the DHCP,
//! TFTP and boot HTTP servers would reject at start is rejected here, with
//! the key to fix.

use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rackhand_pxe::dhcp::{
    AddressRange, DhcpMode, MAX_BOOT_FILE_LEN, MAX_PING_WAIT, MAX_POOL_SIZE, MAX_QUARANTINE,
    MIN_LEASE_TIME, MIN_PING_WAIT, RelaySubnet,
};
use serde::Deserialize;

use super::ConfigError;

/// Longest Linux interface name: IFNAMSIZ (16) bytes including the NUL.
const MAX_INTERFACE_NAME_LEN: usize = 15;
/// Directory of the iPXE binaries that the Debian package `ipxe` installs.
const DEFAULT_TFTP_ROOT: &str = "/usr/lib/ipxe";

/// Default wait of the address check, in milliseconds: a host on the link
/// answers ARP within a millisecond, and a PXE client waits seconds for
/// offers.
const DEFAULT_ADDRESS_CHECK_MS: u32 = 200;

/// Default of `decline_quarantine_seconds`: one hour.
const DEFAULT_DECLINE_QUARANTINE_SECONDS: u32 = 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPxe {
    netns: Option<String>,
    interface: String,
    dhcp_mode: Option<RawDhcpMode>,
    server_ip: Ipv4Addr,
    prefix_len: u8,
    pool_start: Option<Ipv4Addr>,
    pool_end: Option<Ipv4Addr>,
    discovery_pool_start: Option<Ipv4Addr>,
    discovery_pool_end: Option<Ipv4Addr>,
    #[serde(default)]
    relay_subnets: Vec<RawRelaySubnet>,
    decline_quarantine_seconds: Option<u32>,
    ping_check_ms: Option<u32>,
    address_check: Option<RawAddressCheck>,
    address_check_ms: Option<u32>,
    arm64_boot_file: Option<String>,
    http_boot_x64_url: Option<String>,
    http_boot_ia32_url: Option<String>,
    http_boot_arm64_url: Option<String>,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns_servers: Vec<Ipv4Addr>,
    lease_seconds: Option<u32>,
    http_port: Option<u16>,
    tftp: Option<bool>,
    tftp_root: Option<PathBuf>,
    bios_boot_file: Option<String>,
    uefi_boot_file: Option<String>,
    boot_script_template: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawDhcpMode {
    Full,
    Proxy,
}

/// Method of checking a new address before it is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAddressCheck {
    None,
    Ping,
    Arp,
    Both,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelaySubnet {
    /// `ADDRESS/PREFIX_LEN`, for example `10.97.5.0/24`.
    subnet: String,
    pool_start: Ipv4Addr,
    pool_end: Ipv4Addr,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns_servers: Vec<Ipv4Addr>,
}

/// The provisioning network the PXE services serve.
#[derive(Debug, Clone)]
pub struct PxeConfig {
    /// Network namespace (`/run/netns/NAME`) holding `interface`; `None`
    /// means the agent's own namespace.
    pub netns: Option<String>,
    pub interface: String,
    /// Full DHCP server (the default) or proxyDHCP beside the site's own
    /// DHCP server.
    pub dhcp_mode: DhcpMode,
    pub server_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// The pool of known nodes. `None` only in proxy mode, which leases
    /// nothing.
    pub pool: Option<AddressRange>,
    /// Addresses for machines that are not the site's nodes yet; `None`
    /// leaves them unanswered.
    pub discovery_pool: Option<AddressRange>,
    /// Subnets behind DHCP relay agents.
    pub relay_subnets: Vec<RelaySubnet>,
    pub decline_quarantine: Duration,
    /// Wait for a ping reply before offering a new address; `None` skips the
    /// check.
    pub ping_check: Option<Duration>,
    /// Wait for an ARP reply on `interface` before offering a new address of
    /// the local subnet; `None` skips the probe.
    pub arp_check: Option<Duration>,
    /// Boot file for ARM64 UEFI PXE clients, relative to `tftp_root`.
    pub arm64_boot_file: Option<String>,
    /// Boot file URLs for UEFI HTTP boot clients by architecture.
    pub http_boot_x64_url: Option<String>,
    pub http_boot_ia32_url: Option<String>,
    pub http_boot_arm64_url: Option<String>,
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
    /// The operator's template for armed nodes' boot scripts, checked at
    /// load; `None` uses the built-in script.
    pub boot_script_template: Option<std::sync::Arc<crate::script_template::ScriptTemplate>>,
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
    check_server(&raw, invalid)?;
    let dhcp_mode = match raw.dhcp_mode {
        None | Some(RawDhcpMode::Full) => DhcpMode::Full,
        Some(RawDhcpMode::Proxy) => DhcpMode::Proxy,
    };
    let pool = match (dhcp_mode, raw.pool_start, raw.pool_end) {
        (_, Some(start), Some(end)) => {
            check_addresses(&raw, start, end, invalid)?;
            Some(AddressRange { start, end })
        }
        (DhcpMode::Proxy, None, None) => None,
        (_, None, _) => {
            return Err(invalid(
                "pxe.pool_start",
                "is missing; set the first address of the pool the site's nodes lease from (only dhcp_mode = \"proxy\" needs no pool)".to_string(),
            ));
        }
        (_, _, None) => {
            return Err(invalid(
                "pxe.pool_end",
                "is missing; set the last address of the pool the site's nodes lease from"
                    .to_string(),
            ));
        }
    };
    let dhcp = check_dhcp_extras(&raw, pool, invalid)?;

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
    if let Some(name) = &raw.arm64_boot_file {
        check_boot_file_name("pxe.arm64_boot_file", name, invalid)?;
    }
    for (key, url) in [
        ("pxe.http_boot_x64_url", &raw.http_boot_x64_url),
        ("pxe.http_boot_ia32_url", &raw.http_boot_ia32_url),
        ("pxe.http_boot_arm64_url", &raw.http_boot_arm64_url),
    ] {
        if let Some(url) = url {
            check_http_boot_url(key, url, invalid)?;
        }
    }
    // Without our TFTP server the boot files come from elsewhere, so the
    // local folder need not hold them.
    if tftp {
        check_tftp_root(&tftp_root, invalid)?;
        check_boot_file_exists("pxe.bios_boot_file", &tftp_root, &bios_boot_file, invalid)?;
        check_boot_file_exists("pxe.uefi_boot_file", &tftp_root, &uefi_boot_file, invalid)?;
        if let Some(name) = &raw.arm64_boot_file {
            check_boot_file_exists("pxe.arm64_boot_file", &tftp_root, name, invalid)?;
        }
    }

    let boot_script_template = match &raw.boot_script_template {
        None => None,
        Some(path) => Some(std::sync::Arc::new(
            crate::script_template::ScriptTemplate::load(&resolve(path))
                .map_err(|error| invalid("pxe.boot_script_template", error.to_string()))?,
        )),
    };

    Ok(PxeConfig {
        netns: raw.netns,
        interface: raw.interface,
        dhcp_mode,
        server_ip: raw.server_ip,
        prefix_len: raw.prefix_len,
        pool,
        discovery_pool: dhcp.discovery_pool,
        relay_subnets: dhcp.relay_subnets,
        decline_quarantine: dhcp.decline_quarantine,
        ping_check: dhcp.ping_check,
        arp_check: dhcp.arp_check,
        arm64_boot_file: raw.arm64_boot_file.clone(),
        // UEFI HTTP boot clients get the TFTP boot files over HTTP from the
        // boot server's /firmware/ route unless a URL is configured.
        http_boot_x64_url: raw.http_boot_x64_url.or_else(|| {
            tftp.then(|| {
                format!(
                    "http://{}:{http_port}/firmware/{uefi_boot_file}",
                    raw.server_ip
                )
            })
        }),
        http_boot_ia32_url: raw.http_boot_ia32_url,
        http_boot_arm64_url: raw.http_boot_arm64_url.or_else(|| {
            raw.arm64_boot_file
                .as_ref()
                .filter(|_| tftp)
                .map(|name| format!("http://{}:{http_port}/firmware/{name}", raw.server_ip))
        }),
        router: raw.router,
        dns_servers: raw.dns_servers,
        lease_time: Duration::from_secs(u64::from(lease_seconds)),
        http_port,
        tftp,
        tftp_root,
        bios_boot_file,
        uefi_boot_file,
        boot_script_template,
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

/// Checks `prefix_len` and that `server_ip` is a host address of its subnet.
fn check_server(raw: &RawPxe, invalid: Invalid<'_>) -> Result<(), ConfigError> {
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
    Ok(())
}

/// Checks the pool and router addresses against the subnet given by
/// `server_ip` and `prefix_len`. Each address is checked against the subnet
/// before the pool's order, so the error names the address that is wrong.
fn check_addresses(
    raw: &RawPxe,
    pool_start: Ipv4Addr,
    pool_end: Ipv4Addr,
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    let subnet = Subnet::new(raw.server_ip, raw.prefix_len);
    check_pool_bound("pxe.pool_start", pool_start, &subnet, invalid)?;
    check_pool_bound("pxe.pool_end", pool_end, &subnet, invalid)?;
    if pool_start > pool_end {
        return Err(invalid(
            "pxe.pool_end",
            format!("{} is before pool_start {}", pool_end, pool_start),
        ));
    }
    let pool_size = u64::from(pool_end.to_bits()) - u64::from(pool_start.to_bits()) + 1;
    if pool_size > u64::from(MAX_POOL_SIZE) {
        return Err(invalid(
            "pxe.pool_end",
            format!(
                "the pool {}-{} has {pool_size} addresses and the DHCP server handles at most {MAX_POOL_SIZE}; shrink it",
                pool_start, pool_end
            ),
        ));
    }

    let pool = pool_start..=pool_end;
    if pool.contains(&raw.server_ip) {
        return Err(invalid(
            "pxe.server_ip",
            format!(
                "{} is inside the DHCP pool {}-{}, so a node could be leased the agent's own address; move the pool or server_ip so the pool leaves it out",
                raw.server_ip, pool_start, pool_end
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
                pool_start, pool_end
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

/// The DHCP settings beyond the main pool, checked.
struct DhcpExtras {
    discovery_pool: Option<AddressRange>,
    relay_subnets: Vec<RelaySubnet>,
    decline_quarantine: Duration,
    ping_check: Option<Duration>,
    arp_check: Option<Duration>,
}

fn check_dhcp_extras(
    raw: &RawPxe,
    pool: Option<AddressRange>,
    invalid: Invalid<'_>,
) -> Result<DhcpExtras, ConfigError> {
    let quarantine = raw
        .decline_quarantine_seconds
        .unwrap_or(DEFAULT_DECLINE_QUARANTINE_SECONDS);
    if quarantine == 0 || u64::from(quarantine) > MAX_QUARANTINE.as_secs() {
        return Err(invalid(
            "pxe.decline_quarantine_seconds",
            format!(
                "{quarantine} is out of range; set 1 to {} seconds (the default is {DEFAULT_DECLINE_QUARANTINE_SECONDS})",
                MAX_QUARANTINE.as_secs()
            ),
        ));
    }

    let (ping_check, arp_check) = check_address_check(raw, invalid)?;

    let subnet = Subnet::new(raw.server_ip, raw.prefix_len);
    let discovery_pool = match (raw.discovery_pool_start, raw.discovery_pool_end) {
        (None, None) => None,
        (Some(start), Some(end)) => {
            check_pool_bound("pxe.discovery_pool_start", start, &subnet, invalid)?;
            check_pool_bound("pxe.discovery_pool_end", end, &subnet, invalid)?;
            let range = AddressRange { start, end };
            let problem = if start > end {
                Some(format!("{end} is before discovery_pool_start {start}"))
            } else if range.size() > u64::from(MAX_POOL_SIZE) {
                Some(format!(
                    "the range holds more than {MAX_POOL_SIZE} addresses"
                ))
            } else if pool.is_some_and(|pool| start <= pool.end && pool.start <= end) {
                Some(
                    "the range overlaps pool_start-pool_end; the two pools must be disjoint"
                        .to_string(),
                )
            } else if range.contains(raw.server_ip)
                || raw.router.is_some_and(|router| range.contains(router))
            {
                Some("the range contains server_ip or router".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(invalid("pxe.discovery_pool_end", problem));
            }
            Some(range)
        }
        _ => {
            return Err(invalid(
                "pxe.discovery_pool_start",
                "and pxe.discovery_pool_end go together; set both to answer unknown machines, or neither".to_string(),
            ));
        }
    };

    let relay_subnets = raw
        .relay_subnets
        .iter()
        .map(|relay| check_relay_subnet(relay, invalid))
        .collect::<Result<Vec<_>, _>>()?;
    check_relay_overlaps(&subnet, &relay_subnets, invalid)?;
    Ok(DhcpExtras {
        discovery_pool,
        relay_subnets,
        decline_quarantine: Duration::from_secs(u64::from(quarantine)),
        ping_check,
        arp_check,
    })
}

/// Returns the ping and ARP waits from `address_check`, `address_check_ms`
/// and the older `ping_check_ms`, which alone means a ping check with that
/// wait. Without any of them the ARP probe runs with the default wait.
fn check_address_check(
    raw: &RawPxe,
    invalid: Invalid<'_>,
) -> Result<(Option<Duration>, Option<Duration>), ConfigError> {
    let (check, ms, key) = match (raw.ping_check_ms, raw.address_check, raw.address_check_ms) {
        (Some(ms), None, None) => (RawAddressCheck::Ping, ms, "pxe.ping_check_ms"),
        (Some(_), _, _) => {
            return Err(invalid(
                "pxe.ping_check_ms",
                "cannot be combined with address_check or address_check_ms; remove it and set address_check_ms to the wait".to_string(),
            ));
        }
        (None, check, ms) => (
            check.unwrap_or(RawAddressCheck::Arp),
            ms.unwrap_or(DEFAULT_ADDRESS_CHECK_MS),
            "pxe.address_check_ms",
        ),
    };
    let wait = Duration::from_millis(u64::from(ms));
    if check != RawAddressCheck::None && !(MIN_PING_WAIT..=MAX_PING_WAIT).contains(&wait) {
        return Err(invalid(
            key,
            format!(
                "{ms} is out of range; set {} to {} milliseconds, or set address_check = \"none\" to skip the check",
                MIN_PING_WAIT.as_millis(),
                MAX_PING_WAIT.as_millis()
            ),
        ));
    }
    let ping = matches!(check, RawAddressCheck::Ping | RawAddressCheck::Both).then_some(wait);
    let arp = matches!(check, RawAddressCheck::Arp | RawAddressCheck::Both).then_some(wait);
    Ok((ping, arp))
}

fn check_relay_subnet(
    raw: &RawRelaySubnet,
    invalid: Invalid<'_>,
) -> Result<RelaySubnet, ConfigError> {
    let parsed = raw.subnet.split_once('/').and_then(|(address, len)| {
        Some((address.parse::<Ipv4Addr>().ok()?, len.parse::<u8>().ok()?))
    });
    let Some((network, prefix_len)) = parsed.filter(|(_, len)| (1..=30).contains(len)) else {
        return Err(invalid(
            "pxe.relay_subnets.subnet",
            format!(
                "{:?} is not ADDRESS/PREFIX_LEN with a prefix length of 1 to 30; set the relayed subnet such as \"10.97.5.0/24\"",
                raw.subnet
            ),
        ));
    };
    let subnet = Subnet::new(network, prefix_len);
    check_pool_bound(
        "pxe.relay_subnets.pool_start",
        raw.pool_start,
        &subnet,
        invalid,
    )?;
    check_pool_bound("pxe.relay_subnets.pool_end", raw.pool_end, &subnet, invalid)?;
    let pool = AddressRange {
        start: raw.pool_start,
        end: raw.pool_end,
    };
    if raw.pool_start > raw.pool_end || pool.size() > u64::from(MAX_POOL_SIZE) {
        return Err(invalid(
            "pxe.relay_subnets.pool_end",
            format!(
                "the pool {}-{} of {} must run upwards and hold at most {MAX_POOL_SIZE} addresses",
                raw.pool_start, raw.pool_end, raw.subnet
            ),
        ));
    }
    if let Some(router) = raw.router
        && (!subnet.contains(router)
            || subnet.reserved_role(router).is_some()
            || pool.contains(router))
    {
        return Err(invalid(
            "pxe.relay_subnets.router",
            format!(
                "{router} must be a host address of {subnet} outside its pool; set the relay's address there"
            ),
        ));
    }
    let mask = Ipv4Addr::from_bits(u32::MAX << (32 - u32::from(prefix_len)));
    Ok(RelaySubnet {
        network,
        subnet_mask: mask,
        pool,
        router: raw.router,
        dns_servers: raw.dns_servers.clone(),
    })
}

/// Rejects relay subnets that overlap the local subnet or each other, since
/// the server picks a request's subnet by the one that contains `giaddr`.
fn check_relay_overlaps(
    local: &Subnet,
    relays: &[RelaySubnet],
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    let overlap = |a: (u32, u32), b: (u32, u32)| {
        let mask = a.1 & b.1;
        a.0 & mask == b.0 & mask
    };
    let ranges: Vec<(u32, u32)> = relays
        .iter()
        .map(|relay| {
            let mask = relay.subnet_mask.to_bits();
            (relay.network.to_bits() & mask, mask)
        })
        .collect();
    for (index, range) in ranges.iter().enumerate() {
        let other = if overlap(*range, (local.network, local.mask)) {
            Some(format!("the local subnet {local}"))
        } else {
            ranges[..index]
                .iter()
                .find(|earlier| overlap(**earlier, *range))
                .map(|earlier| format!("the relay subnet {}", Ipv4Addr::from_bits(earlier.0)))
        };
        if let Some(other) = other {
            return Err(invalid(
                "pxe.relay_subnets.subnet",
                format!(
                    "{}/{} overlaps {other}; each relayed subnet must be distinct, because a request's subnet is the one holding its giaddr",
                    Ipv4Addr::from_bits(range.0),
                    range.1.leading_ones()
                ),
            ));
        }
    }
    Ok(())
}

fn check_http_boot_url(
    key: &'static str,
    url: &str,
    invalid: Invalid<'_>,
) -> Result<(), ConfigError> {
    let scheme = url.starts_with("http://") || url.starts_with("https://");
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if scheme && clean && url.len() <= MAX_BOOT_FILE_LEN {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "{url:?} is not an http:// or https:// URL of at most {MAX_BOOT_FILE_LEN} bytes without whitespace; set the URL UEFI HTTP boot firmware downloads, such as \"http://10.98.0.1:8080/ipxe.efi\""
        ),
    ))
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
