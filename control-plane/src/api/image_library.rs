//! The image library's files: uploads into the control plane's store, one
//! image's details, and pre-staging requests for sites.
//!
//! An image meant for upload is created first (`POST /v1/images` with
//! `"upload": true`) and starts `incomplete`. Each file is then sent as the
//! raw body of its own `PUT`, which streams it into the store's temporary
//! folder while hashing it. Only a file whose sha256 matches what the
//! operator expects, and whose signature verifies where one is given or
//! required, is moved into the store and recorded. The image turns `ready`
//! once every file its install method needs is there; products accept
//! ready images only. Separate requests keep each file's failure separate
//! and let a large disk image be retried alone.

use axum::Json;
use axum::body::Body as RawBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use futures_util::StreamExt as _;
use rackhand_images::{ImageError, Sha256Digest, Upload};
use rackhand_protocol::agent::InstallMethod;
use rackhand_protocol::images::{StageStatus, StagedFile, StagedImage, image_file_path};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body};
use crate::api::inventory::{Created, site_id};
use crate::app::{App, SharedApp};
use crate::db;
use crate::signatures;

/// Header with the sha256 the client expects the uploaded file to have.
pub const SHA256_HEADER: &str = "rackhand-sha256";
/// Header with the file's detached OpenPGP signature, base64-encoded.
pub const SIGNATURE_HEADER: &str = "rackhand-signature";

/// Largest signature accepted, decoded. An RSA-4096 signature is about
/// 550 bytes; this leaves room for armor and several signatures.
const MAX_SIGNATURE_BYTES: usize = 16 * 1024;

/// The files of an image, in the order they are shown.
const ROLES: [&str; 3] = ["kernel", "initrd", "disk"];

#[derive(Debug, sqlx::FromRow)]
struct ImageState {
    id: i64,
    state: String,
    kernel_args: String,
    os_family: String,
    install_method: String,
    kernel_sha256: String,
    initrd_sha256: String,
    disk_sha256: Option<String>,
    disk_size: Option<i64>,
    kernel_url: Option<String>,
    initrd_url: Option<String>,
    disk_url: Option<String>,
}

/// Returns the roles an image of `install_method` needs.
fn roles_for(install_method: &str) -> &'static [&'static str] {
    if install_method == InstallMethod::Image.as_str() {
        &ROLES
    } else {
        &ROLES[..2]
    }
}

impl ImageState {
    /// The roles this image's install method needs.
    fn roles(&self) -> &'static [&'static str] {
        roles_for(&self.install_method)
    }

    /// Returns the registered sha256 of `role`, or `None` when none was
    /// given yet.
    fn sha256(&self, role: &str) -> Option<&str> {
        let digest = match role {
            "kernel" => Some(self.kernel_sha256.as_str()),
            "initrd" => Some(self.initrd_sha256.as_str()),
            _ => self.disk_sha256.as_deref(),
        };
        digest.filter(|digest| !digest.is_empty())
    }

    fn upstream_url(&self, role: &str) -> Option<&str> {
        match role {
            "kernel" => self.kernel_url.as_deref(),
            "initrd" => self.initrd_url.as_deref(),
            _ => self.disk_url.as_deref(),
        }
    }
}

