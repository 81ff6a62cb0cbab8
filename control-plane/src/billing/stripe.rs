//! Stripe webhook signatures and the two event types that pay an invoice.
//!
//! `Stripe-Signature` is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`; each
//! `v1` is HMAC-SHA256 over `"<t>.<raw body>"` keyed with the endpoint secret
//! exactly as configured (the whole `whsec_…` string). Any matching `v1`
//! passes (Stripe sends several while a secret is being rolled), compared in
//! constant time. The timestamp must lie within the tolerance in BOTH
//! directions: Stripe's own library accepts any future timestamp, but a
//! signed body from the future is as suspicious as a stale one.

use ring::hmac;
use serde::Deserialize;
use serde_json::Value;

/// A rejected signature. None of the messages contains the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header: {0}")]
    MalformedHeader(&'static str),
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error(
        "timestamp {timestamp} is outside the tolerance of {tolerance} s around now ({now}); replayed or clock skew"
    )]
    OutsideTolerance {
        timestamp: i64,
        now: i64,
        tolerance: i64,
    },
    #[error("no v1 signature matches the payload (wrong endpoint secret or altered body)")]
    NoMatch,
}

/// Verifies `header` for `body` at time `now` (Unix seconds).
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MalformedHeader("item without '='"))?;
        match key {
            "t" => {
                let t = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::MalformedHeader("t is not an integer"))?;
                timestamp = Some(t);
            }
            // A v1 value that is not hex cannot match; skip it like any
            // other non-matching candidate.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader("no t= timestamp"))?;
    if signatures.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    // `abs_diff`, because `now - timestamp` overflows when the sender's t
    // is near i64::MIN.
    if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance {
            timestamp,
            now,
            tolerance,
        });
    }

    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    if signatures
        .iter()
        .any(|candidate| hmac::verify(&key, &signed, candidate).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// The envelope of every Stripe event.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// A payment that an event reports for one of our invoices.
#[derive(Debug, PartialEq, Eq)]
pub struct Payment {
    /// Our invoice id as the event names it (unparsed, for messages).
    pub invoice_ref: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// The meaning of an event for billing.
#[derive(Debug, PartialEq, Eq)]
pub enum Meaning {
    /// A completed payment naming one of our invoices.
    Paid(Payment),
    /// An event type or state that does not pay an invoice (stored, ignored).
    Irrelevant(String),
    /// A paying event that lacks what we need (stored, rejected).
    Unusable(String),
}

/// Reads what `event` means: `invoice.paid` (the invoice in
/// `metadata.invoice_id`, amount in `amount_paid`) and
/// `checkout.session.completed` with `payment_status` `paid` (the invoice in
/// `client_reference_id` or `metadata.invoice_id`, amount in `amount_total`).
pub fn interpret(event: &Event) -> Meaning {
    let object = &event.data.object;
    let metadata_ref = object
        .get("metadata")
        .and_then(|m| m.get("invoice_id"))
        .and_then(Value::as_str);

    let (invoice_ref, amount_key) = match event.event_type.as_str() {
        "invoice.paid" => {
            if object.get("status").and_then(Value::as_str) != Some("paid") {
                return Meaning::Irrelevant("invoice status is not \"paid\"".to_string());
            }
            (metadata_ref, "amount_paid")
        }
        "checkout.session.completed" => {
            let status = object.get("payment_status").and_then(Value::as_str);
            if status != Some("paid") {
                return Meaning::Irrelevant(format!(
                    "checkout session payment_status is {}, not \"paid\"",
                    status
                        .map(|s| format!("{s:?}"))
                        .unwrap_or_else(|| "missing".to_string())
                ));
            }
            let client_ref = object.get("client_reference_id").and_then(Value::as_str);
            (client_ref.or(metadata_ref), "amount_total")
        }
        other => return Meaning::Irrelevant(format!("event type {other} does not pay invoices")),
    };

    let Some(invoice_ref) = invoice_ref else {
        return Meaning::Unusable(
            "names no invoice (expected metadata.invoice_id or client_reference_id)".to_string(),
        );
    };
    let Some(amount_minor) = object.get(amount_key).and_then(Value::as_i64) else {
        return Meaning::Unusable(format!("has no integer {amount_key}"));
    };
    let Some(currency) = object.get("currency").and_then(Value::as_str) else {
        return Meaning::Unusable("has no currency".to_string());
    };
    Meaning::Paid(Payment {
        invoice_ref: invoice_ref.to_string(),
        amount_minor,
        currency: currency.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: &str = "whsec_test";

    fn sign(body: &[u8], timestamp: i64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(body);
        format!(
            "t={timestamp},v1={}",
            hex::encode(hmac::sign(&key, &signed))
        )
    }

    #[test]
    fn valid_signature_passes() {
        let header = sign(b"{}", 1000);
        assert_eq!(
            verify_signature(SECRET, Some(&header), b"{}", 1000, 300),
            Ok(())
        );
    }

    #[test]
    fn any_matching_v1_passes() {
        let header = format!("{},v1={},v0=abc", sign(b"{}", 1000), "00".repeat(32));
        let reordered = header.replacen("t=1000,", "", 1) + ",t=1000";
        assert_eq!(
            verify_signature(SECRET, Some(&reordered), b"{}", 1000, 300),
            Ok(())
        );
    }

    #[test]
    fn future_timestamp_is_rejected() {
        let header = sign(b"{}", 2000);
        let result = verify_signature(SECRET, Some(&header), b"{}", 1000, 300);
        assert!(matches!(
            result,
            Err(SignatureError::OutsideTolerance { .. })
        ));
    }

    #[test]
    fn stale_timestamp_is_rejected() {
        let header = sign(b"{}", 600);
        let result = verify_signature(SECRET, Some(&header), b"{}", 1000, 300);
        assert!(matches!(
            result,
            Err(SignatureError::OutsideTolerance { .. })
        ));
    }

    #[test]
    fn altered_body_is_rejected() {
        let header = sign(b"{}", 1000);
        let result = verify_signature(SECRET, Some(&header), b"{ }", 1000, 300);
        assert_eq!(result, Err(SignatureError::NoMatch));
    }

    #[test]
    fn header_without_v1_is_rejected() {
        let result = verify_signature(SECRET, Some("t=1000,v0=ab"), b"{}", 1000, 300);
        assert_eq!(result, Err(SignatureError::NoV1Signature));
    }

    #[test]
    fn missing_header_is_rejected() {
        let result = verify_signature(SECRET, None, b"{}", 1000, 300);
        assert_eq!(result, Err(SignatureError::MissingHeader));
    }

    fn event(event_type: &str, object: Value) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: event_type.into(),
            data: EventData { object },
        }
    }

    #[test]
    fn invoice_paid_names_metadata_invoice() {
        let meaning = interpret(&event(
            "invoice.paid",
            json!({"status": "paid", "amount_paid": 1999, "currency": "EUR", "metadata": {"invoice_id": "7"}}),
        ));
        assert_eq!(
            meaning,
            Meaning::Paid(Payment {
                invoice_ref: "7".into(),
                amount_minor: 1999,
                currency: "eur".into()
            })
        );
    }

    #[test]
    fn checkout_prefers_client_reference_id() {
        let meaning = interpret(&event(
            "checkout.session.completed",
            json!({"payment_status": "paid", "amount_total": 500, "currency": "usd",
                   "client_reference_id": "3", "metadata": {"invoice_id": "9"}}),
        ));
        assert!(
            matches!(meaning, Meaning::Paid(Payment { ref invoice_ref, .. }) if invoice_ref == "3")
        );
    }

    #[test]
    fn unpaid_checkout_is_irrelevant() {
        let meaning = interpret(&event(
            "checkout.session.completed",
            json!({"payment_status": "unpaid", "amount_total": 500, "currency": "usd", "client_reference_id": "3"}),
        ));
        assert!(matches!(meaning, Meaning::Irrelevant(_)));
    }

    #[test]
    fn paying_event_without_invoice_is_unusable() {
        let meaning = interpret(&event(
            "invoice.paid",
            json!({"status": "paid", "amount_paid": 1, "currency": "usd"}),
        ));
        assert!(matches!(meaning, Meaning::Unusable(_)));
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = verify_signature(SECRET, Some(&header), &body, 1000, 300);
        }

        #[test]
        fn arbitrary_event_objects_never_panic(text in "\\PC{0,200}") {
            if let Ok(object) = serde_json::from_str::<Value>(&text) {
                let _ = interpret(&event("invoice.paid", object.clone()));
                let _ = interpret(&event("checkout.session.completed", object));
            }
        }
    }
}
