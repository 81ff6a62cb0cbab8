//! The Ironic bridge: drives nodes through an OpenStack Ironic conductor over
//! the Ironic REST API.
//!
//! # Design
//!
//! [`IronicClient`] speaks the API. It negotiates the microversion once from
//! `GET /` (the highest that the server and [`MAX_API_VERSION`] share, at
//! least [`MIN_API_VERSION`]) and sends it with every request. It
//! authenticates with nothing, HTTP basic or a Keystone v3 token, and retries
//! a node locked by its conductor a few times with backoff. Ironic's
//! double-encoded error bodies become the `faultstring` of an
//! [`IronicError`] that names the node and the URL. The provisioning calls ([`IronicClient::enroll`],
//! [`IronicClient::deploy`], [`IronicClient::wait_for_state`], …) are what
//! the site agent's pipeline steps use. Each reads the node and changes only
//! what differs. The order's correlation key is the node's `instance_uuid`.
//!
//! [`IronicDriver`] puts one node behind the [`BmcDriver`] interface, so a
//! node whose BMC record says `ironic` is powered and booted through Ironic
//! like any other. Its endpoint URL names the API and the node:
//!
//! ```text
//! http://ironic.example:6385/v1/nodes/<node name or UUID>
//! ```
//!
//! A path prefix before `/v1` (Ironic behind a proxy) is kept. When the
//! endpoint has a username, the username and password are sent as HTTP basic
//! credentials (`auth_strategy = http_basic`); without one, none are sent
//! (`noauth`).
//!
//! Ironic accepts a power change with 202 and applies it later, so the
//! driver polls the node until `target_power_state` clears (bounded by
//! [`POWER_WAIT`]) and reports Ironic's `last_error` when the change failed.
//! Sensors, virtual media and the console are not offered: Ironic exposes
//! them only through vendor passthru or its own console proxy.

mod client;
mod error;
mod inventory;
mod provision;

use std::time::{Duration, Instant};

use http::Method;
use rackhand_protocol::MacAddr;
use rackhand_protocol::hardware::Inventory;
use serde::Deserialize;
use serde_json::json;

pub use client::{
    ApiVersion, HISTORY_API_VERSION, INVENTORY_API_VERSION, IronicAuth, IronicClient, IronicConfig,
    KeystoneAuth, MAX_API_VERSION, MIN_API_VERSION, ParseApiVersionError, VERSION_HEADER,
    fault_message, negotiate,
};
pub use error::IronicError;
pub use provision::{
    ConfigDrive, DeployRequest, DeployStart, DriverInfo, HistoryEvent, InstanceInfo, Node,
    NodeSpec, StateDeadlines,
};

use crate::driver::{
    BmcDriver, BmcEndpoint, BootMode, BootOverride, BootPersistence, BootTarget, DriverError,
    DriverKind, PowerState, ResponseProblem,
};
use client::segment;

/// Bound on waiting for Ironic to finish a power change. Ironic with
/// sushy-tools needed 2.3 to 11.8 s; real BMCs and a busy conductor take
/// longer.
pub const POWER_WAIT: Duration = Duration::from_secs(120);

/// Pause between two reads of a pending power change.
const POWER_POLL: Duration = Duration::from_millis(250);

/// A driver for one node enrolled in an Ironic conductor.
#[derive(Debug)]
pub struct IronicDriver {
    client: IronicClient,
    /// The node's name or UUID in Ironic, from the endpoint URL.
    ident: String,
    /// The node name Rackhand uses, for errors and logs.
    node: String,
}

impl IronicDriver {
    /// Parses the endpoint URL (`<api root>/v1/nodes/<node>`) and builds the
    /// client. Sends nothing.
    pub fn new(endpoint: BmcEndpoint) -> Result<Self, DriverError> {
        let (base, ident) =
            split_node_url(&endpoint.url).ok_or_else(|| DriverError::InvalidEndpoint {
                node: endpoint.node.clone(),
                url: endpoint.url.clone(),
                reason: "expected <ironic api>/v1/nodes/<node name or uuid>".to_string(),
            })?;
        // TODO: accept Keystone credentials in the BMC record (auth URL,
        // project and domains); until then only IronicClient users get them.
        let auth = if endpoint.username.is_empty() {
            IronicAuth::None
        } else {
            IronicAuth::Basic {
                username: endpoint.username.clone(),
                password: endpoint.password.clone(),
            }
        };
        let config = IronicConfig {
            url: base,
            auth,
            timeout: endpoint.timeout,
            ca_pem: endpoint.ca_pem.clone(),
            max_api_version: None,
        };
        let client = IronicClient::new(config).map_err(|error| match error {
            IronicError::InvalidConfig { url, reason, .. } => DriverError::InvalidEndpoint {
                node: endpoint.node.clone(),
                url,
                reason,
            },
            other => DriverError::from(other),
        })?;
        Ok(IronicDriver {
            client,
            ident,
            node: endpoint.node,
        })
    }

