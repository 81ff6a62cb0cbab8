//! The site agent's API on the control plane: enrollment, site state, and
//! the task loop (claim, heartbeat, result).
//!
//! A task is one phase step for one order, identified on the agent's side by
//! its `correlation_key`. The control plane may hand the same task out again
//! (its lease expired because the agent went silent, or the control plane
//! restarted before it recorded a result), so the agent deduplicates by that
//! key in its local state and never repeats a side effect it already made.

use serde::{Deserialize, Serialize};

use crate::{MacAddr, Phase, Secret};

/// `POST`: exchange a one-time enrollment token and a CSR for a certificate.
/// The only agent path that accepts a TLS client without a certificate.
pub const ENROLL_PATH: &str = "/agent/v1/enroll";
/// `GET`: the agent's site and the nodes whose MACs its DHCP server serves.
pub const SITE_PATH: &str = "/agent/v1/site";
/// `POST`: long-poll for the next task of this agent's site.
pub const CLAIM_PATH: &str = "/agent/v1/tasks/claim";

/// Returns the `POST` path that extends a claimed task's lease.
pub fn heartbeat_path(task_id: i64) -> String {
    format!("/agent/v1/tasks/{task_id}/heartbeat")
}

/// Returns the `POST` path that reports a task's result.
pub fn result_path(task_id: i64) -> String {
    format!("/agent/v1/tasks/{task_id}/result")
}

/// Body of [`ENROLL_PATH`].
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The one-time token an operator created for the site.
    pub token: Secret,
    /// PKCS#10 certificate signing request for the agent's own key, PEM.
    pub csr_pem: String,
    /// The agent's version, recorded for operators.
    pub agent_version: String,
}

/// Response to [`EnrollRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The site the certificate names; the agent acts only for this site.
    pub site: String,
    /// The agent's client certificate, PEM.
    pub certificate_pem: String,
    /// The control plane's CA certificate, PEM, which the agent pins from now on.
    pub ca_pem: String,
}

/// Response to [`SITE_PATH`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteState {
    pub site: String,
    pub nodes: Vec<SiteNode>,
    /// Images an operator asked this site to pre-stage. Control planes that
    /// predate pre-staging send none.
    #[serde(default)]
    pub staged_images: Vec<crate::images::StagedImage>,
}

/// A node of the site as the PXE services need it (no credentials).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteNode {
    pub node_id: i64,
    pub name: String,
    pub boot_mac: MacAddr,
    /// The node's own boot files, which win over the agent's site-wide
    /// ones. Absent for most nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<NodeBoot>,
}

/// A node's own boot files; each one left out falls back to the site's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBoot {
    /// The file PXE firmware fetches over TFTP, whatever its architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tftp_file: Option<String>,
    /// The `http://` boot file URL for UEFI HTTP boot firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    /// The script URL handed to a client already running iPXE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipxe_script_url: Option<String>,
}

/// Body of [`CLAIM_PATH`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// How long the control plane may hold the request open when no task is
    /// ready; it answers 204 No Content when the time runs out.
    pub wait_seconds: u32,
    /// Set on the agent's claims after it starts, until a claim returns 204:
    /// tasks this agent held before a restart are handed back at once
    /// instead of after their lease expires.
    #[serde(default)]
    pub resume: bool,
    /// Correlation keys of the tasks the agent is running, or delivering a
    /// result for, right now. The control plane never hands out a task whose
    /// key is listed, even with `resume` or after its lease expired. Agents
    /// that predate this field send none.
    #[serde(default)]
    pub running: Vec<String>,
}

/// A phase step handed to an agent.
#[derive(Debug, Serialize, Deserialize)]
pub struct Task {
    pub task_id: i64,
    pub order_id: i64,
    pub phase: Phase,
    /// Stable across every attempt and every hand-out of this step.
    pub correlation_key: String,
    /// 1 for the first hand-out; grows with each retry and each re-hand-out.
    pub attempt: u32,
    /// Seconds until the control plane hands the task out again unless the
    /// agent sends a heartbeat or a result.
    pub lease_seconds: u32,
    pub step: Step,
}

/// The work a task asks of the agent.
// One message per task, never held in bulk: boxing the larger variant
// would only complicate every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    Driver(DriverStep),
    Image(ImageStep),
}

/// The `driver` phase for bare metal: set a one-time network boot and power on.
#[derive(Debug, Serialize, Deserialize)]
pub struct DriverStep {
    pub node_id: i64,
    pub node_name: String,
    pub boot_mac: MacAddr,
    pub bmc: BmcAccess,
}

