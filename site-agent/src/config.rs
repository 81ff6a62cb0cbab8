//! The site agent's TOML configuration: raw structs parsed with
//! `deny_unknown_fields`, then checked into [`Config`]. Errors name the
//! file, the key and the fix.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rackhand_protocol::Secret;
use serde::Deserialize;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: PathBuf,
    log_format: Option<String>,
    control_plane: RawControlPlane,
    images: Option<RawImages>,
    pxe: Option<RawPxe>,
    bmc: Option<RawBmc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlPlane {
    url: String,
    ca_fingerprint: String,
    enrollment_token: Option<String>,
    enrollment_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    store: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPxe {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBmc {
    timeout_seconds: Option<u64>,
    power_on_grace_seconds: Option<u64>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub json_logs: bool,
    pub control_plane: ControlPlaneConfig,
    pub image_store: PathBuf,
    pub pxe: Option<PxeConfig>,
    pub bmc: BmcConfig,
}

#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// `https://host:port` of the control plane's agent listener.
    pub url: String,
    /// Lowercase hex sha256 of the control plane's CA certificate.
    pub ca_fingerprint: String,
    /// Needed only until the agent has enrolled.
    pub enrollment_token: Option<EnrollmentToken>,
}

/// The source of the one-time enrollment token. The file is read only
/// when the agent actually enrolls, so it can be deleted afterwards.
#[derive(Debug, Clone)]
pub enum EnrollmentToken {
    Inline(Secret),
    File(PathBuf),
}

impl EnrollmentToken {
    /// Returns the token, reading the file if it comes from one.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            EnrollmentToken::Inline(token) => Ok(token.clone()),
            EnrollmentToken::File(path) => std::fs::read_to_string(path)
                .map(|text| Secret::new(text.trim().to_string()))
                .map_err(|e| {
                    format!(
                        "cannot read control_plane.enrollment_token_file {}: {e}",
                        path.display()
                    )
                }),
        }
    }
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
    pub tftp_root: PathBuf,
    pub bios_boot_file: String,
    pub uefi_boot_file: String,
}

impl PxeConfig {
    /// Returns the base URL of the boot HTTP server as netbooting machines reach it.
    pub fn http_base(&self) -> String {
        format!("http://{}:{}", self.server_ip, self.http_port)
    }
}

#[derive(Debug, Clone)]
pub struct BmcConfig {
    /// Per-request timeout towards BMCs.
    pub timeout: Duration,
    /// How long after a power-on request the node may still read Off before
    /// the agent concludes the request never took effect.
    pub power_on_grace: Duration,
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Checks configuration text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let state_dir = resolve(&raw.state_dir);
        let json_logs = match raw.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not a log format; use \"text\" or \"json\""),
                ));
            }
        };

        let cp = raw.control_plane;
        if !cp.url.starts_with("https://") {
            return Err(invalid(
                "control_plane.url",
                format!(
                    "{:?} must be an https:// URL of the control plane's agent listener",
                    cp.url
                ),
            ));
        }
        let fingerprint = cp
            .ca_fingerprint
            .trim()
            .trim_start_matches("sha256:")
            .to_ascii_lowercase();
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "control_plane.ca_fingerprint",
                "expected sha256:<64 hex digits>, as printed by `rackhand-control-plane ca-fingerprint`".to_string(),
            ));
        }
        let enrollment_token = match (cp.enrollment_token, cp.enrollment_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "control_plane.enrollment_token",
                    "set enrollment_token or enrollment_token_file, not both".to_string(),
                ));
            }
            (Some(token), None) => Some(EnrollmentToken::Inline(Secret::new(token))),
            (None, Some(file)) => Some(EnrollmentToken::File(resolve(&file))),
            (None, None) => None,
        };

        let image_store = raw
            .images
            .and_then(|i| i.store)
            .map(|p| resolve(&p))
            .unwrap_or_else(|| state_dir.join("images"));
        let pxe = raw
            .pxe
            .map(|p| check_pxe(p, &resolve, &invalid))
            .transpose()?;
        let bmc = raw.bmc.unwrap_or(RawBmc {
            timeout_seconds: None,
            power_on_grace_seconds: None,
        });

        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            json_logs,
            control_plane: ControlPlaneConfig {
                url: cp.url.trim_end_matches('/').to_string(),
                ca_fingerprint: fingerprint,
                enrollment_token,
            },
            image_store,
            pxe,
            bmc: BmcConfig {
                timeout: Duration::from_secs(bmc.timeout_seconds.unwrap_or(30)),
                power_on_grace: Duration::from_secs(bmc.power_on_grace_seconds.unwrap_or(90)),
            },
        })
    }
}

fn check_pxe(
    raw: RawPxe,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<PxeConfig, ConfigError> {
    if raw.prefix_len == 0 || raw.prefix_len > 30 {
        return Err(invalid(
            "pxe.prefix_len",
            format!("{} must be between 1 and 30", raw.prefix_len),
        ));
    }
    if raw.pool_start > raw.pool_end {
        return Err(invalid(
            "pxe.pool_end",
            format!("{} is before pool_start {}", raw.pool_end, raw.pool_start),
        ));
    }
    let tftp_root = raw
        .tftp_root
        .map(|p| resolve(&p))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/ipxe"));
    Ok(PxeConfig {
        netns: raw.netns,
        interface: raw.interface,
        server_ip: raw.server_ip,
        prefix_len: raw.prefix_len,
        pool_start: raw.pool_start,
        pool_end: raw.pool_end,
        router: raw.router,
        dns_servers: raw.dns_servers,
        lease_time: Duration::from_secs(u64::from(raw.lease_seconds.unwrap_or(600))),
        http_port: raw.http_port.unwrap_or(8080),
        tftp: raw.tftp.unwrap_or(true),
        tftp_root,
        bios_boot_file: raw
            .bios_boot_file
            .unwrap_or_else(|| "undionly.kpxe".to_string()),
        uefi_boot_file: raw
            .uefi_boot_file
            .unwrap_or_else(|| "snponly.efi".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
state_dir = "/var/lib/rackhand-agent"
[control_plane]
url = "https://127.0.0.1:8443"
ca_fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/rackhand/agent.toml"), text)
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/site-agent.toml");
        let text = std::fs::read_to_string(&path).expect("the example config exists");
        let config = Config::parse(&path, &text).expect("the example config is valid");
        assert!(config.pxe.is_some());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(
            config.image_store,
            Path::new("/var/lib/rackhand-agent/images")
        );
        assert!(config.pxe.is_none());
        assert_eq!(config.bmc.timeout, Duration::from_secs(30));
    }

    #[test]
    fn plain_http_control_plane_is_rejected() {
        let error = parse(&MINIMAL.replace("https://", "http://"))
            .expect_err("http")
            .to_string();
        assert!(error.contains("control_plane.url"), "{error}");
    }

    #[test]
    fn bad_fingerprint_is_rejected() {
        let error = parse(&MINIMAL.replace("sha256:0000", "sha256:zz00"))
            .expect_err("bad")
            .to_string();
        assert!(error.contains("ca_fingerprint"), "{error}");
    }

    #[test]
    fn reversed_pool_is_rejected() {
        let text = format!(
            "{MINIMAL}[pxe]\ninterface = \"br0\"\nserver_ip = \"10.0.0.1\"\nprefix_len = 24\npool_start = \"10.0.0.200\"\npool_end = \"10.0.0.100\"\n"
        );
        let error = parse(&text).expect_err("reversed").to_string();
        assert!(error.contains("pxe.pool_end"), "{error}");
    }
}