    /// Returns the Ironic client, for the provisioning calls.
    pub fn client(&self) -> &IronicClient {
        &self.client
    }

    /// Returns the node's name or UUID in Ironic.
    pub fn ironic_node(&self) -> &str {
        &self.ident
    }

    fn node_path(&self, tail: &str) -> String {
        format!("/v1/nodes/{}{tail}", segment(&self.ident))
    }

    /// Asks for a power change and waits until Ironic finished it, then
    /// checks that the node reached `expected`.
    async fn change_power(&self, target: &str, expected: &str) -> Result<(), DriverError> {
        let path = self.node_path("/states/power");
        self.client
            .send(
                &self.ident,
                Method::PUT,
                &path,
                Some(&json!({"target": target})),
            )
            .await?;
        tracing::info!(node_id = %self.node, target, "ironic power change requested");

        let started = Instant::now();
        // Ends when Ironic cleared target_power_state or after POWER_WAIT.
        loop {
            let node = self.client.node(&self.ident).await?;
            if node.target_power_state.is_none() {
                if node.power_state.as_deref() == Some(expected) {
                    return Ok(());
                }
                let message = node.last_error.unwrap_or_else(|| {
                    format!("Ironic reports power state {:?}", node.power_state)
                });
                return Err(DriverError::Failed {
                    node: self.node.clone(),
                    url: self.client.url_of(&path),
                    operation: format!("power {target}"),
                    message,
                });
            }
            if started.elapsed() > POWER_WAIT {
                return Err(DriverError::Timeout {
                    node: self.node.clone(),
                    url: self.client.url_of(&path),
                    method: Method::PUT,
                    timeout: POWER_WAIT,
                });
            }
            tokio::time::sleep(POWER_POLL).await;
        }
    }

    async fn current_power(&self) -> Result<Option<String>, DriverError> {
        Ok(self.client.node(&self.ident).await?.power_state)
    }
}

/// Splits `<root>/v1/nodes/<ident>` into the API root and the node.
fn split_node_url(url: &str) -> Option<(String, String)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return None;
    }
    let path = parsed.path().trim_end_matches('/');
    let (prefix, ident) = path.rsplit_once("/v1/nodes/")?;
    if ident.is_empty() || ident.contains('/') {
        return None;
    }
    let mut root = parsed.clone();
    root.set_path(prefix);
    let ident = percent_decode(ident)?;
    Some((root.as_str().trim_end_matches('/').to_string(), ident))
}

/// Decodes `%XX` escapes of a path segment.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Maps Ironic's power fields to a [`PowerState`]; `None` when Ironic
/// reports none (a node never powered through it).
fn power_state_of(power: Option<&str>, target: Option<&str>) -> Option<PowerState> {
    let state = match (power?, target) {
        ("power off", Some("power on" | "rebooting" | "soft rebooting")) => PowerState::PoweringOn,
        ("power on", Some("power off" | "soft power off")) => PowerState::PoweringOff,
        ("power on", _) => PowerState::On,
        ("power off", _) => PowerState::Off,
        (other, _) => PowerState::Unknown(other.to_string()),
    };
    Some(state)
}

fn boot_device_of(target: BootTarget) -> Option<&'static str> {
    match target {
        BootTarget::Pxe => Some("pxe"),
        BootTarget::Disk => Some("disk"),
        BootTarget::Cd => Some("cdrom"),
        BootTarget::BiosSetup => Some("bios"),
        // Ironic's management API has no UEFI HTTP boot device; its http
        // boot interfaces set that up during deploy.
        BootTarget::UefiHttp => None,
    }
}

impl BmcDriver for IronicDriver {
    fn node(&self) -> &str {
        &self.node
    }

