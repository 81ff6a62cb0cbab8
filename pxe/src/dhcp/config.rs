//! The DHCP server's settings and the checks that make them safe to serve.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::MacAddr;

/// Maximum number of addresses in the pool. The allocator scans the pool
/// linearly when it looks for a free address, and a site's provisioning
/// network boots far fewer machines than this.
pub const MAX_POOL_SIZE: u32 = 65_536;

/// Shortest lease the server hands out. Shorter leases make clients renew so
/// often that a slow disk write of the lease file becomes visible.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(60);

/// Maximum length in bytes of a boot file name. The BOOTP `file` field has 128
/// bytes and some firmware expects a terminating NUL inside it.
pub const MAX_BOOT_FILE_LEN: usize = 127;

/// Placeholder in [`BootFiles::ipxe_script_url`] that is replaced with the
/// client's MAC in hyphenated form.
pub const MAC_PLACEHOLDER: &str = "{mac}";

/// Role of the server in the network's DHCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DhcpMode {
    /// The only DHCP server of the provisioning network: leases addresses to
    /// known MACs and hands out boot files.
    #[default]
    Full,
    /// ProxyDHCP beside the site's existing DHCP server (PXE specification
    /// 2.1, section 2.2.3): replies only to PXE and UEFI HTTP boot clients,
    /// with boot information and no address, on port 67 and on port 4011.
    /// The pool, router, DNS and lease settings are not used.
    Proxy,
}

/// An inclusive range of IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl AddressRange {
    /// Returns whether `addr` lies in the range.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&addr)
    }

    /// Returns the number of addresses, 0 when `start` is after `end`.
    pub fn size(&self) -> u64 {
        (u64::from(self.end.to_bits()) + 1).saturating_sub(u64::from(self.start.to_bits()))
    }
}

/// A subnet behind a DHCP relay agent, picked for a request whose `giaddr`
/// lies inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySubnet {
    /// Any address of the subnet; the relay's `giaddr` is typical.
    pub network: Ipv4Addr,
    /// Subnet mask (option 1). Must be contiguous.
    pub subnet_mask: Ipv4Addr,
    /// Addresses leased to clients of this subnet.
    pub pool: AddressRange,
    /// Default gateway (option 3), usually the relay's own address.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6), in order of preference.
    pub dns_servers: Vec<Ipv4Addr>,
}

/// Settings of the DHCP server for one provisioning network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Full DHCP server or proxyDHCP.
    pub mode: DhcpMode,
    /// The server's own address on the provisioning network, sent as option 54
    /// (server identifier).
    pub server_ip: Ipv4Addr,
    /// Provisioning interface, for logs. The socket passed to the server must
    /// already be bound to it (`SO_BINDTODEVICE`).
    pub interface: Option<String>,
    /// Subnet mask of the provisioning network (option 1). Must be contiguous.
    pub subnet_mask: Ipv4Addr,
    /// First address of the dynamic pool, inclusive.
    pub pool_start: Ipv4Addr,
    /// Last address of the dynamic pool, inclusive.
    pub pool_end: Ipv4Addr,
    /// Default gateway (option 3), if the network has one.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6), in order of preference.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Lease duration (option 51). Renewal time T1 (option 58) is half of it
    /// and rebinding time T2 (option 59) seven eighths, the defaults of
    /// RFC 2131 section 4.4.5.
    pub lease_time: Duration,
    /// Boot files for netbooting clients.
    pub boot: BootFiles,
    /// Subnets reached through DHCP relay agents. A relayed request whose
    /// `giaddr` lies in none of them, nor in the local subnet, gets no reply.
    pub relay_subnets: Vec<RelaySubnet>,
    /// Addresses for MACs outside [`KnownMacs`](super::KnownMacs), so that
    /// machines not yet registered can netboot into discovery. `None`
    /// (the default) leaves unknown MACs without a reply. Only directly
    /// attached clients get one. The range must lie in the local subnet,
    /// outside the pool.
    pub discovery_pool: Option<AddressRange>,
    /// How long an address stays out of use after a DHCPDECLINE or a
    /// positive ping check.
    pub decline_quarantine: Duration,
    /// With `Some(wait)`, a new address is pinged (ICMP echo) before it is
    /// offered, and an address that sends an echo reply within `wait` is
    /// quarantined and never offered. `None` skips the check.
    pub ping_check: Option<Duration>,
    /// With `Some(wait)`, a new address on the local subnet is probed with
    /// ARP on [`DhcpConfig::interface`] before it is offered, and an
    /// address whose holder answers within `wait` is quarantined and never
    /// offered. Needs `interface`. `None` skips the probe. With both checks
    /// set they run one after the other.
    pub arp_check: Option<Duration>,
}

