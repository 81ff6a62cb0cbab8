//! The provisioning calls the pipeline makes through Ironic: enroll, manage,
//! inspect, provide, `instance_info`, deploy with a configdrive, wait for
//! `active`, undeploy, rescue and abort.
//!
//! Each call reads the node first and changes only what differs, so a retried
//! step continues where the first try stopped. The order's correlation key is
//! the node's `instance_uuid`: deploy sets it before it starts, and a second
//! deploy with the same key finds the deployment in progress instead of
//! starting another one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use http::Method;
use rackhand_protocol::{MacAddr, Secret};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::{HISTORY_API_VERSION, IronicClient, segment};
use super::error::IronicError;

/// The node fields every state read requests.
const NODE_FIELDS: &str = "uuid,name,driver,provision_state,target_provision_state,power_state,\
target_power_state,last_error,instance_uuid,maintenance,properties,boot_mode";

/// States from which Ironic goes nowhere by itself after a failure.
const FAILURE_STATES: &[&str] = &[
    "deploy failed",
    "clean failed",
    "inspect failed",
    "rescue failed",
    "unrescue failed",
    "adopt failed",
    "service failed",
    "error",
];

/// States in which a deployment is under way or done.
const DEPLOYING_STATES: &[&str] = &["deploying", "wait call-back", "deploy wait", "active"];

/// A node as the provisioning calls read it.
#[derive(Debug, Clone, Deserialize)]
pub struct Node {
    pub uuid: String,
    pub name: Option<String>,
    #[serde(default)]
    pub driver: Option<String>,
    pub provision_state: String,
    pub target_provision_state: Option<String>,
    pub power_state: Option<String>,
    pub target_power_state: Option<String>,
    pub last_error: Option<String>,
    pub instance_uuid: Option<String>,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub boot_mode: Option<String>,
    /// The boot interface, such as `ipxe` or `redfish-virtual-media`.
    #[serde(default)]
    pub boot_interface: Option<String>,
}

/// `driver_info` of a node: plain values and secrets (BMC passwords). The
/// secrets are sent to Ironic and kept out of `Debug`.
#[derive(Debug, Clone, Default)]
pub struct DriverInfo {
    values: Map<String, Value>,
    secrets: BTreeMap<String, Secret>,
}

impl DriverInfo {
    pub fn new() -> Self {
        DriverInfo::default()
    }

    /// Sets a plain value such as `redfish_address`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.values.insert(key.to_string(), value.into());
        self
    }

    /// Sets a secret value such as `redfish_password`.
    pub fn set_secret(mut self, key: &str, value: Secret) -> Self {
        self.secrets.insert(key.to_string(), value);
        self
    }

    fn to_json(&self) -> Value {
        let mut all = self.values.clone();
        for (key, value) in &self.secrets {
            all.insert(key.clone(), Value::String(value.expose().clone()));
        }
        Value::Object(all)
    }
}

/// The node that [`IronicClient::enroll`] creates: its hardware type,
/// BMC access, interfaces, properties and ports.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's name, unique in Ironic; enroll reuses a node of this name.
    pub name: String,
    /// The hardware type: `redfish`, `ipmi`, `fake-hardware`, …
    pub driver: String,
    pub driver_info: DriverInfo,
    /// Interfaces by field name, e.g. `deploy_interface` → `ramdisk`.
    pub interfaces: BTreeMap<String, String>,
    /// `cpus`, `memory_mb`, `local_gb`, `cpu_arch`, capabilities, …
    pub properties: Map<String, Value>,
    /// `automated_clean` of the node; `None` keeps Ironic's default. Nodes
    /// deployed without an agent ramdisk need `Some(false)`.
    pub automated_clean: Option<bool>,
    /// MACs of the node's NICs, created as Ironic ports (iPXE and PXE boot
    /// interfaces need one).
    pub ports: Vec<MacAddr>,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>, driver: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            driver: driver.into(),
            driver_info: DriverInfo::new(),
            interfaces: BTreeMap::new(),
            properties: Map::new(),
            automated_clean: None,
            ports: Vec::new(),
        }
    }
}

/// `instance_info` of a deployment.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// The image URL, on the site agent's image server. `None` for a
    /// ramdisk deploy that boots `boot_iso` (Ironic rejects both at once).
    pub image_source: Option<String>,
    /// The image's SHA-256, sent as `image_os_hash_algo`/`image_os_hash_value`.
    pub image_sha256: Option<String>,
    /// `root_device` hints (`{"serial": "..."}`, `{"size": ">= 100"}`, …).
    pub root_device: Option<Value>,
    /// Other per-deploy keys: `kernel`, `ramdisk`, `boot_iso`,
    /// `image_type`, `ramdisk_image_download_source`, …
    pub extra: Map<String, Value>,
}

