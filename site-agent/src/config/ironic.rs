//! The `[ironic]` section: serving an Ironic conductor's boot files and
//! images, for nodes whose driver is `ironic`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIronic {
    http_root: PathBuf,
    conductor_listen: String,
    conductor_url: Option<String>,
}

/// The agent's settings for the site's Ironic conductor.
#[derive(Debug, Clone)]
pub struct IronicConfig {
    /// The conductor's `[deploy] http_root`: the iPXE scripts, kernels and
    /// ramdisks it prepares per node. The boot HTTP server serves it under
    /// `/ironic/`, so the conductor's `[deploy] http_url` is
    /// `http://<pxe.server_ip>:<pxe.http_port>/ironic`.
    pub http_root: PathBuf,
    /// The address where the agent serves its verified images to the conductor, which
    /// fetches a deployment's kernel and ramdisk itself. The address is in
    /// the agent's own network namespace, not the provisioning one.
    pub conductor_listen: SocketAddr,
    /// The base URL the conductor uses for that listener.
    pub conductor_url: String,
}

pub(super) fn check_ironic(
    raw: RawIronic,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<IronicConfig, ConfigError> {
    let conductor_listen: SocketAddr = raw.conductor_listen.parse().map_err(|_| {
        invalid(
            "ironic.conductor_listen",
            format!(
                "{:?} is not an address such as \"127.0.0.1:8181\"",
                raw.conductor_listen
            ),
        )
    })?;
    let conductor_url = match raw.conductor_url {
        Some(url) => {
            let url = url.trim().trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "ironic.conductor_url",
                    format!("{url:?} is not an http:// URL"),
                ));
            }
            url
        }
        None if conductor_listen.ip().is_unspecified() => {
            return Err(invalid(
                "ironic.conductor_url",
                format!(
                    "conductor_listen {conductor_listen} listens on every address; set conductor_url to the one the conductor uses"
                ),
            ));
        }
        None => format!("http://{conductor_listen}"),
    };
    Ok(IronicConfig {
        http_root: resolve(&raw.http_root),
        conductor_listen,
        conductor_url,
    })
}