/// The boot files handed to netbooting clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    /// TFTP server sent as `siaddr` (next-server) to PXE firmware.
    pub tftp_server: Ipv4Addr,
    /// iPXE binary for BIOS PXE firmware (option 93 architecture 0), usually
    /// `undionly.kpxe`.
    pub bios: String,
    /// iPXE binary for x64 UEFI PXE firmware (architectures 7 and 9), usually
    /// `snponly.efi`.
    pub uefi_x64: String,
    /// iPXE binary for ARM64 UEFI PXE firmware (architecture 11). `None`
    /// leaves such clients unanswered.
    pub uefi_arm64: Option<String>,
    /// `http://` URL of the boot file for x64 UEFI HTTP boot (architecture 16).
    pub http_x64: Option<String>,
    /// `http://` URL of the boot file for 32-bit x86 UEFI HTTP boot
    /// (architecture 15).
    pub http_ia32: Option<String>,
    /// `http://` URL of the boot file for ARM64 UEFI HTTP boot (architecture
    /// 19).
    pub http_arm64: Option<String>,
    /// URL of the per-machine iPXE script, handed to clients already running
    /// iPXE. `{mac}` is replaced with the hyphenated MAC, for example
    /// `http://10.98.0.1:8080/boot/{mac}.ipxe`.
    pub ipxe_script_url: String,
}

impl BootFiles {
    /// Renders the iPXE script URL for `mac`.
    pub fn script_url(&self, mac: &MacAddr) -> String {
        self.ipxe_script_url
            .replace(MAC_PLACEHOLDER, &mac.to_hyphenated())
    }
}

/// A [`DhcpConfig`] value that cannot be served. Each variant names the
/// setting and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpConfigError {
    #[error(
        "invalid subnet_mask {mask}: expected contiguous one bits with a prefix length of 1 to 30"
    )]
    InvalidSubnetMask { mask: Ipv4Addr },

    #[error(
        "{field} {addr} is outside the subnet {network}/{prefix_len} or is its network or broadcast address"
    )]
    OutsideSubnet {
        field: &'static str,
        addr: Ipv4Addr,
        network: Ipv4Addr,
        prefix_len: u8,
    },

    #[error("pool_start {start} is after pool_end {end}")]
    PoolReversed { start: Ipv4Addr, end: Ipv4Addr },

    #[error("pool {start}-{end} has {size} addresses; the maximum is {MAX_POOL_SIZE}")]
    PoolTooLarge {
        start: Ipv4Addr,
        end: Ipv4Addr,
        size: u64,
    },

    #[error("{field} {addr} is inside the pool {start}-{end}; move it out of the pool")]
    InsidePool {
        field: &'static str,
        addr: Ipv4Addr,
        start: Ipv4Addr,
        end: Ipv4Addr,
    },

    #[error(
        "invalid lease_time {lease_time:?}: expected at least {MIN_LEASE_TIME:?} and less than {} s",
        u32::MAX
    )]
    InvalidLeaseTime { lease_time: Duration },

    #[error("invalid interface name {name:?}: expected 1 to 15 bytes without '/' or whitespace")]
    InvalidInterface { name: String },

    #[error("invalid boot.{field} {value:?}: {reason}")]
    InvalidBootFile {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("invalid boot.tftp_server {addr}: expected a unicast address")]
    InvalidTftpServer { addr: Ipv4Addr },

    #[error("invalid relay subnet {network}/{mask}: {reason}")]
    InvalidRelaySubnet {
        network: Ipv4Addr,
        mask: Ipv4Addr,
        reason: String,
    },

    #[error("invalid discovery pool {start}-{end}: {reason}")]
    InvalidDiscoveryPool {
        start: Ipv4Addr,
        end: Ipv4Addr,
        reason: String,
    },

    #[error("invalid decline_quarantine {duration:?}: expected 1 s to {} s", MAX_QUARANTINE.as_secs())]
    InvalidDeclineQuarantine { duration: Duration },

    #[error(
        "invalid ping_check wait {wait:?}: expected {MIN_PING_WAIT:?} to {MAX_PING_WAIT:?}, because every new offer waits this long"
    )]
    InvalidPingWait { wait: Duration },

    #[error(
        "invalid arp_check wait {wait:?}: expected {MIN_PING_WAIT:?} to {MAX_PING_WAIT:?}, because every new offer waits this long"
    )]
    InvalidArpWait { wait: Duration },

    #[error("arp_check needs the interface to probe on; set interface or turn the ARP check off")]
    ArpCheckWithoutInterface,
}

