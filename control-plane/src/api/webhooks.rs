//! Payment gateway webhooks. They are authenticated by the gateway's
//! signature, not by an API token.
//!
//! Status codes follow what makes gateway retries useful: 400 when the request
//! cannot be trusted or read (bad signature, stale timestamp, not JSON),
//! because nothing is stored and a retry of a genuine event will verify; 200
//! for everything stored, including rejected events, because retrying an
//! unknown invoice or a wrong amount cannot fix it.
//
// TODO: add the Mollie, PayPal and CoinGate gateways beside Stripe.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::app::SharedApp;
use crate::billing::{self, Applied, stripe};
use crate::db;

/// `POST /webhooks/stripe`.
pub async fn stripe(
    State(app): State<SharedApp>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(config) = &app.config.stripe else {
        return Err(ApiError::NotFound(
            "Stripe webhooks are not configured; add a [stripe] section".to_string(),
        ));
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = db::now_ms() / 1000;
    if let Err(error) = stripe::verify_signature(
        config.webhook_secret.expose(),
        signature,
        &body,
        now,
        i64::from(config.tolerance_seconds),
    ) {
        tracing::warn!(error = %error, "stripe webhook rejected: signature check failed");
        return Err(ApiError::BadRequest(error.to_string()));
    }

    let raw: Value = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(error = %e, "stripe webhook rejected: body is not JSON");
        ApiError::BadRequest(format!("body is not JSON: {e}"))
    })?;
    let event: stripe::Event = serde_json::from_value(raw.clone()).map_err(|e| {
        tracing::warn!(error = %e, "stripe webhook rejected: not an event");
        ApiError::BadRequest(format!("body is not a Stripe event: {e}"))
    })?;

    let applied = billing::apply_stripe_event(&app.pool, &event, &raw).await?;
    match &applied {
        Applied::Applied { order_id } => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, order_id, "stripe event applied; order enqueued");
            app.jobs_ready.notify_waiters();
        }
        Applied::Ignored(reason) => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, reason = %reason, "stripe event ignored")
        }
        Applied::Rejected(reason) => {
            tracing::warn!(event_id = %event.id, event_type = %event.event_type, reason = %reason, "stripe event rejected")
        }
        Applied::Duplicate => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, "stripe event already received; ignored")
        }
    }
    Ok(Json(
        json!({ "received": true, "event_id": event.id, "result": applied }),
    ))
}
