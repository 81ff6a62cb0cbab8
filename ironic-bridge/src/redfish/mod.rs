//! The Redfish driver: power, boot, virtual media, inventory, sensors and
//! console of one ComputerSystem over the DMTF Redfish REST API, with the
//! vendor profiles for Dell iDRAC, HPE iLO, Lenovo XCC, Supermicro and
//! OpenBMC.
//!
//! # Design
//!
//! One driver serves the `redfish`, `idrac` and `ilo` kinds. It reads the
//! service root once, which links the Systems, Managers, Chassis and
//! UpdateService. The root also decides between sessions and basic auth
//! (see `session`) and selects the vendor profile (see `profile`), unless
//! the `idrac` or `ilo` kind fixes it.
//! HTTPS uses rustls with the public web roots plus the endpoint's PEM
//! certificates, or only the certificate with the endpoint's SHA-256
//! fingerprint (see `tls`).
//!
//! - The ComputerSystem URL is resolved on the first call and cached. A
//!   service root endpoint is walked through its Systems collection (see
//!   the `discovery` module). A failed discovery is retried by the next call.
//! - Every operation reads before it writes: `power_on`, `power_off`,
//!   `set_next_boot`, `insert_media` and `eject_media` send nothing when the
//!   BMC already is in the requested state.
//! - `ComputerSystem.Reset` picks the `ResetType` from the values the BMC
//!   allows (`ResetType@Redfish.AllowableValues` or the action's
//!   `ActionInfo`).
//! - PATCHes carry `If-Match` and are retried once on 412 (see `update`);
//!   a 202 with `Location` is polled to the end (see `task`).
//! - Every request has the endpoint's timeout (or the vendor's, when the
//!   endpoint keeps the default), runs in a debug span with `node` and
//!   `url`, and follows redirects only to the same server. Links from the
//!   BMC that point to another server are rejected, so the credentials go
//!   nowhere else.
//!
//! A BMC accepts a reset long before the power state changes (1 to 11
//! seconds on the sushy-tools emulator by default), so callers
//! poll [`BmcDriver::power_state`].

mod boot;
mod client;
mod discovery;
mod inventory;
mod media;
mod oem;
mod profile;
mod resources;
mod service;
mod session;
mod task;
pub(crate) mod tls;
mod update;

#[cfg(test)]
mod profile_tests;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

use std::time::Duration;

use http::Method;
use rackhand_protocol::MacAddr;
use rackhand_protocol::hardware::{Inventory, Sensors};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::driver::{
    BmcDriver, BmcEndpoint, BootOverride, BootTarget, Console, DriverError, DriverKind, PowerState,
    ResponseProblem,
};
use client::{Extra, RedfishClient};
use discovery::{Target, resolve};
use media::MediaSlot;
pub use profile::Vendor;
use resources::{ActionInfo, ComputerSystem};
use service::Service;

/// Maximum Managers and Chassis read for one system.
const MAX_LINKED: usize = 8;

/// A driver for one ComputerSystem behind a Redfish service.
///
/// Dropping the driver logs out of its session in the background;
/// [`RedfishDriver::close`] logs out and waits for it.
#[derive(Debug)]
pub struct RedfishDriver {
    kind: DriverKind,
    client: RedfishClient,
    target: Target,
    boot_mac: Option<MacAddr>,
    service: OnceCell<Service>,
    system_url: OnceCell<Url>,
    task_deadline: Option<Duration>,
}

/// A ComputerSystem as last read: its URL, JSON and ETag.
struct System {
    url: Url,
    json: Value,
    etag: Option<String>,
}

impl RedfishDriver {
    /// Checks the endpoint and builds the HTTP client. Sends nothing.
    ///
    /// `endpoint.kind` is `redfish`, `idrac` or `ilo`; the last two fix the
    /// vendor profile instead of detecting it.
    pub fn new(endpoint: BmcEndpoint) -> Result<Self, DriverError> {
        let target = discovery::parse_target(&endpoint.node, &endpoint.url)?;
        let client = RedfishClient::new(&endpoint)?;
        Ok(RedfishDriver {
            kind: endpoint.kind,
            client,
            target,
            boot_mac: endpoint.boot_mac,
            service: OnceCell::new(),
            system_url: OnceCell::new(),
            task_deadline: None,
        })
    }

    /// Sets how long task monitors are polled, in place of the vendor's
    /// default.
    pub fn with_task_deadline(mut self, deadline: Duration) -> Self {
        self.task_deadline = Some(deadline);
        self
    }

    /// Logs out of the Redfish session, if one is open. Later calls log in
    /// again.
    pub async fn close(&self) -> Result<(), DriverError> {
        self.client.close().await
    }

    /// Returns the vendor profile, reading the service root on first use.
    pub async fn vendor(&self) -> Result<Vendor, DriverError> {
        Ok(self.service().await?.vendor)
    }

