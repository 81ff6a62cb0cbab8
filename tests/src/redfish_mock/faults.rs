//! Faults a test can inject on a path: broken bodies, HTML pages, silence,
//! error bodies, and redirects.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::errors::{ErrorMessage, Failure, license_required};
use super::profile::Vendor;

/// How long a [`Fault::Hang`] request stays unanswered at most. The request
/// also ends when the mock is dropped.
pub const HANG_LIMIT: Duration = Duration::from_secs(300);

/// A broken response that replaces the normal one.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// An HTML error page (`text/html`) with this status, as a reverse proxy
    /// or a BMC's web server sends when its Redfish service is down. 200 is
    /// allowed: some BMCs return a login page with 200.
    HtmlPage { status: u16 },
    /// The resource's JSON with a `Content-Length` larger than the bytes
    /// sent; the connection closes early.
    TruncatedBody,
    /// The first half of the resource's JSON, with a matching
    /// `Content-Length` and `application/json`.
    CutJson,
    /// A body that is not JSON at all, served as `application/json`.
    InvalidJson,
    /// No response: the request is held open until [`HANG_LIMIT`] or until the
    /// mock is dropped, whichever comes first.
    Hang,
    /// A DMTF `@Message.ExtendedInfo` error body in the profile's shape.
    ExtendedInfo {
        status: u16,
        /// A Base registry key (`InternalError`) or a full MessageId.
        message_id: String,
        message: String,
        resolution: String,
    },
    /// Supermicro's licence-required error (`SMC.1.0.OemLicenseNotPassed`,
    /// 403), naming `feature`.
    LicenseRequired { feature: String },
    /// 503 with `Retry-After` on this path only.
    Unavailable { retry_after_secs: u32 },
}

/// Where a fault applies, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The request path, without query; a trailing slash is ignored.
    pub path: String,
    /// Only requests with this method (`"GET"`, `"POST"`…); `None` for all.
    pub method: Option<String>,
    pub fault: Fault,
    /// How many more requests get the fault; `None` for every request.
    pub remaining: Option<u32>,
}

impl FaultRule {
    /// A fault on every request to `path`, whatever the method.
    pub fn new(path: &str, fault: Fault) -> Self {
        FaultRule {
            path: super::state::normalize(path),
            method: None,
            fault,
            remaining: None,
        }
    }

    /// Limits the fault to requests with `method`.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Limits the fault to the next `count` matching requests.
    pub fn times(mut self, count: u32) -> Self {
        self.remaining = Some(count);
        self
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        self.path == path
            && self.method.as_deref().is_none_or(|m| m == method)
            && self.remaining != Some(0)
    }
}

/// Where a redirected path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `307` to another path on the mock itself.
    SameHost { to: String },
    /// `307` to the same path on `127.0.0.2`, the mock's port. A client
    /// must not follow it: the credentials would go to another host. Nothing
    /// listens there unless a test starts something.
    OtherHost,
}

/// Builds the response for `fault`; `resource` is the JSON that the path
/// would have returned, if any.
pub(crate) async fn respond(
    vendor: Vendor,
    fault: &Fault,
    resource: Option<&Value>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let json = resource
        .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
        .unwrap_or_else(|| r#"{"@odata.id": "/redfish/v1", "Name": "Root Service"}"#.to_string());
    match fault {
        Fault::HtmlPage { status } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let page = format!(
                "<!DOCTYPE html>\n<html><head><title>{status}</title></head>\n<body><h1>{status}</h1><p>The web server could not complete the request.</p></body></html>\n"
            );
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                page,
            )
                .into_response()
        }
        Fault::TruncatedBody => {
            let bytes = json.into_bytes();
            let sent = bytes::Bytes::from(bytes[..bytes.len() / 2].to_vec());
            // A stream has no exact size, so hyper trusts the declared
            // Content-Length. The pause lets hyper flush the head and the
            // half before the early end makes it close the connection.
            let stream = futures_util::stream::unfold(Some(sent), |chunk| async move {
                match chunk {
                    Some(bytes) => Some((Ok::<_, std::io::Error>(bytes), None)),
                    None => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        None
                    }
                }
            });
            let mut response = Response::new(Body::from_stream(stream));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            response
        }
        Fault::CutJson => {
            let cut = json[..json.len() / 2].to_string();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                cut,
            )
                .into_response()
        }
        Fault::InvalidJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"@odata.id\": \"/redfish/v1\", \"Name\": Root Service,,}",
        )
            .into_response(),
        Fault::Hang => {
            let _ = tokio::time::timeout(HANG_LIMIT, shutdown.wait_for(|stop| *stop)).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Fault::ExtendedInfo {
            status,
            message_id,
            message,
            resolution,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = ErrorMessage::new(message_id, message.clone(), &[])
                .resolution(resolution.clone())
                .critical();
            Failure::new(status, message).render(vendor)
        }
        Fault::LicenseRequired { feature } => license_required(feature).render(vendor),
        Fault::Unavailable { retry_after_secs } => unavailable(vendor, *retry_after_secs),
    }
}

/// 503 with `Retry-After` and a `ServiceTemporarilyUnavailable` body.
pub(crate) fn unavailable(vendor: Vendor, retry_after_secs: u32) -> Response {
    let secs = retry_after_secs.to_string();
    let message = ErrorMessage::new(
        "ServiceTemporarilyUnavailable",
        format!("The service is temporarily unavailable. Retry in {secs} seconds."),
        &[&secs],
    )
    .resolution("Wait for the indicated retry duration and retry the operation.")
    .critical();
    let mut response = Failure::new(StatusCode::SERVICE_UNAVAILABLE, message).render(vendor);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}
