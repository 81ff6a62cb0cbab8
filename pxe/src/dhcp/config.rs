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

/// Settings of the DHCP server for one provisioning network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
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
}

impl DhcpConfig {
    /// Checks every setting and returns the first one that cannot be served.
    pub fn validate(&self) -> Result<(), DhcpConfigError> {
        let prefix_len =
            prefix_len(self.subnet_mask).ok_or(DhcpConfigError::InvalidSubnetMask {
                mask: self.subnet_mask,
            })?;

        self.check_in_subnet("server_ip", self.server_ip, prefix_len)?;
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

        if let Some(name) = &self.interface {
            validate_interface_name(name)?;
        }
        self.boot.validate()
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

    /// Returns whether the server may hand `addr` to a client: a host
    /// address of the subnet that is neither the server's nor the router's.
    pub fn is_assignable(&self, addr: Ipv4Addr) -> bool {
        self.is_host_in_subnet(addr) && addr != self.server_ip && Some(addr) != self.router
    }

    /// Iterates over the pool's addresses in ascending order.
    pub fn pool(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (self.pool_start.to_bits()..=self.pool_end.to_bits()).map(Ipv4Addr::from_bits)
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

impl BootFiles {
    fn validate(&self) -> Result<(), DhcpConfigError> {
        let tftp = self.tftp_server;
        if tftp.is_unspecified() || tftp.is_broadcast() || tftp.is_multicast() {
            return Err(DhcpConfigError::InvalidTftpServer { addr: tftp });
        }

        validate_boot_file("bios", &self.bios)?;
        validate_boot_file("uefi_x64", &self.uefi_x64)?;

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

fn validate_boot_file(field: &'static str, value: &str) -> Result<(), DhcpConfigError> {
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
                ipxe_script_url: "http://10.98.0.1:8080/boot/{mac}.ipxe".to_string(),
            },
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
