//! Operator actions on one node's BMC: inventory, power, boot device,
//! virtual media, sensors and console, carried out by the site agent (see
//! [`crate::operations`]).
//!
//! Actions that change the machine (power, boot device, media) are refused
//! with 409 while an order is provisioning the node, unless the request says
//! `"force": true`: a power-off in the middle of an install would break the
//! customer's order, and the pipeline sets the boot device itself.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use rackhand_protocol::Secret;
use rackhand_protocol::agent::{CONSOLE_UPGRADE, NodeAction};
use rackhand_protocol::hardware::Inventory;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body};
use crate::app::SharedApp;
use crate::console;
use crate::db;
use crate::operations::{self, NewOperation};
use crate::seal;

/// How long an action waits for the site agent's result. A choice: power
/// and boot calls take seconds; an inventory walk on a slow BMC tens of
/// seconds.
const ACTION_WAIT: Duration = Duration::from_secs(120);

#[derive(sqlx::FromRow)]
struct NodeTarget {
    id: i64,
    site_id: i64,
    name: String,
    boot_mac: String,
    bmc_driver: String,
    bmc_url: String,
    bmc_username: String,
    bmc_password_sealed: String,
    bmc_ca_pem: Option<String>,
    bmc_fingerprint: Option<String>,
    reserved_by_order: Option<i64>,
    order_state: Option<String>,
}

async fn target(app: &SharedApp, name: &str) -> Result<NodeTarget, ApiError> {
    let row: Option<NodeTarget> = sqlx::query_as(
        "SELECT n.id, n.site_id, n.name, n.boot_mac, n.bmc_driver, n.bmc_url, n.bmc_username,
                n.bmc_password_sealed, n.bmc_ca_pem, n.bmc_fingerprint, n.reserved_by_order,
                o.state AS order_state
         FROM nodes n LEFT JOIN orders o ON o.id = n.reserved_by_order WHERE n.name = ?",
    )
    .bind(name)
    .fetch_optional(&app.pool)
    .await?;
    row.ok_or_else(|| ApiError::not_found("node", format!("{name:?}")))
}

/// Refuses a state-changing action on a node an order is provisioning.
fn check_not_busy(node: &NodeTarget, force: bool) -> Result<(), ApiError> {
    let busy = matches!(
        node.order_state.as_deref(),
        Some("provisioning" | "provisioning_pending")
    );
    if busy && !force {
        return Err(ApiError::Conflict(format!(
            "node {:?} is being provisioned by order {}; wait for the order to finish, or send \"force\": true to act anyway",
            node.name,
            node.reserved_by_order.unwrap_or_default()
        )));
    }
    Ok(())
}

fn new_operation(
    app: &SharedApp,
    node: &NodeTarget,
    action: NodeAction,
) -> Result<NewOperation, ApiError> {
    let password: Secret = app
        .sealer
        .open(
            &seal::bmc_password_context(node.id),
            &node.bmc_password_sealed,
        )
        .map_err(|e| ApiError::Internal(e.into()))?;
    let boot_mac = node
        .boot_mac
        .parse()
        .map_err(|e: rackhand_protocol::MacAddrError| ApiError::Internal(e.into()))?;
    Ok(NewOperation {
        site_id: node.site_id,
        node_id: Some(node.id),
        node_name: node.name.clone(),
        boot_mac: Some(boot_mac),
        bmc_driver: node.bmc_driver.clone(),
        bmc_url: node.bmc_url.clone(),
        bmc_username: node.bmc_username.clone(),
        bmc_password: password,
        bmc_ca_pem: node.bmc_ca_pem.clone(),
        bmc_fingerprint: node.bmc_fingerprint.clone(),
        action,
    })
}

async fn run(app: &SharedApp, node: &NodeTarget, action: NodeAction) -> Result<Value, ApiError> {
    let operation = new_operation(app, node, action)?;
    operations::run(app, operation, ACTION_WAIT).await
}

#[derive(sqlx::FromRow, serde::Serialize)]
struct ShownNode {
    id: i64,
    name: String,
    site: String,
    subnet: String,
    cpu_cores: i64,
    ram_mib: i64,
    disk_gb: i64,
    boot_mac: String,
    bmc_driver: String,
    bmc_url: String,
    bmc_username: String,
    state: String,
    reserved_by_order: Option<i64>,
    #[serde(skip)]
    inventory: Option<String>,
    inventory_at: Option<i64>,
}

