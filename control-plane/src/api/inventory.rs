//! Sites, subnets, nodes, images, products, enrollment tokens and agents:
//! what operators register before orders can run.
//!
//! References between records are by name (`"site": "dc1"`), because that
//! is what operators type; names are unique. BMC passwords are write-only:
//! stored sealed and never returned.

use std::net::Ipv4Addr;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use rackhand_protocol::MacAddr;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agents::enroll::token_hash;
use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body, unique_violation};
use crate::app::SharedApp;
use crate::db;
use crate::ipam::Ipv4Cidr;
use crate::names;
use crate::seal;

type Created = (StatusCode, Json<Value>);

fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{name:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
        ))
    }
}

async fn site_id(app: &SharedApp, site: &str) -> Result<i64, ApiError> {
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
pub struct NewSubnet {
    name: String,
    site: String,
    cidr: String,
    gateway: Option<Ipv4Addr>,
    range_start: Option<Ipv4Addr>,
    range_end: Option<Ipv4Addr>,
    ptr_zone: Option<String>,
}

pub async fn create_subnet(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(subnet): Body<NewSubnet>,
) -> Result<Created, ApiError> {
    check_name("name", &subnet.name)?;
    let cidr: Ipv4Cidr = subnet
        .cidr
        .parse()
        .map_err(|e: crate::ipam::CidrError| ApiError::invalid("cidr", e.to_string()))?;
    for (field, address) in [
        ("gateway", subnet.gateway),
        ("range_start", subnet.range_start),
        ("range_end", subnet.range_end),
    ] {
        if let Some(address) = address
            && !cidr.contains(address)
        {
            return Err(ApiError::invalid(
                field,
                format!("{address} is outside {cidr}"),
            ));
        }
    }
    if let (Some(start), Some(end)) = (subnet.range_start, subnet.range_end)
        && start > end
    {
        return Err(ApiError::invalid(
            "range_end",
            format!("{end} is before range_start {start}"),
        ));
    }
    let ptr_zone = match &subnet.ptr_zone {
        Some(zone) => {
            let bare = zone.trim_end_matches('.');
            names::check_fqdn(bare).map_err(|m| ApiError::invalid("ptr_zone", m))?;
            Some(format!("{bare}."))
        }
        None => None,
    };
    let site_id = site_id(&app, &subnet.site).await?;

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO subnets (site_id, name, cidr, gateway, range_start, range_end, ptr_zone, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(site_id)
    .bind(&subnet.name)
    .bind(cidr.to_string())
    .bind(subnet.gateway.map(|a| a.to_string()))
    .bind(subnet.range_start.map(|a| a.to_string()))
    .bind(subnet.range_end.map(|a| a.to_string()))
    .bind(&ptr_zone)
    .bind(db::now_ms())
    .fetch_one(&app.pool)
    .await
    .map_err(|e| unique_violation(e, || format!("subnet {:?} already exists", subnet.name)))?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "name": subnet.name, "cidr": cidr.to_string(), "ptr_zone": ptr_zone.unwrap_or_else(|| cidr.reverse_zone()) }),
        ),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct SubnetRow {
    id: i64,
    name: String,
    site: String,
    cidr: String,
    gateway: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    ptr_zone: Option<String>,
}

pub async fn list_subnets(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<SubnetRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT n.id, n.name, s.name AS site, n.cidr, n.gateway, n.range_start, n.range_end, n.ptr_zone
         FROM subnets n JOIN sites s ON s.id = n.site_id ORDER BY n.id",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    name: String,
    site: String,
    subnet: String,
    boot_mac: MacAddr,
    cpu_cores: u32,
    ram_mib: u32,
    disk_gb: u32,
    bmc: NewBmc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBmc {
    #[serde(default = "default_driver")]
    driver: String,
    url: String,
    username: String,
    password: rackhand_protocol::Secret,
}

fn default_driver() -> String {
    "redfish".to_string()
}

pub async fn create_node(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(node): Body<NewNode>,
) -> Result<Created, ApiError> {
    check_name("name", &node.name)?;
    if node.bmc.driver != "redfish" {
        // TODO: accept idrac, ilo, ipmi and ironic once their drivers exist.
        return Err(ApiError::invalid(
            "bmc.driver",
            format!(
                "driver {:?} is not supported yet; use \"redfish\"",
                node.bmc.driver
            ),
        ));
    }
    let url_ok = node
        .bmc
        .url
        .parse::<reqwest::Url>()
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !url_ok {
        return Err(ApiError::invalid(
            "bmc.url",
            format!("{:?} is not an http:// or https:// URL", node.bmc.url),
        ));
    }
    if node.cpu_cores == 0 || node.ram_mib == 0 {
        return Err(ApiError::invalid(
            "cpu_cores",
            "cpu_cores and ram_mib must be positive",
        ));
    }
    let site_id = site_id(&app, &node.site).await?;
    let subnet: Option<(i64, i64)> =
        sqlx::query_as("SELECT id, site_id FROM subnets WHERE name = ?")
            .bind(&node.subnet)
            .fetch_optional(&app.pool)
            .await?;
    let Some((subnet_id, subnet_site)) = subnet else {
        return Err(ApiError::invalid(
            "subnet",
            format!("subnet {:?} does not exist", node.subnet),
        ));
    };
    if subnet_site != site_id {
        return Err(ApiError::invalid(
            "subnet",
            format!(
                "subnet {:?} belongs to another site than {:?}",
                node.subnet, node.site
            ),
        ));
    }

    let mut tx = db::begin(&app.pool).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO nodes (site_id, subnet_id, name, bmc_driver, bmc_url, bmc_username, bmc_password_sealed,
                            boot_mac, cpu_cores, ram_mib, disk_gb, created_at)
         VALUES (?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(site_id)
    .bind(subnet_id)
    .bind(&node.name)
    .bind(&node.bmc.driver)
    .bind(&node.bmc.url)
    .bind(&node.bmc.username)
    .bind(node.boot_mac.to_string())
    .bind(i64::from(node.cpu_cores))
    .bind(i64::from(node.ram_mib))
    .bind(i64::from(node.disk_gb))
    .bind(db::now_ms())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        unique_violation(e, || {
            format!("a node named {:?} or with boot MAC {} already exists", node.name, node.boot_mac)
        })
    })?;
    let sealed = app
        .sealer
        .seal(&seal::bmc_password_context(id), node.bmc.password.expose())
        .map_err(|e| ApiError::Internal(e.into()))?;
    sqlx::query("UPDATE nodes SET bmc_password_sealed = ? WHERE id = ?")
        .bind(sealed)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "name": node.name, "boot_mac": node.boot_mac, "state": "available" }),
        ),
    ))
}

