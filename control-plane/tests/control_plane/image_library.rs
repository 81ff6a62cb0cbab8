//! The image library: uploads hashed on arrival and rejected without a
//! trace when the digest, size or signature is wrong; signatures checked
//! with gpgv against keys made by gpg in a temporary GNUPGHOME; uploaded
//! files served to agents with ranges; and pre-staging requests and reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use base64::Engine as _;
use http::{Request, StatusCode, header};
use rackhand_control_plane::agents::{self, PeerCertificate};
use rackhand_control_plane::db;
use rackhand_images::Sha256Digest;
use rackhand_protocol::agent::SiteState;
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::harness::{ADMIN_TOKEN, Reply, SITE, TestPlane};

const KERNEL: &[u8] = b"a kernel that is only bytes for this test";
const INITRD: &[u8] = b"an initrd that is only bytes for this test";
/// The certificate fingerprint of the test agent.
const FINGERPRINT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn sha256(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn error_text(reply: &Reply) -> String {
    reply.json["error"].as_str().unwrap_or_default().to_string()
}

async fn create_upload_image(plane: &TestPlane, name: &str) {
    plane
        .create("/v1/images", &json!({ "name": name, "upload": true }))
        .await;
}

/// Sends `PUT /v1/images/{image}/files/{role}` with `data` as the body.
async fn upload(
    plane: &TestPlane,
    image: &str,
    role: &str,
    data: &[u8],
    headers: &[(&str, String)],
) -> Reply {
    let mut builder = Request::builder()
        .method("PUT")
        .uri(format!("/v1/images/{image}/files/{role}"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    plane
        .send(
            builder
                .body(Body::from(data.to_vec()))
                .expect("the request is well formed"),
        )
        .await
}

/// Asserts that the store contains no blob and no temporary file.
fn assert_store_empty(plane: &TestPlane) {
    let store = plane.dir.path().join("state").join("images");
    for folder in ["blobs", "tmp"] {
        let entries: Vec<_> = std::fs::read_dir(store.join(folder))
            .expect("the store folder exists")
            .collect();
        assert!(entries.is_empty(), "{folder}/ holds {entries:?}");
    }
}

async fn file_rows(plane: &TestPlane) -> i64 {
    plane.count("SELECT COUNT(*) FROM image_files").await
}

#[tokio::test]
async fn upload_computes_sha256_and_readies_image() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;

    let kernel = upload(&plane, "live", "kernel", KERNEL, &[]).await;
    assert_eq!(kernel.status, StatusCode::CREATED, "{}", kernel.text);
    assert_eq!(kernel.json["sha256"], sha256(KERNEL));
    assert_eq!(kernel.json["image_state"], "incomplete");
    let initrd = upload(&plane, "live", "initrd", INITRD, &[]).await;
    assert_eq!(initrd.json["image_state"], "ready", "{}", initrd.text);

    let digest: Sha256Digest = sha256(KERNEL).parse().expect("hex digest");
    assert!(plane.app.images.contains(&digest));
    let shown = plane.get("/v1/images/live").await;
    assert_eq!(shown.json["state"], "ready");
    assert_eq!(shown.json["files"][0]["sha256"], sha256(KERNEL));
    assert_eq!(shown.json["files"][0]["uploaded"], true);
}

#[tokio::test]
async fn image_install_waits_for_disk_upload() {
    let plane = TestPlane::start().await;
    plane
        .create(
            "/v1/images",
            &json!({ "name": "raw", "upload": true, "install_method": "image" }),
        )
        .await;
    let disk = b"a disk image that is only bytes for this test, a little longer";

    upload(&plane, "raw", "kernel", KERNEL, &[]).await;
    let initrd = upload(&plane, "raw", "initrd", INITRD, &[]).await;
    let uploaded = upload(&plane, "raw", "disk", disk, &[]).await;

    assert_eq!(initrd.json["image_state"], "incomplete", "{}", initrd.text);
    assert_eq!(uploaded.json["image_state"], "ready", "{}", uploaded.text);
    let shown = plane.get("/v1/images/raw").await;
    assert_eq!(shown.json["files"][2]["role"], "disk");
    assert_eq!(shown.json["files"][2]["sha256"], sha256(disk));
    assert_eq!(shown.json["files"][2]["size"], disk.len());
}

#[tokio::test]
async fn disk_upload_for_live_image_is_rejected() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;

    let reply = upload(&plane, "live", "disk", KERNEL, &[]).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(
        error_text(&reply).contains("kernel, initrd"),
        "{}",
        reply.text
    );
    assert_store_empty(&plane);
}

#[tokio::test]
async fn upload_with_wrong_sha256_leaves_nothing() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;

    let reply = upload(
        &plane,
        "live",
        "kernel",
        KERNEL,
        &[("rackhand-sha256", sha256(INITRD))],
    )
    .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(
        error_text(&reply).contains(&sha256(KERNEL)),
        "{}",
        reply.text
    );
    assert!(
        error_text(&reply).contains("nothing was stored"),
        "{}",
        reply.text
    );
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn upload_must_match_digest_given_at_creation() {
    let plane = TestPlane::start().await;
    plane
        .create(
            "/v1/images",
            &json!({ "name": "live", "upload": true, "kernel_sha256": sha256(INITRD) }),
        )
        .await;

    let reply = upload(&plane, "live", "kernel", KERNEL, &[]).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn cut_off_upload_leaves_nothing() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;
    let pieces = futures_util::stream::iter([
        Ok(axum::body::Bytes::from_static(&KERNEL[..10])),
        Err(std::io::Error::other("client went away")),
    ]);
    let request = Request::builder()
        .method("PUT")
        .uri("/v1/images/live/files/kernel")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::from_stream(pieces))
        .expect("the request is well formed");

    let reply = plane.send(request).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        error_text(&reply).contains("cut off after 10 bytes"),
        "{}",
        reply.text
    );
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn empty_upload_is_rejected() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;

    let reply = upload(&plane, "live", "kernel", b"", &[]).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(error_text(&reply).contains("empty"), "{}", reply.text);
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn oversize_upload_is_rejected() {
    let plane = TestPlane::start_with("[images]\nmax_file_bytes = 16\n").await;
    create_upload_image(&plane, "live").await;

    // No Content-Length: the limit is enforced while the body streams.
    let streamed = upload(&plane, "live", "kernel", KERNEL, &[]).await;
    let declared = upload(
        &plane,
        "live",
        "kernel",
        KERNEL,
        &[("content-length", KERNEL.len().to_string())],
    )
    .await;

    assert_eq!(
        streamed.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        streamed.text
    );
    assert!(
        error_text(&streamed).contains("max_file_bytes"),
        "{}",
        streamed.text
    );
    assert_eq!(
        declared.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        declared.text
    );
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn ready_image_files_cannot_change() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;
    upload(&plane, "live", "initrd", INITRD, &[]).await;

    let reply = upload(&plane, "live", "kernel", INITRD, &[]).await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert_eq!(file_rows(&plane).await, 2);
}