/// `GET /v1/nodes/{name}`: the node with its last inventory. The BMC
/// password is never returned.
pub async fn show(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row: Option<ShownNode> = sqlx::query_as(
        "SELECT n.id, n.name, s.name AS site, b.name AS subnet, n.cpu_cores, n.ram_mib, n.disk_gb,
                n.boot_mac, n.bmc_driver, n.bmc_url, n.bmc_username, n.state, n.reserved_by_order,
                n.inventory, n.inventory_at
         FROM nodes n JOIN sites s ON s.id = n.site_id JOIN subnets b ON b.id = n.subnet_id
         WHERE n.name = ?",
    )
    .bind(&name)
    .fetch_optional(&app.pool)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::not_found("node", format!("{name:?}")));
    };
    let inventory: Option<Value> = row
        .inventory
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok());
    let mut shown = serde_json::to_value(&row).map_err(|e| ApiError::Internal(e.into()))?;
    shown["inventory"] = inventory.unwrap_or(Value::Null);
    Ok(Json(shown))
}

/// `POST /v1/nodes/{name}/inspect`: reads the inventory again and stores it.
pub async fn inspect(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = target(&app, &name).await?;
    let result = run(&app, &node, NodeAction::Inspect).await?;
    let inventory: Inventory =
        serde_json::from_value(result["inventory"].clone()).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("agent sent an unreadable inventory: {e}"))
        })?;
    let text = serde_json::to_string(&inventory).map_err(|e| ApiError::Internal(e.into()))?;
    sqlx::query("UPDATE nodes SET inventory = ?, inventory_at = ? WHERE id = ?")
        .bind(text)
        .bind(db::now_ms())
        .bind(node.id)
        .execute(&app.pool)
        .await?;
    let listed = inventory
        .nics
        .iter()
        .any(|nic| nic.mac.is_some_and(|mac| mac.to_string() == node.boot_mac));
    Ok(Json(json!({
        "name": node.name, "inventory": inventory,
        "boot_mac": node.boot_mac, "boot_mac_listed": listed,
    })))
}

