//! Node operations: an operator's request about one node's BMC (read the
//! inventory, change power or the boot device, read sensors), carried out by
//! the site agent of the node's site.
//!
//! The control plane never talks to a BMC itself: BMCs sit on the site's
//! management network, which only the agent reaches. So an operation is a
//! row that the agent claims over its long poll (as it claims phase steps),
//! and the API handler that created it waits for the agent's report.
//!
//! Contracts:
//!
//! - An operation runs at most once. A claimed operation whose agent does not
//!   report within the lease fails; it is never handed out again, because an
//!   operator asked for it now and a late reset is worse than none.
//! - An operation nobody claims within the caller's wait fails with a message
//!   that points at the site's agents.
//! - The BMC password is sealed in the row for the agent, and cleared when
//!   the operation ends.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rackhand_protocol::agent::{
    BmcAccess, NodeAction, Operation, OperationClaim, OperationOutcome,
};
use rackhand_protocol::{MacAddr, Secret};
use serde_json::{Value, json};

use crate::agents::Agent;
use crate::api::error::{ApiError, Body};
use crate::app::{App, SharedApp};
use crate::db;

/// Seconds an agent has to report an operation after claiming it.
///
/// A choice: long enough for the slowest BMC call we know (an inventory walk
/// of an iDRAC takes tens of seconds), short enough that an operator learns of
/// a crashed agent within a few minutes.
pub const LEASE: Duration = Duration::from_secs(180);

/// Seconds a console session may last. A choice: a working day, so a
/// forgotten session ends on its own.
pub const CONSOLE_LEASE: Duration = Duration::from_secs(12 * 3600);

/// Maximum long-poll time of an operation claim.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting API handler looks at its operation's row.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A node operation to queue: the action and the BMC it targets.
#[derive(Debug)]
pub struct NewOperation {
    pub site_id: i64,
    /// `None` while the node is being added.
    pub node_id: Option<i64>,
    pub node_name: String,
    pub boot_mac: Option<MacAddr>,
    pub bmc_driver: String,
    pub bmc_url: String,
    pub bmc_username: String,
    pub bmc_password: Secret,
    pub bmc_ca_pem: Option<String>,
    pub bmc_fingerprint: Option<String>,
    pub action: NodeAction,
}

/// Returns the sealing context of an operation's BMC password.
fn password_context(operation_id: i64) -> String {
    format!("operation:{operation_id}:bmc_password")
}

