//! The Redfish driver: power and boot control of one ComputerSystem over the
//! DMTF Redfish REST API.
//!
//! # Design
//!
//! The driver speaks plain Redfish with HTTP basic auth and JSON, over HTTP
//! or HTTPS. HTTPS uses rustls with `ring` and trusts the public web roots
//! plus the endpoint's PEM certificates, which also pin self-signed BMC
//! certificates (see the `tls` module). Vendor differences stay out of this
//! module: OEM extensions belong to the iDRAC and iLO drivers that will wrap
//! it.
//!
//! - The ComputerSystem URL is resolved on the first call and cached. A
//!   service root endpoint is walked through its Systems collection (see
//!   the `discovery` module). A failed discovery is retried by the next call.
//! - `power_on` and `power_off` read the system first: they skip the reset
//!   when the node is already in the requested state, and pick the
//!   `ResetType` from the values the BMC allows
//!   (`ResetType@Redfish.AllowableValues` or the action's `ActionInfo`).
//! - `set_next_boot` PATCHes `Boot.BootSourceOverrideTarget` and
//!   `BootSourceOverrideEnabled`, after checking the target against the
//!   BMC's allowed values when it lists them.
//! - Every request has the endpoint's timeout, runs in a debug span with
//!   `node` and `url`, and follows redirects only to the same server. Links
//!   from the BMC that point to another server are rejected, so the
//!   credentials go nowhere else.
//!
//! A BMC accepts a reset long before the power state changes (1 to 11
//! seconds on the sushy-tools emulator by default), so callers
//! poll [`BmcDriver::power_state`].

mod client;
mod discovery;
mod resources;
pub(crate) mod tls;

#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

use http::Method;
use rackhand_protocol::MacAddr;
use reqwest::Url;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::driver::{
    BmcDriver, BmcEndpoint, BootOverride, BootPersistence, BootTarget, DriverError, DriverKind,
    PowerState, ResponseProblem,
};
use client::RedfishClient;
use discovery::Target;
use resources::{ActionInfo, ComputerSystem};

/// A driver for one ComputerSystem behind a Redfish service.
#[derive(Debug)]
pub struct RedfishDriver {
    client: RedfishClient,
    target: Target,
    boot_mac: Option<MacAddr>,
    system_url: OnceCell<Url>,
}

impl RedfishDriver {
    /// Checks the endpoint and builds the HTTP client. Sends nothing.
    pub fn new(endpoint: BmcEndpoint) -> Result<Self, DriverError> {
        let target = discovery::parse_target(&endpoint.node, &endpoint.url)?;
        let client = RedfishClient::new(&endpoint)?;
        Ok(RedfishDriver {
            client,
            target,
            boot_mac: endpoint.boot_mac,
            system_url: OnceCell::new(),
        })
    }

    /// Returns the ComputerSystem URL, discovering it on the first call.
    ///
    /// A URL given directly is checked against the boot MAC on the first
    /// call, so that a node record pointing at another machine's BMC fails
    /// before any power action instead of power-cycling that machine.
    pub async fn system_url(&self) -> Result<&Url, DriverError> {
        self.system_url
            .get_or_try_init(|| async {
                match &self.target {
                    Target::System(url) => {
                        if let Some(mac) = self.boot_mac {
                            discovery::check_system_mac(&self.client, url, mac).await?;
                        }
                        Ok(url.clone())
                    }
                    Target::ServiceRoot(root) => {
                        discovery::discover_system(&self.client, root, self.boot_mac).await
                    }
                }
            })
            .await
    }

    async fn system(&self) -> Result<(Url, ComputerSystem), DriverError> {
        let url = self.system_url().await?.clone();
        let system = self.client.get_json(&url).await?;
        Ok((url, system))
    }

    /// Sends `ComputerSystem.Reset` with the first of `preferred` that the
    /// BMC allows (the first one when the BMC lists no allowed values).
    async fn reset(
        &self,
        url: &Url,
        system: &ComputerSystem,
        preferred: &[&'static str],
    ) -> Result<(), DriverError> {
        let reset = system
            .actions
            .as_ref()
            .and_then(|actions| actions.reset.as_ref());
        let Some(reset) = reset else {
            return Err(self.unsupported(
                "power control (the ComputerSystem has no #ComputerSystem.Reset action)",
            ));
        };
        let Some(target) = &reset.target else {
            let problem =
                ResponseProblem::UnexpectedContent("#ComputerSystem.Reset has no target".into());
            return Err(self
                .client
                .invalid_response(&Method::GET, url, problem, b""));
        };
        let target = discovery::resolve(&self.client, url, target)?;

        let allowed = match (&reset.allowed_reset_types, &reset.action_info) {
            (Some(allowed), _) => Some(allowed.clone()),
            (None, Some(info)) => self.allowed_from_action_info(url, info).await?,
            (None, None) => None,
        };
        let reset_type = choose(allowed.as_deref(), preferred).ok_or_else(|| {
            self.unsupported(&format!(
                "ResetType {} (the BMC allows {})",
                preferred.join(" or "),
                allowed.as_deref().unwrap_or_default().join(", ")
            ))
        })?;

        tracing::debug!(node = self.node(), url = %target, reset_type, "sending ComputerSystem.Reset");
        self.client
            .send_json(Method::POST, &target, &json!({ "ResetType": reset_type }))
            .await
    }

    async fn allowed_from_action_info(
        &self,
        system_url: &Url,
        info: &str,
    ) -> Result<Option<Vec<String>>, DriverError> {
        let info_url = discovery::resolve(&self.client, system_url, info)?;
        let info: ActionInfo = self.client.get_json(&info_url).await?;
        let allowed = info
            .parameters
            .into_iter()
            .find(|parameter| parameter.name.as_deref() == Some("ResetType"))
            .and_then(|parameter| parameter.allowable_values);
        Ok(allowed)
    }

    fn unsupported(&self, operation: &str) -> DriverError {
        DriverError::Unsupported {
            node: self.node().to_string(),
            kind: DriverKind::Redfish,
            operation: operation.to_string(),
        }
    }
}

impl BmcDriver for RedfishDriver {
    fn node(&self) -> &str {
        self.client.node()
    }