/// Maximum decline quarantine: 30 days. A longer one would hide a
/// permanently broken address, which an operator should remove from the pool.
pub const MAX_QUARANTINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Minimum wait for a ping reply. A reply from a host on the same link
/// takes well under a millisecond, but a busy host can take longer.
pub const MIN_PING_WAIT: Duration = Duration::from_millis(50);

/// Maximum wait for a ping reply. EDK2 firmware sends its DHCPREQUEST about
/// 4 s after the offer and iPXE retransmits DISCOVER after 1 s, so a longer
/// wait would delay boots for little gain.
pub const MAX_PING_WAIT: Duration = Duration::from_secs(2);

impl DhcpConfig {
    /// Checks every setting and returns the first one that cannot be served.
    pub fn validate(&self) -> Result<(), DhcpConfigError> {
        let prefix_len =
            prefix_len(self.subnet_mask).ok_or(DhcpConfigError::InvalidSubnetMask {
                mask: self.subnet_mask,
            })?;

        self.check_in_subnet("server_ip", self.server_ip, prefix_len)?;
        if let Some(name) = &self.interface {
            validate_interface_name(name)?;
        }
        self.boot.validate()?;
        if self.mode == DhcpMode::Proxy {
            return Ok(());
        }

        self.check_in_subnet("pool_start", self.pool_start, prefix_len)?;
        self.check_in_subnet("pool_end", self.pool_end, prefix_len)?;
        if self.pool_start > self.pool_end {
            return Err(DhcpConfigError::PoolReversed {
                start: self.pool_start,
                end: self.pool_end,
            });
        }
        let size = u64::from(self.pool_end.to_bits()) - u64::from(self.pool_start.to_bits()) + 1;
        if size > u64::from(MAX_POOL_SIZE) {
            return Err(DhcpConfigError::PoolTooLarge {
                start: self.pool_start,
                end: self.pool_end,
                size,
            });
        }

        self.check_outside_pool("server_ip", self.server_ip)?;
        if let Some(router) = self.router {
            self.check_in_subnet("router", router, prefix_len)?;
            self.check_outside_pool("router", router)?;
        }

        let seconds = self.lease_time.as_secs();
        if self.lease_time < MIN_LEASE_TIME || seconds >= u64::from(u32::MAX) {
            return Err(DhcpConfigError::InvalidLeaseTime {
                lease_time: self.lease_time,
            });
        }

        let quarantine = self.decline_quarantine;
        if quarantine < Duration::from_secs(1) || quarantine > MAX_QUARANTINE {
            return Err(DhcpConfigError::InvalidDeclineQuarantine {
                duration: quarantine,
            });
        }
        if let Some(wait) = self.ping_check
            && !(MIN_PING_WAIT..=MAX_PING_WAIT).contains(&wait)
        {
            return Err(DhcpConfigError::InvalidPingWait { wait });
        }
        if let Some(wait) = self.arp_check {
            if !(MIN_PING_WAIT..=MAX_PING_WAIT).contains(&wait) {
                return Err(DhcpConfigError::InvalidArpWait { wait });
            }
            if self.interface.is_none() {
                return Err(DhcpConfigError::ArpCheckWithoutInterface);
            }
        }

        if let Some(range) = self.discovery_pool {
            self.validate_discovery_pool(range)?;
        }
        for (index, subnet) in self.relay_subnets.iter().enumerate() {
            subnet.validate()?;
            self.check_relay_overlap(index, subnet)?;
        }
        Ok(())
    }

