//! The site agent's TOML configuration: raw structs parsed with
//! `deny_unknown_fields`, then checked into [`Config`]. Errors name the
//! file, the key and the fix. `check-config` and `run` load it through the
//! same checks.

mod ironic;
mod pxe;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rackhand_protocol::Secret;
use serde::Deserialize;

pub use ironic::IronicConfig;
use ironic::{RawIronic, check_ironic};
pub use pxe::PxeConfig;
use pxe::{RawPxe, check_pxe};

/// Largest `bmc.timeout_seconds`. A longer per-request timeout would let one
/// hung BMC request hold a task for more than ten minutes.
const MAX_BMC_TIMEOUT_SECONDS: u64 = 600;
/// Smallest `bmc.power_on_grace_seconds`: BMCs report a new power state
/// seconds after they accept the request.
const MIN_POWER_ON_GRACE_SECONDS: u64 = 5;
/// Largest `images.rehash_interval_hours`, one year: a longer interval would
/// in effect never re-hash.
const MAX_REHASH_INTERVAL_HOURS: u64 = 8760;
/// Default `images.cache_budget_gb`: a choice that holds a few dozen OS
/// images and installers on a typical agent disk.
const DEFAULT_CACHE_BUDGET_GB: u64 = 100;

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
    ironic: Option<RawIronic>,
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
    rehash_interval_hours: Option<u64>,
    cache_budget_gb: Option<u64>,
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
    /// Time between full re-hashes of every stored image.
    pub image_rehash_interval: Duration,
    /// Maximum bytes of images the cache keeps before it evicts the least
    /// recently used ones.
    pub image_cache_budget: u64,
    pub pxe: Option<PxeConfig>,
    pub bmc: BmcConfig,
    /// Set when nodes of this site are driven through an Ironic conductor.
    pub ironic: Option<IronicConfig>,
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
            .as_ref()
            .and_then(|i| i.store.as_ref())
            .map(|p| resolve(p))
            .unwrap_or_else(|| state_dir.join("images"));
        let rehash_hours = raw
            .images
            .as_ref()
            .and_then(|i| i.rehash_interval_hours)
            .unwrap_or(24);
        if rehash_hours == 0 || rehash_hours > MAX_REHASH_INTERVAL_HOURS {
            return Err(invalid(
                "images.rehash_interval_hours",
                format!(
                    "{rehash_hours} is out of range; set 1 to {MAX_REHASH_INTERVAL_HOURS} hours (the default is 24)"
                ),
            ));
        }
        let budget_gb = raw
            .images
            .as_ref()
            .and_then(|i| i.cache_budget_gb)
            .unwrap_or(DEFAULT_CACHE_BUDGET_GB);
        if budget_gb == 0 {
            return Err(invalid(
                "images.cache_budget_gb",
                format!("must be at least 1 (the default is {DEFAULT_CACHE_BUDGET_GB})"),
            ));
        }
        let pxe = raw
            .pxe
            .map(|p| check_pxe(p, &resolve, &invalid))
            .transpose()?;
        let bmc = check_bmc(raw.bmc, &invalid)?;
        let ironic = raw
            .ironic
            .map(|i| check_ironic(i, &resolve, &invalid))
            .transpose()?;
        if ironic.is_some() && pxe.is_none() {
            return Err(invalid(
                "ironic",
                "needs a [pxe] section: the boot HTTP server serves the conductor's http_root"
                    .to_string(),
            ));
        }

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
            image_rehash_interval: Duration::from_secs(rehash_hours * 3600),
            image_cache_budget: budget_gb.saturating_mul(1_000_000_000),
            pxe,
            bmc,
            ironic,
        })
    }
}

fn check_bmc(
    raw: Option<RawBmc>,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<BmcConfig, ConfigError> {
    let timeout_seconds = raw.as_ref().and_then(|b| b.timeout_seconds).unwrap_or(30);
    if timeout_seconds == 0 || timeout_seconds > MAX_BMC_TIMEOUT_SECONDS {
        return Err(invalid(
            "bmc.timeout_seconds",
            format!(
                "{timeout_seconds} is out of range; set 1 to {MAX_BMC_TIMEOUT_SECONDS} seconds (the default is 30)"
            ),
        ));
    }
    let grace_seconds = raw
        .as_ref()
        .and_then(|b| b.power_on_grace_seconds)
        .unwrap_or(90);
    if grace_seconds < MIN_POWER_ON_GRACE_SECONDS {
        return Err(invalid(
            "bmc.power_on_grace_seconds",
            format!(
                "{grace_seconds} is too short for a BMC to report the power-on; set at least {MIN_POWER_ON_GRACE_SECONDS} seconds (the default is 90)"
            ),
        ));
    }
    Ok(BmcConfig {
        timeout: Duration::from_secs(timeout_seconds),
        power_on_grace: Duration::from_secs(grace_seconds),
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
        assert_eq!(config.image_rehash_interval, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn rehash_interval_zero_is_rejected() {
        let error = parse(&format!("{MINIMAL}[images]\nrehash_interval_hours = 0\n"))
            .expect_err("zero interval")
            .to_string();
        assert!(
            error.contains("key `images.rehash_interval_hours`"),
            "{error}"
        );
    }

    #[test]
    fn rehash_interval_is_read_in_hours() {
        let config =
            parse(&format!("{MINIMAL}[images]\nrehash_interval_hours = 6\n")).expect("valid");
        assert_eq!(config.image_rehash_interval, Duration::from_secs(6 * 3600));
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

    #[test]
    fn bmc_timeout_zero_is_rejected() {
        let error = parse(&format!("{MINIMAL}[bmc]\ntimeout_seconds = 0\n"))
            .expect_err("zero timeout")
            .to_string();
        assert!(error.contains("key `bmc.timeout_seconds`"), "{error}");
    }

    #[test]
    fn bmc_timeout_above_limit_is_rejected() {
        let error = parse(&format!("{MINIMAL}[bmc]\ntimeout_seconds = 601\n"))
            .expect_err("long timeout")
            .to_string();
        assert!(error.contains("key `bmc.timeout_seconds`"), "{error}");
    }

    #[test]
    fn bmc_timeout_at_limit_is_accepted() {
        let config = parse(&format!("{MINIMAL}[bmc]\ntimeout_seconds = 600\n")).expect("valid");
        assert_eq!(config.bmc.timeout, Duration::from_secs(600));
    }

    #[test]
    fn short_power_on_grace_is_rejected() {
        let error = parse(&format!("{MINIMAL}[bmc]\npower_on_grace_seconds = 4\n"))
            .expect_err("short grace")
            .to_string();
        assert!(
            error.contains("key `bmc.power_on_grace_seconds`"),
            "{error}"
        );
    }

    #[test]
    fn power_on_grace_at_minimum_is_accepted() {
        let config =
            parse(&format!("{MINIMAL}[bmc]\npower_on_grace_seconds = 5\n")).expect("valid");
        assert_eq!(config.bmc.power_on_grace, Duration::from_secs(5));
    }
}
