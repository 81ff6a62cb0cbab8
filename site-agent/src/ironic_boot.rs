//! Nodes driven through an Ironic conductor (driver `ironic`).
//!
//! Ironic owns power and the boot device of such a node; the agent still
//! owns the provisioning network. So for these nodes:
//!
//! - the `driver` step only brings the node to `available` in Ironic
//!   (Ironic powers it on when it deploys);
//! - the `image` step arms the boot as for any node (verified image,
//!   one-time callback token), then asks Ironic for a ramdisk deployment
//!   whose kernel and ramdisk are the agent's verified files and whose kernel
//!   command line carries the callback, with the order's correlation key as
//!   the node's `instance_uuid`;
//! - Ironic fetches the files from the agent's conductor listener, writes
//!   its iPXE script into its `http_root`, and powers the node on;
//! - the agent's DHCP sends the node to its per-MAC script as usual, which
//!   for these nodes chains to Ironic's `boot.ipxe`, served by the agent
//!   from the conductor's `http_root` under `/ironic/`;
//! - the step succeeds on the booted system's callback, and fails at once
//!   when Ironic reports `deploy failed` (with Ironic's message).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rackhand_ironic_bridge::ironic::{
    ConfigDrive, DeployRequest, DeployStart, InstanceInfo, IronicDriver, StateDeadlines,
};
use rackhand_ironic_bridge::{BmcEndpoint, DriverError};
use rackhand_protocol::agent::{
    BmcAccess, CONFIGDRIVE_META_DATA_FILE, CONFIGDRIVE_NETWORK_DATA_FILE, InstallFile,
    NOCLOUD_USER_DATA_FILE,
};
use rackhand_protocol::{MacAddr, Secret};
use serde_json::{Map, Value, json};
use tokio_util::io::ReaderStream;

/// Builds the router that serves the conductor's `http_root` under
/// `/ironic/`.
pub fn router(http_root: PathBuf) -> Router {
    Router::new()
        .route("/ironic/{*path}", get(serve))
        .with_state(http_root)
}

/// Serves one file of `http_root`. Symbolic links are followed (Ironic
/// links each MAC's script to the node's), but the file they reach must lie
/// inside `http_root`.
async fn serve(State(root): State<PathBuf>, UrlPath(path): UrlPath<String>) -> Response {
    serve_file_in(&root, &path, "application/octet-stream").await
}

