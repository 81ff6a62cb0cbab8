//! Sites, images, products, enrollment tokens and agents (subnets and nodes
//! have their own modules): what operators register before orders can run.
//!
//! References between records are by name (`"site": "dc1"`), because that
//! is what operators type; names are unique.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use rackhand_protocol::agent::InstallMethod;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agents::enroll::token_hash;
use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body, unique_violation};
use crate::app::SharedApp;
use crate::db;

pub(crate) type Created = (StatusCode, Json<Value>);

/// Longest `kernel_args` accepted for an image.
const MAX_KERNEL_ARGS: usize = 1024;

/// Checks a record name. Names appear as URL path segments
/// (`/v1/images/{name}`), where clients and proxies resolve `.` and `..`
/// as relative paths, so a name made only of dots could never be addressed.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid {
        return Err(ApiError::invalid(
            field,
            format!("{name:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
        ));
    }
    if name.bytes().all(|b| b == b'.') {
        return Err(ApiError::invalid(
            field,
            format!(
                "{name:?} is made only of dots, which URLs read as a relative path; use a name with at least one letter or digit"
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn site_id(app: &SharedApp, site: &str) -> Result<i64, ApiError> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM sites WHERE name = ?")
        .bind(site)
        .fetch_optional(&app.pool)
        .await?;
    id.ok_or_else(|| ApiError::invalid("site", format!("site {site:?} does not exist")))
}

/// `GET /v1/ca`: the agent CA certificate and its fingerprint.
pub async fn ca(State(app): State<SharedApp>, _operator: Operator) -> Json<Value> {
    Json(json!({ "fingerprint": app.ca.fingerprint, "certificate_pem": app.ca.cert_pem }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    name: String,
}

pub async fn create_site(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(site): Body<NewSite>,
) -> Result<Created, ApiError> {
    check_name("name", &site.name)?;
    let id: i64 =
        sqlx::query_scalar("INSERT INTO sites (name, created_at) VALUES (?, ?) RETURNING id")
            .bind(&site.name)
            .bind(db::now_ms())
            .fetch_one(&app.pool)
            .await
            .map_err(|e| unique_violation(e, || format!("site {:?} already exists", site.name)))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": site.name })),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct SiteRow {
    id: i64,
    name: String,
    nodes: i64,
    agents: i64,
}

pub async fn list_sites(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<SiteRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT s.id, s.name,
                (SELECT COUNT(*) FROM nodes n WHERE n.site_id = s.id) AS nodes,
                (SELECT COUNT(*) FROM agents a WHERE a.site_id = s.id AND a.revoked_at IS NULL) AS agents
         FROM sites s ORDER BY s.id",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}

/// `POST /v1/sites/{site}/enrollment-tokens`: a one-time token for a new
/// site agent, shown once.
pub async fn create_enrollment_token(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(site): Path<String>,
) -> Result<Created, ApiError> {
    let site_id: Option<i64> = sqlx::query_scalar("SELECT id FROM sites WHERE name = ?")
        .bind(&site)
        .fetch_optional(&app.pool)
        .await?;
    let site_id = site_id.ok_or_else(|| ApiError::not_found("site", format!("{site:?}")))?;

    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("system random generator failed")))?;
    let token = format!(
        "rhe_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let now = db::now_ms();
    let expires_at = now + i64::from(app.config.agents.enrollment_token_ttl_seconds) * 1000;
    sqlx::query(
        "INSERT INTO enrollment_tokens (site_id, token_sha256, expires_at, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(site_id)
    .bind(token_hash(&token))
    .bind(expires_at)
    .bind(now)
    .execute(&app.pool)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "site": site,
            "token": token,
            "expires_at": expires_at,
            "ca_fingerprint": app.ca.fingerprint,
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    name: String,
    /// Required unless `upload` is set; then the digest the uploaded
    /// kernel must have, if given.
    kernel_sha256: Option<String>,
    initrd_sha256: Option<String>,
    /// The files will be uploaded into the control plane: the image starts
    /// `incomplete` and its digests are computed on upload.
    #[serde(default)]
    upload: bool,
    #[serde(default)]
    kernel_args: String,
    /// Where site agents download the kernel when their cache lacks it.
    kernel_url: Option<String>,
    initrd_url: Option<String>,
    /// Free-form family name such as `debian` or `rhel`, for operators and
    /// templates.
    #[serde(default = "default_os_family")]
    os_family: String,
    #[serde(default)]
    install_method: InstallMethod,
    /// The disk image an `image` install writes; required for that method
    /// and refused for the others.
    disk_sha256: Option<String>,
    disk_size: Option<u64>,
    disk_url: Option<String>,
}

fn default_os_family() -> String {
    "linux".to_string()
}

/// A disk image's sha256, size and upstream URL. An image created for upload
/// has only the digest its disk must have, if the operator gave one.
type DiskFields = (String, Option<u64>, Option<String>);

/// The disk image fields of a new image, checked against its install method.
fn check_disk(image: &NewImage) -> Result<Option<DiskFields>, ApiError> {
    let given =
        image.disk_sha256.is_some() || image.disk_size.is_some() || image.disk_url.is_some();
    if image.install_method != InstallMethod::Image {
        if given {
            return Err(ApiError::invalid(
                "disk_sha256",
                format!(
                    "a disk image belongs only to install_method \"image\", not {:?}; drop the disk fields or change the method",
                    image.install_method.as_str()
                ),
            ));
        }
        return Ok(None);
    }
    if image.upload {
        if image.disk_size.is_some() || image.disk_url.is_some() {
            return Err(ApiError::invalid(
                "disk_size",
                "an uploaded disk image's size is measured on upload and it has no upstream URL; drop disk_size and disk_url",
            ));
        }
        let digest = image
            .disk_sha256
            .as_deref()
            .map(|digest| check_digest("disk_sha256", digest))
            .transpose()?;
        return Ok(digest.map(|digest| (digest, None, None)));
    }
    let Some(digest) = &image.disk_sha256 else {
        return Err(ApiError::invalid(
            "disk_sha256",
            "is required for install_method \"image\": the sha256 of the disk image its installer writes",
        ));
    };
    let digest = check_digest("disk_sha256", digest)?;
    let size = match image.disk_size {
        Some(size) if size > 0 => size,
        _ => {
            return Err(ApiError::invalid(
                "disk_size",
                "is required for install_method \"image\": the disk image's size in bytes, above 0",
            ));
        }
    };
    let url = check_upstream_url("disk_url", &image.disk_url)?;
    Ok(Some((digest, Some(size), url)))
}

/// Checks an OS family name: what operators type, kept short and plain
/// because templates and e-mails show it.
fn check_os_family(family: &str) -> Result<(), ApiError> {
    let ok = !family.is_empty()
        && family.len() <= 32
        && family
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "os_family",
            format!(
                "{family:?} is not 1-32 characters of a-z, 0-9 and - (such as debian, rhel, windows)"
            ),
        ))
    }
}

/// Checks an upstream URL: http or https, without credentials in it (they
/// would reach logs and every agent).
fn check_upstream_url(field: &str, url: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(text) = url else {
        return Ok(None);
    };
    let parsed: reqwest::Url = text.trim().parse().map_err(|_| {
        ApiError::invalid(
            field,
            format!("{text:?} is not a URL such as https://mirror.example/vmlinuz"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::invalid(
            field,
            format!("{text:?} is not an http:// or https:// URL"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid(field, "must not contain credentials"));
    }
    Ok(Some(parsed.to_string()))
}

/// Checks kernel arguments as the agent's boot script needs them: one line
/// that iPXE passes on unchanged, without the `rackhand.` arguments that
/// the agent adds itself.
fn check_kernel_args(args: &str) -> Result<(), ApiError> {
    let problem = if args.chars().any(char::is_control) {
        Some("must be one line without control characters".to_string())
    } else if args.contains("${") {
        Some("must not contain \"${\", which iPXE expands as one of its settings".to_string())
    } else if let Some(word) = args
        .split_whitespace()
        .find(|word| *word == "||" || *word == "&&")
    {
        Some(format!(
            "must not contain {word:?} as a word, which iPXE reads as chaining another command"
        ))
    } else {
        args.split_whitespace()
            .find(|word| word.starts_with("rackhand."))
            .map(|word| {
                format!(
                    "must not contain {word:?}: the agent sets the rackhand.* arguments itself; remove it"
                )
            })
    };
    match problem {
        Some(problem) => Err(ApiError::invalid("kernel_args", problem)),
        None => Ok(()),
    }
}

fn check_digest(field: &str, digest: &str) -> Result<String, ApiError> {
    let lower = digest.trim().to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(ApiError::invalid(
            field,
            format!("{digest:?} is not 64 hex digits of a sha256"),
        ))
    }
}

pub async fn create_image(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(image): Body<NewImage>,
) -> Result<Created, ApiError> {
    check_name("name", &image.name)?;
    check_source(&app, &image)?;
    let kernel = optional_digest("kernel_sha256", &image.kernel_sha256, image.upload)?;
    let initrd = optional_digest("initrd_sha256", &image.initrd_sha256, image.upload)?;
    let kernel_url = check_upstream_url("kernel_url", &image.kernel_url)?;
    let initrd_url = check_upstream_url("initrd_url", &image.initrd_url)?;
    check_os_family(&image.os_family)?;
    let disk = check_disk(&image)?;
    check_kernel_args(&image.kernel_args)?;
    // The agent appends its callback arguments, and kernels cap the whole
    // command line (2048 bytes on x86 before Linux 5.x, 4096 after).
    if image.kernel_args.len() > MAX_KERNEL_ARGS {
        return Err(ApiError::invalid(
            "kernel_args",
            format!(
                "is {} bytes long; at most {MAX_KERNEL_ARGS} are allowed",
                image.kernel_args.len()
            ),
        ));
    }
    let id: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO images (name, kernel_sha256, initrd_sha256, kernel_args, kernel_url, initrd_url,
                             os_family, install_method, disk_sha256, disk_size, disk_url, state, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&image.name)
    .bind(&kernel)
    .bind(&initrd)
    .bind(&image.kernel_args)
    .bind(&kernel_url)
    .bind(&initrd_url)
    .bind(&image.os_family)
    .bind(image.install_method.as_str())
    .bind(disk.as_ref().map(|d| d.0.clone()))
    .bind(
        disk.as_ref()
            .and_then(|d| d.1)
            .map(|size| i64::try_from(size).unwrap_or(i64::MAX)),
    )
    .bind(disk.as_ref().and_then(|d| d.2.clone()))
    .bind(if image.upload { "incomplete" } else { "ready" })
    .bind(db::now_ms())
    .fetch_one(&app.pool)
    .await;
    let id = match id {
        Ok(id) => id,
        Err(error) => {
            let hint = existing_image_hint(&app, &image.name).await?;
            return Err(unique_violation(error, || {
                format!("image {:?} already exists{hint}", image.name)
            }));
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "name": image.name,
            "state": if image.upload { "incomplete" } else { "ready" },
        })),
    ))
}

/// Returns what an operator can do with an existing image of this name:
/// an incomplete one is finished by uploading its files, or deleted.
async fn existing_image_hint(app: &SharedApp, name: &str) -> Result<String, ApiError> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM images WHERE name = ?")
        .bind(name)
        .fetch_optional(&app.pool)
        .await?;
    Ok(match state.as_deref() {
        Some("incomplete") => format!(
            " and is incomplete; upload its missing files with `rackhand image upload {name} ROLE FILE` (`rackhand image show {name}` lists them), or delete it with `rackhand image delete {name}` and create it again"
        ),
        Some(_) => format!(
            "; pick another name, or delete it with `rackhand image delete {name}` if no product uses it"
        ),
        None => String::new(),
    })
}

/// Checks how the image's files reach the agents against the signature
/// policy: a detached signature covers file bytes, so the control plane can
/// check one only on a file it receives.
fn check_source(app: &SharedApp, image: &NewImage) -> Result<(), ApiError> {
    if image.upload {
        for (field, url) in [
            ("kernel_url", &image.kernel_url),
            ("initrd_url", &image.initrd_url),
        ] {
            if url.is_some() {
                return Err(ApiError::invalid(
                    field,
                    "an uploaded image's files come from the control plane; drop the URL or the upload",
                ));
            }
        }
        return Ok(());
    }
    // TODO: download an upstream file once on registration to check its
    // signature, so that images registered by URL can be signed too.
    if app.config.images.require_signatures {
        return Err(ApiError::invalid(
            "upload",
            "images.require_signatures is on, and a signature can be checked only on uploaded files; create the image with \"upload\": true (rackhand image create --upload) and upload each file with its signature",
        ));
    }
    Ok(())
}

/// Checks a kernel or initrd digest, which may be left out (as `""`) only
/// when the file will be uploaded.
fn optional_digest(field: &str, digest: &Option<String>, upload: bool) -> Result<String, ApiError> {
    match digest {
        Some(digest) => check_digest(field, digest),
        None if upload => Ok(String::new()),
        None => Err(ApiError::invalid(
            field,
            "is required unless the image is created with \"upload\": true",
        )),
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ImageRow {
    id: i64,
    name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    kernel_args: String,
    os_family: String,
    install_method: String,
    disk_sha256: Option<String>,
    disk_size: Option<i64>,
    state: String,
    /// Number of files uploaded into the control plane.
    uploaded_files: i64,
    /// Number of uploaded files with a verified signature.
    signed_files: i64,
}

pub async fn list_images(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<ImageRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT id, name, kernel_sha256, initrd_sha256, kernel_args, os_family, install_method,
                disk_sha256, disk_size, state,
                (SELECT COUNT(*) FROM image_files f WHERE f.image_id = i.id) AS uploaded_files,
                (SELECT COUNT(*) FROM image_files f WHERE f.image_id = i.id
                    AND f.signer_fingerprint IS NOT NULL) AS signed_files
         FROM images i ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    name: String,
    price_minor: u32,
    currency: String,
    min_cpu_cores: u32,
    min_ram_mib: u32,
    min_disk_gb: u32,
    image: String,
    /// The install template its orders render, by name; none for images
    /// that need no answer file.
    #[serde(default)]
    template: Option<String>,
    /// Templates that replace single NoCloud or configdrive files of a
    /// cloud-config product, by name.
    #[serde(default)]
    seed_templates: Vec<String>,
}

pub async fn create_product(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(product): Body<NewProduct>,
) -> Result<Created, ApiError> {
    check_name("name", &product.name)?;
    if product.price_minor == 0 {
        return Err(ApiError::invalid(
            "price_minor",
            "must be positive; a free product would be provisioned without any payment",
        ));
    }
    for (field, value) in [
        ("min_cpu_cores", product.min_cpu_cores),
        ("min_ram_mib", product.min_ram_mib),
    ] {
        if value == 0 {
            return Err(ApiError::invalid(field, "must be positive"));
        }
    }
    let currency = product.currency.to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(ApiError::invalid(
            "currency",
            format!(
                "{:?} is not a three-letter ISO 4217 code such as eur",
                product.currency
            ),
        ));
    }
    let image: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, install_method, state FROM images WHERE name = ?")
            .bind(&product.image)
            .fetch_optional(&app.pool)
            .await?;
    let (image_id, install_method, image_state) = image.ok_or_else(|| {
        ApiError::invalid("image", format!("image {:?} does not exist", product.image))
    })?;
    if image_state != "ready" {
        return Err(ApiError::invalid(
            "image",
            format!(
                "image {:?} is {image_state}; upload its missing files (rackhand image show {} lists them) before selling it",
                product.image, product.image
            ),
        ));
    }
    check_image_use(&app, &product, image_id, &install_method).await?;
    let main = match &product.template {
        None => None,
        Some(template) => Some(
            crate::api::templates::template_for_image(
                &app,
                template,
                &product.image,
                &install_method,
            )
            .await?,
        ),
    };
    let seeds = crate::api::templates::seed_templates(
        &app,
        &product.seed_templates,
        main.map(|(_, format)| format),
    )
    .await?;

    let mut tx = db::begin(&app.pool).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO products (name, price_minor, currency, min_cpu_cores, min_ram_mib, min_disk_gb, image_id,
                               install_template_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&product.name)
    .bind(i64::from(product.price_minor))
    .bind(&currency)
    .bind(i64::from(product.min_cpu_cores))
    .bind(i64::from(product.min_ram_mib))
    .bind(i64::from(product.min_disk_gb))
    .bind(image_id)
    .bind(main.map(|(id, _)| id))
    .bind(db::now_ms())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unique_violation(e, || format!("product {:?} already exists", product.name)))?;
    for (format, template_id) in seeds {
        sqlx::query(
            "INSERT INTO product_seed_templates (product_id, format, template_id) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(format.as_str())
        .bind(template_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": product.name })),
    ))
}

/// Checks that orders of a new product can install its image: bare-metal
/// orders cannot run `container` images, an installer image needs the
/// answer file its template renders, and with `images.require_signatures`
/// every file of the image must carry a verified signature.
async fn check_image_use(
    app: &SharedApp,
    product: &NewProduct,
    image_id: i64,
    install_method: &str,
) -> Result<(), ApiError> {
    let image = &product.image;
    if install_method == InstallMethod::Container.as_str() {
        return Err(ApiError::invalid(
            "image",
            format!(
                "image {image:?} has install method container, which bare-metal orders do not run yet; pick an image with install method live, image, kickstart, preseed or cloud-init"
            ),
        ));
    }
    let needed_format = crate::install::TemplateFormat::ALL
        .into_iter()
        .find(|format| format.install_method().map(InstallMethod::as_str) == Some(install_method));
    if let (Some(format), None) = (needed_format, &product.template) {
        return Err(ApiError::invalid(
            "template",
            format!(
                "image {image:?} has install method {install_method}, whose installer needs an answer file; upload a {format} template with `rackhand template put NAME --format {format} --file FILE` and pass --template NAME"
            ),
        ));
    }
    if app.config.images.require_signatures {
        let unsigned =
            crate::api::image_library::unsigned_roles(app, image_id, install_method).await?;
        if !unsigned.is_empty() {
            return Err(ApiError::invalid(
                "image",
                crate::api::image_library::unsigned_image_message(image, &unsigned),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ProductRow {
    id: i64,
    name: String,
    price_minor: i64,
    currency: String,
    min_cpu_cores: i64,
    min_ram_mib: i64,
    min_disk_gb: i64,
    image: String,
    template: Option<String>,
    #[sqlx(skip)]
    seed_templates: Vec<String>,
}

pub async fn list_products(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<ProductRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT p.id, p.name, p.price_minor, p.currency, p.min_cpu_cores, p.min_ram_mib, p.min_disk_gb, i.name AS image,
                t.name AS template
         FROM products p JOIN images i ON i.id = p.image_id
         LEFT JOIN install_templates t ON t.id = p.install_template_id
         ORDER BY p.id",
    )
    .fetch_all(&app.pool)
    .await?;
    let mut rows: Vec<ProductRow> = rows;
    let seeds: Vec<(i64, String)> = sqlx::query_as(
        "SELECT ps.product_id, t.name FROM product_seed_templates ps
         JOIN install_templates t ON t.id = ps.template_id
         ORDER BY ps.product_id, ps.format",
    )
    .fetch_all(&app.pool)
    .await?;
    for (product_id, template) in seeds {
        if let Some(row) = rows.iter_mut().find(|row| row.id == product_id) {
            row.seed_templates.push(template);
        }
    }
    Ok(Json(rows))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AgentRow {
    id: i64,
    site: String,
    cert_fingerprint: String,
    cert_expires_at: i64,
    agent_version: String,
    enrolled_at: i64,
    last_seen_at: Option<i64>,
    revoked_at: Option<i64>,
}

pub async fn list_agents(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<AgentRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT a.id, s.name AS site, a.cert_fingerprint, a.cert_expires_at, a.agent_version, a.enrolled_at,
                a.last_seen_at, a.revoked_at
         FROM agents a JOIN sites s ON s.id = a.site_id ORDER BY a.id",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}
