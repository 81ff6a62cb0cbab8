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
use crate::operations::{self, NewOperation};
use crate::seal;
use rackhand_protocol::agent::{NodeAction, NodeBoot};
use rackhand_protocol::hardware::Inventory;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    name: String,
    site: String,
    subnet: String,
    /// Read from the BMC's inventory when absent, like the sizes below.
    boot_mac: Option<MacAddr>,
    cpu_cores: Option<u32>,
    ram_mib: Option<u32>,
    disk_gb: Option<u32>,
    /// Read the inventory even when every value above is given, to store it.
    #[serde(default)]
    inspect: bool,
    bmc: NewBmc,
}

/// A node's values once the inventory filled in what the request left out.
#[derive(Debug)]
struct Resolved {
    boot_mac: MacAddr,
    cpu_cores: u32,
    ram_mib: u32,
    disk_gb: u32,
    inventory: Option<Inventory>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBmc {
    #[serde(default = "default_driver")]
    driver: String,
    url: String,
    username: String,
    password: Secret,
    /// Extra CA certificates (PEM) for the BMC's HTTPS certificate.
    ca_pem: Option<String>,
    /// The SHA-256 fingerprint of the BMC's certificate (64 hex digits,
    /// colons allowed); when set, only that certificate is accepted.
    fingerprint: Option<String>,
}

/// Largest `bmc.ca_pem` accepted; a chain of a few certificates fits.
const MAX_CA_PEM_BYTES: usize = 64 * 1024;

/// Checks the BMC's TLS trust settings and returns them in stored form
/// (fingerprint as lowercase hex without colons).
fn check_bmc_tls(
    ca_pem: Option<&str>,
    fingerprint: Option<&str>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let ca_pem = match ca_pem.map(str::trim).filter(|pem| !pem.is_empty()) {
        None => None,
        Some(pem) => {
            if pem.len() > MAX_CA_PEM_BYTES || !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ApiError::invalid(
                    "bmc.ca_pem",
                    format!(
                        "must be PEM certificates (-----BEGIN CERTIFICATE-----) of at most {MAX_CA_PEM_BYTES} bytes"
                    ),
                ));
            }
            Some(pem.to_string())
        }
    };
    let fingerprint = match fingerprint.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(text) => {
            let hex: String = text
                .trim_start_matches("sha256:")
                .chars()
                .filter(|c| *c != ':')
                .collect::<String>()
                .to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::invalid(
                    "bmc.fingerprint",
                    format!(
                        "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
                    ),
                ));
            }
            Some(hex)
        }
    };
    Ok((ca_pem, fingerprint))
}

fn default_driver() -> String {
    "redfish".to_string()
}