/// Streams the file `path` names inside `root`, or answers 404 when
/// [`resolve`] rejects the path or the file is missing.
pub(crate) async fn serve_file_in(root: &Path, path: &str, content_type: &'static str) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, format!("no file {path:?}\n")).into_response();
    let Some(file) = resolve(root, path).await else {
        return not_found();
    };
    let Ok(handle) = tokio::fs::File::open(&file).await else {
        return not_found();
    };
    let length = match handle.metadata().await {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        _ => return not_found(),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_stream(ReaderStream::new(handle)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Returns the file `path` names inside `root`, or `None` when the path
/// has `..`, is absolute, has a NUL byte, or leads outside `root`.
async fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    if path.contains('\0') {
        return None;
    }
    let relative = Path::new(path);
    if !relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        return None;
    }
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    file.starts_with(&root).then_some(file)
}

/// Returns the per-MAC script of a node whose boot Ironic prepared. It
/// chains to the conductor's `boot.ipxe` and comes back here to try again
/// if that fails.
pub fn chain_script(base_url: &str, mac: MacAddr) -> String {
    format!(
        "#!ipxe\n\
         echo Rackhand: booting what the Ironic conductor prepared\n\
         chain {base_url}/ironic/boot.ipxe || goto retry\n\
         :retry\n\
         echo Rackhand: the Ironic boot script failed; asking again in 5 s\n\
         sleep 5\n\
         chain {base_url}/boot/{}.ipxe\n",
        mac.to_hyphenated()
    )
}

/// Returns the Ironic driver of a node from its BMC access.
pub fn driver(
    access: &BmcAccess,
    node_name: &str,
    timeout: Duration,
) -> Result<IronicDriver, String> {
    let mut endpoint =
        BmcEndpoint::from_access(access, node_name.to_string()).map_err(|e| e.to_string())?;
    endpoint.timeout = timeout;
    IronicDriver::new(endpoint).map_err(|e: DriverError| e.to_string())
}

/// Returns the node's `instance_uuid` for a correlation key: a UUID made
/// from the key's SHA-256 (version and variant bits set as for version 5),
/// so every attempt of the order names the same deployment.
pub fn instance_uuid(correlation_key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, correlation_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The files and kernel command line of one ramdisk deployment.
#[derive(Debug)]
pub struct Deployment<'a> {
    pub correlation_key: &'a str,
    pub hostname: &'a str,
    /// `<conductor_url>/images/<sha256>/vmlinuz`.
    pub kernel_url: String,
    pub ramdisk_url: String,
    pub cmdline: String,
    /// The order's cloud-init user-data, if its template renders one, for
    /// the configdrive that Ironic builds when the node boots through
    /// virtual media (besides the NoCloud seed that `cmdline` names).
    pub user_data: Option<rackhand_protocol::Secret>,
    /// The order's `meta_data.json`, when the control plane rendered one;
    /// without it the configdrive gets the host name and the instance uuid.
    pub meta_data: Option<Value>,
    /// The order's `network_data.json`, when the control plane rendered one.
    pub network_data: Option<Value>,
}

/// The configdrive parts an order's install files carry.
#[derive(Debug, Default)]
pub struct ConfigDriveParts {
    /// The NoCloud `user-data`, which is also the configdrive's.
    pub user_data: Option<Secret>,
    pub meta_data: Option<Value>,
    pub network_data: Option<Value>,
}

/// Collects the configdrive parts from an order's install files, parsing
/// `meta_data.json` and `network_data.json`. `fill` puts the callback URL
/// into a file's text.
pub fn configdrive_parts(
    files: &[InstallFile],
    fill: impl Fn(&str) -> String,
) -> Result<ConfigDriveParts, String> {
    let text = |name: &str| {
        files
            .iter()
            .find(|file| file.name == name)
            .map(|file| fill(file.content.expose()))
    };
    let json = |name: &str| -> Result<Option<Value>, String> {
        text(name)
            .map(|text| {
                serde_json::from_str(&text).map_err(|error| {
                    format!(
                        "install file {name} is not JSON ({error}); the control plane checks it, so update the control plane or the product's template for {name}"
                    )
                })
            })
            .transpose()
    };
    Ok(ConfigDriveParts {
        user_data: text(NOCLOUD_USER_DATA_FILE).map(Secret::new),
        meta_data: json(CONFIGDRIVE_META_DATA_FILE)?,
        network_data: json(CONFIGDRIVE_NETWORK_DATA_FILE)?,
    })
}

/// Boot interfaces that hand a ramdisk deployment its configdrive (as a
/// virtual CD). Ironic 39 gives only `RedfishVirtualMediaBoot` and its
/// iDRAC subclass the `ramdisk_boot_configdrive` capability. With any other
/// boot interface (`ipxe`, `pxe`, `http-ipxe`) the ramdisk deploy ignores
/// the configdrive and logs a warning that quotes the whole node, including
/// the configdrive's user-data and password hash.
const CONFIGDRIVE_BOOT_INTERFACES: [&str; 2] =
    ["redfish-virtual-media", "idrac-redfish-virtual-media"];

/// Returns whether a ramdisk deployment through `boot_interface` reads a
/// configdrive.
pub fn boot_interface_reads_configdrive(boot_interface: Option<&str>) -> bool {
    boot_interface.is_some_and(|name| CONFIGDRIVE_BOOT_INTERFACES.contains(&name))
}

/// Builds Ironic's deploy request: the ramdisk deployment of the agent's
/// kernel and initrd, and, when `with_configdrive`, a configdrive with the
/// order's meta_data, network_data and user-data. Without it the node gets
/// those only from the NoCloud seed that `cmdline` names.
fn deploy_request(deployment: &Deployment<'_>, with_configdrive: bool) -> DeployRequest {
    let mut extra = Map::new();
    extra.insert("kernel".into(), json!(deployment.kernel_url));
    extra.insert("ramdisk".into(), json!(deployment.ramdisk_url));
    extra.insert("kernel_append_params".into(), json!(deployment.cmdline));
    DeployRequest {
        instance_uuid: instance_uuid(deployment.correlation_key),
        instance_info: InstanceInfo {
            extra,
            ..InstanceInfo::default()
        },
        configdrive: with_configdrive.then(|| ConfigDrive {
            meta_data: deployment.meta_data.clone().unwrap_or_else(|| {
                json!({
                    "hostname": deployment.hostname,
                    "uuid": instance_uuid(deployment.correlation_key),
                })
            }),
            user_data: deployment
                .user_data
                .as_ref()
                .map(|data| data.expose().to_string()),
            network_data: deployment.network_data.clone(),
        }),
    }
}

/// Starts the ramdisk deployment, unless the one of this correlation key is
/// under way or done. Returns a line for the activity log.
pub async fn deploy(
    driver: &IronicDriver,
    deployment: &Deployment<'_>,
) -> Result<String, IronicFailure> {
    let client = driver.client();
    let node = driver.ironic_node();
    let deadlines = StateDeadlines::default();
    let current = client.node(node).await.map_err(IronicFailure::from)?;
    // A node fresh from enrollment or inspection is first made available.
    match current.provision_state.as_str() {
        "enroll" | "manageable" | "verifying" | "cleaning" | "clean wait" => {
            client
                .manage(node, &deadlines)
                .await
                .map_err(IronicFailure::from)?;
            client
                .provide(node, &deadlines)
                .await
                .map_err(IronicFailure::from)?;
        }
        _ => {}
    }
    let with_configdrive = boot_interface_reads_configdrive(current.boot_interface.as_deref());
    if !with_configdrive {
        tracing::info!(
            node,
            boot_interface = current.boot_interface.as_deref().unwrap_or("unknown"),
            correlation_key = deployment.correlation_key,
            "sending no configdrive: a ramdisk deploy reads one only through virtual media; the NoCloud seed on the kernel line carries the install files"
        );
    }
    let request = deploy_request(deployment, with_configdrive);
    match client
        .deploy(node, &request)
        .await
        .map_err(IronicFailure::from)?
    {
        DeployStart::Started => Ok(format!("Ironic started deploying {node}")),
        DeployStart::InProgress(state) => Ok(format!(
            "Ironic's deployment of {node} was already under way ({state})"
        )),
    }
}

/// Returns Ironic's message when the node's deployment failed, or `None`
/// while it is under way or done.
pub async fn failure(driver: &IronicDriver) -> Result<Option<String>, IronicFailure> {
    let node = driver.client().node(driver.ironic_node()).await?;
    if matches!(
        node.provision_state.as_str(),
        "deploy failed" | "error" | "clean failed"
    ) {
        let message = match node.last_error {
            Some(message) => message,
            None => driver
                .client()
                .last_history_error(driver.ironic_node())
                .await?
                .unwrap_or_else(|| "Ironic recorded no error message".to_string()),
        };
        return Ok(Some(format!(
            "Ironic reports {} for node {}: {message}",
            node.provision_state,
            driver.ironic_node()
        )));
    }
    Ok(None)
}

/// An error from Ironic, with whether a retry may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct IronicFailure {
    pub message: String,
    pub retryable: bool,
}