    async fn service(&self) -> Result<&Service, DriverError> {
        self.service
            .get_or_try_init(|| async {
                let fixed = profile::Vendor::from_kind(self.kind);
                match &self.target {
                    Target::ServiceRoot(root) => {
                        service::discover_service(&self.client, root, fixed, false).await
                    }
                    Target::System(system) => {
                        let root = service::root_of_system(system);
                        service::discover_service(&self.client, &root, fixed, true).await
                    }
                }
            })
            .await
    }

    fn task_deadline(&self, service: &Service) -> Duration {
        self.task_deadline
            .unwrap_or_else(|| service.vendor.task_deadline())
    }

    /// Returns the ComputerSystem URL, discovering it on the first call.
    ///
    /// A URL given directly is checked against the boot MAC on the first
    /// call, so that a node record pointing at another machine's BMC fails
    /// before any power action instead of power-cycling that machine.
    pub async fn system_url(&self) -> Result<&Url, DriverError> {
        let service = self.service().await?;
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
                        discovery::discover_system(
                            &self.client,
                            root,
                            service.systems.as_ref(),
                            self.boot_mac,
                        )
                        .await
                    }
                }
            })
            .await
    }

    async fn read_system(&self) -> Result<System, DriverError> {
        let url = self.system_url().await?.clone();
        let (json, header): (Value, Option<String>) = self.client.get_with_etag(&url).await?;
        let etag = update::etag_of(header, &json);
        Ok(System { url, json, etag })
    }

    fn typed(&self, system: &System) -> Result<ComputerSystem, DriverError> {
        serde_json::from_value(system.json.clone()).map_err(|error| {
            let problem = ResponseProblem::UnexpectedContent(error.to_string());
            self.client
                .invalid_response(&Method::GET, &system.url, problem, b"")
        })
    }

    /// Reads the Managers of the system: `Links.ManagedBy`, else every
    /// member of the service's Managers collection.
    async fn managers(&self, system: &System) -> Result<Vec<(Url, Value)>, DriverError> {
        let service = self.service().await?;
        let linked: Vec<&str> = system
            .json
            .pointer("/Links/ManagedBy")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|link| link.get("@odata.id").and_then(Value::as_str))
            .collect();
        let urls = if linked.is_empty() {
            match &service.managers {
                Some(collection) => {
                    service::optional(service::members(&self.client, collection, MAX_LINKED).await)?
                        .unwrap_or_default()
                }
                None => Vec::new(),
            }
        } else {
            linked
                .iter()
                .take(MAX_LINKED)
                .map(|id| resolve(&self.client, &system.url, id))
                .collect::<Result<_, _>>()?
        };
        self.read_all(urls).await
    }

    /// Reads the Chassis of the system: `Links.Chassis`, else every member
    /// of the service's Chassis collection.
    async fn chassis(&self, system: &System) -> Result<Vec<(Url, Value)>, DriverError> {
        let service = self.service().await?;
        let linked: Vec<&str> = system
            .json
            .pointer("/Links/Chassis")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|link| link.get("@odata.id").and_then(Value::as_str))
            .collect();
        let urls = if linked.is_empty() {
            match &service.chassis {
                Some(collection) => {
                    service::optional(service::members(&self.client, collection, MAX_LINKED).await)?
                        .unwrap_or_default()
                }
                None => Vec::new(),
            }
        } else {
            linked
                .iter()
                .take(MAX_LINKED)
                .map(|id| resolve(&self.client, &system.url, id))
                .collect::<Result<_, _>>()?
        };
        self.read_all(urls).await
    }

    async fn read_all(&self, urls: Vec<Url>) -> Result<Vec<(Url, Value)>, DriverError> {
        let mut resources = Vec::with_capacity(urls.len());
        for url in urls {
            if let Some(json) = service::optional(self.client.get_json::<Value>(&url).await)? {
                resources.push((url, json));
            }
        }
        Ok(resources)
    }

    async fn find_virtual_cd(&self, system: &System) -> Result<Option<MediaSlot>, DriverError> {
        let managers = self.managers(system).await?;
        let vendor = self.service().await?.vendor;
        media::find_cd(&self.client, vendor, &system.url, &system.json, &managers).await
    }

    async fn virtual_cd(&self, system: &System) -> Result<MediaSlot, DriverError> {
        self.find_virtual_cd(system).await?.ok_or_else(|| {
            self.unsupported("virtual media (no virtual CD under the System or its Managers)")
        })
    }

    /// Sends `ComputerSystem.Reset` with the first of `preferred` that the
    /// BMC allows (the first one when the BMC lists no allowed values), and
    /// waits for a task the BMC starts for it.
    async fn send_reset(
        &self,
        system: &System,
        preferred: &[&'static str],
    ) -> Result<(), DriverError> {
        let typed = self.typed(system)?;
        let url = &system.url;
        let reset = typed
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
        let target = resolve(&self.client, url, target)?;

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

        let action = system.json.pointer("/Actions/#ComputerSystem.Reset");
        let body = update::with_operation_apply_time(action, json!({ "ResetType": reset_type }));
        tracing::debug!(node = self.node(), url = %target, reset_type, "sending ComputerSystem.Reset");
        let reply = self
            .client
            .send(Method::POST, &target, Some(&body), Extra::default())
            .await?;
        let deadline = self.task_deadline(self.service().await?);
        task::wait_for_task(&self.client, &target, &reply, deadline).await
    }

    async fn allowed_from_action_info(
        &self,
        system_url: &Url,
        info: &str,
    ) -> Result<Option<Vec<String>>, DriverError> {
        let info_url = resolve(&self.client, system_url, info)?;
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
            kind: self.kind,
            operation: operation.to_string(),
        }
    }
}