/// How to reach a node's BMC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BmcAccess {
    /// Driver name: `redfish` today; `idrac`, `ilo`, `ipmi` and `ironic` later.
    pub driver: String,
    /// The BMC address: a Redfish service root or a `ComputerSystem` URL.
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// Extra CA certificates (PEM) trusted for the BMC's HTTPS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The SHA-256 fingerprint of the BMC's certificate, 64 hex digits;
    /// when set, only that certificate is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The `image` phase: boot the node into a verified image and wait for the
/// booted system's callback.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageStep {
    pub node_id: i64,
    pub node_name: String,
    pub boot_mac: MacAddr,
    pub hostname: String,
    pub image: ImageSpec,
    /// Seconds to wait for the booted system's callback before failing.
    pub callback_timeout_seconds: u32,
    /// Set for a node driven through an Ironic conductor (driver `ironic`):
    /// the agent has Ironic deploy the image as a ramdisk, and Ironic powers
    /// the node on and writes its boot script, which the agent serves.
    #[serde(default)]
    pub ironic: Option<BmcAccess>,
    /// Answer files rendered for this order from its product's install
    /// templates (kickstart, preseed, or a NoCloud seed with the configdrive
    /// files for Ironic nodes). The agent serves them only under the armed
    /// boot's one-time token and adds the installer's kernel argument for
    /// the file it recognizes; see [`InstallFile::name`]. Empty for images
    /// that need none.
    #[serde(default)]
    pub install_files: Vec<InstallFile>,
}

/// One per-order answer file. Its content holds the root password hash and
/// the one-time callback URL, so it is a [`Secret`]: `Debug` prints
/// `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallFile {
    /// The file name under the boot's install URL. The agent adds a kernel
    /// argument for [`KICKSTART_FILE`], [`PRESEED_FILE`] and
    /// [`NOCLOUD_USER_DATA_FILE`]; other names are only served.
    pub name: String,
    pub content: Secret,
}

/// Kickstart file name; the agent adds `inst.ks=<url>`.
pub const KICKSTART_FILE: &str = "ks.cfg";
/// Preseed file name; the agent adds `auto=true priority=critical url=<url>`.
pub const PRESEED_FILE: &str = "preseed.cfg";
/// NoCloud `user-data`; the agent adds `ds=nocloud-net;s=<folder url>/`, and
/// `meta-data` and `network-config` are served from the same folder.
pub const NOCLOUD_USER_DATA_FILE: &str = "user-data";
/// NoCloud `meta-data`, served beside [`NOCLOUD_USER_DATA_FILE`].
pub const NOCLOUD_META_DATA_FILE: &str = "meta-data";
/// NoCloud `network-config` (version 2), served beside
/// [`NOCLOUD_USER_DATA_FILE`].
pub const NOCLOUD_NETWORK_CONFIG_FILE: &str = "network-config";
/// Largest `network-config` the agent puts on the kernel command line, in
/// bytes before base64 (which makes 1,024). cloud-init 22.4 does not read
/// `network-config` from an `http://` NoCloud seed, only from
/// `network-config=<base64>` on the kernel command line, and Linux on x86
/// keeps at most 2,048 bytes of that line.
pub const MAX_CMDLINE_NETWORK_CONFIG_BYTES: usize = 768;
/// OpenStack `meta_data.json` (JSON). For an Ironic node the agent puts it
/// into the configdrive that Ironic builds.
pub const CONFIGDRIVE_META_DATA_FILE: &str = "meta_data.json";
/// OpenStack `network_data.json` (JSON), for the configdrive like
/// [`CONFIGDRIVE_META_DATA_FILE`].
pub const CONFIGDRIVE_NETWORK_DATA_FILE: &str = "network_data.json";

/// The callback URL the control plane writes into install files, because
/// only the agent has its boot server's address and the boot's one-time
/// token. The agent replaces every occurrence with the real callback URL
/// when it serves a file. The `.invalid` top-level domain (RFC 2606) never
/// resolves, so a file served without the replacement cannot call anyone.
pub const CALLBACK_URL_PLACEHOLDER: &str = "http://rackhand-callback.invalid/callback";

/// A netboot image by content: the agent serves only files whose sha256
/// matches these digests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageSpec {
    pub name: String,
    /// Lowercase hex sha256 of the kernel.
    pub kernel_sha256: String,
    /// Lowercase hex sha256 of the initrd.
    pub initrd_sha256: String,
    /// Extra kernel command-line arguments.
    pub kernel_args: String,
    /// The kernel's upstream URL, downloaded when the agent's cache lacks it.
    #[serde(default)]
    pub kernel_url: Option<String>,
    /// The initrd's upstream URL, downloaded when the agent's cache lacks it.
    #[serde(default)]
    pub initrd_url: Option<String>,
    /// The install method. It decides which arguments the agent adds to the
    /// command line and which script the node's later netboots get.
    #[serde(default)]
    pub install_method: InstallMethod,
    /// The disk image that an [`InstallMethod::Image`] installer writes to
    /// the node's disk. Required for that method, ignored by the others.
    #[serde(default)]
    pub disk: Option<ImageFile>,
}

