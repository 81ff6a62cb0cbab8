//! The installer's callbacks to the boot server: progress reaches the armed
//! boot, `failed` ends it with the installer's message, `done` completes
//! it, and an unknown token or event is rejected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use rackhand_images::ImageStore;
use rackhand_pxe::dhcp::KnownMacs;
use rackhand_site_agent::boot_server::{self, BootContext};
use rackhand_site_agent::site_nodes::SiteNodes;
use rackhand_site_agent::state::{NewBoot, State, now_ms};
use tokio::sync::Notify;
use tower::ServiceExt as _;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const KEY: &str = "order-1/image";

async fn context(dir: &std::path::Path) -> Arc<BootContext> {
    let state = State::open(&dir.join("state")).await.expect("state opens");
    state
        .arm_boot(&NewBoot {
            correlation_key: KEY,
            mac: "52:54:00:00:00:21".parse().expect("mac"),
            node_id: 1,
            node_name: "node-21",
            image_name: "debian-12",
            kernel_sha256: &"a".repeat(64),
            initrd_sha256: &"b".repeat(64),
            kernel_args: "",
            hostname: "web-21",
            token: TOKEN,
            deadline_at: now_ms() + 60_000,
            install_method: rackhand_protocol::agent::InstallMethod::Live,
            disk: None,
        })
        .await
        .expect("boot arms");
    Arc::new(BootContext {
        state,
        store: ImageStore::open(&dir.join("images")).expect("store opens"),
        base_url: "http://10.0.0.1:8080".to_string(),
        nodes: Arc::new(SiteNodes::new(KnownMacs::new())),
        callbacks: Arc::new(Notify::new()),
        access_log: Mutex::new(None),
        ironic_http_root: None,
        firmware_dir: Some(dir.join("firmware")),
        script_template: None,
    })
}

/// Sends a GET through the boot router from a node's address.
pub(crate) async fn get(context: &Arc<BootContext>, uri: &str) -> (StatusCode, String) {
    let mut request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let peer: SocketAddr = "10.0.0.21:40000".parse().expect("address");
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
async fn progress_then_done_completes_boot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path()).await;

    let (status, _) = get(&context, &format!("/callback/{TOKEN}?event=started")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(
        &context,
        &format!("/callback/{TOKEN}?event=progress&message=writing%20disk%2040%25%0Aforged"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let boot = context
        .state
        .boot(KEY)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(boot.state, "armed");
    assert_eq!(
        boot.progress.as_deref(),
        Some("installer progress: writing disk 40% forged"),
        "control characters are flattened"
    );

    let (status, _) = get(&context, &format!("/callback/{TOKEN}?ip=192.0.2.21")).await;
    assert_eq!(status, StatusCode::OK);
    let boot = context
        .state
        .boot(KEY)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(boot.state, "called_back");
    assert_eq!(boot.callback_ip.as_deref(), Some("192.0.2.21"));
}

#[tokio::test]
async fn phone_home_post_completes_boot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path()).await;
    // cloud-init's phone_home sends its values as a form.
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("/callback/{TOKEN}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(
            "instance_id=i-1&hostname=web-21&fqdn=web-21.example.net",
        ))
        .expect("request");
    let peer: SocketAddr = "10.0.0.21:40000".parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(peer));

    let response = boot_server::router(context.clone())
        .oneshot(request)
        .await
        .expect("infallible");

    assert_eq!(response.status(), StatusCode::OK);
    let boot = context
        .state
        .boot(KEY)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(boot.state, "called_back");
    assert_eq!(boot.callback_ip.as_deref(), Some("10.0.0.21"));
}

#[tokio::test]
async fn failed_event_ends_boot_with_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path()).await;
    let (status, _) = get(
        &context,
        &format!("/callback/{TOKEN}?event=failed&message=no%20disk%20found"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let boot = context
        .state
        .boot(KEY)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(boot.state, "failed");
    let error = boot.error.unwrap_or_default();
    assert!(error.contains("no disk found"), "{error}");
    assert!(error.contains("node-21"), "{error}");

    // A later `done` cannot turn the failure into success.
    let (status, body) = get(&context, &format!("/callback/{TOKEN}")).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
}

#[tokio::test]
async fn firmware_files_stay_inside_their_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path()).await;
    std::fs::create_dir_all(dir.path().join("firmware/arm64")).expect("dirs");
    std::fs::write(dir.path().join("firmware/snponly.efi"), b"MZ-efi").expect("file");
    std::fs::write(dir.path().join("firmware/arm64/snponly.efi"), b"MZ-arm").expect("file");
    std::fs::write(dir.path().join("secret"), b"x").expect("file");
    std::os::unix::fs::symlink("../secret", dir.path().join("firmware/link")).expect("link");

    let (status, body) = get(&context, "/firmware/snponly.efi").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "MZ-efi");
    let (status, body) = get(&context, "/firmware/arm64/snponly.efi").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "MZ-arm");
    for path in [
        "/firmware/link",
        "/firmware/../secret",
        "/firmware/missing.efi",
    ] {
        let (status, _) = get(&context, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn unknown_token_or_event_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let context = context(dir.path()).await;
    let (status, _) = get(&context, "/callback/ffffffffffffffffffffffffffffffff").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(&context, &format!("/callback/{TOKEN}?event=reboot")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("reboot"), "{body}");
    let boot = context
        .state
        .boot(KEY)
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(boot.state, "armed", "a rejected callback changes nothing");
}