impl InstanceInfo {
    fn to_json(&self) -> Value {
        let mut info = self.extra.clone();
        if let Some(source) = &self.image_source {
            info.insert("image_source".into(), json!(source));
        }
        if let Some(sha256) = &self.image_sha256 {
            info.insert("image_os_hash_algo".into(), json!("sha256"));
            info.insert("image_os_hash_value".into(), json!(sha256));
        }
        if let Some(hints) = &self.root_device {
            info.insert("root_device".into(), hints.clone());
        }
        Value::Object(info)
    }
}

/// A configdrive as Ironic builds it from JSON (API 1.56).
///
/// `Debug` shows the size of `user_data` only: it often carries a password
/// hash or keys for cloud-init.
#[derive(Clone, Default)]
pub struct ConfigDrive {
    pub meta_data: Value,
    pub user_data: Option<String>,
    pub network_data: Option<Value>,
}

impl fmt::Debug for ConfigDrive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigDrive")
            .field("meta_data", &self.meta_data)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|data| format!("[{} bytes]", data.len())),
            )
            .field("network_data", &self.network_data)
            .finish()
    }
}

impl ConfigDrive {
    fn to_json(&self) -> Value {
        let mut drive = Map::new();
        drive.insert("meta_data".into(), self.meta_data.clone());
        if let Some(user_data) = &self.user_data {
            drive.insert("user_data".into(), json!(user_data));
        }
        if let Some(network_data) = &self.network_data {
            drive.insert("network_data".into(), network_data.clone());
        }
        Value::Object(drive)
    }
}

/// One deployment: the order's correlation key and what to write.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The correlation key, stored as the node's `instance_uuid`.
    pub instance_uuid: String,
    pub instance_info: InstanceInfo,
    pub configdrive: Option<ConfigDrive>,
}

/// The outcome of [`IronicClient::deploy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployStart {
    /// It started a deployment.
    Started,
    /// A deployment with the same `instance_uuid` was already under way or
    /// done, in this provision state; nothing was sent.
    InProgress(String),
}

/// How long a node may stay in each transient state while a call waits.
#[derive(Debug, Clone)]
pub struct StateDeadlines {
    per_state: BTreeMap<String, Duration>,
    /// The deadline of states without their own.
    pub default: Duration,
    /// A bound over the whole wait, whatever the states.
    pub total: Duration,
}

impl Default for StateDeadlines {
    /// Choices, not measurements: long enough for a real server to write an
    /// image and reboot twice, short enough that a stuck node fails the
    /// order within the hour.
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        let per_state = [
            ("verifying", minutes(10)),
            ("deploying", minutes(30)),
            ("wait call-back", minutes(30)),
            ("cleaning", minutes(30)),
            ("clean wait", minutes(30)),
            ("inspecting", minutes(30)),
            ("inspect wait", minutes(30)),
            ("deleting", minutes(15)),
            ("rescuing", minutes(20)),
            ("rescue wait", minutes(20)),
        ]
        .into_iter()
        .map(|(state, deadline)| (state.to_string(), deadline))
        .collect();
        StateDeadlines {
            per_state,
            default: minutes(10),
            total: minutes(120),
        }
    }
}

impl StateDeadlines {
    /// Sets the deadline of one state.
    pub fn with(mut self, state: &str, deadline: Duration) -> Self {
        self.per_state.insert(state.to_string(), deadline);
        self
    }

    /// Sets every deadline (and the total) to `deadline`, for tests.
    pub fn all(deadline: Duration) -> Self {
        StateDeadlines {
            per_state: BTreeMap::new(),
            default: deadline,
            total: deadline,
        }
    }

    fn for_state(&self, state: &str) -> Duration {
        self.per_state.get(state).copied().unwrap_or(self.default)
    }
}

/// First and longest pause between two state reads.
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(3);

impl IronicClient {
    /// Reads a node by name or UUID.
    pub async fn node(&self, node: &str) -> Result<Node, IronicError> {
        let path = format!("/v1/nodes/{}?fields={NODE_FIELDS}", segment(node));
        self.get_json(node, &path).await
    }

    /// Reads a node, or `None` when Ironic has none of this name or UUID.
    pub async fn find_node(&self, node: &str) -> Result<Option<Node>, IronicError> {
        let path = format!("/v1/nodes/{}?fields={NODE_FIELDS}", segment(node));
        self.get_optional(node, &path).await
    }

