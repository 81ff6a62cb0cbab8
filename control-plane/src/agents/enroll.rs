//! Agent enrollment: a one-time token and a CSR in, a client certificate
//! naming the token's site out.
//!
//! The token is stored only as its sha256 and consumed by a conditional
//! update in the same transaction that registers the agent, so it works
//! exactly once even under concurrent attempts; a CSR that fails to parse
//! rolls the transaction back and leaves the token usable.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use rackhand_protocol::agent::{EnrollRequest, EnrollResponse};
use ring::digest;

use crate::api::error::{ApiError, Body};
use crate::app::App;
use crate::db;
use crate::pki::PkiError;

/// Returns the lowercase hex sha256 of a token, the form tokens are stored in.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

pub async fn enroll(
    State(app): State<Arc<App>>,
    Body(request): Body<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let now = db::now_ms();
    let hash = token_hash(request.token.expose());
    let mut tx = db::begin(&app.pool).await?;

    let token: Option<(i64, i64, String)> = sqlx::query_as(
        "SELECT t.id, t.site_id, s.name FROM enrollment_tokens t JOIN sites s ON s.id = t.site_id
         WHERE t.token_sha256 = ? AND t.used_at IS NULL AND t.expires_at > ?",
    )
    .bind(&hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((token_id, site_id, site)) = token else {
        tracing::warn!("enrollment rejected: unknown, expired or used token");
        return Err(ApiError::Unauthorized(
            "enrollment token is invalid, expired or already used; create a new one with `rackhand site enroll-token SITE`".to_string(),
        ));
    };

    let issued = app
        .ca
        .sign_agent(&request.csr_pem, &site)
        .map_err(|error| match error {
            PkiError::InvalidCsr(_) => ApiError::invalid("csr_pem", error.to_string()),
            PkiError::Issue(message) => ApiError::Internal(anyhow::anyhow!(message)),
        })?;

    let consumed =
        sqlx::query("UPDATE enrollment_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL")
            .bind(now)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
    if consumed.rows_affected() != 1 {
        return Err(ApiError::Unauthorized(
            "enrollment token was used concurrently".to_string(),
        ));
    }
    let agent_id: i64 = sqlx::query_scalar(
        "INSERT INTO agents (site_id, cert_fingerprint, cert_expires_at, agent_version, enrolled_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(site_id)
    .bind(&issued.fingerprint)
    .bind(issued.not_after_ms)
    .bind(&request.agent_version)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;

    tracing::info!(agent_id, site = %site, version = %request.agent_version, "site agent enrolled");
    Ok(Json(EnrollResponse {
        site,
        certificate_pem: issued.pem,
        ca_pem: app.ca.cert_pem.clone(),
    }))
}