/// How an image installs the node. The kernel and initrd of the image are
/// always what the node netboots; the method names what they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallMethod {
    /// The kernel and initrd are the system itself (a live or rescue
    /// ramdisk) and call back once up. Later netboots get the same image.
    #[default]
    Live,
    /// The initrd is an installer that downloads [`ImageSpec::disk`] from
    /// the agent, writes it to the node's disk, checks the written bytes'
    /// sha256 and calls back. The agent's script for the node's later
    /// netboots then boots its local disk.
    Image,
    /// A Red Hat family network installer driven by a kickstart file.
    Kickstart,
    /// A Debian family network installer driven by a preseed file.
    Preseed,
    /// A cloud image booted by a hypervisor, configured by cloud-init.
    CloudInit,
    /// A container template for game servers.
    Container,
}

impl InstallMethod {
    /// Returns the name used in the API, the database and the agent's state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Image => "image",
            Self::Kickstart => "kickstart",
            Self::Preseed => "preseed",
            Self::CloudInit => "cloud-init",
            Self::Container => "container",
        }
    }

    /// Every method, in the order the API documents them.
    pub const ALL: [InstallMethod; 6] = [
        Self::Live,
        Self::Image,
        Self::Kickstart,
        Self::Preseed,
        Self::CloudInit,
        Self::Container,
    ];
}

impl std::fmt::Display for InstallMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InstallMethod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|method| method.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|m| m.as_str()).collect();
                format!(
                    "{text:?} is not an install method; use one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One file of an image besides its kernel and initrd, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// Size in bytes, which the installer checks before it writes.
    pub size: u64,
    /// The URL the agent downloads the file from when its cache lacks it.
    #[serde(default)]
    pub url: Option<String>,
}

/// Body of [`heartbeat_path`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub correlation_key: String,
    /// A short progress note (`waiting for callback`, …) for operators.
    pub progress: Option<String>,
}

/// Answer to a heartbeat.
#[derive(Debug, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub lease_seconds: u32,
    /// The task no longer belongs to this agent (an operator cancelled the
    /// order, or the lease expired and the task went to another claim); the
    /// agent stops working on it.
    pub abandoned: bool,
}

/// Body of [`result_path`].
#[derive(Debug, Serialize, Deserialize)]
pub struct TaskReport {
    pub correlation_key: String,
    pub outcome: Outcome,
}

/// The result of a step.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded {
        /// One line for the activity log.
        summary: String,
        /// Upstream detail (BMC answers, image digests), secrets removed.
        payload: serde_json::Value,
    },
    Failed {
        /// Whether a later attempt may succeed (timeouts, 5xx, connection
        /// errors) or not (bad credentials, an image that fails verification).
        retryable: bool,
        error: String,
        /// The upstream's last response, secrets removed.
        upstream: Option<serde_json::Value>,
    },
}

/// `POST`: long-poll for the next node operation of this agent's site.
pub const OPERATION_CLAIM_PATH: &str = "/agent/v1/operations/claim";

/// Returns the `POST` path that reports a node operation's result.
pub fn operation_result_path(operation_id: i64) -> String {
    format!("/agent/v1/operations/{operation_id}/result")
}

/// Returns the path where the agent joins a console session: a `POST` with
/// `Upgrade: rackhand-console` that the control plane accepts with 101 and
/// then relays bytes between this connection and the operator's.
pub fn console_attach_path(operation_id: i64) -> String {
    format!("/agent/v1/consoles/{operation_id}")
}

/// The `Upgrade` protocol name of console connections, on both the
/// operator's and the agent's side.
pub const CONSOLE_UPGRADE: &str = "rackhand-console";

/// Body of [`OPERATION_CLAIM_PATH`].
#[derive(Debug, Serialize, Deserialize)]
pub struct OperationClaim {
    /// Seconds the control plane may hold the request open. It returns 204
    /// No Content when no operation came in that time.
    pub wait_seconds: u32,
}

