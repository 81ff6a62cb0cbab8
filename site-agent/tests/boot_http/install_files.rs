//! Install files on the boot server. They are served only under the armed
//! boot's token with the callback placeholder filled in, and are gone once
//! the boot ends. The boot script names them on the kernel command line,
//! and the access log masks the token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use rackhand_images::ImageStore;
use rackhand_protocol::Secret;
use rackhand_protocol::agent::{CALLBACK_URL_PLACEHOLDER, InstallFile, InstallMethod};
use rackhand_pxe::dhcp::KnownMacs;
use rackhand_site_agent::boot_server::{self, BootContext};
use rackhand_site_agent::site_nodes::SiteNodes;
use rackhand_site_agent::state::{NewBoot, State, now_ms};
use tokio::sync::Notify;
use tower::ServiceExt as _;

const TOKEN: &str = "fedcba9876543210fedcba9876543210";
const KEY: &str = "order-7/image";
const MAC: &str = "52:54:00:00:00:37";
const HASH: &str = "$6$saltsalt$not-a-real-hash";

fn kickstart() -> String {
    format!("rootpw --iscrypted '{HASH}'\n%post\ncurl --fail '{CALLBACK_URL_PLACEHOLDER}'\n%end\n")
}

async fn context(dir: &std::path::Path, deadline_at: i64) -> Arc<BootContext> {
    let files = [InstallFile {
        name: "ks.cfg".to_string(),
        content: Secret::new(kickstart()),
    }];
    context_with(dir, deadline_at, &files, InstallMethod::Kickstart).await
}

/// Arms a boot whose install files are `files`.
async fn context_with(
    dir: &std::path::Path,
    deadline_at: i64,
    files: &[InstallFile],
    install_method: InstallMethod,
) -> Arc<BootContext> {
    let state = State::open(&dir.join("state")).await.expect("state opens");
    let store = ImageStore::open(&dir.join("images")).expect("store opens");
    let mut digests = Vec::new();
    for (name, content) in [("kernel", b"kernel".as_slice()), ("initrd", b"initrd")] {
        let source = dir.join(name);
        std::fs::write(&source, content).expect("source written");
        digests.push(
            store
                .import(&source)
                .await
                .expect("imports")
                .digest
                .to_string(),
        );
    }
    state
        .store_install_files(KEY, files)
        .await
        .expect("files store");
    state
        .arm_boot(&NewBoot {
            correlation_key: KEY,
            mac: MAC.parse().expect("mac"),
            node_id: 7,
            node_name: "node-37",
            image_name: "rocky-9",
            kernel_sha256: &digests[0],
            initrd_sha256: &digests[1],
            kernel_args: "console=ttyS0",
            hostname: "web-37",
            token: TOKEN,
            deadline_at,
            install_method,
            disk: None,
        })
        .await
        .expect("boot arms");
    let log = std::fs::File::create(dir.join("access.log")).expect("log opens");
    Arc::new(BootContext {
        state,
        store,
        base_url: "http://10.0.0.1:8080".to_string(),
        nodes: Arc::new(SiteNodes::new(KnownMacs::new())),
        callbacks: Arc::new(Notify::new()),
        access_log: Mutex::new(Some(log)),
        ironic_http_root: None,
        firmware_dir: None,
        script_template: None,
    })
}

async fn get(context: &Arc<BootContext>, uri: &str) -> (StatusCode, String) {
    let mut request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let peer: SocketAddr = "10.0.0.37:40000".parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = boot_server::router(context.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn file_is_served_under_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;

    let (status, body) = get(&context, &format!("/install/{TOKEN}/ks.cfg")).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(HASH), "{body}");
    assert!(
        body.contains(&format!("'http://10.0.0.1:8080/callback/{TOKEN}'")),
        "{body}"
    );
    assert!(!body.contains(CALLBACK_URL_PLACEHOLDER), "{body}");
}

#[tokio::test]
async fn wrong_token_is_not_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;

    let (status, body) = get(&context, "/install/0000/ks.cfg").await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains(HASH), "{body}");
}

#[tokio::test]
async fn unknown_name_is_not_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;

    let (status, _) = get(&context, &format!("/install/{TOKEN}/preseed.cfg")).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ended_boot_serves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;
    context
        .state
        .finish_boot(KEY, "called_back", None, Some("10.0.0.37"))
        .await
        .expect("finishes");

    let (status, body) = get(&context, &format!("/install/{TOKEN}/ks.cfg")).await;

    assert_eq!(status, StatusCode::GONE, "{body}");
    let names = context.state.install_file_names(KEY).await.expect("reads");
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn expired_boot_serves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() - 1).await;

    let (status, body) = get(&context, &format!("/install/{TOKEN}/ks.cfg")).await;

    assert_eq!(status, StatusCode::GONE, "{body}");
}

#[tokio::test]
async fn boot_script_names_kickstart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;

    let (status, script) = get(&context, "/boot/52-54-00-00-00-37.ipxe").await;

    assert_eq!(status, StatusCode::OK, "{script}");
    let expected = format!("inst.ks=http://10.0.0.1:8080/install/{TOKEN}/ks.cfg");
    assert!(script.contains(&expected), "{script}");
}

#[tokio::test]
async fn access_log_masks_install_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;

    get(&context, &format!("/install/{TOKEN}/ks.cfg")).await;

    let log = std::fs::read_to_string(dir.path().join("access.log")).expect("log reads");
    assert!(log.contains("/install/[token]/ks.cfg"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
}

#[tokio::test]
async fn stored_files_are_kept_on_second_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;
    let other = [InstallFile {
        name: "ks.cfg".to_string(),
        content: Secret::new("other".to_string()),
    }];

    context
        .state
        .store_install_files(KEY, &other)
        .await
        .expect("stores");

    let (_, body) = get(&context, &format!("/install/{TOKEN}/ks.cfg")).await;
    assert!(body.contains(HASH), "{body}");
}

fn nocloud_seed() -> Vec<InstallFile> {
    [
        (
            "user-data",
            format!("#cloud-config\nusers:\n  - name: root\n    hashed_passwd: \"{HASH}\"\n"),
        ),
        ("meta-data", "instance-id: \"order-7\"\n".to_string()),
        ("network-config", "version: 2\n".to_string()),
    ]
    .into_iter()
    .map(|(name, content)| InstallFile {
        name: name.to_string(),
        content: Secret::new(content),
    })
    .collect()
}

#[tokio::test]
async fn vendor_data_is_empty_beside_user_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = nocloud_seed();
    let context = context_with(
        dir.path(),
        now_ms() + 60_000,
        &files,
        InstallMethod::CloudInit,
    )
    .await;

    let (status, body) = get(&context, &format!("/install/{TOKEN}/vendor-data")).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "");
}

#[tokio::test]
async fn vendor_data_is_not_found_without_user_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path(), now_ms() + 60_000).await;

    let (status, _) = get(&context, &format!("/install/{TOKEN}/vendor-data")).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn vendor_data_is_gone_after_boot_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = nocloud_seed();
    let context = context_with(
        dir.path(),
        now_ms() + 60_000,
        &files,
        InstallMethod::CloudInit,
    )
    .await;
    context
        .state
        .finish_boot(KEY, "called_back", None, Some("10.0.0.37"))
        .await
        .expect("finishes");

    let (status, _) = get(&context, &format!("/install/{TOKEN}/vendor-data")).await;

    assert_eq!(status, StatusCode::GONE);
}