    /// Creates the node, or reuses the node of the same name, and creates
    /// the ports it lacks. A reused node keeps its driver and `driver_info`.
    pub async fn enroll(&self, spec: &NodeSpec) -> Result<Node, IronicError> {
        let name = spec.name.as_str();
        let node = match self.find_node(name).await? {
            Some(node) => {
                tracing::debug!(node_id = name, uuid = %node.uuid, "reusing ironic node");
                node
            }
            None => self.create_node(spec).await?,
        };
        for mac in &spec.ports {
            self.ensure_port(name, &node.uuid, mac).await?;
        }
        Ok(node)
    }

    async fn create_node(&self, spec: &NodeSpec) -> Result<Node, IronicError> {
        let name = spec.name.as_str();
        let mut body = Map::new();
        body.insert("name".into(), json!(name));
        body.insert("driver".into(), json!(spec.driver));
        body.insert("driver_info".into(), spec.driver_info.to_json());
        body.insert("properties".into(), Value::Object(spec.properties.clone()));
        if let Some(clean) = spec.automated_clean {
            body.insert("automated_clean".into(), json!(clean));
        }
        for (field, interface) in &spec.interfaces {
            body.insert(field.clone(), json!(interface));
        }

        match self
            .send(name, Method::POST, "/v1/nodes", Some(&Value::Object(body)))
            .await
        {
            Ok(_) => {
                tracing::info!(node_id = name, driver = %spec.driver, "enrolled ironic node");
                self.node(name).await
            }
            // Another worker created it between the read and the create.
            Err(IronicError::Api { status: 409, .. }) => self.node(name).await,
            Err(error) => Err(error),
        }
    }

    async fn ensure_port(&self, node: &str, uuid: &str, mac: &MacAddr) -> Result<(), IronicError> {
        #[derive(Deserialize)]
        struct Ports {
            ports: Vec<Port>,
        }
        #[derive(Deserialize)]
        struct Port {
            node_uuid: Option<String>,
        }

        let path = format!("/v1/ports?address={mac}&fields=uuid,node_uuid");
        let ports: Ports = self.get_json(node, &path).await?;
        if let Some(port) = ports.ports.first() {
            if port.node_uuid.as_deref() == Some(uuid) {
                return Ok(());
            }
            return Err(IronicError::Conflict {
                node: node.to_string(),
                url: self.url_of(&path),
                action: "add a port".to_string(),
                reason: format!("MAC {mac} already belongs to another Ironic node"),
            });
        }
        let body = json!({"node_uuid": uuid, "address": mac.to_string()});
        self.send(node, Method::POST, "/v1/ports", Some(&body))
            .await?;
        Ok(())
    }

    /// Moves the node to `manageable` (from `enroll`, `available` or a
    /// failure state) and waits. Does nothing when it is manageable.
    pub async fn manage(
        &self,
        node: &str,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let current = self.node(node).await?;
        match current.provision_state.as_str() {
            "manageable" if current.target_provision_state.is_none() => return Ok(current),
            "verifying" => {}
            _ => {
                self.set_provision_state(node, json!({"target": "manage"}))
                    .await?
            }
        }
        self.wait_for_state(node, "manageable", deadlines).await
    }

    /// Inspects a manageable node and waits until it is manageable again.
    pub async fn inspect(
        &self,
        node: &str,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let current = self.node(node).await?;
        if !matches!(
            current.provision_state.as_str(),
            "inspecting" | "inspect wait"
        ) {
            self.set_provision_state(node, json!({"target": "inspect"}))
                .await?;
        }
        self.wait_for_state(node, "manageable", deadlines).await
    }

    /// Moves a manageable node to `available` (cleaning it when automated
    /// cleaning is on) and waits. Does nothing when it is available.
    pub async fn provide(
        &self,
        node: &str,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let current = self.node(node).await?;
        match current.provision_state.as_str() {
            "available" if current.target_provision_state.is_none() => return Ok(current),
            "cleaning" | "clean wait" => {}
            _ => {
                self.set_provision_state(node, json!({"target": "provide"}))
                    .await?
            }
        }
        self.wait_for_state(node, "available", deadlines).await
    }

    /// Replaces the node's `instance_info`.
    pub async fn set_instance_info(
        &self,
        node: &str,
        info: &InstanceInfo,
    ) -> Result<(), IronicError> {
        let patch = json!([{"op": "add", "path": "/instance_info", "value": info.to_json()}]);
        let path = format!("/v1/nodes/{}", segment(node));
        self.send(node, Method::PATCH, &path, Some(&patch)).await?;
        Ok(())
    }