/// Creates the operation, wakes the site's agents and waits up to `wait`
/// for the result.
///
/// Errors: 502 with the agent's message when the BMC call failed, 504 when
/// no agent claimed the operation in time or the agent is still working on
/// it.
pub async fn run(
    app: &SharedApp,
    operation: NewOperation,
    wait: Duration,
) -> Result<Value, ApiError> {
    let id = queue(app, &operation).await?;
    app.operations_ready.notify_waiters();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(result) = outcome(app, id, &operation).await? {
            return result;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(give_up(app, id, &operation, wait).await?);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Returns the operation's result once it ended: the agent's result, or a
/// 502 carrying the agent's error.
pub async fn outcome(
    app: &App,
    id: i64,
    operation: &NewOperation,
) -> Result<Option<Result<Value, ApiError>>, ApiError> {
    let row: (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, result, error FROM node_operations WHERE id = ?")
            .bind(id)
            .fetch_one(&app.pool)
            .await?;
    Ok(match row {
        (state, Some(result), _) if state == "done" => {
            Some(serde_json::from_str(&result).map_err(|e| ApiError::Internal(e.into())))
        }
        (state, _, error) if state == "failed" => Some(Err(ApiError::BadGateway(format!(
            "{} of node {:?} failed (operation {id}): {}",
            operation.action.name(),
            operation.node_name,
            error.unwrap_or_default()
        )))),
        _ => None,
    })
}

/// Stores a pending operation and returns its id. The caller wakes the
/// agents with `operations_ready` once it is ready for them to claim it.
pub async fn queue(app: &SharedApp, operation: &NewOperation) -> Result<i64, ApiError> {
    let action_json =
        serde_json::to_string(&operation.action).map_err(|e| ApiError::Internal(e.into()))?;
    let now = db::now_ms();
    let mut tx = db::begin(&app.pool).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO node_operations (site_id, node_id, node_name, boot_mac, bmc_driver, bmc_url,
                                      bmc_username, bmc_password_sealed, bmc_ca_pem, bmc_fingerprint,
                                      action, state, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, 'pending', ?, ?) RETURNING id",
    )
    .bind(operation.site_id)
    .bind(operation.node_id)
    .bind(&operation.node_name)
    .bind(operation.boot_mac.map(|mac| mac.to_string()))
    .bind(&operation.bmc_driver)
    .bind(&operation.bmc_url)
    .bind(&operation.bmc_username)
    .bind(&operation.bmc_ca_pem)
    .bind(&operation.bmc_fingerprint)
    .bind(&action_json)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let sealed = app
        .sealer
        .seal(&password_context(id), operation.bmc_password.expose())
        .map_err(|e| ApiError::Internal(e.into()))?;
    sqlx::query("UPDATE node_operations SET bmc_password_sealed = ? WHERE id = ?")
        .bind(sealed)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(operation_id = id, node = %operation.node_name, action = operation.action.name(), "node operation queued");
    Ok(id)
}

/// Fails an operation that no agent claimed within `wait`, or explains that
/// the agent is still on it.
pub async fn give_up(
    app: &App,
    id: i64,
    operation: &NewOperation,
    wait: Duration,
) -> Result<ApiError, ApiError> {
    let message = format!(
        "no site agent claimed the operation within {} s; check that the site's agent runs (`rackhand agent list`)",
        wait.as_secs()
    );
    let failed = sqlx::query(
        "UPDATE node_operations SET state = 'failed', error = ?, bmc_password_sealed = '', updated_at = ?
         WHERE id = ? AND state = 'pending'",
    )
    .bind(&message)
    .bind(db::now_ms())
    .bind(id)
    .execute(&app.pool)
    .await?
    .rows_affected();
    let action = operation.action.name();
    let node = &operation.node_name;
    Ok(if failed == 1 {
        ApiError::GatewayTimeout(format!("{action} of node {node:?}: {message}"))
    } else {
        ApiError::GatewayTimeout(format!(
            "{action} of node {node:?} is still running on the site agent after {} s; `GET /v1/operations/{id}` shows its result later",
            wait.as_secs()
        ))
    })
}

/// Fails claimed operations whose lease ran out.
async fn expire_leases(app: &App, site_id: i64) -> Result<(), sqlx::Error> {
    let now = db::now_ms();
    let expired = sqlx::query(
        "UPDATE node_operations
         SET state = 'failed', error = 'the site agent did not report within its lease (it may have restarted); the BMC may or may not have carried out the request',
             bmc_password_sealed = '', updated_at = ?1
         WHERE site_id = ?2 AND state = 'claimed' AND lease_expires_at < ?1",
    )
    .bind(now)
    .bind(site_id)
    .execute(&app.pool)
    .await?
    .rows_affected();
    if expired > 0 {
        tracing::warn!(site_id, expired, "node operations failed on expired leases");
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OperationRow {
    id: i64,
    node_name: String,
    boot_mac: Option<String>,
    bmc_driver: String,
    bmc_url: String,
    bmc_username: String,
    bmc_password_sealed: String,
    bmc_ca_pem: Option<String>,
    bmc_fingerprint: Option<String>,
    action: String,
}

/// `POST /agent/v1/operations/claim`: the oldest pending operation of the
/// agent's site, or 204 when none came within the requested wait.
pub async fn claim(
    State(app): State<Arc<App>>,
    agent: Agent,
    Body(request): Body<OperationClaim>,
) -> Result<Response, ApiError> {
    let wait = Duration::from_secs(u64::from(request.wait_seconds)).min(MAX_CLAIM_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = app.operations_ready.notified();
        expire_leases(&app, agent.site_id).await?;
        if let Some(operation) = claim_one(&app, &agent).await? {
            return Ok(Json(operation).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1))) => {}
        }
    }
}

/// Returns how long an agent may work on `action` before the operation
/// fails.
fn lease_of(action: &NodeAction) -> Duration {
    match action {
        NodeAction::ConsoleAttach => CONSOLE_LEASE,
        _ => LEASE,
    }
}

async fn claim_one(app: &App, agent: &Agent) -> Result<Option<Operation>, ApiError> {
    let now = db::now_ms();
    let mut tx = db::begin(&app.pool).await?;
    let row: Option<OperationRow> = sqlx::query_as(
        "SELECT id, node_name, boot_mac, bmc_driver, bmc_url, bmc_username, bmc_password_sealed,
                bmc_ca_pem, bmc_fingerprint, action
         FROM node_operations WHERE site_id = ? AND state = 'pending' ORDER BY id LIMIT 1",
    )
    .bind(agent.site_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let action: NodeAction =
        serde_json::from_str(&row.action).map_err(|e| ApiError::Internal(e.into()))?;
    let lease = lease_of(&action);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE node_operations SET state = 'claimed', claimed_by = ?, lease_expires_at = ?, updated_at = ?
         WHERE id = ?",
    )
    .bind(agent.id)
    .bind(now + lease_ms)
    .bind(now)
    .bind(row.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let password = app
        .sealer
        .open(&password_context(row.id), &row.bmc_password_sealed)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let boot_mac = row
        .boot_mac
        .as_deref()
        .map(str::parse::<MacAddr>)
        .transpose()
        .map_err(|e| ApiError::Internal(e.into()))?;
    tracing::info!(operation_id = row.id, node = %row.node_name, agent_id = agent.id, action = action.name(), "node operation handed to agent");
    Ok(Some(Operation {
        operation_id: row.id,
        node_name: row.node_name,
        boot_mac,
        bmc: BmcAccess {
            driver: row.bmc_driver,
            url: row.bmc_url,
            username: row.bmc_username,
            password,
            ca_pem: row.bmc_ca_pem,
            fingerprint: row.bmc_fingerprint,
        },
        lease_seconds: u32::try_from(lease.as_secs()).unwrap_or(u32::MAX),
        action,
    }))
}

/// `POST /agent/v1/operations/{id}/result`. A result for an operation that
/// already ended changes nothing, so an agent may resend one.
pub async fn report(
    State(app): State<Arc<App>>,
    agent: Agent,
    Path(operation_id): Path<i64>,
    Body(outcome): Body<OperationOutcome>,
) -> Result<Json<Value>, ApiError> {
    let (state, result, error) = match &outcome {
        OperationOutcome::Succeeded { result } => ("done", Some(result.to_string()), None),
        OperationOutcome::Failed { error, .. } => ("failed", None, Some(error.clone())),
    };
    let updated = sqlx::query(
        "UPDATE node_operations SET state = ?, result = ?, error = ?, bmc_password_sealed = '', updated_at = ?
         WHERE id = ? AND site_id = ? AND state = 'claimed' AND claimed_by = ?",
    )
    .bind(state)
    .bind(result)
    .bind(&error)
    .bind(db::now_ms())
    .bind(operation_id)
    .bind(agent.site_id)
    .bind(agent.id)
    .execute(&app.pool)
    .await?
    .rows_affected();
    if updated == 0 {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT state FROM node_operations WHERE id = ? AND site_id = ?")
                .bind(operation_id)
                .bind(agent.site_id)
                .fetch_optional(&app.pool)
                .await?;
        return match exists {
            Some(state) => Ok(Json(json!({ "recorded": false, "state": state }))),
            None => Err(ApiError::not_found(
                "operation",
                format!("{operation_id} of site {}", agent.site),
            )),
        };
    }
    tracing::info!(
        operation_id,
        agent_id = agent.id,
        state,
        error = error.as_deref(),
        "node operation ended"
    );
    Ok(Json(json!({ "recorded": true, "state": state })))
}

#[derive(sqlx::FromRow)]
struct ShownRow {
    id: i64,
    node_name: String,
    action: String,
    state: String,
    result: Option<String>,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

/// `GET /v1/operations/{id}`: an operation's state and result, for a caller
/// whose wait ran out.
pub async fn show(app: &SharedApp, id: i64) -> Result<Value, ApiError> {
    let row: Option<ShownRow> = sqlx::query_as(
        "SELECT id, node_name, action, state, result, error, created_at, updated_at
         FROM node_operations WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(&app.pool)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::not_found("operation", id));
    };
    let action: Value = serde_json::from_str(&row.action).unwrap_or(Value::String(row.action));
    let result: Option<Value> = row.result.and_then(|text| serde_json::from_str(&text).ok());
    Ok(json!({
        "id": row.id, "node": row.node_name, "action": action, "state": row.state,
        "result": result, "error": row.error, "created_at": row.created_at,
        "updated_at": row.updated_at,
    }))
}
