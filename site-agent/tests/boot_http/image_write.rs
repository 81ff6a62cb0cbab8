//! An image-write boot. The script passes the installer the disk image's
//! URL, digest and size, and the disk image is verified before the script
//! is served. Once the installer has called back, the node's script boots
//! its local disk.

use std::sync::{Arc, Mutex};

use crate::callbacks::get;
use axum::http::StatusCode;
use rackhand_images::ImageStore;
use rackhand_protocol::agent::{ImageFile, InstallMethod};
use rackhand_pxe::dhcp::KnownMacs;
use rackhand_site_agent::boot_server::BootContext;
use rackhand_site_agent::site_nodes::SiteNodes;
use rackhand_site_agent::state::{NewBoot, State, now_ms};
use tokio::sync::Notify;

const TOKEN: &str = "fedcba9876543210fedcba9876543210";
const KEY: &str = "order-7/image";
const MAC: &str = "52:54:00:00:00:27";
const SCRIPT: &str = "/boot/52-54-00-00-00-27.ipxe";

struct Armed {
    context: Arc<BootContext>,
    disk: ImageFile,
    _dir: tempfile::TempDir,
}

/// Imports a kernel, an initrd and a disk image, and arms an image-write
/// boot of them.
async fn armed() -> Armed {
    armed_with("console=ttyS0").await
}

/// Like [`armed`], with the image's kernel arguments.
async fn armed_with(kernel_args: &str) -> Armed {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ImageStore::open(&dir.path().join("images")).expect("store opens");
    let mut digests = Vec::new();
    for (name, content) in [
        ("vmlinuz", b"kernel".to_vec()),
        ("initrd", b"initrd".to_vec()),
        ("disk.img", vec![0x5a; 4096]),
    ] {
        let source = dir.path().join(name);
        std::fs::write(&source, &content).expect("source written");
        let blob = store.import(&source).await.expect("import");
        digests.push(blob.digest.to_string());
    }
    let disk = ImageFile {
        sha256: digests[2].clone(),
        size: 4096,
        url: None,
    };
    let state = State::open(&dir.path().join("state"))
        .await
        .expect("state opens");
    state
        .arm_boot(&NewBoot {
            correlation_key: KEY,
            mac: MAC.parse().expect("mac"),
            node_id: 7,
            node_name: "node-27",
            image_name: "debian-disk",
            kernel_sha256: &digests[0],
            initrd_sha256: &digests[1],
            kernel_args,
            hostname: "web-27",
            token: TOKEN,
            deadline_at: now_ms() + 60_000,
            install_method: InstallMethod::Image,
            disk: Some(&disk),
        })
        .await
        .expect("boot arms");
    let nodes = Arc::new(SiteNodes::new(KnownMacs::new()));
    let context = Arc::new(BootContext {
        state,
        store,
        base_url: "http://10.0.0.1:8080".to_string(),
        nodes,
        callbacks: Arc::new(Notify::new()),
        access_log: Mutex::new(None),
        ironic_http_root: None,
        firmware_dir: None,
        script_template: None,
    });
    Armed {
        context,
        disk,
        _dir: dir,
    }
}

#[tokio::test]
async fn image_write_script_names_disk_image_digest_and_size() {
    let armed = armed().await;

    let (status, script) = get(&armed.context, SCRIPT).await;

    assert_eq!(status, StatusCode::OK, "{script}");
    let digest = &armed.disk.sha256;
    assert!(
        script.contains(&format!(
            "rackhand.image=http://10.0.0.1:8080/images/{digest}/disk.img rackhand.image_sha256={digest} rackhand.image_size=4096"
        )),
        "{script}"
    );
    assert!(script.contains("console=ttyS0"), "{script}");
}

#[tokio::test]
async fn installed_node_is_told_to_boot_its_disk() {
    let armed = armed().await;

    let (status, _) = get(&armed.context, &format!("/callback/{TOKEN}?event=done")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, script) = get(&armed.context, SCRIPT).await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        script.contains("sanboot --no-describe --drive 0x80"),
        "{script}"
    );
    assert!(!script.contains("kernel "), "{script}");
}

#[tokio::test]
async fn tampered_disk_image_fails_boot_before_script() {
    let armed = armed().await;
    let digest = armed.disk.sha256.parse().expect("digest");
    let path = armed.context.store.blob_path(&digest);
    // The store keeps blobs read-only.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    std::fs::write(&path, vec![0x00; 4096]).expect("tamper");

    let (status, script) = get(&armed.context, SCRIPT).await;

    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("failed verification"), "{script}");
    assert!(!script.contains("sanboot"), "{script}");
    let boot = armed
        .context
        .state
        .boot(KEY)
        .await
        .expect("state reads")
        .expect("boot present");
    assert_eq!(boot.state, "failed");
    assert!(
        boot.error
            .as_deref()
            .unwrap_or_default()
            .contains("disk image"),
        "{:?}",
        boot.error
    );
}

#[tokio::test]
async fn operator_template_renders_armed_boot() {
    let armed = armed().await;
    let template = rackhand_site_agent::script_template::ScriptTemplate::parse(
        std::path::Path::new("boot.ipxe.hbs"),
        "#!ipxe\necho {{node}} {{install_method}}\nkernel {{kernel_url}} {{cmdline}}\ninitrd {{initrd_url}}\nboot\n",
    )
    .expect("valid template");
    let context = Arc::new(BootContext {
        state: armed.context.state.clone(),
        store: armed.context.store.clone(),
        base_url: armed.context.base_url.clone(),
        nodes: armed.context.nodes.clone(),
        callbacks: Arc::new(Notify::new()),
        access_log: Mutex::new(None),
        ironic_http_root: None,
        firmware_dir: None,
        script_template: Some(Arc::new(template)),
    });

    let (status, script) = get(&context, SCRIPT).await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        script.starts_with("#!ipxe\necho node-27 image\n"),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "rackhand.callback=http://10.0.0.1:8080/callback/{TOKEN}"
        )),
        "{script}"
    );
}

#[tokio::test]
async fn unrenderable_script_fails_boot_without_token() {
    let armed = armed_with("console=ttyS0 root=${root-path}").await;

    let (status, script) = get(&armed.context, SCRIPT).await;

    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("exit 1"), "{script}");
    let boot = armed
        .context
        .state
        .boot(KEY)
        .await
        .expect("state reads")
        .expect("boot present");
    assert_eq!(boot.state, "failed");
    let error = boot.error.unwrap_or_default();
    assert!(error.contains("kernel_args"), "{error}");
    assert!(error.contains("${"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
}
