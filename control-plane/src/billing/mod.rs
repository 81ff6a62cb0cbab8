//! The `billing` phase: a verified payment webhook marks an invoice paid and
//! starts provisioning.
//!
//! Invariants:
//! - Each gateway event is stored once, keyed by `(provider, event id)`; a
//!   redelivery finds its row and changes nothing.
//! - Marking the invoice paid, writing the `billing` activity rows, moving the
//!   order to `provisioning_pending` and enqueueing its job happen in ONE
//!   transaction, so a crash leaves either all of it or none.
//! - An invoice is paid at most once (a conditional update), so several
//!   events for one payment (`invoice.paid` and `checkout.session.completed`)
//!   enqueue one job.
//! - Events that name no invoice of ours, or the wrong amount, are stored as
//!   `rejected` for operators, because a gateway retry cannot fix them.

pub mod stripe;

use serde_json::Value;

use crate::activity::{self, Entry, Event};
use crate::db::{self, Pool};
use crate::jobs;
use rackhand_protocol::Phase;

/// The outcome of one delivered event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Applied {
    /// The invoice is now paid and its order's job is enqueued.
    Applied { order_id: i64 },
    /// Stored, changes nothing (irrelevant type, or invoice already paid).
    Ignored(String),
    /// Stored as rejected for operators (unknown invoice, amount mismatch).
    Rejected(String),
    /// Seen before; nothing stored again.
    Duplicate,
}

/// Stores and applies one verified Stripe event.
pub async fn apply_stripe_event(
    pool: &Pool,
    event: &stripe::Event,
    raw: &Value,
) -> Result<Applied, sqlx::Error> {
    let mut tx = db::begin(pool).await?;
    let now = db::now_ms();

    // Claim the event id first: a concurrent or later delivery of the same
    // event conflicts here and changes nothing.
    let inserted = sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, event_type, outcome, payload, received_at)
         VALUES ('stripe', ?, ?, 'pending', ?, ?)
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(raw.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT payload FROM webhook_events WHERE provider = 'stripe' AND event_id = ?",
        )
        .bind(&event.id)
        .fetch_optional(&mut *tx)
        .await?;
        if stored
            .is_some_and(|stored| serde_json::from_str::<Value>(&stored).ok().as_ref() != Some(raw))
        {
            // Stripe resends an event byte for byte; the same id with another
            // body is a bug or a forgery that happens to verify.
            tracing::warn!(event_id = %event.id, "stripe event id seen before with a different body; ignored");
        }
        return Ok(Applied::Duplicate);
    }

    let (applied, invoice_id) = match stripe::interpret(event) {
        stripe::Meaning::Irrelevant(reason) => (Applied::Ignored(reason), None),
        stripe::Meaning::Unusable(reason) => (Applied::Rejected(format!("event {reason}")), None),
        stripe::Meaning::Paid(payment) => apply_payment(&mut tx, &event.id, &payment, now).await?,
    };

    let (outcome, reason) = match &applied {
        Applied::Applied { .. } => ("applied", None),
        Applied::Ignored(reason) => ("ignored", Some(reason.as_str())),
        Applied::Rejected(reason) => ("rejected", Some(reason.as_str())),
        Applied::Duplicate => unreachable!("duplicates return before this point"),
    };
    sqlx::query(
        "UPDATE webhook_events SET outcome = ?, reason = ?, invoice_id = ?
         WHERE provider = 'stripe' AND event_id = ?",
    )
    .bind(outcome)
    .bind(reason)
    .bind(invoice_id)
    .bind(&event.id)
    .execute(&mut *tx)
    .await?;

    tx.commit().await?;
    Ok(applied)
}

#[derive(sqlx::FromRow)]
struct InvoiceRow {
    id: i64,
    order_id: i64,
    amount_minor: i64,
    currency: String,
    state: String,
    paid_by_event: Option<String>,
}

async fn apply_payment(
    tx: &mut db::Tx<'_>,
    event_id: &str,
    payment: &stripe::Payment,
    now: i64,
) -> Result<(Applied, Option<i64>), sqlx::Error> {
    let Ok(invoice_id) = payment.invoice_ref.parse::<i64>() else {
        let reason = format!("invoice {:?} is not one of ours", payment.invoice_ref);
        return Ok((Applied::Rejected(reason), None));
    };
    let invoice: Option<InvoiceRow> = sqlx::query_as(
        "SELECT id, order_id, amount_minor, currency, state, paid_by_event
         FROM invoices WHERE id = ?",
    )
    .bind(invoice_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(invoice) = invoice else {
        let reason = format!("invoice {invoice_id} does not exist");
        return Ok((Applied::Rejected(reason), None));
    };

    if invoice.state == "paid" {
        let reason = format!(
            "invoice {} was already paid by event {}",
            invoice.id,
            invoice.paid_by_event.as_deref().unwrap_or("(unknown)")
        );
        return Ok((Applied::Ignored(reason), Some(invoice.id)));
    }

    if invoice.amount_minor != payment.amount_minor || invoice.currency != payment.currency {
        let reason = format!(
            "paid {} {} but invoice {} is for {} {}",
            payment.amount_minor,
            payment.currency,
            invoice.id,
            invoice.amount_minor,
            invoice.currency
        );
        let message = format!("payment event {event_id} rejected: {reason}");
        record_billing(tx, invoice.order_id, Event::Rejected, event_id, &message).await?;
        return Ok((Applied::Rejected(reason), Some(invoice.id)));
    }

    let paid = sqlx::query(
        "UPDATE invoices SET state = 'paid', paid_at = ?, paid_by_event = ?
         WHERE id = ? AND state = 'open'",
    )
    .bind(now)
    .bind(event_id)
    .bind(invoice.id)
    .execute(&mut **tx)
    .await?;
    if paid.rows_affected() != 1 {
        let reason = format!("invoice {} is not open", invoice.id);
        return Ok((Applied::Ignored(reason), Some(invoice.id)));
    }

    record_billing(
        tx,
        invoice.order_id,
        Event::Started,
        event_id,
        "payment event received",
    )
    .await?;
    let message = format!(
        "invoice {} paid: {} {} (stripe event {event_id})",
        invoice.id, payment.amount_minor, payment.currency
    );
    record_billing(tx, invoice.order_id, Event::Succeeded, event_id, &message).await?;

    sqlx::query(
        "UPDATE orders SET state = 'provisioning_pending', updated_at = ?
         WHERE id = ? AND state = 'pending_payment'",
    )
    .bind(now)
    .bind(invoice.order_id)
    .execute(&mut **tx)
    .await?;
    jobs::enqueue(tx, invoice.order_id, Phase::Allocate, now).await?;

    Ok((
        Applied::Applied {
            order_id: invoice.order_id,
        },
        Some(invoice.id),
    ))
}

async fn record_billing(
    tx: &mut db::Tx<'_>,
    order_id: i64,
    event: Event,
    event_id: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    let correlation_key = format!("stripe:{event_id}");
    activity::record(
        &mut **tx,
        &Entry {
            order_id,
            phase: Phase::Billing.as_str(),
            event,
            attempt: 1,
            correlation_key: Some(&correlation_key),
            message,
            payload: None,
        },
    )
    .await
}