    fn kind(&self) -> DriverKind {
        DriverKind::Ironic
    }

    async fn power_state(&self) -> Result<PowerState, DriverError> {
        let node = self.client.node(&self.ident).await?;
        power_state_of(
            node.power_state.as_deref(),
            node.target_power_state.as_deref(),
        )
        .ok_or_else(|| DriverError::InvalidResponse {
            node: self.node.clone(),
            url: self.client.url_of(&self.node_path("")),
            method: Method::GET,
            problem: ResponseProblem::UnexpectedContent(
                "Ironic reports no power_state for the node".to_string(),
            ),
            body: String::new(),
        })
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        if self.current_power().await?.as_deref() == Some("power on") {
            return Ok(());
        }
        self.change_power("power on", "power on").await
    }

    async fn power_off(&self, force: bool) -> Result<(), DriverError> {
        if self.current_power().await?.as_deref() == Some("power off") {
            return Ok(());
        }
        let target = if force { "power off" } else { "soft power off" };
        self.change_power(target, "power off").await
    }

    async fn reset(&self) -> Result<(), DriverError> {
        if self.current_power().await?.as_deref() == Some("power on") {
            self.change_power("rebooting", "power on").await
        } else {
            self.change_power("power on", "power on").await
        }
    }

    async fn set_next_boot(&self, boot: BootOverride) -> Result<(), DriverError> {
        #[derive(Deserialize)]
        struct BootDevice {
            boot_device: Option<String>,
            persistent: Option<bool>,
        }

        let device = boot_device_of(boot.target)
            .ok_or_else(|| crate::driver::unsupported(self, "UEFI HTTP boot override"))?;
        let persistent = boot.persistence == BootPersistence::Continuous;

        if let Some(mode) = boot.mode {
            let requested_mode = match mode {
                BootMode::Uefi => "uefi",
                BootMode::Legacy => "bios",
            };
            let node = self.client.node(&self.ident).await?;
            if node.boot_mode.as_deref() != Some(requested_mode) {
                let path = self.node_path("/states/boot_mode");
                self.client
                    .send(
                        &self.ident,
                        Method::PUT,
                        &path,
                        Some(&json!({"target": requested_mode})),
                    )
                    .await?;
            }
        }

        let path = self.node_path("/management/boot_device");
        let current: BootDevice = self.client.get_json(&self.ident, &path).await?;
        if current.boot_device.as_deref() == Some(device) && current.persistent == Some(persistent)
        {
            return Ok(());
        }
        let body = json!({"boot_device": device, "persistent": persistent});
        self.client
            .send(&self.ident, Method::PUT, &path, Some(&body))
            .await?;
        tracing::info!(node_id = %self.node, boot_device = device, persistent, "ironic boot device set");
        Ok(())
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        let node = self.client.node(&self.ident).await?;
        inventory::port_macs(&self.client, &self.ident, &node.uuid)
            .await
            .map_err(DriverError::from)
    }

    async fn inventory(&self) -> Result<Inventory, DriverError> {
        inventory::read(&self.client, &self.ident)
            .await
            .map_err(DriverError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::{power_state_of, split_node_url};
    use crate::driver::PowerState;

    #[test]
    fn node_url_splits_into_root_and_node() {
        let (root, node) = split_node_url("http://ironic:6385/v1/nodes/rack1-n4").expect("valid");
        assert_eq!(root, "http://ironic:6385");
        assert_eq!(node, "rack1-n4");
    }

    #[test]
    fn node_url_keeps_path_prefix() {
        let (root, _) =
            split_node_url("https://cloud.example/baremetal/v1/nodes/abc/").expect("valid");
        assert_eq!(root, "https://cloud.example/baremetal");
    }

    #[test]
    fn node_url_without_node_is_rejected() {
        assert!(split_node_url("http://ironic:6385/v1/nodes/").is_none());
        assert!(split_node_url("http://ironic:6385/").is_none());
        assert!(split_node_url("http://ironic:6385/v1/nodes/a/ports").is_none());
    }

    #[test]
    fn pending_power_change_reads_as_transition() {
        assert_eq!(
            power_state_of(Some("power off"), Some("power on")),
            Some(PowerState::PoweringOn)
        );
        assert_eq!(power_state_of(Some("power on"), None), Some(PowerState::On));
        assert_eq!(power_state_of(None, None), None);
    }
}