    /// Starts a deployment under the request's `instance_uuid`, unless one
    /// with the same key is under way or done. Returns at once; call
    /// [`Self::wait_for_state`] (or use [`Self::provision`]) to wait.
    ///
    /// Rejected with [`IronicError::Conflict`] when the node has another
    /// instance or is not available; a node whose deployment with this key
    /// failed gives [`IronicError::ProvisionFailed`] with Ironic's message.
    pub async fn deploy(
        &self,
        node: &str,
        request: &DeployRequest,
    ) -> Result<DeployStart, IronicError> {
        let current = self.node(node).await?;
        if let Some(start) = self.existing_deployment(node, &current, request).await? {
            return Ok(start);
        }

        let patch = json!([
            {"op": "add", "path": "/instance_uuid", "value": request.instance_uuid},
            {"op": "add", "path": "/instance_info", "value": request.instance_info.to_json()},
        ]);
        let path = format!("/v1/nodes/{}", segment(node));
        self.send(node, Method::PATCH, &path, Some(&patch)).await?;

        let mut target = json!({"target": "active"});
        if let Some(drive) = &request.configdrive {
            target["configdrive"] = drive.to_json();
        }
        match self.set_provision_state(node, target).await {
            Ok(()) => {
                tracing::info!(node_id = node, correlation_key = %request.instance_uuid, "ironic deploy started");
                Ok(DeployStart::Started)
            }
            // A concurrent try with the same key may have started it first.
            Err(
                error @ IronicError::Api {
                    status: 400 | 409, ..
                },
            ) => {
                let current = self.node(node).await?;
                match self.existing_deployment(node, &current, request).await {
                    Ok(Some(start)) => Ok(start),
                    _ => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Decides from the node's state whether a deploy with `request` must be
    /// started (`None`), is already under way, or is rejected.
    async fn existing_deployment(
        &self,
        node: &str,
        current: &Node,
        request: &DeployRequest,
    ) -> Result<Option<DeployStart>, IronicError> {
        let state = current.provision_state.as_str();
        let reject = |reason: String| IronicError::Conflict {
            node: node.to_string(),
            url: self.url_of(&format!("/v1/nodes/{}", segment(node))),
            action: format!("deploy instance {}", request.instance_uuid),
            reason,
        };
        match current.instance_uuid.as_deref() {
            Some(other) if other != request.instance_uuid => Err(reject(format!(
                "its instance_uuid is already {other} (provision state {state:?})"
            ))),
            Some(_) if DEPLOYING_STATES.contains(&state) => {
                tracing::info!(node_id = node, correlation_key = %request.instance_uuid, provision_state = state, "ironic deploy already in progress");
                Ok(Some(DeployStart::InProgress(state.to_string())))
            }
            Some(_) if state == "deploy failed" => Err(self.failure(node, current, None).await),
            Some(_) | None if state == "available" => Ok(None),
            _ => Err(reject(format!(
                "it is in provision state {state:?}, not available"
            ))),
        }
    }

    /// Deploys and waits until the node is `active`.
    pub async fn provision(
        &self,
        node: &str,
        request: &DeployRequest,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        self.deploy(node, request).await?;
        self.wait_for_state(node, "active", deadlines).await
    }

    /// Tears the deployment down (`deleted`) and waits until the node is
    /// available again. Does nothing on an available node without instance.
    pub async fn undeploy(
        &self,
        node: &str,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let current = self.node(node).await?;
        match current.provision_state.as_str() {
            "available"
                if current.instance_uuid.is_none() && current.target_provision_state.is_none() =>
            {
                return Ok(current);
            }
            "deleting" | "cleaning" | "clean wait" => {}
            _ => {
                self.set_provision_state(node, json!({"target": "deleted"}))
                    .await?
            }
        }
        self.wait_for_state(node, "available", deadlines).await
    }

    /// Boots an active node into the rescue ramdisk with `password` for its
    /// rescue user, and waits for `rescue`. Does nothing in `rescue`.
    pub async fn rescue(
        &self,
        node: &str,
        password: &Secret,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let current = self.node(node).await?;
        match current.provision_state.as_str() {
            "rescue" if current.target_provision_state.is_none() => return Ok(current),
            "rescuing" | "rescue wait" => {}
            _ => {
                let body = json!({"target": "rescue", "rescue_password": password.expose()});
                self.set_provision_state(node, body).await?;
            }
        }
        self.wait_for_state(node, "rescue", deadlines).await
    }

    /// Leaves rescue and waits until the node is `active` again.
    pub async fn unrescue(
        &self,
        node: &str,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let current = self.node(node).await?;
        if current.provision_state == "rescue" {
            self.set_provision_state(node, json!({"target": "unrescue"}))
                .await?;
        }
        self.wait_for_state(node, "active", deadlines).await
    }

    /// Aborts the running operation (a deploy waiting for its agent,
    /// cleaning, inspection, rescue). Returns once Ironic accepted it.
    pub async fn abort(&self, node: &str) -> Result<(), IronicError> {
        self.set_provision_state(node, json!({"target": "abort"}))
            .await
    }

    /// Sends `PUT /v1/nodes/<node>/states/provision` with `body`.
    pub async fn set_provision_state(&self, node: &str, body: Value) -> Result<(), IronicError> {
        let path = format!("/v1/nodes/{}/states/provision", segment(node));
        self.send(node, Method::PUT, &path, Some(&body)).await?;
        Ok(())
    }

    /// Polls the node until it rests in `goal`, failing at once on a failure
    /// state (with `last_error` as first seen, else the node's history) and
    /// when the node stays in one state longer than its deadline.
    pub async fn wait_for_state(
        &self,
        node: &str,
        goal: &str,
        deadlines: &StateDeadlines,
    ) -> Result<Node, IronicError> {
        let started = Instant::now();
        let mut state = String::new();
        let mut since = started;
        let mut first_error: Option<String> = None;
        let mut pause = FIRST_POLL;

        // Ends at the goal, a failure state, or a deadline.
        loop {
            let current = self.node(node).await?;
            if first_error.is_none() {
                first_error.clone_from(&current.last_error);
            }
            if current.provision_state == goal && current.target_provision_state.is_none() {
                return Ok(current);
            }
            if FAILURE_STATES.contains(&current.provision_state.as_str()) {
                return Err(self.failure(node, &current, first_error).await);
            }

            if current.provision_state != state {
                tracing::debug!(node_id = node, provision_state = %current.provision_state, goal, "ironic provision state");
                state.clone_from(&current.provision_state);
                since = Instant::now();
            }
            let deadline = deadlines.for_state(&state);
            if since.elapsed() > deadline || started.elapsed() > deadlines.total {
                return Err(IronicError::StateTimeout {
                    node: node.to_string(),
                    url: self.url_of(&format!("/v1/nodes/{}", segment(node))),
                    provision_state: state,
                    target: goal.to_string(),
                    deadline: deadline.min(deadlines.total),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(MAX_POLL);
        }
    }

    /// Builds the permanent error of a node in a failure state: its
    /// `last_error`, else the one seen earlier, else the newest error event
    /// of its history (Ironic's power sync clears `last_error`).
    async fn failure(&self, node: &str, current: &Node, seen: Option<String>) -> IronicError {
        let message = match current.last_error.clone().or(seen) {
            Some(message) => message,
            None => match self.last_history_error(node).await {
                Ok(Some(message)) => message,
                Ok(None) => "Ironic recorded no error message".to_string(),
                Err(error) => {
                    format!("Ironic's last_error was empty and reading the history failed: {error}")
                }
            },
        };
        tracing::debug!(node_id = node, provision_state = %current.provision_state, error = %message, "ironic node failed");
        IronicError::ProvisionFailed {
            node: node.to_string(),
            url: self.url_of(&format!("/v1/nodes/{}", segment(node))),
            provision_state: current.provision_state.clone(),
            message,
        }
    }

    /// Returns the node's history events, oldest first (API 1.78; empty on
    /// older servers).
    pub async fn history(&self, node: &str) -> Result<Vec<HistoryEvent>, IronicError> {
        #[derive(Deserialize)]
        struct History {
            history: Vec<HistoryEvent>,
        }

        if self.api_version().await? < HISTORY_API_VERSION {
            return Ok(Vec::new());
        }
        let path = format!("/v1/nodes/{}/history", segment(node));
        let mut history: History = self.get_json(node, &path).await?;
        history
            .history
            .sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(history.history)
    }

    /// Returns the newest `ERROR` event of the node's history.
    pub async fn last_history_error(&self, node: &str) -> Result<Option<String>, IronicError> {
        Ok(self
            .history(node)
            .await?
            .into_iter()
            .rev()
            .find(|event| event.severity.eq_ignore_ascii_case("error"))
            .map(|event| event.event))
    }
}

/// One entry of a node's history: what Ironic did or what failed.
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryEvent {
    #[serde(default)]
    pub created_at: String,
    /// `INFO`, `WARNING` or `ERROR`.
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub event: String,
}