    fn validate_discovery_pool(&self, range: AddressRange) -> Result<(), DhcpConfigError> {
        let invalid = |reason: String| DhcpConfigError::InvalidDiscoveryPool {
            start: range.start,
            end: range.end,
            reason,
        };
        let local = self.local_scope();
        if !local.is_host(range.start) || !local.is_host(range.end) {
            return Err(invalid("it must lie in the local subnet".to_string()));
        }
        if range.start > range.end {
            return Err(invalid("start is after end".to_string()));
        }
        if range.size() > u64::from(MAX_POOL_SIZE) {
            return Err(invalid(format!(
                "it has more than {MAX_POOL_SIZE} addresses"
            )));
        }
        let overlaps_pool = range.start <= self.pool_end && self.pool_start <= range.end;
        if overlaps_pool {
            return Err(invalid(format!(
                "it overlaps the pool {}-{}",
                self.pool_start, self.pool_end
            )));
        }
        for (field, addr) in [("server_ip", Some(self.server_ip)), ("router", self.router)] {
            if let Some(addr) = addr.filter(|addr| range.contains(*addr)) {
                return Err(invalid(format!("it contains {field} {addr}")));
            }
        }
        Ok(())
    }

    fn check_relay_overlap(
        &self,
        index: usize,
        subnet: &RelaySubnet,
    ) -> Result<(), DhcpConfigError> {
        let scope = subnet.scope();
        let local = self.local_scope();
        let other = self.relay_subnets[..index]
            .iter()
            .map(RelaySubnet::scope)
            .find(|earlier| earlier.overlaps(&scope));
        let reason = if scope.overlaps(&local) {
            "it overlaps the local subnet of server_ip".to_string()
        } else if let Some(earlier) = other {
            format!(
                "it overlaps the relay subnet {}",
                Ipv4Addr::from_bits(earlier.network)
            )
        } else {
            return Ok(());
        };
        Err(DhcpConfigError::InvalidRelaySubnet {
            network: subnet.network,
            mask: subnet.subnet_mask,
            reason,
        })
    }

    /// Returns the local subnet with the pool for known MACs.
    pub(crate) fn local_scope(&self) -> Scope {
        Scope::new(
            self.server_ip,
            self.subnet_mask,
            Some(AddressRange {
                start: self.pool_start,
                end: self.pool_end,
            }),
            [Some(self.server_ip), self.router],
        )
    }

    /// Returns the local subnet with the discovery pool, if one is set.
    pub(crate) fn discovery_scope(&self) -> Option<Scope> {
        let range = self.discovery_pool?;
        Some(Scope {
            pool: Some(range),
            ..self.local_scope()
        })
    }

    /// Returns the subnet that serves a request relayed from `giaddr`: the
    /// local one when `giaddr` lies in it, else the first relay subnet that
    /// contains it.
    pub(crate) fn scope_for_giaddr(
        &self,
        giaddr: Ipv4Addr,
    ) -> Option<(Scope, Option<&RelaySubnet>)> {
        let local = self.local_scope();
        if local.contains(giaddr) {
            return Some((local, None));
        }
        self.relay_subnets
            .iter()
            .find(|subnet| subnet.scope().contains(giaddr))
            .map(|subnet| (subnet.scope(), Some(subnet)))
    }

    /// Returns the prefix length of [`DhcpConfig::subnet_mask`], or `None`
    /// when the mask is not contiguous.
    pub fn prefix_len(&self) -> Option<u8> {
        prefix_len(self.subnet_mask)
    }

    /// Returns whether `addr` is a host address of the subnet: inside it, and
    /// neither its network nor its broadcast address.
    pub fn is_host_in_subnet(&self, addr: Ipv4Addr) -> bool {
        let mask = self.subnet_mask.to_bits();
        let network = self.server_ip.to_bits() & mask;
        let bits = addr.to_bits();

        bits & mask == network && bits != network && bits != network | !mask
    }

    /// Returns whether `addr` lies in the dynamic pool.
    pub fn pool_contains(&self, addr: Ipv4Addr) -> bool {
        (self.pool_start..=self.pool_end).contains(&addr)
    }

    /// Returns whether the server may hand `addr` to a client of the local
    /// subnet: a host address that is neither the server's nor the router's.
    pub fn is_assignable(&self, addr: Ipv4Addr) -> bool {
        self.local_scope().is_assignable(addr)
    }

    fn check_in_subnet(
        &self,
        field: &'static str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), DhcpConfigError> {
        if self.is_host_in_subnet(addr) {
            return Ok(());
        }
        Err(DhcpConfigError::OutsideSubnet {
            field,
            addr,
            network: Ipv4Addr::from_bits(self.server_ip.to_bits() & self.subnet_mask.to_bits()),
            prefix_len,
        })
    }