impl From<rackhand_ironic_bridge::ironic::IronicError> for IronicFailure {
    fn from(error: rackhand_ironic_bridge::ironic::IronicError) -> Self {
        IronicFailure {
            retryable: error.is_retryable(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_uuid_is_stable_and_well_formed() {
        let first = instance_uuid("order-abc/image");
        assert_eq!(first, instance_uuid("order-abc/image"));
        assert_ne!(first, instance_uuid("order-abd/image"));
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "5", "version nibble: {first}");
        assert!(
            matches!(&first[19..20], "8" | "9" | "a" | "b"),
            "variant: {first}"
        );
    }

    #[tokio::test]
    async fn resolve_keeps_paths_inside_the_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("httpboot");
        std::fs::create_dir_all(root.join("node-1")).expect("dirs");
        std::fs::create_dir_all(root.join("pxelinux.cfg")).expect("dirs");
        std::fs::write(root.join("node-1/config"), "#!ipxe\n").expect("file");
        std::os::unix::fs::symlink(
            "../node-1/config",
            root.join("pxelinux.cfg/52-54-00-00-00-01"),
        )
        .expect("link");
        std::fs::write(dir.path().join("secret"), "x").expect("file");
        std::os::unix::fs::symlink("../secret", root.join("escape")).expect("link");
        std::fs::write(root.join("52:54:00:00:00:01.conf"), "x").expect("file");

        assert!(
            resolve(&root, "pxelinux.cfg/52-54-00-00-00-01")
                .await
                .is_some()
        );
        assert!(resolve(&root, "52:54:00:00:00:01.conf").await.is_some());
        assert!(
            resolve(&root, "escape").await.is_none(),
            "a link out of the root"
        );
        assert!(resolve(&root, "../secret").await.is_none());
        assert!(resolve(&root, "/etc/passwd").await.is_none());
        assert!(resolve(&root, "node-1/\0config").await.is_none());
        assert!(resolve(&root, "missing").await.is_none());
    }

    #[test]
    fn chain_script_comes_back_on_failure() {
        let mac: MacAddr = "52:54:00:00:00:01".parse().expect("mac");
        let script = chain_script("http://10.0.0.1:8080", mac);
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains("chain http://10.0.0.1:8080/ironic/boot.ipxe || goto retry"));
        assert!(script.contains("/boot/52-54-00-00-00-01.ipxe"));
    }

