//! `rackhand image …` commands that move files: uploads with their
//! signatures, and the per-file and per-site view of one image.

use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;

use super::{Client, cell, digest_arg, format_utc, segment};

/// One file to upload: its role in the image, its path and an optional
/// detached signature file.
pub struct FileToUpload<'a> {
    pub role: &'a str,
    pub path: &'a Path,
    pub signature: Option<&'a Path>,
}

/// Largest detached signature the control plane accepts, in bytes (its
/// `MAX_SIGNATURE_BYTES`, checked after base64 decoding).
const MAX_SIGNATURE_BYTES: u64 = 16 * 1024;

/// Checks that `file` and its signature can be read and look right before
/// anything is created or sent: a typo then costs nothing on the server.
pub fn check_local(file: &FileToUpload<'_>) -> anyhow::Result<()> {
    let path = file.path;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("cannot read --{} {}", file.role, path.display()))?;
    if !metadata.is_file() {
        bail!("--{} {} is not a regular file", file.role, path.display());
    }
    if metadata.len() == 0 {
        bail!(
            "--{} {} is empty; give the {} file",
            file.role,
            path.display(),
            file.role
        );
    }
    std::fs::File::open(path)
        .with_context(|| format!("cannot open --{} {}", file.role, path.display()))?;
    let Some(signature) = file.signature else {
        return Ok(());
    };
    let size = std::fs::metadata(signature)
        .with_context(|| {
            format!(
                "cannot read --{}-signature {}",
                file.role,
                signature.display()
            )
        })?
        .len();
    if size == 0 || size > MAX_SIGNATURE_BYTES {
        bail!(
            "--{}-signature {} has {size} bytes, but a detached signature has 1 to {MAX_SIGNATURE_BYTES}; give the file that `gpg --detach-sign {}` writes ({}.sig)",
            file.role,
            signature.display(),
            path.display(),
            path.display()
        );
    }
    std::fs::read(signature).with_context(|| {
        format!(
            "cannot read --{}-signature {}",
            file.role,
            signature.display()
        )
    })?;
    Ok(())
}

/// Streams `file` into image `image` with its locally computed sha256 as
/// the expected digest, so a file changed or cut short on the way is
/// rejected by the control plane.
pub async fn upload(
    client: &Client,
    image: &str,
    file: &FileToUpload<'_>,
) -> anyhow::Result<Value> {
    check_local(file)?;
    let sha256 = digest_arg(Some(file.path), None)?;
    let size = std::fs::metadata(file.path)
        .with_context(|| format!("cannot read {}", file.path.display()))?
        .len();
    let handle = tokio::fs::File::open(file.path)
        .await
        .with_context(|| format!("cannot open {}", file.path.display()))?;

    let url = format!(
        "{}/v1/images/{}/files/{}",
        client.base.trim_end_matches('/'),
        segment(image)?,
        segment(file.role)?
    );
    let mut request = client
        .streams
        .put(&url)
        .header("rackhand-sha256", &sha256)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(handle),
        ));
    if let Some(signature) = file.signature {
        let bytes = std::fs::read(signature)
            .with_context(|| format!("cannot read signature {}", signature.display()))?;
        request = request.header(
            "rackhand-signature",
            base64::engine::general_purpose::STANDARD.encode(bytes),
        );
    }
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("uploading {} to {}", file.path.display(), client.base))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let message = match value.get("error").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            // The HTTP server itself rejects oversized headers, before the
            // control plane sees the request, so the body is empty.
            None if status == reqwest::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
                "the request headers are larger than the control plane's HTTP server accepts; the signature travels in a header and must be a detached signature of at most {MAX_SIGNATURE_BYTES} bytes"
            ),
            None => value.to_string(),
        };
        bail!(
            "uploading {} as the {} of image {image}: {} {}: {message}",
            file.path.display(),
            file.role,
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    Ok(value)
}

/// Prints `GET /v1/images/{name}`: the image, its files and its stages.
pub fn print_image(image: &Value) {
    let field = |key: &str| cell(image.get(key));
    println!("image {}  {}", field("name"), field("state"));
    println!("  os family:      {}", field("os_family"));
    println!("  install method: {}", field("install_method"));
    println!("  kernel args:    {}", field("kernel_args"));
    println!("  files:");
    for file in image["files"].as_array().into_iter().flatten() {
        let at = |key: &str| cell(file.get(key));
        let source = if file["stored"].as_bool() == Some(false) {
            format!(
                "MISSING from the control plane's store; upload it again: rackhand image upload {} {} FILE",
                field("name"),
                at("role")
            )
        } else if file["uploaded"].as_bool() == Some(true) {
            "uploaded".to_string()
        } else if file["upstream_url"].is_string() {
            format!("from {}", at("upstream_url"))
        } else if file["sha256"].is_string() {
            "imported on agents".to_string()
        } else {
            "missing".to_string()
        };
        println!(
            "    {:<7} sha256 {}  size {}  {source}  signed by {}",
            at("role"),
            at("sha256"),
            at("size"),
            at("signer_fingerprint")
        );
    }
    let stages = image["stages"].as_array().cloned().unwrap_or_default();
    if stages.is_empty() {
        println!("  stages: none");
        return;
    }
    println!("  stages:");
    for stage in stages {
        let at = |key: &str| cell(stage.get(key));
        let error = match stage.get("error").and_then(Value::as_str) {
            Some(error) => format!("  {error}"),
            None => String::new(),
        };
        println!(
            "    {:<12} {:<11} updated {}{error}",
            at("site"),
            at("status"),
            stage
                .get("updated_at")
                .and_then(Value::as_i64)
                .map(format_utc)
                .unwrap_or_default()
        );
    }
}