    fn check_outside_pool(
        &self,
        field: &'static str,
        addr: Ipv4Addr,
    ) -> Result<(), DhcpConfigError> {
        if !self.pool_contains(addr) {
            return Ok(());
        }
        Err(DhcpConfigError::InsidePool {
            field,
            addr,
            start: self.pool_start,
            end: self.pool_end,
        })
    }
}

impl RelaySubnet {
    pub(crate) fn scope(&self) -> Scope {
        Scope::new(
            self.network,
            self.subnet_mask,
            Some(self.pool),
            [self.router, None],
        )
    }

    fn validate(&self) -> Result<(), DhcpConfigError> {
        let invalid = |reason: String| DhcpConfigError::InvalidRelaySubnet {
            network: self.network,
            mask: self.subnet_mask,
            reason,
        };
        if prefix_len(self.subnet_mask).is_none() {
            return Err(invalid(
                "the mask must be contiguous with a prefix length of 1 to 30".to_string(),
            ));
        }
        let scope = self.scope();
        if !scope.is_host(self.pool.start) || !scope.is_host(self.pool.end) {
            return Err(invalid(format!(
                "pool {}-{} must lie among the subnet's host addresses",
                self.pool.start, self.pool.end
            )));
        }
        if self.pool.start > self.pool.end || self.pool.size() > u64::from(MAX_POOL_SIZE) {
            return Err(invalid(format!(
                "pool {}-{} must run upwards and hold at most {MAX_POOL_SIZE} addresses",
                self.pool.start, self.pool.end
            )));
        }
        if let Some(router) = self.router
            && (!scope.is_host(router) || self.pool.contains(router))
        {
            return Err(invalid(format!(
                "router {router} must be a host address of the subnet outside the pool"
            )));
        }
        Ok(())
    }
}

/// A subnet as the lease table uses it: the addresses it may hand out, and
/// the range it picks new ones from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    network: u32,
    mask: u32,
    pool: Option<AddressRange>,
    /// Addresses of the subnet never handed out: the server's and the router's.
    excluded: [Option<Ipv4Addr>; 2],
}

impl Scope {
    fn new(
        any_address: Ipv4Addr,
        mask: Ipv4Addr,
        pool: Option<AddressRange>,
        excluded: [Option<Ipv4Addr>; 2],
    ) -> Self {
        let mask = mask.to_bits();
        Self {
            network: any_address.to_bits() & mask,
            mask,
            pool,
            excluded,
        }
    }

    /// Returns whether `addr` lies in the subnet, network and broadcast
    /// addresses included.
    pub(crate) fn contains(&self, addr: Ipv4Addr) -> bool {
        addr.to_bits() & self.mask == self.network
    }

    fn is_host(&self, addr: Ipv4Addr) -> bool {
        let bits = addr.to_bits();
        self.contains(addr) && bits != self.network && bits != self.network | !self.mask
    }

    fn overlaps(&self, other: &Scope) -> bool {
        let mask = self.mask & other.mask;
        self.network & mask == other.network & mask
    }

    /// Returns whether the server may hand `addr` to a client of this subnet.
    pub(crate) fn is_assignable(&self, addr: Ipv4Addr) -> bool {
        self.is_host(addr) && !self.excluded.contains(&Some(addr))
    }

    /// Returns whether `addr` lies in the pool new addresses come from.
    pub(crate) fn pool_contains(&self, addr: Ipv4Addr) -> bool {
        self.pool.is_some_and(|pool| pool.contains(addr))
    }

    /// Iterates over the pool's addresses in ascending order.
    pub(crate) fn pool(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let (start, end) = match self.pool {
            Some(pool) => (pool.start.to_bits(), pool.end.to_bits()),
            None => (1, 0),
        };
        (start..=end).map(Ipv4Addr::from_bits)
    }
}

