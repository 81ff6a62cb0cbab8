//! The `handoff` phase: generate the root password, store it sealed, e-mail
//! the customer their credentials, and flip the service to `active`.
//!
//! Crash safety, step by step:
//! 1. The password is generated once and stored sealed before anything is
//!    sent, and a retry opens the stored one instead of making a new one.
//!    For a product with an install template the image phase stores it
//!    earlier (see [`crate::phases::credentials`]).
//! 2. The e-mail state goes `NULL → sending → sent`, each step committed. A
//!    retry that finds `sending` knows a crash hit mid-delivery: for the
//!    outbox it checks whether the file exists; for SMTP it cannot know, so
//!    the phase fails permanently and an operator decides (`rackhand order
//!    retry ID --resend-email`) instead of risking a second e-mail.
//! 3. The service and the order become `active` in one transaction.

use rackhand_protocol::Secret;
use serde_json::json;

use crate::app::App;
use crate::db;
use crate::mail::{Delivery, WelcomeEmail};
use crate::phases::credentials::ensure_root_credentials;
use crate::phases::{OrderContext, PhaseError, PhaseOutcome, Retry};

#[derive(sqlx::FromRow)]
struct Service {
    ipv4: String,
    fqdn: String,
    email_state: Option<String>,
    state: String,
}

/// Runs the phase.
pub async fn run(app: &App, order: &OrderContext, key: &str) -> Result<PhaseOutcome, PhaseError> {
    let service = load(app, order.id).await?;
    if service.state == "active" {
        return Ok(PhaseOutcome::Done {
            summary: "service already active".to_string(),
            payload: None,
        });
    }

    let password = ensure_root_credentials(app, order.id).await?.password;
    let message_id = format!("<{}.welcome@rackhand>", order.uid);
    let delivery = deliver_once(app, order, &service, &message_id, &password).await?;

    let now = db::now_ms();
    let mut tx = db::begin(&app.pool).await?;
    sqlx::query("UPDATE services SET state = 'active', activated_at = ? WHERE order_id = ?")
        .bind(now)
        .bind(order.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE orders SET state = 'active', updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(order.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(order_id = order.id, correlation_key = key, fqdn = %service.fqdn, "service active");

    Ok(PhaseOutcome::Done {
        summary: format!(
            "welcome e-mail to {}: {delivery}; service active",
            order.customer_email
        ),
        payload: Some(json!({ "message_id": message_id, "delivery": delivery })),
    })
}

async fn load(app: &App, order_id: i64) -> Result<Service, PhaseError> {
    let service: Option<Service> =
        sqlx::query_as("SELECT ipv4, fqdn, email_state, state FROM services WHERE order_id = ?")
            .bind(order_id)
            .fetch_optional(&app.pool)
            .await?;
    service.ok_or_else(|| {
        PhaseError::permanent("order has no service row; the network phase did not complete")
    })
}

async fn set_email_state(
    app: &App,
    order_id: i64,
    state: Option<&str>,
    message_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE services SET email_state = ?, email_message_id = ? WHERE order_id = ?")
        .bind(state)
        .bind(message_id)
        .bind(order_id)
        .execute(&app.pool)
        .await?;
    Ok(())
}

/// Sends the welcome e-mail unless an earlier attempt already did.
async fn deliver_once(
    app: &App,
    order: &OrderContext,
    service: &Service,
    message_id: &str,
    password: &Secret,
) -> Result<String, PhaseError> {
    match service.email_state.as_deref() {
        Some("sent") => return Ok("sent by an earlier attempt".to_string()),
        Some("sending") if app.mailer.in_outbox(message_id) => {
            set_email_state(app, order.id, Some("sent"), message_id).await?;
            return Ok("found in the outbox after a restart".to_string());
        }
        Some("sending") => {
            return Err(PhaseError::permanent(format!(
                "an earlier attempt stopped while sending the welcome e-mail {message_id}; it may have been delivered. Check the mail server's log, then run `rackhand order retry {} --resend-email` to send it again",
                order.id
            )));
        }
        _ => {}
    }

    let classify = |error: crate::mail::SendError| PhaseError {
        retry: if error.is_retryable() {
            Retry::Transient
        } else {
            Retry::Permanent
        },
        message: error.to_string(),
        upstream: None,
    };
    app.mailer.check_server().await.map_err(classify)?;

    set_email_state(app, order.id, Some("sending"), message_id).await?;
    app.failpoints.hit("cp.handoff.before_send").await;
    let values = WelcomeEmail {
        hostname: &order.hostname,
        fqdn: &service.fqdn,
        ipv4: &service.ipv4,
        username: "root",
        password: password.expose(),
    };
    match app
        .mailer
        .send(&order.customer_email, message_id, &values)
        .await
    {
        Ok(delivery) => {
            set_email_state(app, order.id, Some("sent"), message_id).await?;
            Ok(match delivery {
                Delivery::Smtp { server, response } => format!("SMTP {server}: {response}"),
                Delivery::Outbox { path } => format!(
                    "written to the outbox as {}, because no SMTP server is configured",
                    path.display()
                ),
            })
        }
        Err(error) => {
            if !error.delivery_unknown() {
                // The server refused or could not be reached: nothing was
                // delivered, so the next attempt may send again.
                set_email_state(app, order.id, None, message_id).await?;
            }
            Err(classify(error))
        }
    }
}
