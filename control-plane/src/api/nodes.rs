//! Bare-metal nodes: registration, listing, and updates of their BMC access.
//!
//! BMC passwords are write-only: stored sealed, never returned. A node's BMC
//! URL is unique, because two records that drive one BMC would let an order
//! for one node power-cycle another customer's machine.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rackhand_protocol::{MacAddr, Secret};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body, unique_violation};
use crate::api::inventory::{Created, check_name, site_id};
use crate::app::SharedApp;
use crate::db;
use crate::seal;

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
    password: Secret,
}

fn default_driver() -> String {
    "redfish".to_string()
}

/// Returns the BMC URL in its stored form, or the reason it is unusable.
fn normalize_bmc_url(text: &str) -> Result<String, ApiError> {
    let url: reqwest::Url = text.trim().parse().map_err(|_| {
        ApiError::invalid(
            "bmc.url",
            format!("{text:?} is not a URL such as https://bmc-r1-n01/redfish/v1"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(
            "bmc.url",
            format!("{text:?} is not an http:// or https:// URL"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "bmc.url",
            "must not contain credentials; give them as bmc.username and bmc.password",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::invalid(
            "bmc.url",
            "must not contain a query or fragment",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn check_driver(driver: &str) -> Result<(), ApiError> {
    if driver == "redfish" {
        return Ok(());
    }
    // TODO: accept idrac, ilo, ipmi and ironic once their drivers exist.
    Err(ApiError::invalid(
        "bmc.driver",
        format!("driver {driver:?} is not supported yet; use \"redfish\""),
    ))
}

fn check_credentials(username: &str, password: &Secret) -> Result<(), ApiError> {
    if username.trim().is_empty() {
        return Err(ApiError::invalid("bmc.username", "must not be empty"));
    }
    if password.expose().is_empty() {
        return Err(ApiError::invalid("bmc.password", "must not be empty"));
    }
    Ok(())
}

fn check_hardware(node: &NewNode) -> Result<(), ApiError> {
    for (field, value) in [
        ("cpu_cores", node.cpu_cores),
        ("ram_mib", node.ram_mib),
        ("disk_gb", node.disk_gb),
    ] {
        if value == 0 {
            return Err(ApiError::invalid(field, "must be positive"));
        }
    }
    // The low bit of the first octet marks group (multicast and broadcast)
    // addresses, which no NIC boots from.
    if node.boot_mac.0 == [0; 6] {
        return Err(ApiError::invalid(
            "boot_mac",
            "00:00:00:00:00:00 is not a NIC's address",
        ));
    }
    if node.boot_mac.0[0] & 1 == 1 {
        return Err(ApiError::invalid(
            "boot_mac",
            format!(
                "{} is a multicast or broadcast address, not a NIC's",
                node.boot_mac
            ),
        ));
    }
    Ok(())
}

/// Names the existing node that already has `name` at the site, the MAC or
/// the BMC URL, for a precise 409.
async fn conflict(
    app: &SharedApp,
    site_id: i64,
    node: &NewNode,
    bmc_url: &str,
) -> Result<Option<String>, ApiError> {
    let row: Option<(String, String, String, i64)> = sqlx::query_as(
        "SELECT name, boot_mac, bmc_url, site_id FROM nodes
         WHERE (site_id = ? AND name = ?) OR boot_mac = ? OR bmc_url = ? LIMIT 1",
    )
    .bind(site_id)
    .bind(&node.name)
    .bind(node.boot_mac.to_string())
    .bind(bmc_url)
    .fetch_optional(&app.pool)
    .await?;
    Ok(row.map(|(name, mac, url, _)| {
        if mac == node.boot_mac.to_string() {
            format!("node {name:?} already has boot MAC {mac}")
        } else if url == bmc_url {
            format!("node {name:?} already uses BMC {url}; two nodes must not drive one BMC")
        } else {
            format!(
                "a node named {name:?} already exists at site {:?}",
                node.site
            )
        }
    }))
}

pub async fn create_node(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(node): Body<NewNode>,
) -> Result<Created, ApiError> {
    check_name("name", &node.name)?;
    check_driver(&node.bmc.driver)?;
    let bmc_url = normalize_bmc_url(&node.bmc.url)?;
    check_credentials(&node.bmc.username, &node.bmc.password)?;
    check_hardware(&node)?;
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
    if let Some(message) = conflict(&app, site_id, &node, &bmc_url).await? {
        return Err(ApiError::Conflict(message));
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
    .bind(&bmc_url)
    .bind(node.bmc.username.trim())
    .bind(node.boot_mac.to_string())
    .bind(i64::from(node.cpu_cores))
    .bind(i64::from(node.ram_mib))
    .bind(i64::from(node.disk_gb))
    .bind(db::now_ms())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unique_violation(e, || format!("node {:?} conflicts with a node created at the same time", node.name)))?;
    store_password(&app, &mut tx, id, &node.bmc.password).await?;
    tx.commit().await?;

    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "name": node.name, "boot_mac": node.boot_mac, "bmc_url": bmc_url, "state": "available" }),
        ),
    ))
}

async fn store_password(
    app: &SharedApp,
    tx: &mut db::Tx<'_>,
    node_id: i64,
    password: &Secret,
) -> Result<(), ApiError> {
    let sealed = app
        .sealer
        .seal(&seal::bmc_password_context(node_id), password.expose())
        .map_err(|e| ApiError::Internal(e.into()))?;
    sqlx::query("UPDATE nodes SET bmc_password_sealed = ? WHERE id = ?")
        .bind(sealed)
        .bind(node_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Body of `PATCH /v1/nodes/{name}`: new BMC access; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcUpdate {
    bmc: BmcChanges,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcChanges {
    url: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
}

/// `PATCH /v1/nodes/{name}`: replaces the node's BMC URL, user name or
/// password, for example after a failed order reported bad credentials
/// (then `rackhand order retry` runs the phase again).
pub async fn update_node(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(update): Body<BmcUpdate>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM nodes WHERE name = ?")
        .bind(&name)
        .fetch_optional(&app.pool)
        .await?;
    let id = id.ok_or_else(|| ApiError::not_found("node", format!("{name:?}")))?;
    let changes = update.bmc;
    if changes.url.is_none() && changes.username.is_none() && changes.password.is_none() {
        return Err(ApiError::invalid(
            "bmc",
            "nothing to change; give url, username or password",
        ));
    }
    let url = changes.url.as_deref().map(normalize_bmc_url).transpose()?;
    if let Some(username) = &changes.username
        && username.trim().is_empty()
    {
        return Err(ApiError::invalid("bmc.username", "must not be empty"));
    }
    if let Some(password) = &changes.password
        && password.expose().is_empty()
    {
        return Err(ApiError::invalid("bmc.password", "must not be empty"));
    }

    let mut tx = db::begin(&app.pool).await?;
    if let Some(url) = &url {
        sqlx::query("UPDATE nodes SET bmc_url = ? WHERE id = ?")
            .bind(url)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_violation(e, || format!("another node already uses BMC {url}")))?;
    }
    if let Some(username) = &changes.username {
        sqlx::query("UPDATE nodes SET bmc_username = ? WHERE id = ?")
            .bind(username.trim())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(password) = &changes.password {
        store_password(&app, &mut tx, id, password).await?;
    }
    tx.commit().await?;
    tracing::info!(node_id = id, node = %name, "node BMC access updated");
    Ok(Json(json!({ "id": id, "name": name, "updated": true })))
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

#[cfg(test)]
mod tests {
    use super::normalize_bmc_url;

    #[test]
    fn bmc_urls_are_normalized() {
        assert_eq!(
            normalize_bmc_url("HTTPS://BMC.example/redfish/v1/")
                .ok()
                .as_deref(),
            Some("https://bmc.example/redfish/v1")
        );
    }

    #[test]
    fn bmc_url_with_credentials_is_rejected() {
        assert!(normalize_bmc_url("https://admin:secret@bmc.example/redfish/v1").is_err());
        assert!(normalize_bmc_url("ftp://bmc.example/").is_err());
        assert!(normalize_bmc_url("not a url").is_err());
    }
}