impl BootFiles {
    fn validate(&self) -> Result<(), DhcpConfigError> {
        let tftp = self.tftp_server;
        if tftp.is_unspecified() || tftp.is_broadcast() || tftp.is_multicast() {
            return Err(DhcpConfigError::InvalidTftpServer { addr: tftp });
        }

        validate_boot_file("bios", &self.bios)?;
        validate_boot_file("uefi_x64", &self.uefi_x64)?;
        if let Some(file) = &self.uefi_arm64 {
            validate_boot_file("uefi_arm64", file)?;
        }
        for (field, url) in [
            ("http_x64", &self.http_x64),
            ("http_ia32", &self.http_ia32),
            ("http_arm64", &self.http_arm64),
        ] {
            if let Some(url) = url {
                validate_http_url(field, url)?;
            }
        }

        let url = &self.ipxe_script_url;
        let invalid = |reason| DhcpConfigError::InvalidBootFile {
            field: "ipxe_script_url",
            value: url.clone(),
            reason,
        };
        if !url.contains(MAC_PLACEHOLDER) {
            return Err(invalid(
                "must contain {mac}, which is replaced with the client's MAC",
            ));
        }
        // Every MAC renders to the same length, so one sample checks them all.
        let rendered = self.script_url(&MacAddr([0; 6]));
        validate_boot_file("ipxe_script_url", &rendered).map_err(|_| {
            invalid(
                "must render to at most 127 bytes without whitespace, NUL or control characters",
            )
        })
    }
}

pub(crate) fn validate_boot_file(field: &'static str, value: &str) -> Result<(), DhcpConfigError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_BOOT_FILE_LEN {
        "must be at most 127 bytes, the size of the BOOTP file field minus its NUL"
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace, NUL or control characters"
    } else {
        return Ok(());
    };

    Err(DhcpConfigError::InvalidBootFile {
        field,
        value: value.to_string(),
        reason,
    })
}

/// Checks a boot file URL for UEFI HTTP boot, which EDK2 accepts only with
/// an `http://` or `https://` scheme.
pub(crate) fn validate_http_url(field: &'static str, url: &str) -> Result<(), DhcpConfigError> {
    validate_boot_file(field, url)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(DhcpConfigError::InvalidBootFile {
        field,
        value: url.to_string(),
        reason: "must start with http:// or https://",
    })
}

fn validate_interface_name(name: &str) -> Result<(), DhcpConfigError> {
    // Linux interface names are at most IFNAMSIZ (16) bytes including the NUL.
    let valid = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        return Ok(());
    }
    Err(DhcpConfigError::InvalidInterface {
        name: name.to_string(),
    })
}