#[derive(Debug, Deserialize)]
pub struct NodeFilter {
    site: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct NodeRow {
    id: i64,
    name: String,
    site: String,
    subnet: String,
    boot_mac: String,
    cpu_cores: i64,
    ram_mib: i64,
    disk_gb: i64,
    bmc_driver: String,
    bmc_url: String,
    bmc_username: String,
    state: String,
    reserved_by_order: Option<i64>,
}

pub async fn list_nodes(
    State(app): State<SharedApp>,
    _operator: Operator,
    Query(filter): Query<NodeFilter>,
) -> Result<Json<Vec<NodeRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT n.id, n.name, s.name AS site, b.name AS subnet, n.boot_mac, n.cpu_cores, n.ram_mib, n.disk_gb,
                n.bmc_driver, n.bmc_url, n.bmc_username, n.state, n.reserved_by_order
         FROM nodes n JOIN sites s ON s.id = n.site_id JOIN subnets b ON b.id = n.subnet_id
         WHERE ?1 IS NULL OR s.name = ?1 ORDER BY n.id",
    )
    .bind(&filter.site)
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    #[serde(default)]
    kernel_args: String,
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
    let kernel = check_digest("kernel_sha256", &image.kernel_sha256)?;
    let initrd = check_digest("initrd_sha256", &image.initrd_sha256)?;
    if image.kernel_args.contains(['\n', '\r']) {
        return Err(ApiError::invalid("kernel_args", "must be one line"));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO images (name, kernel_sha256, initrd_sha256, kernel_args, created_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&image.name)
    .bind(&kernel)
    .bind(&initrd)
    .bind(&image.kernel_args)
    .bind(db::now_ms())
    .fetch_one(&app.pool)
    .await
    .map_err(|e| unique_violation(e, || format!("image {:?} already exists", image.name)))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": image.name })),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ImageRow {
    id: i64,
    name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    kernel_args: String,
}

pub async fn list_images(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<ImageRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT id, name, kernel_sha256, initrd_sha256, kernel_args FROM images ORDER BY id",
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
}

pub async fn create_product(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(product): Body<NewProduct>,
) -> Result<Created, ApiError> {
    check_name("name", &product.name)?;
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
    let image_id: Option<i64> = sqlx::query_scalar("SELECT id FROM images WHERE name = ?")
        .bind(&product.image)
        .fetch_optional(&app.pool)
        .await?;
    let image_id = image_id.ok_or_else(|| {
        ApiError::invalid("image", format!("image {:?} does not exist", product.image))
    })?;

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO products (name, price_minor, currency, min_cpu_cores, min_ram_mib, min_disk_gb, image_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&product.name)
    .bind(i64::from(product.price_minor))
    .bind(&currency)
    .bind(i64::from(product.min_cpu_cores))
    .bind(i64::from(product.min_ram_mib))
    .bind(i64::from(product.min_disk_gb))
    .bind(image_id)
    .bind(db::now_ms())
    .fetch_one(&app.pool)
    .await
    .map_err(|e| unique_violation(e, || format!("product {:?} already exists", product.name)))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": product.name })),
    ))
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
}

pub async fn list_products(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<ProductRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT p.id, p.name, p.price_minor, p.currency, p.min_cpu_cores, p.min_ram_mib, p.min_disk_gb, i.name AS image
         FROM products p JOIN images i ON i.id = p.image_id ORDER BY p.id",
    )
    .fetch_all(&app.pool)
    .await?;
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