impl BmcDriver for RedfishDriver {
    fn node(&self) -> &str {
        self.client.node()
    }

    fn kind(&self) -> DriverKind {
        self.kind
    }

    async fn power_state(&self) -> Result<PowerState, DriverError> {
        let system = self.read_system().await?;
        power_state_of(&self.client, &system.url, &self.typed(&system)?)
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        let system = self.read_system().await?;
        let state = power_state_of(&self.client, &system.url, &self.typed(&system)?)?;
        if matches!(state, PowerState::On | PowerState::PoweringOn) {
            tracing::debug!(node = self.node(), %state, "already on; no reset sent");
            return Ok(());
        }
        self.send_reset(&system, &["On", "ForceOn"]).await
    }

    async fn power_off(&self, force: bool) -> Result<(), DriverError> {
        let system = self.read_system().await?;
        let state = power_state_of(&self.client, &system.url, &self.typed(&system)?)?;
        if matches!(state, PowerState::Off | PowerState::PoweringOff) {
            tracing::debug!(node = self.node(), %state, "already off; no reset sent");
            return Ok(());
        }
        let preferred: &[&'static str] = if force {
            &["ForceOff"]
        } else {
            &["GracefulShutdown"]
        };
        self.send_reset(&system, preferred).await
    }

    async fn reset(&self) -> Result<(), DriverError> {
        let system = self.read_system().await?;
        let state = power_state_of(&self.client, &system.url, &self.typed(&system)?)?;
        match state {
            PowerState::Off | PowerState::PoweringOff => {
                self.send_reset(&system, &["On", "ForceOn"]).await
            }
            _ => {
                self.send_reset(&system, &["ForceRestart", "PowerCycle"])
                    .await
            }
        }
    }

    async fn set_next_boot(&self, boot: BootOverride) -> Result<(), DriverError> {
        boot::set_next_boot(self, boot).await
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        let url = self.system_url().await?.clone();
        let system: ComputerSystem = self.client.get_json(&url).await?;
        discovery::interface_macs(&self.client, &url, &system)
            .await?
            .ok_or_else(|| {
                self.unsupported(
                    "listing MAC addresses (the ComputerSystem has no EthernetInterfaces)",
                )
            })
    }

    async fn insert_media(&self, image_url: &str) -> Result<(), DriverError> {
        let system = self.read_system().await?;
        let slot = self.virtual_cd(&system).await?;
        let service = self.service().await?;
        let deadline = self.task_deadline(service);
        tracing::debug!(node = self.node(), slot = %slot.url, "inserting virtual media");
        media::insert(&self.client, service.vendor, slot, image_url, deadline).await
    }

    async fn eject_media(&self) -> Result<(), DriverError> {
        let system = self.read_system().await?;
        let slot = self.virtual_cd(&system).await?;
        let deadline = self.task_deadline(self.service().await?);
        media::eject(&self.client, &slot, deadline).await
    }

    async fn inventory(&self) -> Result<Inventory, DriverError> {
        let system = self.read_system().await?;
        let managers = self.managers(&system).await?;
        let service = self.service().await?;
        inventory::read_inventory(
            &self.client,
            &system.url,
            &system.json,
            service.update_service.as_ref(),
            managers.first().map(|(_, manager)| manager),
        )
        .await
    }

    async fn sensors(&self) -> Result<Sensors, DriverError> {
        let system = self.read_system().await?;
        let chassis = self.chassis(&system).await?;
        inventory::read_sensors(&self.client, &system.json, &chassis).await
    }

    async fn open_console(&self) -> Result<Console, DriverError> {
        let system = self.read_system().await?;
        let vendor = self.service().await?.vendor;
        for (url, manager) in self.managers(&system).await? {
            let console = inventory::find_console(&self.client, vendor, &url, &manager).await?;
            if let Some(console) = console {
                return Ok(console);
            }
        }
        Err(self.unsupported("serial console (no Manager advertises an enabled SerialConsole)"))
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