#[tokio::test]
async fn product_rejects_incomplete_image() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;

    let reply = plane
        .post(
            "/v1/products",
            &json!({ "name": "p", "price_minor": 100, "currency": "eur", "min_cpu_cores": 1,
                     "min_ram_mib": 1024, "min_disk_gb": 10, "image": "live" }),
        )
        .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(error_text(&reply).contains("incomplete"), "{}", reply.text);
}

/// A signing key made by gpg in its own temporary GNUPGHOME.
struct SigningKey {
    home: tempfile::TempDir,
    fingerprint: String,
}

impl SigningKey {
    fn generate(user: &str) -> SigningKey {
        let home = tempfile::tempdir().expect("a temporary GNUPGHOME can be created");
        run_gpg(
            home.path(),
            &[
                "--quick-generate-key",
                &format!("{user} <{user}@example.invalid>"),
                "ed25519",
                "sign",
                "never",
            ],
        );
        let listing = run_gpg(home.path(), &["--with-colons", "--list-keys"]);
        let fingerprint = listing
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .and_then(|rest| rest.trim_matches(':').split(':').next_back())
            .expect("gpg lists the new key's fingerprint")
            .to_string();
        SigningKey { home, fingerprint }
    }

    /// Writes the public key as a binary keyring file for gpgv.
    fn export_keyring(&self, path: &Path) {
        let exported = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--export"])
            .output()
            .expect("gpg runs");
        assert!(exported.status.success(), "gpg --export failed");
        std::fs::write(path, exported.stdout).expect("the keyring file writes");
    }

