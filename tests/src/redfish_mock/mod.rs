//! A Redfish BMC mock in several vendors' shapes, for testing Redfish
//! clients against what iDRAC, iLO, XCC, Supermicro and OpenBMC serve.
//!
//! # Use
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use rackhand_e2e::redfish_mock::{MockConfig, RedfishMock, Vendor};
//!
//! let mock = RedfishMock::start(MockConfig::new(Vendor::Dell)).await?;
//! let url = mock.url(); // "http://127.0.0.1:PORT", the BMC address
//! let (user, password) = (mock.username(), mock.password());
//! // … drive the client against `url` …
//! assert_eq!(mock.power_state(), "On");
//! # Ok(()) }
//! ```
//!
//! The mock listens on a random loopback port and stops when dropped.
//! Resources come from `tests/fixtures/redfish/<vendor>/*.json`.
//!
//! # What it serves
//!
//! Service root, the Systems/Managers/Chassis collections, one
//! ComputerSystem (PowerState, Boot with AllowableValues, ProcessorSummary,
//! MemorySummary, Processors, Memory, EthernetInterfaces with MACs, Storage
//! with Drives), one Manager (SerialConsole, its own NIC), one Chassis
//! (Thermal and Power, or ThermalSubsystem and Sensors on OpenBMC),
//! UpdateService/FirmwareInventory, VirtualMedia, SessionService and
//! TaskService. [`RedfishMock::system_path`] and friends give each
//! profile's paths; a client should still discover them from the root.
//!
//! # Behaviour
//!
//! - `ComputerSystem.Reset` changes `PowerState` (through `PoweringOn` when
//!   [`MockConfig::power_on_delay`] is set). A boot uses up a `Once` boot
//!   override (`BootSourceOverrideEnabled` returns to `Disabled`), while
//!   `Continuous` stays.
//! - PATCH of the system's `Boot` is checked against the AllowableValues.
//! - `InsertMedia`/`EjectMedia` change the slot's `Image`, `Inserted`,
//!   `ConnectedVia`; inserting into a full slot is 409.
//! - Sessions: `POST /redfish/v1/SessionService/Sessions` with `UserName`
//!   and `Password` returns 201, `X-Auth-Token` and `Location`; DELETE of
//!   that location logs out. Basic auth works too unless
//!   [`MockConfig::auth`] says otherwise. Bad credentials get 401 with the
//!   vendor's error body.
//! - Every resource has an `ETag` header (and `@odata.etag` on most
//!   profiles); PATCH honours [`IfMatchPolicy`] with 412 for a stale tag,
//!   428 for a missing required one, and an error body.
//! - Operations listed in [`MockConfig::async_operations`] return 202 with
//!   `Location` (a task monitor) and `Retry-After: 1`. The monitor returns
//!   202 [`MockConfig::task_polls`] times, then per
//!   [`MockConfig::task_outcome`]: 204, or 200 with the Task in `Completed`
//!   or `Exception` with Messages. The effect is applied at completion.
//! - Dell: PATCH of `Bios/Settings` with `@Redfish.SettingsApplyTime`
//!   returns 202 with `Location` of a job under
//!   `Managers/iDRAC.Embedded.1/Jobs/JID_…`. An `OnReset` job stays
//!   `Scheduled` until the next reset, then turns `Running` and `Completed`
//!   after `task_polls` GETs, applying the attributes. The job queue is
//!   cleared with `Oem/Dell/DellJobService` `DeleteJobQueue`.
//!
//! # Vendor differences
//!
//! | profile | system / manager | virtual media | quirks |
//! |---|---|---|---|
//! | `Generic` | `437XR1138R2` / `BMC` | `Systems/437XR1138R2/VirtualMedia/{Floppy1,CD1}` | DMTF mockup shape, 204 on actions |
//! | `Dell` | `System.Embedded.1` / `iDRAC.Embedded.1` | `Systems/…/VirtualMedia/{1,2}`, or `Managers/…/VirtualMedia/{CD,RemovableDisk}` with [`DellVirtualMedia::UnderManager`] | 409 on a reset to the current power state; 412 on an action POST that carries `If-Match`; BIOS jobs; `W/"gen-N"` ETags |
//! | `Hpe` | `1` / `1` | `Managers/1/VirtualMedia/2` (CD), `/1` (USB) | `If-Match` required on PATCH (428 without); `Oem.Hpe` insert/eject actions and `BootOnNextServerReset`; success responses are 200 with a `Success` message inside an `error` envelope; absolute session `Location` |
//! | `Lenovo` | `1` / `1` | `Managers/1/VirtualMedia/EXT1..4` (plus `RDOC`, `Remote`) | no InsertMedia action: mount by PATCH of `Image`/`Inserted` on `EXT` slots, `http://` or `nfs://` images only; `If-Match` required on PATCH (428 without); PATCH returns the resource |
//! | `Supermicro` | `1` / `1` | `Managers/1/VirtualMedia/CD1` | InsertMedia rejects `Inserted`/`WriteProtected` (400 naming each); licence errors `SMC.1.0.OemLicenseNotPassed` when [`MockConfig::supermicro_licensed`] is false; eject keeps `ImageName`; SimpleStorage |
//! | `OpenBmc` | `system` / `bmc` | `Managers/bmc/VirtualMedia/Slot_2`, `Slot_3` (`Slot_0`/`Slot_1` are proxy slots without InsertMedia) | no host EthernetInterfaces (no boot MAC); Sensors instead of Thermal/Power; 200 with a success message on reset and PATCH, 200 with an empty body on media actions; `https://` or `smb://` images only; strong ETags without `@odata.etag` |
//!
//! Query parameters (`$expand`, `$select`) are ignored: every GET returns
//! the plain resource. Only HTTP/1.1 is served.
//!
//! Error bodies follow each vendor's shape (see `errors.rs`); every one
//! carries `error.@Message.ExtendedInfo[*].MessageId`.
//!
//! # Knobs
//!
//! [`RedfishMock::inject_fault`] breaks a path ([`Fault`]: HTML page,
//! truncated body, cut or invalid JSON, no response, ExtendedInfo error,
//! licence error, 503). [`RedfishMock::set_unavailable`] fails the next N
//! requests with 503 and `Retry-After`. [`RedfishMock::add_redirect`]
//! redirects a path to the same host or to another host.
//! [`RedfishMock::update_resource`] changes a resource behind the client's
//! back (a stale ETag). [`RedfishMock::expire_sessions`] logs every session
//! out. [`RedfishMock::requests`] lists what the client
//! sent, passwords redacted. With [`MockConfig::tls`] the mock serves HTTPS
//! with a fresh CA; [`RedfishMock::tls`] gives the CA PEM and the SHA-256
//! of the server and CA certificates for pinning.