async fn load_image(app: &App, name: &str) -> Result<ImageState, ApiError> {
    let image: Option<ImageState> = sqlx::query_as(
        "SELECT id, state, kernel_args, os_family, install_method, kernel_sha256, initrd_sha256, disk_sha256, disk_size,
                kernel_url, initrd_url, disk_url
         FROM images WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(&app.pool)
    .await?;
    image.ok_or_else(|| ApiError::not_found("image", format!("{name:?}")))
}

/// `PUT /v1/images/{name}/files/{role}`: the file's bytes as the body, with
/// optional `rackhand-sha256` and `rackhand-signature` headers.
pub async fn upload_file(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path((name, role)): Path<(String, String)>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Created, ApiError> {
    let image = load_image(&app, &name).await?;
    let recorded = recorded_sha256(&app, image.id, &role).await?;
    // A recorded file whose stored copy is gone (quarantined after a failed
    // check, or deleted) may be sent again, in any image state, so that
    // the image's products work again.
    let restore = match &recorded {
        Some(digest) => !stored_intact(&app, digest).await?,
        None => false,
    };
    let expected = check_upload_request(&app, &image, &name, &role, &headers, restore)?;
    let signature = signature_header(&headers)?;
    if signature.is_none() && app.config.images.require_signatures {
        return Err(ApiError::invalid(
            "signature",
            format!(
                "the {role} of image {name:?} has no signature, and images.require_signatures is on; sign it with `gpg --detach-sign FILE` and pass FILE.sig as --{role}-signature (rackhand image create) or --signature (rackhand image upload)"
            ),
        ));
    }

    let upload = receive(&app, &name, &role, &headers, body).await?;
    let digest = upload.digest();
    if let Some(recorded) = recorded.as_deref().filter(|_| restore)
        && recorded != digest.to_hex()
    {
        return Err(ApiError::invalid(
            "sha256",
            format!(
                "the uploaded {role} of image {name:?} has sha256 {digest}, but the image records {recorded} for it; only the same file can replace a missing copy, nothing was stored. Upload the original file, or create a new image for a different one"
            ),
        ));
    }
    if let Some(expected) = expected
        && expected != digest
    {
        return Err(ApiError::invalid(
            "sha256",
            format!(
                "the uploaded {role} of image {name:?} has sha256 {digest}, but {expected} was expected; nothing was stored. Upload the right file or fix the expected digest"
            ),
        ));
    }
    let signer = match &signature {
        Some(signature) => Some(check_signature(&app, &name, &role, signature, &upload).await?),
        None => None,
    };

    let size = upload.size();
    let stored = upload
        .commit()
        .await
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?;
    let state = if restore {
        record_restored_file(&app, &image, &role, signer.as_deref()).await?
    } else {
        record_file(&app, &image, &role, &stored.digest, size, signer.as_deref())
            .await?
            .to_string()
    };
    tracing::info!(image = %name, role = %role, sha256 = %stored.digest, size, signer = ?signer, restored = restore, "image file uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "image": name,
            "role": role,
            "sha256": stored.digest.to_hex(),
            "size": size,
            "signer_fingerprint": signer,
            "image_state": state,
        })),
    ))
}

/// Returns the sha256 recorded for an uploaded `role` of image `image_id`.
async fn recorded_sha256(
    app: &App,
    image_id: i64,
    role: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT sha256 FROM image_files WHERE image_id = ? AND role = ?")
        .bind(image_id)
        .bind(role)
        .fetch_optional(&app.pool)
        .await
}

/// Returns whether the store holds a copy of `digest` that still verifies.
/// A copy that fails the check is quarantined on the way.
async fn stored_intact(app: &App, digest: &str) -> Result<bool, ApiError> {
    let digest: Sha256Digest = digest.parse().map_err(|error| {
        ApiError::Internal(anyhow::anyhow!(
            "recorded digest {digest:?} is invalid: {error}"
        ))
    })?;
    match app.images.open_verified(&digest).await {
        Ok(_) => Ok(true),
        Err(ImageError::NotFound { .. } | ImageError::DigestMismatch { .. }) => Ok(false),
        Err(error) => Err(ApiError::Internal(
            anyhow::Error::new(error).context(format!("checking the stored copy of {digest}")),
        )),
    }
}