    /// Returns a detached signature of `data`, base64 for the header.
    fn sign(&self, data: &[u8]) -> String {
        let file = self.home.path().join("data");
        std::fs::write(&file, data).expect("the data file writes");
        let signature = self.home.path().join("data.sig");
        let _ = std::fs::remove_file(&signature);
        run_gpg(
            self.home.path(),
            &[
                "--detach-sign",
                "--output",
                signature.to_str().expect("a UTF-8 path"),
                file.to_str().expect("a UTF-8 path"),
            ],
        );
        let bytes = std::fs::read(&signature).expect("gpg wrote the signature");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

fn run_gpg(home: &Path, args: &[&str]) -> String {
    let output = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(args)
        .output()
        .expect("gpg runs (the gnupg package is installed)");
    assert!(
        output.status.success(),
        "gpg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts a control plane whose keyring (a file in the key's own folder)
/// contains `trusted`'s key.
async fn signing_plane(trusted: &SigningKey, require: bool) -> (TestPlane, PathBuf) {
    let keyring = trusted.home.path().join("keyring.gpg");
    trusted.export_keyring(&keyring);
    let plane = TestPlane::start_with(&format!(
        "[images]\nsignature_keyring = \"{}\"\nrequire_signatures = {require}\n",
        keyring.display()
    ))
    .await;
    (plane, keyring)
}

#[tokio::test]
async fn good_signature_records_signer_fingerprint() {
    let key = SigningKey::generate("signer");
    let (plane, _keyring) = signing_plane(&key, true).await;
    create_upload_image(&plane, "live").await;

    let reply = upload(
        &plane,
        "live",
        "kernel",
        KERNEL,
        &[("rackhand-signature", key.sign(KERNEL))],
    )
    .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json["signer_fingerprint"], key.fingerprint.as_str());
    let shown = plane.get("/v1/images/live").await;
    assert_eq!(
        shown.json["files"][0]["signer_fingerprint"],
        key.fingerprint.as_str()
    );
}

#[tokio::test]
async fn bad_signature_is_rejected_naming_key() {
    let key = SigningKey::generate("signer");
    let (plane, _keyring) = signing_plane(&key, false).await;
    create_upload_image(&plane, "live").await;

    // The signature covers other bytes than the ones uploaded.
    let reply = upload(
        &plane,
        "live",
        "kernel",
        KERNEL,
        &[("rackhand-signature", key.sign(INITRD))],
    )
    .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let message = error_text(&reply);
    assert!(message.contains("bad signature"), "{message}");
    assert!(message.contains("kernel"), "{message}");
    assert!(message.contains(&key.fingerprint[24..]), "{message}");
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn signature_by_unknown_key_is_rejected() {
    let trusted = SigningKey::generate("trusted");
    let stranger = SigningKey::generate("stranger");
    let (plane, keyring) = signing_plane(&trusted, false).await;
    create_upload_image(&plane, "live").await;

    let reply = upload(
        &plane,
        "live",
        "kernel",
        KERNEL,
        &[("rackhand-signature", stranger.sign(KERNEL))],
    )
    .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let message = error_text(&reply);
    assert!(message.contains("no key in the keyring"), "{message}");
    assert!(message.contains(&stranger.fingerprint[24..]), "{message}");
    assert!(
        message.contains(&keyring.display().to_string()),
        "{message}"
    );
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

#[tokio::test]
async fn missing_signature_is_rejected_when_required() {
    let key = SigningKey::generate("signer");
    let (plane, _keyring) = signing_plane(&key, true).await;
    create_upload_image(&plane, "live").await;

    let unsigned = upload(&plane, "live", "kernel", KERNEL, &[]).await;
    let by_digest = plane
        .post(
            "/v1/images",
            &json!({ "name": "by-digest", "kernel_sha256": sha256(KERNEL), "initrd_sha256": sha256(INITRD) }),
        )
        .await;

    assert_eq!(
        unsigned.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unsigned.text
    );
    assert!(
        error_text(&unsigned).contains("require_signatures"),
        "{}",
        unsigned.text
    );
    assert_eq!(
        by_digest.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        by_digest.text
    );
    assert!(
        error_text(&by_digest).contains("upload"),
        "{}",
        by_digest.text
    );
    assert_eq!(file_rows(&plane).await, 0);
    assert_store_empty(&plane);
}

/// Registers an agent of the test site, as enrollment does.
async fn enroll_agent(plane: &TestPlane) {
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    let now = db::now_ms();
    sqlx::query(
        "INSERT INTO agents (site_id, cert_fingerprint, cert_expires_at, agent_version, enrolled_at)
         SELECT id, ?, ?, 'test', ? FROM sites WHERE name = ?",
    )
    .bind(FINGERPRINT)
    .bind(now + 86_400_000)
    .bind(now)
    .bind(SITE)
    .execute(&plane.app.pool)
    .await
    .expect("the agent row inserts");
}

/// Sends a request to the agent router as the enrolled test agent.
async fn agent_call(
    plane: &TestPlane,
    request: http::request::Builder,
    body: Body,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut request = request
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .body(body)
        .expect("the request is well formed");
    request
        .extensions_mut()
        .insert(PeerCertificate(Some(FINGERPRINT.to_string())));
    let response = agents::router(plane.app.clone())
        .oneshot(request)
        .await
        .expect("the router's error type is Infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body is readable");
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn agent_fetches_uploaded_file_with_range() {
    let plane = TestPlane::start().await;
    enroll_agent(&plane).await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;
    let path = format!("/agent/v1/images/{}", sha256(KERNEL));

    let (status, headers, body) = agent_call(
        &plane,
        Request::builder()
            .uri(&path)
            .header(header::RANGE, "bytes=10-")
            .header(header::IF_RANGE, format!("\"{}\"", sha256(KERNEL))),
        Body::empty(),
    )
    .await;

    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &KERNEL[10..]);
    assert_eq!(
        headers[header::CONTENT_RANGE],
        format!("bytes 10-{}/{}", KERNEL.len() - 1, KERNEL.len()).as_str()
    );
    let unknown = format!("/agent/v1/images/{}", sha256(b"never uploaded"));
    let (status, _, _) = agent_call(&plane, Request::builder().uri(&unknown), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stage_request_reaches_site_state_and_report_shows() {
    let plane = TestPlane::start().await;
    enroll_agent(&plane).await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;
    upload(&plane, "live", "initrd", INITRD, &[]).await;
    plane
        .create("/v1/images/live/stage", &json!({ "site": SITE }))
        .await;

    let (status, _, body) = agent_call(
        &plane,
        Request::builder().uri(rackhand_protocol::agent::SITE_PATH),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let state: SiteState = serde_json::from_slice(&body).expect("the site state parses");
    assert_eq!(state.staged_images.len(), 1);
    let kernel = &state.staged_images[0].files[0];
    assert_eq!(
        kernel.url.as_deref(),
        Some(format!("/agent/v1/images/{}", sha256(KERNEL)).as_str())
    );

    let report = json!({ "image": "live", "status": "failed", "error": "disk full" });
    let (status, _, _) = agent_call(
        &plane,
        Request::builder()
            .method("POST")
            .uri(rackhand_protocol::images::STAGE_REPORT_PATH)
            .header(header::CONTENT_TYPE, "application/json"),
        Body::from(report.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let shown: Value = plane.get("/v1/images/live").await.json;
    assert_eq!(shown["stages"][0]["site"], SITE);
    assert_eq!(shown["stages"][0]["status"], "failed");
    assert_eq!(shown["stages"][0]["error"], "disk full");
}

fn product_body(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "price_minor": 1999,
        "currency": "eur",
        "min_cpu_cores": 1,
        "min_ram_mib": 512,
        "min_disk_gb": 1,
        "image": image,
    })
}

#[tokio::test]
async fn required_signatures_reject_product_on_old_unsigned_image() {
    let key = SigningKey::generate("signer");
    let (plane, _keyring) = signing_plane(&key, true).await;
    // Created before require_signatures was turned on, so written directly.
    sqlx::query(
        "INSERT INTO images (name, kernel_sha256, initrd_sha256, kernel_args, os_family, install_method, state, created_at)
         VALUES ('old', ?, ?, '', 'linux', 'live', 'ready', ?)",
    )
    .bind(sha256(KERNEL))
    .bind(sha256(INITRD))
    .bind(db::now_ms())
    .execute(&plane.app.pool)
    .await
    .expect("the image inserts");

    let reply = plane
        .post("/v1/products", &product_body("p-old", "old"))
        .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "image");
    let message = error_text(&reply);
    assert!(message.contains("kernel and initrd"), "{message}");
    assert!(message.contains("require_signatures"), "{message}");
}

#[tokio::test]
async fn required_signatures_accept_product_on_signed_image() {
    let key = SigningKey::generate("signer");
    let (plane, _keyring) = signing_plane(&key, true).await;
    create_upload_image(&plane, "signed").await;
    for (role, data) in [("kernel", KERNEL), ("initrd", INITRD)] {
        let reply = upload(
            &plane,
            "signed",
            role,
            data,
            &[("rackhand-signature", key.sign(data))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }

    let reply = plane
        .post("/v1/products", &product_body("p-signed", "signed"))
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

/// Flips the first byte of the stored copy of `data`, as disk corruption
/// or tampering would.
fn corrupt_stored_copy(plane: &TestPlane, data: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    let digest: Sha256Digest = sha256(data).parse().expect("hex digest");
    let path = plane.app.images.blob_path(&digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .expect("the blob's mode changes");
    let mut bytes = data.to_vec();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).expect("the blob writes");
}

#[tokio::test]
async fn quarantined_copy_answers_agents_with_reason() {
    let plane = TestPlane::start().await;
    enroll_agent(&plane).await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;
    upload(&plane, "live", "initrd", INITRD, &[]).await;
    corrupt_stored_copy(&plane, KERNEL);
    let path = format!("/agent/v1/images/{}", sha256(KERNEL));

    let (status, _, body) = agent_call(&plane, Request::builder().uri(&path), Body::empty()).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).expect("a JSON error");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("failed verification"), "{message}");
    assert!(
        message.contains("rackhand image upload live kernel FILE"),
        "{message}"
    );
    let shown = plane.get("/v1/images/live").await;
    assert_eq!(
        shown.json["missing_files"],
        json!(["kernel"]),
        "{}",
        shown.text
    );
    assert_eq!(shown.json["files"][0]["stored"], false);
    assert_eq!(shown.json["files"][1]["stored"], true);
}

#[tokio::test]
async fn quarantined_copy_can_be_uploaded_again() {
    let plane = TestPlane::start().await;
    enroll_agent(&plane).await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;
    upload(&plane, "live", "initrd", INITRD, &[]).await;
    corrupt_stored_copy(&plane, KERNEL);

    let other = upload(&plane, "live", "kernel", INITRD, &[]).await;
    let again = upload(&plane, "live", "kernel", KERNEL, &[]).await;

    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert!(
        error_text(&other).contains("only the same file"),
        "{}",
        other.text
    );
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.json["image_state"], "ready");
    assert_eq!(file_rows(&plane).await, 2);
    let path = format!("/agent/v1/images/{}", sha256(KERNEL));
    let (status, _, body) = agent_call(&plane, Request::builder().uri(&path), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, KERNEL);
    let shown = plane.get("/v1/images/live").await;
    assert_eq!(shown.json["missing_files"], json!([]), "{}", shown.text);
}

#[tokio::test]
async fn existing_incomplete_image_conflict_names_upload() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "nk2").await;

    let reply = plane
        .post("/v1/images", &json!({ "name": "nk2", "upload": true }))
        .await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    let message = error_text(&reply);
    assert!(message.contains("incomplete"), "{message}");
    assert!(
        message.contains("rackhand image upload nk2 ROLE FILE"),
        "{message}"
    );
    assert!(message.contains("rackhand image delete nk2"), "{message}");
}

#[tokio::test]
async fn unused_image_deletes_with_its_files() {
    let plane = TestPlane::start().await;
    create_upload_image(&plane, "first").await;
    create_upload_image(&plane, "second").await;
    upload(&plane, "first", "kernel", KERNEL, &[]).await;
    upload(&plane, "first", "initrd", INITRD, &[]).await;
    // The second image shares the kernel, so its blob must stay.
    upload(&plane, "second", "kernel", KERNEL, &[]).await;

    let reply = plane
        .call("DELETE", "/v1/images/first", Some(ADMIN_TOKEN), None)
        .await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(
        plane.get("/v1/images/first").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(file_rows(&plane).await, 1);
    let kernel: Sha256Digest = sha256(KERNEL).parse().expect("hex digest");
    let initrd: Sha256Digest = sha256(INITRD).parse().expect("hex digest");
    assert!(
        plane.app.images.contains(&kernel),
        "the shared kernel stays"
    );
    assert!(
        !plane.app.images.contains(&initrd),
        "the unused initrd goes"
    );
    let again = plane
        .post("/v1/images", &json!({ "name": "first", "upload": true }))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
}

#[tokio::test]
async fn image_used_by_product_cannot_be_deleted() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;

    let reply = plane
        .call("DELETE", "/v1/images/debian-12", Some(ADMIN_TOKEN), None)
        .await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(error_text(&reply).contains("small"), "{}", reply.text);
    assert_eq!(
        plane.get("/v1/images/debian-12").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn order_on_image_with_lost_copy_fails_preflight() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    create_upload_image(&plane, "live").await;
    upload(&plane, "live", "kernel", KERNEL, &[]).await;
    upload(&plane, "live", "initrd", INITRD, &[]).await;
    plane
        .create("/v1/products", &product_body("p-live", "live"))
        .await;
    plane.create_node("n1", "52:54:00:00:40:01").await;
    let order = plane.allocated_order_of("p-live").await;
    let digest: Sha256Digest = sha256(INITRD).parse().expect("hex digest");
    std::fs::remove_file(plane.app.images.blob_path(&digest)).expect("the blob is removed");

    let error = rackhand_control_plane::phases::agent::preflight(&plane.app, &order)
        .await
        .expect_err("the lost copy is found before the node powers on");

    assert!(
        error.message.contains("uploaded initrd of image \"live\""),
        "{error:?}"
    );
    assert!(
        error
            .message
            .contains("rackhand image upload live initrd FILE"),
        "{error:?}"
    );
}