/// `GET /v1/nodes/{name}/power`: the power state as the BMC reports it.
pub async fn power_state(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = target(&app, &name).await?;
    let result = run(&app, &node, NodeAction::PowerState).await?;
    Ok(Json(json!({ "name": node.name, "power": result["power"] })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// `on`, `off` (orderly shutdown), `force_off` or `reset`.
    action: String,
    #[serde(default)]
    force: bool,
}

/// `POST /v1/nodes/{name}/power`: powers the node on or off, or resets it.
pub async fn power(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(request): Body<PowerRequest>,
) -> Result<Json<Value>, ApiError> {
    let action = match request
        .action
        .trim()
        .to_ascii_lowercase()
        .replace('-', "_")
        .as_str()
    {
        "on" => NodeAction::PowerOn,
        "off" => NodeAction::PowerOff { force: false },
        "force_off" => NodeAction::PowerOff { force: true },
        "reset" => NodeAction::Reset,
        _ => {
            return Err(ApiError::invalid(
                "action",
                format!(
                    "{:?} is not a power action; use on, off, force_off or reset",
                    request.action
                ),
            ));
        }
    };
    let node = target(&app, &name).await?;
    check_not_busy(&node, request.force)?;
    let name = action.name();
    let result = run(&app, &node, action).await?;
    tracing::info!(node = %node.name, action = name, "power action carried out");
    Ok(Json(
        json!({ "name": node.name, "action": name, "done": true, "power": result["power"] }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootRequest {
    /// `pxe`, `disk`, `cd`, `uefi_http` or `bios_setup`.
    target: String,
    #[serde(default)]
    persistent: bool,
    /// `uefi` or `legacy`; absent keeps the current mode.
    mode: Option<String>,
    #[serde(default)]
    force: bool,
}

const BOOT_TARGETS: [&str; 5] = ["pxe", "disk", "cd", "uefi_http", "bios_setup"];

/// `PUT /v1/nodes/{name}/boot`: sets the boot device override.
pub async fn boot(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(request): Body<BootRequest>,
) -> Result<Json<Value>, ApiError> {
    let target_name = request.target.trim().to_ascii_lowercase().replace('-', "_");
    if !BOOT_TARGETS.contains(&target_name.as_str()) {
        return Err(ApiError::invalid(
            "target",
            format!(
                "{:?} is not a boot device; use one of {}",
                request.target,
                BOOT_TARGETS.join(", ")
            ),
        ));
    }
    let mode = request
        .mode
        .as_deref()
        .map(|mode| mode.trim().to_ascii_lowercase());
    if let Some(mode) = &mode
        && !matches!(mode.as_str(), "uefi" | "legacy")
    {
        return Err(ApiError::invalid(
            "mode",
            format!("{mode:?} is not a boot mode; use uefi or legacy"),
        ));
    }
    let node = target(&app, &name).await?;
    check_not_busy(&node, request.force)?;
    run(
        &app,
        &node,
        NodeAction::SetBoot {
            target: target_name.clone(),
            persistent: request.persistent,
            mode: mode.clone(),
        },
    )
    .await?;
    Ok(Json(json!({
        "name": node.name, "target": target_name, "persistent": request.persistent, "mode": mode,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaRequest {
    /// The ISO image the BMC fetches, `http://` or `https://`.
    url: String,
    #[serde(default)]
    force: bool,
}

/// `POST /v1/nodes/{name}/media`: inserts an ISO as the virtual CD.
pub async fn insert_media(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(request): Body<MediaRequest>,
) -> Result<Json<Value>, ApiError> {
    let parsed = request
        .url
        .trim()
        .parse::<reqwest::Url>()
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"));
    let Some(parsed) = parsed else {
        return Err(ApiError::invalid(
            "url",
            format!(
                "{:?} is not an http:// or https:// URL the BMC can fetch",
                request.url
            ),
        ));
    };
    // Credentials would be stored with the operation and reach logs.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid(
            "url",
            "must not contain credentials; serve the ISO without a login",
        ));
    }
    let node = target(&app, &name).await?;
    check_not_busy(&node, request.force)?;
    run(
        &app,
        &node,
        NodeAction::InsertMedia {
            url: request.url.trim().to_string(),
        },
    )
    .await?;
    Ok(Json(
        json!({ "name": node.name, "inserted": request.url.trim() }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EjectRequest {
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/nodes/{name}/media[?force=true]`: ejects the virtual CD.
pub async fn eject_media(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Query(request): Query<EjectRequest>,
) -> Result<Json<Value>, ApiError> {
    let node = target(&app, &name).await?;
    check_not_busy(&node, request.force)?;
    run(&app, &node, NodeAction::EjectMedia).await?;
    Ok(Json(json!({ "name": node.name, "ejected": true })))
}

/// `GET /v1/nodes/{name}/sensors`: sensor readings and overall health.
pub async fn sensors(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = target(&app, &name).await?;
    let result = run(&app, &node, NodeAction::Sensors).await?;
    Ok(Json(
        json!({ "name": node.name, "sensors": result["sensors"] }),
    ))
}

/// `GET /v1/nodes/{name}/console`: where the node's serial console is.
pub async fn console(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = target(&app, &name).await?;
    let result = run(&app, &node, NodeAction::Console).await?;
    Ok(Json(
        json!({ "name": node.name, "console": result["console"] }),
    ))
}

/// How long attaching to a console waits for the site agent to join.
const ATTACH_WAIT: Duration = Duration::from_secs(60);

/// `GET /v1/nodes/{name}/console/attach` with `Upgrade: rackhand-console`:
/// joins the operator's connection to the node's serial console through the
/// site agent. Answers 101 once the agent has opened the console, or the
/// agent's error (502) or a timeout (504).
pub async fn attach_console(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    mut request: Request,
) -> Result<Response, ApiError> {
    if !console::wants_console(request.headers()) {
        return Err(ApiError::BadRequest(format!(
            "attaching needs `Connection: upgrade` and `Upgrade: {CONSOLE_UPGRADE}`; use `rackhand node console {name} --attach`"
        )));
    }
    let node = target(&app, &name).await?;
    let operation = new_operation(&app, &node, NodeAction::ConsoleAttach)?;
    let id = operations::queue(&app, &operation).await?;
    let mut joined = app.consoles.wait_for_agent(id);
    app.operations_ready.notify_waiters();

    let deadline = tokio::time::Instant::now() + ATTACH_WAIT;
    let agent = loop {
        if let Some(result) = operations::outcome(&app, id, &operation).await? {
            app.consoles.forget(id);
            // A console session reports only when it ends, so an ended
            // operation here means the agent could not open it.
            result?;
            return Err(ApiError::BadGateway(format!(
                "the console session of node {name:?} ended before it started"
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            app.consoles.forget(id);
            return Err(operations::give_up(&app, id, &operation, ATTACH_WAIT).await?);
        }
        tokio::select! {
            agent = &mut joined => match agent {
                Ok(agent) => break agent,
                Err(_) => return Err(ApiError::Internal(anyhow::anyhow!("console session {id} lost its agent side"))),
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    console::relay(id, hyper::upgrade::on(&mut request), agent);
    tracing::info!(node = %node.name, operation_id = id, "operator attached to the serial console");
    Ok(console::switching_protocols())
}

/// `GET /v1/operations/{id}`: a node operation's state and result.
pub async fn operation(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(operations::show(&app, id).await?))
}