/// Checks the role, the image's state and the expected digests before any
/// byte is read. Returns the sha256 the upload must have, if known.
/// `restore` is set when the role's file was recorded but its stored copy
/// is missing, which allows the upload in every state.
fn check_upload_request(
    app: &App,
    image: &ImageState,
    name: &str,
    role: &str,
    headers: &HeaderMap,
    restore: bool,
) -> Result<Option<Sha256Digest>, ApiError> {
    if !image.roles().contains(&role) {
        return Err(ApiError::invalid(
            "role",
            format!(
                "{role:?} is not a file of image {name:?} (install method {}); upload one of: {}",
                image.install_method,
                image.roles().join(", ")
            ),
        ));
    }
    if !restore && image.state != "incomplete" {
        return Err(ApiError::Conflict(format!(
            "image {name:?} is {} and its files can no longer change; create a new image with \"upload\": true",
            image.state
        )));
    }
    let header = headers
        .get(SHA256_HEADER)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<Sha256Digest>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "sha256",
                        format!("header {SHA256_HEADER} is not 64 hex digits of a sha256"),
                    )
                })
        })
        .transpose()?;
    let registered = image
        .sha256(role)
        .map(|digest| {
            digest.parse::<Sha256Digest>().map_err(|error| {
                ApiError::Internal(anyhow::anyhow!(
                    "image {name:?} has a bad {role} digest: {error}"
                ))
            })
        })
        .transpose()?;
    if let (Some(header), Some(registered)) = (header, registered)
        && header != registered
    {
        return Err(ApiError::invalid(
            "sha256",
            format!(
                "header {SHA256_HEADER} gives {header}, but image {name:?} was created expecting {registered} for its {role}"
            ),
        ));
    }
    if let Some(length) = content_length(headers)
        && length > app.config.images.max_file_bytes
    {
        return Err(too_large(app, name, role));
    }
    Ok(header.or(registered))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large(app: &App, name: &str, role: &str) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the {role} of image {name:?} is larger than images.max_file_bytes ({} bytes); nothing was stored. Raise the limit in the control plane's config",
        app.config.images.max_file_bytes
    ))
}

fn signature_header(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(value) = headers.get(SIGNATURE_HEADER) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "signature",
            format!("header {SIGNATURE_HEADER} is not a base64-encoded detached signature"),
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| invalid())?;
    if bytes.is_empty() || bytes.len() > MAX_SIGNATURE_BYTES {
        return Err(ApiError::invalid(
            "signature",
            format!(
                "header {SIGNATURE_HEADER} decodes to {} bytes; a detached signature is 1 to {MAX_SIGNATURE_BYTES}",
                bytes.len()
            ),
        ));
    }
    Ok(Some(bytes))
}

/// Streams the request body into a new upload. The upload is dropped (and
/// its temporary file deleted) on every error, including a body cut off by
/// the client.
async fn receive(
    app: &App,
    name: &str,
    role: &str,
    headers: &HeaderMap,
    body: RawBody,
) -> Result<Upload, ApiError> {
    let mut upload = app
        .images
        .begin_upload()
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?;
    let declared = content_length(headers);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::BadRequest(format!(
                "the upload of the {role} of image {name:?} was cut off after {} bytes ({error}); nothing was stored, send it again",
                upload.size()
            ))
        })?;
        if upload.size() + chunk.len() as u64 > app.config.images.max_file_bytes {
            return Err(too_large(app, name, role));
        }
        upload
            .write(&chunk)
            .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?;
    }
    if upload.size() == 0 {
        return Err(ApiError::invalid(
            "body",
            format!("the {role} of image {name:?} is empty; send the file's bytes as the body"),
        ));
    }
    if let Some(declared) = declared
        && declared != upload.size()
    {
        return Err(ApiError::BadRequest(format!(
            "the upload of the {role} of image {name:?} ended after {} of its {declared} bytes; nothing was stored, send it again",
            upload.size()
        )));
    }
    Ok(upload)
}

async fn check_signature(
    app: &App,
    name: &str,
    role: &str,
    signature: &[u8],
    upload: &Upload,
) -> Result<String, ApiError> {
    let Some(keyring) = &app.config.images.signature_keyring else {
        return Err(ApiError::invalid(
            "signature",
            format!(
                "the {role} of image {name:?} comes with a signature, but the control plane has no images.signature_keyring to check it against; configure one or upload without the signature"
            ),
        ));
    };
    match signatures::verify(&app.config.images.gpgv, keyring, signature, upload.path()).await {
        Ok(good) => Ok(good.fingerprint),
        Err(
            error @ (signatures::SignatureError::Run { .. }
            | signatures::SignatureError::TimedOut { .. }
            | signatures::SignatureError::TempFile(_)),
        ) => Err(ApiError::Internal(anyhow::Error::new(error).context(
            format!("checking the signature of the {role} of image {name:?}"),
        ))),
        Err(error) => {
            // A rejected signature may be an attack on the catalogue, so it
            // is logged although the client gets a 4xx.
            tracing::warn!(image = %name, role, error = %error, "image upload rejected: signature check failed");
            Err(ApiError::invalid(
                "signature",
                format!("the {role} of image {name:?} was rejected, nothing was stored: {error}"),
            ))
        }
    }
}

