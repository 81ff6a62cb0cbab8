//! The control plane's one HTTP error type, shared by the operator API, the
//! webhook endpoints and the agent API.
//!
//! 4xx responses carry a message naming the invalid field or value and are not
//! logged as errors. 5xx responses give the client a generic message; the full
//! error chain goes to the log once, here.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::orders::OrderError;

/// An error response.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// 413: an upload is larger than the configured limit.
    PayloadTooLarge(String),
    /// 502: an upstream the request depends on (a BMC, through the site
    /// agent) failed; the message carries its error.
    BadGateway(String),
    /// 504: the upstream did not answer in time.
    GatewayTimeout(String),
    /// 503: the control plane cannot serve the request until an operator
    /// repairs its state, such as a stored file that failed verification.
    Unavailable(String),
    /// 422 with the field that failed validation.
    Invalid {
        field: String,
        message: String,
    },
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &str, name: impl std::fmt::Display) -> ApiError {
        ApiError::NotFound(format!("{what} {name} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, json!({ "error": message })),
            ApiError::Unauthorized(message) => {
                (StatusCode::UNAUTHORIZED, json!({ "error": message }))
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, json!({ "error": message })),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, json!({ "error": message })),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, json!({ "error": message })),
            ApiError::PayloadTooLarge(message) => {
                (StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": message }))
            }
            ApiError::BadGateway(message) => (StatusCode::BAD_GATEWAY, json!({ "error": message })),
            ApiError::GatewayTimeout(message) => {
                (StatusCode::GATEWAY_TIMEOUT, json!({ "error": message }))
            }
            ApiError::Unavailable(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": message }))
            }
            ApiError::Invalid { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": format!("invalid field `{field}`: {message}"), "field": field }),
            ),
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal error; the control plane log has the details" }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::Internal(error.into())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> ApiError {
        ApiError::Internal(error)
    }
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> ApiError {
        match error {
            OrderError::NotFound { .. } => ApiError::NotFound(error.to_string()),
            OrderError::Invalid { field, message } => ApiError::invalid(field, message),
            OrderError::WrongState { .. } | OrderError::Conflict(_) => {
                ApiError::Conflict(error.to_string())
            }
            OrderError::Database(error) => error.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::JsonDataError(error) => {
                // axum's text is "Failed to deserialize …: [<path>: ]<serde message>".
                let text = error.body_text();
                let detail = text
                    .split_once(": ")
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or(text);
                ApiError::Invalid {
                    field: invalid_field(&detail),
                    message: detail,
                }
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".to_string(),
            ),
            other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

/// Returns the field a serde data error is about, from its text
/// `[<path>: ]<message>`. The path is absent for errors at the top level,
/// where a missing field names itself in the message and anything else is
/// about the whole `body`.
fn invalid_field(detail: &str) -> String {
    let is_path = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]?".contains(c))
    };
    let (path, message) = match detail.split_once(": ") {
        Some((path, message)) if is_path(path) => (Some(path), message),
        _ => (None, detail),
    };
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (Some(path), Some(name)) => format!("{path}.{name}"),
        (Some(path), None) => path.to_string(),
        (None, Some(name)) => name.to_string(),
        (None, None) => "body".to_string(),
    }
}

/// A JSON request body whose rejections become [`ApiError`]s.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// A conflict from a unique constraint, or another database error.
pub fn unique_violation(error: sqlx::Error, message: impl FnOnce() -> String) -> ApiError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::Conflict(message()),
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::invalid_field;

    #[test]
    fn nested_path_is_the_field() {
        let detail = "boot_mac: invalid MAC address \"zz\" at line 1 column 9";
        assert_eq!(invalid_field(detail), "boot_mac");
    }

    #[test]
    fn top_level_missing_field_names_itself() {
        let detail = "missing field `name` at line 1 column 2";
        assert_eq!(invalid_field(detail), "name");
    }

    #[test]
    fn nested_missing_field_joins_path() {
        let detail = "bmc: missing field `password` at line 1 column 80";
        assert_eq!(invalid_field(detail), "bmc.password");
    }

    #[test]
    fn top_level_type_error_is_about_body() {
        let detail = "invalid type: sequence, expected struct NewSite at line 1 column 0";
        assert_eq!(invalid_field(detail), "body");
    }
}