    fn deployment(user_data: Option<&str>) -> Deployment<'static> {
        Deployment {
            correlation_key: "order-1/image",
            hostname: "web-1",
            kernel_url: "http://10.0.0.1:9000/images/a/vmlinuz".to_string(),
            ramdisk_url: "http://10.0.0.1:9000/images/b/initrd.img".to_string(),
            cmdline: "console=ttyS0".to_string(),
            user_data: user_data.map(|data| rackhand_protocol::Secret::new(data.to_string())),
            meta_data: None,
            network_data: None,
        }
    }

    fn install_file(name: &str, content: &str) -> InstallFile {
        InstallFile {
            name: name.to_string(),
            content: Secret::new(content.to_string()),
        }
    }

    #[test]
    fn configdrive_takes_rendered_json_files() {
        let files = [
            install_file("user-data", "#cloud-config\nurl: CALLBACK\n"),
            install_file("meta-data", "instance-id: x\n"),
            install_file(
                "meta_data.json",
                "{\"uuid\": \"u-1\", \"hostname\": \"web-1.example.net\"}",
            ),
            install_file(
                "network_data.json",
                "{\"links\": [], \"networks\": [], \"services\": []}",
            ),
        ];
        let parts = configdrive_parts(&files, |text| text.replace("CALLBACK", "http://agent/cb"))
            .expect("parts");
        let mut deployment = deployment(None);
        deployment.user_data = parts.user_data;
        deployment.meta_data = parts.meta_data;
        deployment.network_data = parts.network_data;

        let drive = deploy_request(&deployment, true)
            .configdrive
            .expect("a configdrive");

        assert_eq!(drive.meta_data["uuid"], "u-1");
        assert_eq!(drive.meta_data["hostname"], "web-1.example.net");
        assert_eq!(
            drive.network_data.expect("network_data")["links"],
            json!([])
        );
        assert_eq!(
            drive.user_data.as_deref(),
            Some("#cloud-config\nurl: http://agent/cb\n")
        );
    }

    #[test]
    fn configdrive_rejects_json_file_that_is_not_json() {
        let files = [install_file("network_data.json", "links: []")];

        let error = configdrive_parts(&files, str::to_string).expect_err("rejected");

        assert!(error.contains("network_data.json is not JSON"), "{error}");
    }

    #[test]
    fn configdrive_carries_hostname_and_user_data() {
        let request = deploy_request(&deployment(Some("#cloud-config\nhostname: web-1\n")), true);

        let drive = request.configdrive.expect("a configdrive");
        assert_eq!(drive.meta_data["hostname"], "web-1");
        assert_eq!(
            drive.user_data.as_deref(),
            Some("#cloud-config\nhostname: web-1\n")
        );
        assert_eq!(
            request.instance_info.extra["kernel_append_params"],
            "console=ttyS0"
        );
    }

    #[test]
    fn deployment_debug_hides_user_data() {
        let shown = format!("{:?}", deployment(Some("password: $6$secret-hash")));

        assert!(!shown.contains("secret-hash"), "{shown}");
    }

    #[test]
    fn configdrive_without_template_has_no_user_data() {
        let request = deploy_request(&deployment(None), true);

        assert_eq!(request.configdrive.expect("a configdrive").user_data, None);
    }

    #[test]
    fn ipxe_node_gets_no_configdrive() {
        let request = deploy_request(&deployment(Some("#cloud-config\n")), false);

        assert!(request.configdrive.is_none());
        assert_eq!(
            request.instance_info.extra["kernel_append_params"],
            "console=ttyS0"
        );
    }

    #[test]
    fn only_virtual_media_reads_configdrive() {
        assert!(boot_interface_reads_configdrive(Some(
            "redfish-virtual-media"
        )));
        assert!(boot_interface_reads_configdrive(Some(
            "idrac-redfish-virtual-media"
        )));
        assert!(!boot_interface_reads_configdrive(Some("ipxe")));
        assert!(!boot_interface_reads_configdrive(Some("http-ipxe")));
        assert!(!boot_interface_reads_configdrive(None));
    }
}