/// Records an uploaded file and marks the image ready when it was the last
/// one missing. Returns the image's state afterwards.
async fn record_file(
    app: &App,
    image: &ImageState,
    role: &str,
    digest: &Sha256Digest,
    size: u64,
    signer: Option<&str>,
) -> Result<&'static str, ApiError> {
    let size =
        i64::try_from(size).map_err(|_| ApiError::Internal(anyhow::anyhow!("size overflow")))?;
    let mut tx = app.pool.begin().await?;
    // NOTE: the blob stays in the store when this insert loses a race with
    // a concurrent upload of the same file; it is content-addressed, so it
    // is the same bytes and takes no more room than one copy.
    sqlx::query(
        "INSERT INTO image_files (image_id, role, sha256, size, signer_fingerprint, uploaded_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(image.id)
    .bind(role)
    .bind(digest.to_hex())
    .bind(size)
    .bind(signer)
    .bind(db::now_ms())
    .execute(&mut *tx)
    .await
    .map_err(|error| {
        crate::api::error::unique_violation(error, || {
            format!("the {role} of this image was already uploaded")
        })
    })?;
    let update = match role {
        "kernel" => "UPDATE images SET kernel_sha256 = ? WHERE id = ?",
        "initrd" => "UPDATE images SET initrd_sha256 = ? WHERE id = ?",
        _ => "UPDATE images SET disk_sha256 = ?, disk_size = ? WHERE id = ?",
    };
    let mut query = sqlx::query(update).bind(digest.to_hex());
    if role == "disk" {
        query = query.bind(size);
    }
    query.bind(image.id).execute(&mut *tx).await?;

    let uploaded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM image_files WHERE image_id = ?")
        .bind(image.id)
        .fetch_one(&mut *tx)
        .await?;
    let state = if uploaded >= image.roles().len() as i64 {
        "ready"
    } else {
        "incomplete"
    };
    sqlx::query("UPDATE images SET state = ? WHERE id = ?")
        .bind(state)
        .bind(image.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(state)
}

/// Records the new signer, if any, of a file whose missing stored copy
/// was uploaded again. The file's digest and size stay as they were.
/// Returns the image's state, which does not change.
async fn record_restored_file(
    app: &App,
    image: &ImageState,
    role: &str,
    signer: Option<&str>,
) -> Result<String, ApiError> {
    sqlx::query(
        "UPDATE image_files SET signer_fingerprint = COALESCE(?, signer_fingerprint)
         WHERE image_id = ? AND role = ?",
    )
    .bind(signer)
    .bind(image.id)
    .bind(role)
    .execute(&app.pool)
    .await?;
    Ok(image.state.clone())
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct FileRow {
    role: String,
    sha256: String,
    size: i64,
    signer_fingerprint: Option<String>,
    uploaded_at: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct StageRow {
    site: String,
    status: String,
    error: Option<String>,
    requested_at: i64,
    updated_at: i64,
}

/// `GET /v1/images/{name}`: the image, its files (uploaded or registered)
/// and its pre-staging status per site.
pub async fn show_image(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let image = load_image(&app, &name).await?;
    let uploaded: Vec<FileRow> = sqlx::query_as(
        "SELECT role, sha256, size, signer_fingerprint, uploaded_at FROM image_files WHERE image_id = ?",
    )
    .bind(image.id)
    .fetch_all(&app.pool)
    .await?;
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for role in image.roles() {
        let file = uploaded.iter().find(|file| file.role == *role);
        // This looks only for the blob file: a copy corrupted since its
        // last check shows as stored until an agent's download of it
        // quarantines it.
        let stored = file.map(|f| {
            f.sha256
                .parse::<Sha256Digest>()
                .is_ok_and(|digest| app.images.contains(&digest))
        });
        if stored == Some(false) {
            missing.push(*role);
        }
        files.push(json!({
            "role": role,
            "sha256": file.map(|f| f.sha256.as_str()).or(image.sha256(role)),
            "size": file.map(|f| f.size).or(if *role == "disk" { image.disk_size } else { None }),
            "uploaded": file.is_some(),
            "stored": stored,
            "signer_fingerprint": file.and_then(|f| f.signer_fingerprint.as_deref()),
            "upstream_url": image.upstream_url(role),
        }));
    }
    let stages: Vec<StageRow> = sqlx::query_as(
        "SELECT s.name AS site, g.status, g.error, g.requested_at, g.updated_at
         FROM image_stages g JOIN sites s ON s.id = g.site_id WHERE g.image_id = ? ORDER BY s.name",
    )
    .bind(image.id)
    .fetch_all(&app.pool)
    .await?;
    let shown = json!({
        "id": image.id,
        "name": name,
        "state": image.state,
        "os_family": image.os_family,
        "install_method": image.install_method,
        "kernel_args": image.kernel_args,
        "files": files,
        "missing_files": missing,
        "stages": stages,
    });
    Ok(Json(shown))
}

/// `DELETE /v1/images/{name}`: removes an image that no product uses, with
/// its file and stage rows. A stored file goes too unless another image
/// records the same sha256. Agents drop the image from their pinned set on
/// their next site state.
pub async fn delete_image(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = db::begin(&app.pool).await?;
    let image_id: Option<i64> = sqlx::query_scalar("SELECT id FROM images WHERE name = ?")
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
    let image_id = image_id.ok_or_else(|| ApiError::not_found("image", format!("{name:?}")))?;
    let products: Vec<String> =
        sqlx::query_scalar("SELECT name FROM products WHERE image_id = ? ORDER BY name")
            .bind(image_id)
            .fetch_all(&mut *tx)
            .await?;
    if !products.is_empty() {
        return Err(ApiError::Conflict(format!(
            "image {name:?} is used by product(s) {}, whose orders install it; it cannot be deleted while a product names it",
            products.join(", ")
        )));
    }
    let digests: Vec<String> =
        sqlx::query_scalar("SELECT sha256 FROM image_files WHERE image_id = ?")
            .bind(image_id)
            .fetch_all(&mut *tx)
            .await?;
    for statement in [
        "DELETE FROM image_files WHERE image_id = ?",
        "DELETE FROM image_stages WHERE image_id = ?",
        "DELETE FROM images WHERE id = ?",
    ] {
        sqlx::query(statement)
            .bind(image_id)
            .execute(&mut *tx)
            .await?;
    }
    let mut unused = Vec::new();
    for digest in digests {
        let shared: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM image_files WHERE sha256 = ? LIMIT 1")
                .bind(&digest)
                .fetch_optional(&mut *tx)
                .await?;
        if shared.is_none() {
            unused.push(digest);
        }
    }
    tx.commit().await?;

    // The rows are gone, so a blob left behind by a failed removal is only
    // wasted space; it is logged and not reported as a failed delete.
    for digest in &unused {
        let removed = digest
            .parse::<Sha256Digest>()
            .map_err(anyhow::Error::new)
            .and_then(|parsed| app.images.remove(&parsed).map_err(anyhow::Error::new));
        if let Err(error) = removed {
            tracing::warn!(image = %name, sha256 = %digest, error = format!("{error:#}"), "cannot remove a deleted image's stored file");
        }
    }
    tracing::info!(image = %name, removed_files = unused.len(), "image deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRequest {
    site: String,
}

// TODO: add `DELETE /v1/images/{name}/stage/{site}` to withdraw a request,
// which unpins the image's files on the agent.
/// `POST /v1/images/{name}/stage`: requests the site's agent to download the
/// image into its cache and keep it there. Repeating the request resets a
/// failed stage to `requested`, so the agent tries again.
pub async fn stage_image(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(request): Body<StageRequest>,
) -> Result<Created, ApiError> {
    let image = load_image(&app, &name).await?;
    if image.state != "ready" {
        return Err(ApiError::Conflict(format!(
            "image {name:?} is {}; upload its missing files before staging it",
            image.state
        )));
    }
    let site_id = site_id(&app, &request.site).await?;
    let now = db::now_ms();
    sqlx::query(
        "INSERT INTO image_stages (image_id, site_id, status, error, requested_at, updated_at)
         VALUES (?, ?, 'requested', NULL, ?, ?)
         ON CONFLICT (image_id, site_id) DO UPDATE SET
             status = CASE WHEN status = 'failed' THEN 'requested' ELSE status END,
             error = NULL, requested_at = excluded.requested_at, updated_at = excluded.updated_at",
    )
    .bind(image.id)
    .bind(site_id)
    .bind(now)
    .bind(now)
    .execute(&app.pool)
    .await?;
    tracing::info!(image = %name, site = %request.site, "image pre-staging requested");
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "image": name, "site": request.site, "status": StageStatus::Requested.as_str() }),
        ),
    ))
}