mod errors;
mod faults;
mod fixtures;
mod jobs;
mod media;
mod operations;
mod profile;
mod server;
mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use faults::{Fault, FaultRule, HANG_LIMIT, Redirect};
pub use profile::{AsyncOperation, AuthMode, DellVirtualMedia, IfMatchPolicy, Vendor};
pub use state::{RecordedRequest, RequestAuth, TaskOutcome};
pub use tls::TlsMaterial;

use server::Shared;
use state::{Settings, State};

/// How to start a mock. [`MockConfig::new`] gives the vendor's defaults.
#[derive(Clone)]
pub struct MockConfig {
    pub vendor: Vendor,
    pub username: String,
    pub password: String,
    /// Accepted authentication; `None` takes [`AuthMode::SessionOrBasic`].
    pub auth: Option<AuthMode>,
    /// The `If-Match` rule on PATCH; `None` takes the vendor's (HPE
    /// requires it, Supermicro ignores it, the others check it when sent).
    pub if_match: Option<IfMatchPolicy>,
    /// Serve HTTPS with a certificate from a fresh CA.
    pub tls: bool,
    /// Where the Dell profile serves virtual media.
    pub dell_virtual_media: DellVirtualMedia,
    /// The system's power state at start.
    pub powered_on: bool,
    /// How long a powering-on system reports `PoweringOn`; zero goes to `On`
    /// at once.
    pub power_on_delay: Duration,
    /// Operations that return 202 and a task monitor; `None` takes the
    /// vendor's (Dell: BIOS settings).
    pub async_operations: Option<Vec<AsyncOperation>>,
    /// How many polls of a task monitor (or Dell job) return 202 (or
    /// `Running`) before the task finishes.
    pub task_polls: u32,
    pub task_outcome: TaskOutcome,
    /// Whether the Supermicro profile has its virtual media and storage
    /// licence; without it those fail with `SMC.1.0.OemLicenseNotPassed`.
    pub supermicro_licensed: bool,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("vendor", &self.vendor)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("auth", &self.auth)
            .field("if_match", &self.if_match)
            .field("tls", &self.tls)
            .field("dell_virtual_media", &self.dell_virtual_media)
            .field("powered_on", &self.powered_on)
            .field("power_on_delay", &self.power_on_delay)
            .field("async_operations", &self.async_operations)
            .field("task_polls", &self.task_polls)
            .field("task_outcome", &self.task_outcome)
            .field("supermicro_licensed", &self.supermicro_licensed)
            .finish()
    }
}