    fn kind(&self) -> DriverKind {
        DriverKind::Redfish
    }

    async fn power_state(&self) -> Result<PowerState, DriverError> {
        let (url, system) = self.system().await?;
        power_state_of(&self.client, &url, &system)
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        let (url, system) = self.system().await?;
        let state = power_state_of(&self.client, &url, &system)?;
        if matches!(state, PowerState::On | PowerState::PoweringOn) {
            tracing::debug!(node = self.node(), %state, "already on; no reset sent");
            return Ok(());
        }
        self.reset(&url, &system, &["On", "ForceOn"]).await
    }

    async fn power_off(&self, force: bool) -> Result<(), DriverError> {
        let (url, system) = self.system().await?;
        let state = power_state_of(&self.client, &url, &system)?;
        if matches!(state, PowerState::Off | PowerState::PoweringOff) {
            tracing::debug!(node = self.node(), %state, "already off; no reset sent");
            return Ok(());
        }
        let preferred: &[&'static str] = if force {
            &["ForceOff"]
        } else {
            &["GracefulShutdown"]
        };
        self.reset(&url, &system, preferred).await
    }

    async fn set_next_boot(&self, boot: BootOverride) -> Result<(), DriverError> {
        let BootOverride {
            target,
            persistence,
            mode: _,
        } = boot;
        // TODO: apply `boot.mode` through BootSourceOverrideMode.
        let (url, system) = self.system().await?;
        let target_name = boot_target_name(target);
        let allowed = system
            .boot
            .as_ref()
            .and_then(|boot| boot.allowed_targets.as_ref());
        if let Some(allowed) = allowed
            && !allowed.iter().any(|value| value == target_name)
        {
            return Err(self.unsupported(&format!(
                "BootSourceOverrideTarget {target_name} (the BMC allows {})",
                allowed.join(", ")
            )));
        }

        let enabled = match persistence {
            BootPersistence::Once => "Once",
            BootPersistence::Continuous => "Continuous",
        };
        // NOTE: no If-Match header is sent. A BMC that requires the ETag on
        // PATCH rejects the request, which surfaces as DriverError::Http.
        let body = json!({
            "Boot": {
                "BootSourceOverrideTarget": target_name,
                "BootSourceOverrideEnabled": enabled,
            }
        });
        tracing::debug!(
            node = self.node(),
            target = target_name,
            enabled,
            "setting boot override"
        );
        self.client.send_json(Method::PATCH, &url, &body).await
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        let (url, system) = self.system().await?;
        discovery::interface_macs(&self.client, &url, &system)
            .await?
            .ok_or_else(|| {
                self.unsupported(
                    "listing MAC addresses (the ComputerSystem has no EthernetInterfaces)",
                )
            })
    }
}

/// Maps `PowerState`; a missing or null value is an error, never a guess.
fn power_state_of(
    client: &RedfishClient,
    url: &Url,
    system: &ComputerSystem,
) -> Result<PowerState, DriverError> {
    let Some(state) = &system.power_state else {
        let problem =
            ResponseProblem::UnexpectedContent("the ComputerSystem has no PowerState".into());
        return Err(client.invalid_response(&Method::GET, url, problem, b""));
    };
    let state = match state.as_str() {
        "On" => PowerState::On,
        "Off" => PowerState::Off,
        "PoweringOn" => PowerState::PoweringOn,
        "PoweringOff" => PowerState::PoweringOff,
        other => PowerState::Unknown(other.to_string()),
    };
    Ok(state)
}

/// Returns the Redfish `BootSourceOverrideTarget` value for `target`.
fn boot_target_name(target: BootTarget) -> &'static str {
    match target {
        BootTarget::Pxe => "Pxe",
        BootTarget::Disk => "Hdd",
        BootTarget::Cd => "Cd",
        BootTarget::UefiHttp => "UefiHttp",
        BootTarget::BiosSetup => "BiosSetup",
    }
}

/// Returns the first of `preferred` that `allowed` contains, or the first of
/// `preferred` when the BMC did not list allowed values.
fn choose(allowed: Option<&[String]>, preferred: &[&'static str]) -> Option<&'static str> {
    match allowed {
        None => preferred.first().copied(),
        Some(allowed) => preferred
            .iter()
            .copied()
            .find(|wanted| allowed.iter().any(|value| value == wanted)),
    }
}