/// Returns the BMC URL in its stored form, or the reason it is unusable.
/// IPMI BMCs are addressed as `ipmi://host[:port]`; every other driver
/// speaks HTTP.
fn normalize_bmc_url(driver: &str, text: &str) -> Result<String, ApiError> {
    let url: reqwest::Url = text.trim().parse().map_err(|_| {
        ApiError::invalid(
            "bmc.url",
            format!("{text:?} is not a URL such as https://bmc-r1-n01/redfish/v1"),
        )
    })?;
    if driver == "ipmi" {
        if url.scheme() != "ipmi" || url.host_str().is_none() {
            return Err(ApiError::invalid(
                "bmc.url",
                format!("{text:?} is not an IPMI address such as ipmi://bmc-r1-n01:623"),
            ));
        }
    } else if !matches!(url.scheme(), "http" | "https") {
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
    if url.port() == Some(0) {
        return Err(ApiError::invalid("bmc.url", format!("{text:?} has port 0")));
    }
    if url.fragment().is_some() {
        return Err(ApiError::invalid("bmc.url", "must not contain a fragment"));
    }
    match driver {
        "ipmi" => {
            if !matches!(url.path(), "" | "/") {
                return Err(ApiError::invalid(
                    "bmc.url",
                    format!("{text:?} has a path; an IPMI address is ipmi://host[:port]"),
                ));
            }
            // The IPMI driver reads its session options from the query.
            for (key, _) in url.query_pairs() {
                if !matches!(key.as_ref(), "privilege" | "cipher_suite") {
                    return Err(ApiError::invalid(
                        "bmc.url",
                        format!("unknown IPMI option {key:?}; use privilege or cipher_suite"),
                    ));
                }
            }
        }
        _ if url.query().is_some() => {
            return Err(ApiError::invalid("bmc.url", "must not contain a query"));
        }
        "ironic" => {
            let node = url
                .path()
                .trim_end_matches('/')
                .rsplit_once("/v1/nodes/")
                .map(|(_, node)| node)
                .filter(|node| !node.is_empty() && !node.contains('/'));
            if node.is_none() {
                return Err(ApiError::invalid(
                    "bmc.url",
                    format!(
                        "{text:?} does not name an Ironic node; use http://IRONIC:6385/v1/nodes/NAME-OR-UUID"
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Longest IPMI password: IPMI 2.0 keys are 20 bytes.
const MAX_IPMI_PASSWORD_BYTES: usize = 20;

fn check_driver_password(driver: &str, password: &Secret) -> Result<(), ApiError> {
    if driver == "ipmi" && password.expose().len() > MAX_IPMI_PASSWORD_BYTES {
        return Err(ApiError::invalid(
            "bmc.password",
            format!(
                "is {} bytes long; IPMI 2.0 passwords are at most {MAX_IPMI_PASSWORD_BYTES} bytes",
                password.expose().len()
            ),
        ));
    }
    Ok(())
}

/// Returns the driver name in its stored form (lowercase), or why it is
/// unknown.
fn check_driver(driver: &str) -> Result<String, ApiError> {
    let name = driver.trim().to_ascii_lowercase();
    if DRIVERS.contains(&name.as_str()) {
        return Ok(name);
    }
    Err(ApiError::invalid(
        "bmc.driver",
        format!(
            "unknown driver {driver:?}; use one of {}",
            DRIVERS.join(", ")
        ),
    ))
}

/// The BMC drivers the site agent has, by the names nodes store.
const DRIVERS: [&str; 5] = ["redfish", "idrac", "ilo", "ipmi", "ironic"];

fn check_credentials(username: &str, password: &Secret) -> Result<(), ApiError> {
    if username.trim().is_empty() {
        return Err(ApiError::invalid("bmc.username", "must not be empty"));
    }
    if password.expose().is_empty() {
        return Err(ApiError::invalid("bmc.password", "must not be empty"));
    }
    Ok(())
}

fn check_hardware(node: &Resolved) -> Result<(), ApiError> {
    for (field, value) in [
        ("cpu_cores", node.cpu_cores),
        ("ram_mib", node.ram_mib),
        ("disk_gb", node.disk_gb),
    ] {
        if value == 0 {
            return Err(ApiError::invalid(field, "must be positive"));
        }
    }
    check_boot_mac(node.boot_mac)
}

fn check_boot_mac(mac: MacAddr) -> Result<(), ApiError> {
    // The low bit of the first octet marks group (multicast and broadcast)
    // addresses, which no NIC boots from.
    if mac.0 == [0; 6] {
        return Err(ApiError::invalid(
            "boot_mac",
            "00:00:00:00:00:00 is not a NIC's address",
        ));
    }
    if mac.0[0] & 1 == 1 {
        return Err(ApiError::invalid(
            "boot_mac",
            format!("{mac} is a multicast or broadcast address, not a NIC's"),
        ));
    }
    Ok(())
}

/// How long adding a node waits for the site agent to read the inventory.
const INSPECT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Fills in what the request left out from the BMC's inventory, read by the
/// site agent. Without anything missing (and no `inspect`), nothing is read.
async fn resolve(
    app: &SharedApp,
    site_id: i64,
    node: &NewNode,
    driver: &str,
    bmc_url: &str,
    tls: (&Option<String>, &Option<String>),
) -> Result<Resolved, ApiError> {
    if let (Some(boot_mac), Some(cpu_cores), Some(ram_mib), Some(disk_gb), false) = (
        node.boot_mac,
        node.cpu_cores,
        node.ram_mib,
        node.disk_gb,
        node.inspect,
    ) {
        return Ok(Resolved {
            boot_mac,
            cpu_cores,
            ram_mib,
            disk_gb,
            inventory: None,
        });
    }
    let result = operations::run(
        app,
        NewOperation {
            site_id,
            node_id: None,
            node_name: node.name.clone(),
            boot_mac: node.boot_mac,
            bmc_driver: driver.to_string(),
            bmc_url: bmc_url.to_string(),
            bmc_username: node.bmc.username.trim().to_string(),
            bmc_password: node.bmc.password.clone(),
            bmc_ca_pem: tls.0.clone(),
            bmc_fingerprint: tls.1.clone(),
            action: NodeAction::Inspect,
        },
        INSPECT_WAIT,
    )
    .await?;
    let inventory: Inventory =
        serde_json::from_value(result["inventory"].clone()).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("agent sent an unreadable inventory: {e}"))
        })?;
    let missing = |field: &str, what: &str| {
        ApiError::invalid(
            field,
            format!(
                "not given, and the BMC's inventory does not list {what}; give --{} yourself",
                field.replace('_', "-")
            ),
        )
    };
    let boot_mac = match node.boot_mac {
        Some(mac) => mac,
        None => pick_boot_mac(&inventory)
            .ok_or_else(|| missing("boot_mac", "a NIC with a MAC address"))?,
    };
    let cpu_cores = match node.cpu_cores {
        Some(cores) => cores,
        None => {
            let cores: u32 = inventory.cpus.iter().filter_map(|cpu| cpu.cores).sum();
            if cores == 0 {
                return Err(missing("cpu_cores", "CPU cores"));
            }
            cores
        }
    };
    let ram_mib = match node.ram_mib {
        Some(ram) => ram,
        None => inventory
            .memory_mib
            .and_then(|mib| u32::try_from(mib).ok())
            .filter(|mib| *mib > 0)
            .ok_or_else(|| missing("ram_mib", "the installed memory"))?,
    };
    let disk_gb = match node.disk_gb {
        Some(disk) => disk,
        None => {
            // The boot disk is usually the largest; installs go to one disk.
            let largest = inventory
                .disks
                .iter()
                .filter_map(|disk| disk.size_bytes)
                .max();
            largest
                .map(|bytes| bytes / 1_000_000_000)
                .and_then(|gb| u32::try_from(gb).ok())
                .filter(|gb| *gb > 0)
                .ok_or_else(|| missing("disk_gb", "a disk with a size"))?
        }
    };
    Ok(Resolved {
        boot_mac,
        cpu_cores,
        ram_mib,
        disk_gb,
        inventory: Some(inventory),
    })
}

/// Picks the boot NIC from an inventory: the first NIC with a MAC whose link
/// is up, else the first NIC with a MAC. BMCs list the onboard NICs first,
/// and firmware netboots from the first one with a link by default.
fn pick_boot_mac(inventory: &Inventory) -> Option<MacAddr> {
    let with_mac = || inventory.nics.iter().filter(|nic| nic.mac.is_some());
    with_mac()
        .find(|nic| nic.link_up == Some(true))
        .or_else(|| with_mac().next())
        .and_then(|nic| nic.mac)
}

/// Names the existing node that already has `name` at the site, the MAC or
/// the BMC URL, for a precise 409.
async fn conflict(
    app: &SharedApp,
    site_id: i64,
    name: &str,
    boot_mac: Option<MacAddr>,
    bmc_url: &str,
) -> Result<Option<String>, ApiError> {
    let boot_mac = boot_mac.map(|mac| mac.to_string());
    let row: Option<(String, String, String, i64)> = sqlx::query_as(
        "SELECT name, boot_mac, bmc_url, site_id FROM nodes
         WHERE (? IS NOT NULL AND name = ?) OR boot_mac = ? OR bmc_url = ? LIMIT 1",
    )
    .bind(site_id)
    .bind(name)
    .bind(&boot_mac)
    .bind(bmc_url)
    .fetch_optional(&app.pool)
    .await?;
    Ok(row.map(|(existing, mac, url, _)| {
        if Some(&mac) == boot_mac.as_ref() {
            format!("node {existing:?} already has boot MAC {mac}")
        } else if url == bmc_url {
            format!("node {existing:?} already uses BMC {url}; two nodes must not drive one BMC")
        } else {
            // Node commands look nodes up by name alone, so names are
            // unique across sites.
            format!("a node named {existing:?} already exists; node names are unique across sites")
        }
    }))
}

pub async fn create_node(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(node): Body<NewNode>,
) -> Result<Created, ApiError> {
    check_name("name", &node.name)?;
    let driver = check_driver(&node.bmc.driver)?;
    let bmc_url = normalize_bmc_url(&driver, &node.bmc.url)?;
    check_credentials(&node.bmc.username, &node.bmc.password)?;
    check_driver_password(&driver, &node.bmc.password)?;
    let (bmc_ca_pem, bmc_fingerprint) =
        check_bmc_tls(node.bmc.ca_pem.as_deref(), node.bmc.fingerprint.as_deref())?;
    if let Some(mac) = node.boot_mac {
        check_boot_mac(mac)?;
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
    if let Some(message) = conflict(&app, site_id, &node.name, node.boot_mac, &bmc_url).await? {
        return Err(ApiError::Conflict(message));
    }
    let resolved = resolve(
        &app,
        site_id,
        &node,
        &driver,
        &bmc_url,
        (&bmc_ca_pem, &bmc_fingerprint),
    )
    .await?;
    check_hardware(&resolved)?;
    if let Some(message) =
        conflict(&app, site_id, &node.name, Some(resolved.boot_mac), &bmc_url).await?
    {
        return Err(ApiError::Conflict(message));
    }
    let inventory = resolved
        .inventory
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ApiError::Internal(e.into()))?;

    let mut tx = db::begin(&app.pool).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO nodes (site_id, subnet_id, name, bmc_driver, bmc_url, bmc_username, bmc_password_sealed,
                            boot_mac, cpu_cores, ram_mib, disk_gb, inventory, inventory_at, created_at,
                            bmc_ca_pem, bmc_fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7, ?8, ?9, ?10, ?11, CASE WHEN ?11 IS NULL THEN NULL ELSE ?12 END, ?12,
                 ?13, ?14)
         RETURNING id",
    )
    .bind(site_id)
    .bind(subnet_id)
    .bind(&node.name)
    .bind(&driver)
    .bind(&bmc_url)
    .bind(node.bmc.username.trim())
    .bind(resolved.boot_mac.to_string())
    .bind(i64::from(resolved.cpu_cores))
    .bind(i64::from(resolved.ram_mib))
    .bind(i64::from(resolved.disk_gb))
    .bind(&inventory)
    .bind(db::now_ms())
    .bind(&bmc_ca_pem)
    .bind(&bmc_fingerprint)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| unique_violation(e, || format!("node {:?} conflicts with a node created at the same time", node.name)))?;
    store_password(&app, &mut tx, id, &node.bmc.password).await?;
    tx.commit().await?;

    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "name": node.name, "boot_mac": resolved.boot_mac, "cpu_cores": resolved.cpu_cores,
                    "ram_mib": resolved.ram_mib, "disk_gb": resolved.disk_gb, "bmc_driver": driver,
                    "bmc_url": bmc_url, "state": "available", "inventory": resolved.inventory }),
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

/// Body of `PATCH /v1/nodes/{name}`: new BMC access and boot files;
/// absent fields stay, and `"boot": null` returns the node to the site's
/// boot files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcUpdate {
    bmc: Option<BmcChanges>,
    #[serde(default, deserialize_with = "present")]
    boot: Option<Option<NodeBoot>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Largest boot file name or URL: the BOOTP `file` field holds 128 bytes
/// with its terminating zero.
const MAX_BOOT_FILE_BYTES: usize = 127;

fn check_boot(boot: &NodeBoot) -> Result<(), ApiError> {
    if boot.tftp_file.is_none() && boot.http_url.is_none() && boot.ipxe_script_url.is_none() {
        return Err(ApiError::invalid(
            "boot",
            "give tftp_file, http_url or ipxe_script_url, or null to use the site's boot files",
        ));
    }
    if let Some(file) = &boot.tftp_file {
        let plain = file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if file.is_empty()
            || !plain
            || file.split('/').any(|part| part == "..")
            || file.len() > MAX_BOOT_FILE_BYTES
        {
            return Err(ApiError::invalid(
                "boot.tftp_file",
                format!(
                    "{file:?} is not a relative file name of at most {MAX_BOOT_FILE_BYTES} bytes of letters, digits and ._-/ without .."
                ),
            ));
        }
    }
    for (field, url) in [
        ("boot.http_url", &boot.http_url),
        ("boot.ipxe_script_url", &boot.ipxe_script_url),
    ] {
        let Some(url) = url else { continue };
        let parsed: Result<reqwest::Url, _> = url.parse();
        let http = parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !http || url.len() > MAX_BOOT_FILE_BYTES || url.chars().any(char::is_whitespace) {
            return Err(ApiError::invalid(
                field,
                format!("{url:?} is not an http(s) URL of at most {MAX_BOOT_FILE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcChanges {
    driver: Option<String>,
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
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, bmc_driver, bmc_url FROM nodes WHERE name = ?")
            .bind(&name)
            .fetch_optional(&app.pool)
            .await?;
    let (id, driver, current_url) =
        row.ok_or_else(|| ApiError::not_found("node", format!("{name:?}")))?;
    let empty_bmc = update.bmc.as_ref().is_none_or(|bmc| {
        bmc.driver.is_none()
            && bmc.url.is_none()
            && bmc.username.is_none()
            && bmc.password.is_none()
    });
    if empty_bmc && update.boot.is_none() {
        return Err(ApiError::invalid(
            "bmc",
            "nothing to change; give bmc (driver, url, username, password) or boot",
        ));
    }
    let changes = update.bmc.unwrap_or(BmcChanges {
        driver: None,
        url: None,
        username: None,
        password: None,
    });
    let new_driver = changes.driver.as_deref().map(check_driver).transpose()?;
    let driver = new_driver.clone().unwrap_or(driver);
    // A new driver must fit the URL the node keeps.
    if new_driver.is_some() && changes.url.is_none() {
        normalize_bmc_url(&driver, &current_url)?;
    }
    if let Some(password) = &changes.password {
        check_driver_password(&driver, password)?;
    }
    if let Some(Some(boot)) = &update.boot {
        check_boot(boot)?;
    }
    let boot_json = match &update.boot {
        Some(Some(boot)) => {
            Some(serde_json::to_string(boot).map_err(|e| ApiError::Internal(e.into()))?)
        }
        _ => None,
    };
    let url = changes
        .url
        .as_deref()
        .map(|url| normalize_bmc_url(&driver, url))
        .transpose()?;
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
    if let Some(driver) = &new_driver {
        sqlx::query("UPDATE nodes SET bmc_driver = ? WHERE id = ?")
            .bind(driver)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
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
    if update.boot.is_some() {
        sqlx::query("UPDATE nodes SET boot_override = ? WHERE id = ?")
            .bind(&boot_json)
            .bind(id)
            .execute(&mut *tx)
            .await?;
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
            normalize_bmc_url("redfish", "HTTPS://BMC.example/redfish/v1/")
                .ok()
                .as_deref(),
            Some("https://bmc.example/redfish/v1")
        );
    }

    #[test]
    fn bmc_url_with_credentials_is_rejected() {
        assert!(
            normalize_bmc_url("redfish", "https://admin:secret@bmc.example/redfish/v1").is_err()
        );
        assert!(normalize_bmc_url("redfish", "ftp://bmc.example/").is_err());
        assert!(normalize_bmc_url("redfish", "not a url").is_err());
    }
}
