//! Serial console sessions relayed between an operator and a site agent.
//!
//! Neither side can reach the other: operators reach only the control
//! plane's API, and the agent dials out to the control plane. So both open
//! an HTTP/1.1 connection to the control plane with
//! `Upgrade: rackhand-console`, and once both are upgraded the control plane
//! copies bytes between them until either side closes.
//!
//! The operator's request queues a `console_attach` node operation and
//! waits for the agent to join (or to report that it could not open the
//! console). The agent joins by operation id; only the agent that claimed
//! the operation may join it, and only once.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rackhand_protocol::agent::{CONSOLE_UPGRADE, NodeAction};
use tokio::sync::oneshot;

use crate::agents::Agent;
use crate::api::error::ApiError;
use crate::app::SharedApp;

/// Console sessions whose operator waits for the agent to join.
#[derive(Debug, Default)]
pub struct Sessions {
    waiting: Mutex<HashMap<i64, oneshot::Sender<OnUpgrade>>>,
}

impl Sessions {
    /// Registers operation `id` and returns where the agent's connection
    /// arrives.
    pub fn wait_for_agent(&self, id: i64) -> oneshot::Receiver<OnUpgrade> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id, sender);
        receiver
    }

    /// Forgets operation `id`, whose operator stopped waiting.
    pub fn forget(&self, id: i64) {
        self.lock().remove(&id);
    }

    fn take(&self, id: i64) -> Option<oneshot::Sender<OnUpgrade>> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, oneshot::Sender<OnUpgrade>>> {
        // A panic while holding this lock leaves the map consistent (one
        // insert or remove), so a poisoned lock is still usable.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Returns whether the request requests a console upgrade.
pub fn wants_console(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case(CONSOLE_UPGRADE));
    let connection = headers
        .get(header::CONNECTION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        });
    upgrade && connection
}

/// The 101 answer that switches a connection to the console protocol.
pub fn switching_protocols() -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, CONSOLE_UPGRADE)
        .body(Body::empty())
        .expect("a static response is well formed")
}

/// Joins the operator's and the agent's connections once both upgraded,
/// and copies bytes until either side closes.
pub fn relay(operation_id: i64, operator: OnUpgrade, agent: OnUpgrade) {
    tokio::spawn(async move {
        let (operator, agent) = match tokio::try_join!(operator, agent) {
            Ok(both) => both,
            Err(error) => {
                tracing::warn!(operation_id, error = %error, "console connection failed to upgrade");
                return;
            }
        };
        let mut operator = TokioIo::new(operator);
        let mut agent = TokioIo::new(agent);
        tracing::info!(operation_id, "console session started");
        match tokio::io::copy_bidirectional(&mut operator, &mut agent).await {
            Ok((to_agent, to_operator)) => {
                tracing::info!(operation_id, to_agent, to_operator, "console session ended");
            }
            Err(error) => {
                tracing::info!(operation_id, error = %error, "console session ended by a broken connection");
            }
        }
    });
}

/// `POST /agent/v1/consoles/{id}`: the agent joins the console session of
/// an operation it claimed.
pub async fn agent_join(
    State(app): State<SharedApp>,
    agent: Agent,
    Path(operation_id): Path<i64>,
    mut request: Request,
) -> Result<Response, ApiError> {
    if !wants_console(request.headers()) {
        return Err(ApiError::BadRequest(format!(
            "joining a console needs `Connection: upgrade` and `Upgrade: {CONSOLE_UPGRADE}`"
        )));
    }
    let row: Option<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT action, state, claimed_by FROM node_operations WHERE id = ? AND site_id = ?",
    )
    .bind(operation_id)
    .bind(agent.site_id)
    .fetch_optional(&app.pool)
    .await?;
    let Some((action, state, claimed_by)) = row else {
        return Err(ApiError::not_found(
            "operation",
            format!("{operation_id} of site {}", agent.site),
        ));
    };
    let is_console = serde_json::from_str::<NodeAction>(&action)
        .is_ok_and(|action| action == NodeAction::ConsoleAttach);
    if !is_console || state != "claimed" || claimed_by != Some(agent.id) {
        return Err(ApiError::Conflict(format!(
            "operation {operation_id} is not a console session claimed by agent {}",
            agent.id
        )));
    }
    let Some(sender) = app.consoles.take(operation_id) else {
        return Err(ApiError::Conflict(format!(
            "the operator of console session {operation_id} is no longer waiting"
        )));
    };
    if sender.send(hyper::upgrade::on(&mut request)).is_err() {
        return Err(ApiError::Conflict(format!(
            "the operator of console session {operation_id} is no longer waiting"
        )));
    }
    Ok(switching_protocols())
}