impl MockConfig {
    pub fn new(vendor: Vendor) -> Self {
        MockConfig {
            vendor,
            username: "admin".to_string(),
            password: "mock-password-7Kq2".to_string(),
            auth: None,
            if_match: None,
            tls: false,
            dell_virtual_media: DellVirtualMedia::default(),
            powered_on: false,
            power_on_delay: vendor.default_power_on_delay(),
            async_operations: None,
            task_polls: 2,
            task_outcome: TaskOutcome::Completed,
            supermicro_licensed: true,
        }
    }
}

/// A running mock; stops when dropped.
#[derive(Debug)]
pub struct RedfishMock {
    shared: Arc<Shared>,
    address: SocketAddr,
    tls: Option<TlsMaterial>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl RedfishMock {
    /// Loads the vendor's fixtures and starts serving on `127.0.0.1` at a
    /// random port.
    pub async fn start(config: MockConfig) -> anyhow::Result<RedfishMock> {
        let vendor = config.vendor;
        let resources = fixtures::load(vendor, config.dell_virtual_media)?;
        let (system, manager, chassis) = vendor.paths();
        let settings = Settings {
            vendor,
            username: config.username.clone(),
            password: config.password.clone(),
            auth: config.auth.unwrap_or(AuthMode::SessionOrBasic),
            if_match: config.if_match.unwrap_or(vendor.default_if_match()),
            async_operations: config
                .async_operations
                .clone()
                .unwrap_or_else(|| vendor.default_async_operations()),
            task_polls: config.task_polls,
            task_outcome: config.task_outcome.clone(),
            power_on_delay: config.power_on_delay,
            supermicro_licensed: config.supermicro_licensed,
            system: system.to_string(),
            manager: manager.to_string(),
            chassis: chassis.to_string(),
        };
        let mut state = State::new(settings, resources);
        if config.powered_on {
            state.write_power_state("On");
        }

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Redfish mock on 127.0.0.1")?;
        let address = listener.local_addr()?;
        let (tls, acceptor) = match config.tls {
            true => {
                let (material, acceptor) = tls::generate()?;
                (Some(material), Some(acceptor))
            }
            false => (None, None),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: std::sync::Mutex::new(state),
            shutdown: shutdown.clone(),
            base_url: format!("{scheme}://{address}"),
        });
        let router = server::router(shared.clone());
        let handle = tokio::spawn(server::serve(listener, router, acceptor, shutdown));
        Ok(RedfishMock {
            shared,
            address,
            tls,
            stop,
            server: handle,
        })
    }

