//! Orders as operators see them: place, list, show with the activity log,
//! retry; and the stored payment webhook events.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::activity;
use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body};
use crate::app::SharedApp;
use crate::orders::{self, NewOrder};

pub async fn create(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(request): Body<NewOrder>,
) -> Result<(StatusCode, Json<orders::CreatedOrder>), ApiError> {
    let created = orders::create(&app.pool, &request).await?;
    tracing::info!(
        order_id = created.order_id,
        invoice_id = created.invoice_id,
        "order placed"
    );
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    id: i64,
    uid: String,
    product: String,
    site: String,
    customer_email: String,
    hostname: String,
    state: String,
    node: Option<String>,
    invoice_id: Option<i64>,
    invoice_state: Option<String>,
    amount_minor: Option<i64>,
    currency: Option<String>,
    ipv4: Option<String>,
    fqdn: Option<String>,
    phase: Option<String>,
    failed_phase: Option<String>,
    failure_error: Option<String>,
    failure_upstream: Option<String>,
    created_at: i64,
    updated_at: i64,
}

const ORDER_SELECT: &str = "SELECT o.id, o.uid, p.name AS product, s.name AS site, o.customer_email, o.hostname,
        o.state, n.name AS node, i.id AS invoice_id, i.state AS invoice_state, i.amount_minor, i.currency,
        v.ipv4, v.fqdn, j.phase, o.failed_phase, o.failure_error, o.failure_upstream, o.created_at, o.updated_at
    FROM orders o
    JOIN products p ON p.id = o.product_id
    JOIN sites s ON s.id = o.site_id
    LEFT JOIN nodes n ON n.id = o.node_id
    LEFT JOIN invoices i ON i.order_id = o.id
    LEFT JOIN services v ON v.order_id = o.id
    LEFT JOIN jobs j ON j.order_id = o.id";

#[derive(Debug, Deserialize)]
pub struct OrderFilter {
    state: Option<String>,
}

pub async fn list(
    State(app): State<SharedApp>,
    _operator: Operator,
    Query(filter): Query<OrderFilter>,
) -> Result<Json<Vec<OrderRow>>, ApiError> {
    const STATES: [&str; 5] = [
        "pending_payment",
        "provisioning_pending",
        "provisioning",
        "active",
        "failed",
    ];
    if let Some(state) = &filter.state
        && !STATES.contains(&state.as_str())
    {
        return Err(ApiError::invalid(
            "state",
            format!(
                "{state:?} is not an order state; use one of {}",
                STATES.join(", ")
            ),
        ));
    }
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ORDER_SELECT} WHERE ?1 IS NULL OR o.state = ?1 ORDER BY o.id"
    )))
    .bind(&filter.state)
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}

#[derive(Debug, Serialize)]
pub struct OrderDetail {
    #[serde(flatten)]
    order: OrderRow,
    activity: Vec<activity::Row>,
}

pub async fn show(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(id): Path<i64>,
) -> Result<Json<OrderDetail>, ApiError> {
    let order: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ORDER_SELECT} WHERE o.id = ?"
    )))
    .bind(id)
    .fetch_optional(&app.pool)
    .await?;
    let order = order.ok_or_else(|| ApiError::not_found("order", id))?;
    let activity = activity::for_order(&app.pool, id).await?;
    Ok(Json(OrderDetail { order, activity }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    #[serde(default)]
    resend_email: bool,
}

pub async fn retry(
    State(app): State<SharedApp>,
    operator: Operator,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: a bare POST retries without resending e-mail.
    let request: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    orders::retry(&app.pool, id, request.resend_email).await?;
    tracing::info!(order_id = id, token = %operator.token_name, "operator retried order");
    app.jobs_ready.notify_waiters();
    app.tasks_ready.notify_waiters();
    Ok(Json(json!({ "order_id": id, "state": "provisioning" })))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct WebhookEventRow {
    id: i64,
    provider: String,
    event_id: String,
    event_type: String,
    outcome: String,
    reason: Option<String>,
    invoice_id: Option<i64>,
    received_at: i64,
}

pub async fn webhook_events(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<WebhookEventRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT id, provider, event_id, event_type, outcome, reason, invoice_id, received_at
         FROM webhook_events ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}
