//! The `activity_log`: what happened to an order, phase by phase, as
//! operators read it.
//!
//! Rows are only appended. Each carries the phase, the event (`started`,
//! `succeeded`, `retrying`, `failed`, …), the attempt number, the correlation
//! key of the side effect, a one-line message and the upstream payload. Every
//! payload passes through [`redact`] first, and messages are built from our
//! own error types, whose `Display` never includes a secret.

use serde::Serialize;
use serde_json::Value;

use crate::db;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started,
    Succeeded,
    Retrying,
    Failed,
    Progress,
    Rejected,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Succeeded => "succeeded",
            Event::Retrying => "retrying",
            Event::Failed => "failed",
            Event::Progress => "progress",
            Event::Rejected => "rejected",
        }
    }
}

/// One row to append.
#[derive(Debug)]
pub struct Entry<'a> {
    pub order_id: i64,
    pub phase: &'a str,
    pub event: Event,
    pub attempt: i64,
    pub correlation_key: Option<&'a str>,
    pub message: &'a str,
    pub payload: Option<&'a Value>,
}

/// Appends `entry`, redacting its payload.
pub async fn record<'e, E>(executor: E, entry: &Entry<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::SqliteExecutor<'e>,
{
    let payload = entry.payload.map(|p| redact(p).to_string());
    sqlx::query(
        "INSERT INTO activity_log
            (order_id, phase, event, attempt, correlation_key, message, payload, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.order_id)
    .bind(entry.phase)
    .bind(entry.event.as_str())
    .bind(entry.attempt)
    .bind(entry.correlation_key)
    .bind(entry.message)
    .bind(payload)
    .bind(db::now_ms())
    .execute(executor)
    .await?;
    Ok(())
}

/// One row as the API returns it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub phase: String,
    pub event: String,
    pub attempt: i64,
    pub correlation_key: Option<String>,
    pub message: String,
    pub payload: Option<String>,
    pub created_at: i64,
}

/// Returns an order's rows, oldest first.
pub async fn for_order(pool: &db::Pool, order_id: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, phase, event, attempt, correlation_key, message, payload, created_at
         FROM activity_log WHERE order_id = ? ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}

/// Key fragments whose values are secrets wherever they appear.
const SECRET_KEY_FRAGMENTS: [&str; 8] = [
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
];

/// Returns `value` with every object member whose key names a secret
/// replaced by `"[redacted]"`, at any depth.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, member)| {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_KEY_FRAGMENTS.iter().any(|f| lower.contains(f)) {
                        (key.clone(), Value::String("[redacted]".to_string()))
                    } else {
                        (key.clone(), redact(member))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;
    use serde_json::json;

    #[test]
    fn redact_hides_secret_members_at_any_depth() {
        let value = json!({
            "bmc": {"username": "admin", "Password": "hunter2"},
            "items": [{"api_key": "k"}],
            "X-Auth-Token": "t",
        });
        let redacted = redact(&value);
        assert_eq!(redacted["bmc"]["username"], "admin");
        assert_eq!(redacted["bmc"]["Password"], "[redacted]");
        assert_eq!(redacted["items"][0]["api_key"], "[redacted]");
        assert_eq!(redacted["X-Auth-Token"], "[redacted]");
    }
}