    /// Returns the BMC address: `http://127.0.0.1:PORT` (or `https://`), no path.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn username(&self) -> String {
        self.shared.lock().settings.username.clone()
    }

    pub fn password(&self) -> String {
        self.shared.lock().settings.password.clone()
    }

    pub fn vendor(&self) -> Vendor {
        self.shared.lock().vendor()
    }

    /// Returns the CA and fingerprints when the mock serves HTTPS.
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// Returns the ComputerSystem's path, e.g. `/redfish/v1/Systems/System.Embedded.1`.
    pub fn system_path(&self) -> String {
        self.shared.lock().settings.system.clone()
    }

    pub fn manager_path(&self) -> String {
        self.shared.lock().settings.manager.clone()
    }

    pub fn chassis_path(&self) -> String {
        self.shared.lock().settings.chassis.clone()
    }

    /// Paths of the virtual media slots that accept a CD image by URL, in
    /// the order a client would pick them.
    pub fn cd_slot_paths(&self) -> Vec<String> {
        let state = self.shared.lock();
        state
            .resources
            .iter()
            .filter(|(path, body)| {
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                parent.ends_with("/VirtualMedia")
                    && body["MediaTypes"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|m| m == "CD"))
                    && (body["Actions"].get("#VirtualMedia.InsertMedia").is_some()
                        || (state.vendor().mounts_by_patch()
                            && path
                                .rsplit('/')
                                .next()
                                .is_some_and(|s| s.starts_with("EXT"))))
            })
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Returns the system's current `PowerState`.
    pub fn power_state(&self) -> String {
        self.shared.lock().power_state()
    }

    /// Sets the power state directly (`"On"`, `"Off"`, `"PoweringOn"`…).
    pub fn set_power_state(&self, state: &str) {
        let mut guard = self.shared.lock();
        guard.powering_on_until = None;
        guard.write_power_state(state);
    }

    /// Returns the resource at `path` as the client would read it, if it exists.
    pub fn resource(&self, path: &str) -> Option<Value> {
        let mut state = self.shared.lock();
        state.power_state();
        state.get(&state::normalize(path))
    }

    /// Merges `patch` into the resource at `path` (as another client would)
    /// and moves its ETag on. Returns false when there is no such resource.
    pub fn update_resource(&self, path: &str, patch: &Value) -> bool {
        self.shared.lock().merge(&state::normalize(path), patch)
    }

    /// Returns the current `ETag` of the resource at `path`.
    pub fn etag(&self, path: &str) -> String {
        self.shared.lock().etag(&state::normalize(path))
    }

    /// Returns every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Returns how many sessions are logged in.
    pub fn active_sessions(&self) -> usize {
        self.shared.lock().sessions.len()
    }

    /// Logs every session out, as a BMC reboot or a session timeout does;
    /// their tokens get 401 from then on.
    pub fn expire_sessions(&self) {
        let mut state = self.shared.lock();
        let paths: Vec<String> = state.sessions.values().map(|s| s.path.clone()).collect();
        state.sessions.clear();
        for path in paths {
            state.resources.remove(&path);
            state.remove_member("/redfish/v1/SessionService/Sessions", &path);
        }
    }

    /// Adds a fault; the first matching rule wins.
    pub fn inject_fault(&self, rule: FaultRule) {
        self.shared.lock().faults.push(rule);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Fails the next `count` requests, whatever their path, with 503 and
    /// `Retry-After: retry_after_secs`.
    pub fn set_unavailable(&self, count: u32, retry_after_secs: u32) {
        self.shared.lock().unavailable = Some((count, retry_after_secs));
    }

    /// Redirects requests for `from` (any method) with 307.
    pub fn add_redirect(&self, from: &str, to: Redirect) {
        self.shared
            .lock()
            .redirects
            .push((state::normalize(from), to));
    }

    /// Stops listening and closes open connections, including hung ones.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for RedfishMock {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.server.abort();
    }
}