/// An operator's request about one node's BMC, outside any order: read the
/// inventory, change the power or boot device, read sensors.
///
/// Operations are short and run once. An operation whose agent does not
/// report within its lease fails instead of being handed out again, because
/// an operator asked for it now and a late reset is worse than none.
#[derive(Debug, Serialize, Deserialize)]
pub struct Operation {
    pub operation_id: i64,
    /// The node's name; for a node being added, the name it will get.
    pub node_name: String,
    /// The boot NIC when known, so the driver picks the right machine behind
    /// a BMC that manages several.
    pub boot_mac: Option<MacAddr>,
    pub bmc: BmcAccess,
    /// Seconds the agent has to report before the operation fails.
    pub lease_seconds: u32,
    pub action: NodeAction,
}

/// The action of a node operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum NodeAction {
    /// Read the hardware inventory (and with it the NICs' MACs).
    Inspect,
    PowerState,
    PowerOn,
    /// An orderly shutdown, or a hard power cut when `force`.
    PowerOff {
        force: bool,
    },
    /// A hard reset; a node that is off is powered on.
    Reset,
    SetBoot {
        /// `pxe`, `disk`, `cd`, `uefi_http` or `bios_setup`.
        target: String,
        persistent: bool,
        /// `uefi` or `legacy`; absent keeps the node's mode.
        mode: Option<String>,
    },
    Sensors,
    InsertMedia {
        url: String,
    },
    EjectMedia,
    /// The location of the node's serial console.
    Console,
    /// Open the serial console and join it to the operator's connection
    /// through the control plane (see [`console_attach_path`]).
    ConsoleAttach,
}

impl NodeAction {
    /// Returns the action's name as operators see it in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            NodeAction::Inspect => "inspect",
            NodeAction::PowerState => "power_state",
            NodeAction::PowerOn => "power_on",
            NodeAction::PowerOff { force: false } => "power_off",
            NodeAction::PowerOff { force: true } => "force_off",
            NodeAction::Reset => "reset",
            NodeAction::SetBoot { .. } => "set_boot",
            NodeAction::Sensors => "sensors",
            NodeAction::InsertMedia { .. } => "insert_media",
            NodeAction::EjectMedia => "eject_media",
            NodeAction::Console => "console",
            NodeAction::ConsoleAttach => "console_attach",
        }
    }
}

/// Body of [`operation_result_path`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OperationOutcome {
    /// `result` depends on the action: `{"inventory": …}`, `{"power": "on"}`,
    /// `{"sensors": …}`, `{"console": …}`, or `{}`.
    Succeeded { result: serde_json::Value },
    Failed {
        /// Whether the same request may succeed later (timeouts, 5xx).
        retryable: bool,
        error: String,
    },
}

/// Error body of every agent API answer other than 2xx.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_serializes_with_kind_tag() {
        let step = Step::Driver(DriverStep {
            node_id: 1,
            node_name: "n1".into(),
            boot_mac: "52:54:00:00:00:01".parse().expect("valid MAC"),
            bmc: BmcAccess {
                driver: "redfish".into(),
                url: "http://127.0.0.1:1/redfish/v1".into(),
                username: "admin".into(),
                password: Secret::new("pw".into()),
                ca_pem: None,
                fingerprint: None,
            },
        });
        let json = serde_json::to_value(&step).expect("serializable");
        assert_eq!(json["kind"], "driver");
        assert_eq!(json["bmc"]["password"], "pw");
    }

    #[test]
    fn install_file_debug_hides_content() {
        let file = InstallFile {
            name: KICKSTART_FILE.to_string(),
            content: Secret::new("rootpw --iscrypted '$6$salt$hash'".to_string()),
        };
        let debug = format!("{file:?}");
        assert!(!debug.contains("$6$"), "{debug}");
        assert!(debug.contains("ks.cfg"), "{debug}");
    }

    #[test]
    fn image_step_without_install_files_parses() {
        let json = serde_json::json!({
            "node_id": 1,
            "node_name": "n1",
            "boot_mac": "52:54:00:00:00:01",
            "hostname": "web1",
            "image": {"name": "img", "kernel_sha256": "a", "initrd_sha256": "b", "kernel_args": ""},
            "callback_timeout_seconds": 60,
        });
        let step: ImageStep = serde_json::from_value(json).expect("parses");
        assert!(step.install_files.is_empty());
    }

    #[test]
    fn claim_without_running_parses() {
        let claim: ClaimRequest =
            serde_json::from_str(r#"{"wait_seconds": 5, "resume": true}"#).expect("parses");
        assert!(claim.running.is_empty());
    }

    #[test]
    fn outcome_round_trips() {
        let outcome = Outcome::Failed {
            retryable: true,
            error: "timed out".into(),
            upstream: None,
        };
        let text = serde_json::to_string(&outcome).expect("serializable");
        let back: Outcome = serde_json::from_str(&text).expect("parses");
        assert!(matches!(
            back,
            Outcome::Failed {
                retryable: true,
                ..
            }
        ));
    }
}