/// Returns the uploaded roles of image `image_id`.
pub(crate) async fn uploaded_roles(app: &App, image_id: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT role FROM image_files WHERE image_id = ?")
        .bind(image_id)
        .fetch_all(&app.pool)
        .await
}

/// Returns the URL an agent downloads a file from: the control plane's own copy
/// when the file was uploaded, else its upstream URL.
pub(crate) fn agent_file_url(
    uploaded: bool,
    sha256: &str,
    upstream: Option<String>,
) -> Option<String> {
    if uploaded {
        Some(image_file_path(sha256))
    } else {
        upstream
    }
}

/// Lists the images staged for `site_id`, as the site state sends them.
pub(crate) async fn staged_images(
    app: &App,
    site_id: i64,
) -> Result<Vec<StagedImage>, sqlx::Error> {
    let requests: Vec<(String, i64)> = sqlx::query_as(
        "SELECT i.name, g.requested_at FROM image_stages g JOIN images i ON i.id = g.image_id
         WHERE g.site_id = ? AND i.state = 'ready' ORDER BY i.id",
    )
    .bind(site_id)
    .fetch_all(&app.pool)
    .await?;
    let mut staged = Vec::with_capacity(requests.len());
    for (name, requested_at) in requests {
        let Ok(image) = load_image(app, &name).await else {
            continue;
        };
        let uploaded = uploaded_roles(app, image.id).await?;
        let files = image
            .roles()
            .iter()
            .filter_map(|role| {
                let sha256 = image.sha256(role)?.to_string();
                Some(StagedFile {
                    role: role.to_string(),
                    size: (*role == "disk")
                        .then_some(image.disk_size)
                        .flatten()
                        .and_then(|size| u64::try_from(size).ok()),
                    url: agent_file_url(
                        uploaded.iter().any(|r| r == role),
                        &sha256,
                        image.upstream_url(role).map(str::to_string),
                    ),
                    sha256,
                })
            })
            .collect();
        staged.push(StagedImage {
            name,
            requested_at,
            files,
        });
    }
    Ok(staged)
}

