//! The site agents' API, served only on the mutually authenticated TLS
//! listener (see [`tls`]).
//!
//! Identity: the TLS layer verifies client certificates against our CA but
//! lets clients without one through, because enrollment comes before the
//! certificate. Every route except enrollment then requires a certificate
//! whose fingerprint belongs to a known, unrevoked agent, and acts only on
//! that agent's site. Every request must carry the protocol version header.

pub mod enroll;
pub mod images;
pub mod tasks;
pub mod tls;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rackhand_protocol::agent::{self as wire, SiteNode, SiteState};
use rackhand_protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};

use crate::api::error::ApiError;
use crate::app::{App, SharedApp};
use crate::db;
use crate::operations;

/// The fingerprint of the TLS client certificate, if the client sent one;
/// inserted into each request by the listener.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Option<String>);

/// An authenticated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: i64,
    pub site_id: i64,
    pub site: String,
}

impl FromRequestParts<SharedApp> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Agent, ApiError> {
        let fingerprint = parts
            .extensions
            .get::<PeerCertificate>()
            .and_then(|peer| peer.0.clone())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "this route requires the agent's client certificate; enroll first".to_string(),
                )
            })?;
        let row: Option<(i64, i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT a.id, a.site_id, s.name, a.revoked_at
             FROM agents a JOIN sites s ON s.id = a.site_id WHERE a.cert_fingerprint = ?",
        )
        .bind(&fingerprint)
        .fetch_optional(&app.pool)
        .await?;
        let Some((id, site_id, site, revoked_at)) = row else {
            return Err(ApiError::Unauthorized(
                "client certificate is not registered to any agent".to_string(),
            ));
        };
        if revoked_at.is_some() {
            return Err(ApiError::Forbidden(format!("agent {id} has been revoked")));
        }

        sqlx::query("UPDATE agents SET last_seen_at = ? WHERE id = ?")
            .bind(db::now_ms())
            .bind(id)
            .execute(&app.pool)
            .await?;
        Ok(Agent { id, site_id, site })
    }
}

/// Builds the agent API router.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route(wire::ENROLL_PATH, post(enroll::enroll))
        .route(wire::SITE_PATH, get(site_state))
        .route(wire::CLAIM_PATH, post(tasks::claim))
        .route(
            "/agent/v1/tasks/{task_id}/heartbeat",
            post(tasks::heartbeat),
        )
        .route("/agent/v1/tasks/{task_id}/result", post(tasks::report))
        .route(wire::OPERATION_CLAIM_PATH, post(operations::claim))
        .route("/agent/v1/images/{sha256}", get(images::serve_file))
        .route(
            rackhand_protocol::images::STAGE_REPORT_PATH,
            post(images::report_stage),
        )
        .route(
            "/agent/v1/consoles/{operation_id}",
            post(crate::console::agent_join),
        )
        .route(
            "/agent/v1/operations/{operation_id}/result",
            post(operations::report),
        )
        .layer(middleware::from_fn(require_protocol_version))
        .with_state(app)
}

async fn require_protocol_version(request: Request, next: Next) -> Response {
    let version = request
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match version.as_deref().map(str::parse::<u32>) {
        Some(Ok(PROTOCOL_VERSION)) => next.run(request).await,
        Some(_) => ApiError::BadRequest(format!(
            "agent speaks protocol version {}, this control plane speaks {PROTOCOL_VERSION}; upgrade the older side",
            version.unwrap_or_default()
        ))
        .into_response(),
        None => ApiError::BadRequest(format!(
            "missing {PROTOCOL_HEADER} header; this control plane speaks protocol version {PROTOCOL_VERSION}"
        ))
        .into_response(),
    }
}

async fn site_state(
    State(app): State<Arc<App>>,
    agent: Agent,
) -> Result<Json<SiteState>, ApiError> {
    let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, name, boot_mac, boot_override FROM nodes WHERE site_id = ? ORDER BY id",
    )
    .bind(agent.site_id)
    .fetch_all(&app.pool)
    .await?;
    let mut nodes = Vec::with_capacity(rows.len());
    for (node_id, name, mac, boot) in rows {
        let boot_mac = mac.parse().map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("node {node_id} has a bad boot MAC: {e}"))
        })?;
        let boot = boot
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "node {node_id} has a bad boot override: {e}"
                ))
            })?;
        nodes.push(SiteNode {
            node_id,
            name,
            boot_mac,
            boot,
        });
    }
    let staged_images = crate::api::image_library::staged_images(&app, agent.site_id).await?;
    Ok(Json(SiteState {
        site: agent.site,
        nodes,
        staged_images,
    }))
}