/// Returns the prefix length of a contiguous mask between /1 and /30; smaller
/// subnets have no room for a server and a pool.
fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = mask.to_bits();
    let ones = bits.leading_ones();
    let contiguous = bits.checked_shl(ones).unwrap_or(0) == 0;

    (contiguous && (1..=30).contains(&ones)).then_some(ones as u8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Returns a valid configuration for 10.98.0.0/24, shared by the DHCP
    /// tests.
    pub(crate) fn sample_config() -> DhcpConfig {
        DhcpConfig {
            server_ip: Ipv4Addr::new(10, 98, 0, 1),
            interface: Some("prov0".to_string()),
            subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
            pool_start: Ipv4Addr::new(10, 98, 0, 100),
            pool_end: Ipv4Addr::new(10, 98, 0, 199),
            router: Some(Ipv4Addr::new(10, 98, 0, 254)),
            dns_servers: vec![Ipv4Addr::new(10, 98, 0, 53)],
            lease_time: Duration::from_secs(3600),
            boot: BootFiles {
                tftp_server: Ipv4Addr::new(10, 98, 0, 1),
                bios: "undionly.kpxe".to_string(),
                uefi_x64: "snponly.efi".to_string(),
                uefi_arm64: Some("snponly-arm64.efi".to_string()),
                http_x64: Some("http://10.98.0.1:8080/ipxe.efi".to_string()),
                http_ia32: None,
                http_arm64: Some("http://10.98.0.1:8080/ipxe-arm64.efi".to_string()),
                ipxe_script_url: "http://10.98.0.1:8080/boot/{mac}.ipxe".to_string(),
            },
            mode: DhcpMode::Full,
            relay_subnets: vec![RelaySubnet {
                network: Ipv4Addr::new(10, 97, 5, 0),
                subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
                pool: AddressRange {
                    start: Ipv4Addr::new(10, 97, 5, 100),
                    end: Ipv4Addr::new(10, 97, 5, 199),
                },
                router: Some(Ipv4Addr::new(10, 97, 5, 1)),
                dns_servers: vec![Ipv4Addr::new(10, 98, 0, 53)],
            }],
            discovery_pool: None,
            decline_quarantine: Duration::from_secs(3600),
            ping_check: None,
            arp_check: None,
        }
    }

    #[test]
    fn sample_config_is_valid() {
        assert_eq!(sample_config().validate(), Ok(()));
    }

    #[test]
    fn non_contiguous_mask_is_rejected() {
        let config = DhcpConfig {
            subnet_mask: Ipv4Addr::new(255, 0, 255, 0),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::InvalidSubnetMask { .. })
        ));
    }

    #[test]
    fn slash_31_mask_is_rejected() {
        let config = DhcpConfig {
            subnet_mask: Ipv4Addr::new(255, 255, 255, 254),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::InvalidSubnetMask { .. })
        ));
    }

    #[test]
    fn pool_outside_subnet_names_field() {
        let config = DhcpConfig {
            pool_end: Ipv4Addr::new(10, 98, 1, 10),
            ..sample_config()
        };

        let error = config
            .validate()
            .expect_err("pool end is in another subnet");

        assert!(error.to_string().contains("pool_end 10.98.1.10"), "{error}");
    }

    #[test]
    fn pool_including_broadcast_is_rejected() {
        let config = DhcpConfig {
            pool_end: Ipv4Addr::new(10, 98, 0, 255),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::OutsideSubnet {
                field: "pool_end",
                ..
            })
        ));
    }

    #[test]
    fn server_inside_pool_is_rejected() {
        let config = DhcpConfig {
            server_ip: Ipv4Addr::new(10, 98, 0, 150),
            ..sample_config()
        };

        let error = config.validate().expect_err("server is in the pool");

        assert!(
            error.to_string().contains("server_ip 10.98.0.150"),
            "{error}"
        );
    }

    #[test]
    fn router_inside_pool_is_rejected() {
        let config = DhcpConfig {
            router: Some(Ipv4Addr::new(10, 98, 0, 100)),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::InsidePool {
                field: "router",
                ..
            })
        ));
    }

    #[test]
    fn reversed_pool_is_rejected() {
        let config = DhcpConfig {
            pool_start: Ipv4Addr::new(10, 98, 0, 200),
            pool_end: Ipv4Addr::new(10, 98, 0, 100),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::PoolReversed { .. })
        ));
    }

    #[test]
    fn oversized_pool_is_rejected() {
        let config = DhcpConfig {
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            subnet_mask: Ipv4Addr::new(255, 0, 0, 0),
            router: None,
            pool_start: Ipv4Addr::new(10, 1, 0, 0),
            pool_end: Ipv4Addr::new(10, 2, 0, 0),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::PoolTooLarge { size: 65_537, .. })
        ));
    }

    #[test]
    fn short_lease_time_is_rejected() {
        let config = DhcpConfig {
            lease_time: Duration::from_secs(10),
            ..sample_config()
        };

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::InvalidLeaseTime { .. })
        ));
    }

    #[test]
    fn script_url_without_placeholder_is_rejected() {
        let mut config = sample_config();
        config.boot.ipxe_script_url = "http://10.98.0.1:8080/boot.ipxe".to_string();

        let error = config.validate().expect_err("no {mac}");

        assert!(error.to_string().contains("ipxe_script_url"), "{error}");
    }

    #[test]
    fn overlong_script_url_is_rejected() {
        let mut config = sample_config();
        config.boot.ipxe_script_url = format!("http://10.98.0.1/{}/{{mac}}", "a".repeat(100));

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::InvalidBootFile {
                field: "ipxe_script_url",
                ..
            })
        ));
    }

    #[test]
    fn boot_file_with_space_is_rejected() {
        let mut config = sample_config();
        config.boot.bios = "undionly .kpxe".to_string();

        assert!(matches!(
            config.validate(),
            Err(DhcpConfigError::InvalidBootFile { field: "bios", .. })
        ));
    }

    #[test]
    fn script_url_uses_hyphenated_mac() {
        let mac: MacAddr = "52:54:00:AB:00:01".parse().expect("valid MAC");

        let url = sample_config().boot.script_url(&mac);

        assert_eq!(url, "http://10.98.0.1:8080/boot/52-54-00-ab-00-01.ipxe");
    }

    #[test]
    fn host_addresses_exclude_network_and_broadcast() {
        let config = sample_config();

        assert!(!config.is_host_in_subnet(Ipv4Addr::new(10, 98, 0, 0)));
        assert!(!config.is_host_in_subnet(Ipv4Addr::new(10, 98, 0, 255)));
        assert!(config.is_host_in_subnet(Ipv4Addr::new(10, 98, 0, 1)));
        assert!(!config.is_host_in_subnet(Ipv4Addr::new(10, 99, 0, 1)));
    }
}