/// Returns the files of image `image_id` that carry no verified signature:
/// files registered by digest or URL, and files uploaded without one.
pub(crate) async fn unsigned_roles(
    app: &App,
    image_id: i64,
    install_method: &str,
) -> Result<Vec<&'static str>, sqlx::Error> {
    let signed: Vec<String> = sqlx::query_scalar(
        "SELECT role FROM image_files WHERE image_id = ? AND signer_fingerprint IS NOT NULL",
    )
    .bind(image_id)
    .fetch_all(&app.pool)
    .await?;
    Ok(roles_for(install_method)
        .iter()
        .copied()
        .filter(|role| !signed.iter().any(|signed| signed == role))
        .collect())
}

/// Describes why image `name` cannot be used while
/// `images.require_signatures` is on, and what to do.
pub(crate) fn unsigned_image_message(name: &str, unsigned: &[&str]) -> String {
    format!(
        "image {name:?} has no verified signature on its {}, and images.require_signatures is on; \
         create a new image with `rackhand image create --upload` and a signature for every file \
         (--kernel-signature, --initrd-signature, --disk-signature), or set images.require_signatures = false",
        join_roles(unsigned)
    )
}

/// Says why an order cannot install an unsigned image. A product keeps its
/// image, so only turning the setting off lets this order go on.
pub(crate) fn unsigned_order_message(name: &str, unsigned: &[&str], order_id: i64) -> String {
    format!(
        "image {name:?} has no verified signature on its {}, and images.require_signatures is on; \
         to install it anyway set images.require_signatures = false, restart the control plane and \
         retry the order (rackhand order retry {order_id}); otherwise sell a new product on a signed image",
        join_roles(unsigned)
    )
}

/// Lists file roles as prose: `kernel`, `kernel and initrd`, `kernel,
/// initrd and disk`.
fn join_roles(roles: &[&str]) -> String {
    match roles {
        [] => String::new(),
        [only] => (*only).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}
