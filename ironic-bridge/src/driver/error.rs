//! Errors of the BMC drivers, classified as retryable or permanent.

use std::fmt;
use std::time::Duration;

use crate::driver::DriverKind;

/// An error from a BMC driver.
///
/// Every variant names the node, and every variant that comes from a request
/// names the URL. None of them contains the BMC password: bodies and
/// messages copied from the BMC have it replaced by `[redacted]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The endpoint cannot be used as given (bad URL, credentials in the URL,
    /// a path that is neither a service root nor a ComputerSystem).
    #[error("invalid BMC endpoint {url:?} for node {node}: {reason}")]
    InvalidEndpoint {
        node: String,
        url: String,
        reason: String,
    },

    /// The extra CA certificates of the endpoint are not valid PEM X.509
    /// certificates.
    #[error("invalid CA certificate for the BMC of node {node}")]
    InvalidCaCertificate {
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The HTTP client could not be built (TLS setup).
    #[error("failed to set up the HTTP client for the BMC of node {node}")]
    ClientSetup {
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// No connection, or it broke before a response arrived.
    #[error("BMC of node {node} is unreachable at {url}")]
    Unreachable {
        node: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The TLS handshake failed on the certificate or the protocol (not on
    /// the connection), which a retry cannot fix.
    #[error(
        "TLS handshake with the BMC of node {node} at {url} failed; check the BMC certificate and the endpoint's CA certificates"
    )]
    TlsHandshake {
        node: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// No complete response within the endpoint's timeout.
    #[error("{method} {url} to the BMC of node {node} timed out after {timeout:?}")]
    Timeout {
        node: String,
        url: String,
        method: http::Method,
        timeout: Duration,
    },

    /// HTTP 401 or 403: wrong credentials or a user without the privilege.
    #[error(
        "BMC of node {node} rejected user {username:?} at {url} with HTTP {status}{}; check the BMC credentials",
        detail(message)
    )]
    Authentication {
        node: String,
        url: String,
        username: String,
        status: u16,
        /// The BMC's own explanation, when its body carried one.
        message: Option<String>,
    },

    /// Any other non-success HTTP status.
    #[error(
        "{method} {url} to the BMC of node {node} failed with HTTP {status}{}",
        detail_or_body(message, body)
    )]
    Http {
        node: String,
        url: String,
        method: http::Method,
        status: u16,
        /// `@Message.ExtendedInfo` messages, or `error.message`, from a
        /// Redfish error body.
        message: Option<String>,
        /// The first 512 bytes of the body, for the operator.
        body: String,
        /// The `Retry-After` delay, when the BMC sent one in seconds.
        retry_after: Option<Duration>,
    },

    /// A success status with a body that is not the expected Redfish JSON.
    #[error("invalid response from the BMC of node {node} to {method} {url}: {problem}")]
    InvalidResponse {
        node: String,
        url: String,
        method: http::Method,
        problem: ResponseProblem,
        /// The first 512 bytes of the body, for the operator.
        body: String,
    },

    /// The service root lists no ComputerSystem that matches the endpoint.
    #[error("no ComputerSystem for node {node} at {url}: {reason}")]
    SystemNotFound {
        node: String,
        url: String,
        reason: String,
    },

    /// The driver or the BMC cannot do what was requested.
    #[error("{operation} is not supported by the {kind} driver of node {node}")]
    Unsupported {
        node: String,
        kind: DriverKind,
        operation: String,
    },

    /// An IPMI command returned a completion code other than 0x00.
    #[error(
        "IPMI {command} to the BMC of node {node} at {address} failed with completion code {code:#04x} ({})",
        completion_code_meaning(*code)
    )]
    IpmiCommand {
        node: String,
        /// `host:port` of the BMC.
        address: String,
        command: String,
        code: u8,
    },

    /// The BMC rejected the RMCP+ session setup for this user, or proved
    /// that it does not share the password (a RAKP authentication code that
    /// does not match).
    #[error(
        "BMC of node {node} at {address} rejected IPMI user {username:?}: {reason}; check the BMC credentials"
    )]
    IpmiAuthentication {
        node: String,
        address: String,
        username: String,
        reason: String,
    },

    /// Only packets the driver cannot use came back: too short, not RMCP,
    /// another session, a bad checksum or integrity code, or an unexpected
    /// payload.
    #[error(
        "invalid IPMI response from the BMC of node {node} at {address} to {command}: {problem}"
    )]
    IpmiInvalidResponse {
        node: String,
        address: String,
        command: String,
        problem: String,
    },

    /// No response after every retransmission.
    #[error(
        "IPMI {command} to the BMC of node {node} at {address} got no response in {attempts} attempts of {per_attempt:?} each"
    )]
    IpmiTimeout {
        node: String,
        address: String,
        command: String,
        attempts: u32,
        per_attempt: Duration,
    },

    /// The UDP socket could not be opened, or sending failed.
    #[error("BMC of node {node} is unreachable at {address}")]
    IpmiUnreachable {
        node: String,
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// The BMC rejected the operation because a vendor licence is missing
    /// (for example Supermicro's DCMS or OOB licence).
    #[error(
        "licence required: the BMC of node {node} refused {method} {url} with HTTP {status}{}; install the BMC licence for this feature",
        detail(message)
    )]
    LicenceRequired {
        node: String,
        url: String,
        method: http::Method,
        status: u16,
        /// The BMC's own explanation.
        message: Option<String>,
    },

    /// A task or job that the BMC started for a request ended in failure.
    #[error(
        "task of the BMC of node {node} at {url} ended with {state}{}",
        detail(message)
    )]
    TaskFailed {
        node: String,
        /// The task monitor or job URL.
        url: String,
        /// `TaskState` or `JobState`, such as `Exception`.
        state: String,
        /// The task's `Messages`.
        message: Option<String>,
    },

    /// The BMC, or the Ironic conductor in front of it, accepted the request
    /// and then reported that it failed, with its own message. Permanent.
    #[error("{operation} on node {node} at {url} failed: {message}")]
    Failed {
        node: String,
        url: String,
        operation: String,
        message: String,
    },
}

/// Returns the IPMI 2.0 meaning of a completion code (table 5-2 of the
/// specification).
pub fn completion_code_meaning(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0xC0 => "node busy",
        0xC1 => "invalid command",
        0xC2 => "command invalid for the given LUN",
        0xC3 => "timeout while processing the command",
        0xC4 => "out of space",
        0xC5 => "reservation canceled or invalid reservation id",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return the number of requested data bytes",
        0xCB => "requested sensor, data or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for the specified sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute a duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level",
        0xD5 => "command not supported in present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        0x01..=0x7E => "device-specific (OEM) completion code",
        0x80..=0xBE => "command-specific completion code",
        _ => "reserved completion code",
    }
}

/// The defect of a response body that came with a success status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseProblem {
    /// An HTML page, as a BMC's web server or a proxy sends on some failures.
    Html,
    /// Not JSON at all.
    InvalidJson(String),
    /// The body ended early, either as incomplete JSON or as a connection
    /// closed before `Content-Length` bytes arrived.
    Truncated(String),
    /// Larger than the driver reads.
    TooLarge { limit: usize },
    /// Valid JSON without a field the driver needs, or with a value it cannot
    /// use.
    UnexpectedContent(String),
}

impl fmt::Display for ResponseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseProblem::Html => f.write_str("an HTML page instead of JSON"),
            ResponseProblem::InvalidJson(detail) => write!(f, "invalid JSON ({detail})"),
            ResponseProblem::Truncated(detail) => write!(f, "truncated body ({detail})"),
            ResponseProblem::TooLarge { limit } => write!(f, "body larger than {limit} bytes"),
            ResponseProblem::UnexpectedContent(detail) => f.write_str(detail),
        }
    }
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(message) => format!(": {message}"),
        None => String::new(),
    }
}

/// Maximum characters of a body shown in an error message. The full excerpt
/// stays in the error's `body` field.
const BODY_IN_MESSAGE_CHARS: usize = 160;

/// Formats the BMC's message, or else the start of the body on one line.
fn detail_or_body(message: &Option<String>, body: &str) -> String {
    if message.is_some() {
        return detail(message);
    }
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return String::new();
    }
    let mut excerpt: String = one_line.chars().take(BODY_IN_MESSAGE_CHARS).collect();
    if excerpt.len() < one_line.len() {
        excerpt.push('…');
    }
    format!(": body {excerpt:?}")
}

impl DriverError {
    /// Returns whether the same request may succeed if tried again later.
    ///
    /// Timeouts, connection failures, truncated bodies, HTTP 5xx, 408 and 429
    /// are retryable, and so are the IPMI completion codes for a busy or
    /// initializing BMC. Other 4xx and completion codes, rejected credentials
    /// or certificates, invalid packets, invalid endpoints and unsupported
    /// operations are not: repeating them cannot help.
    pub fn is_retryable(&self) -> bool {
        match self {
            DriverError::Unreachable { .. } | DriverError::Timeout { .. } => true,
            DriverError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            DriverError::InvalidResponse { problem, .. } => {
                matches!(problem, ResponseProblem::Truncated(_))
            }
            DriverError::InvalidEndpoint { .. }
            | DriverError::InvalidCaCertificate { .. }
            | DriverError::ClientSetup { .. }
            | DriverError::TlsHandshake { .. }
            | DriverError::Authentication { .. }
            | DriverError::SystemNotFound { .. }
            | DriverError::Unsupported { .. }
            | DriverError::LicenceRequired { .. }
            | DriverError::TaskFailed { .. }
            | DriverError::Failed { .. } => false,
            // Busy, timed out, no response possible now, SDR update mode,
            // firmware update mode, BMC still initializing.
            DriverError::IpmiCommand { code, .. } => {
                matches!(code, 0xC0 | 0xC3 | 0xCE | 0xD0 | 0xD1 | 0xD2)
            }
            DriverError::IpmiTimeout { .. } | DriverError::IpmiUnreachable { .. } => true,
            DriverError::IpmiAuthentication { .. } | DriverError::IpmiInvalidResponse { .. } => {
                false
            }
        }
    }

    /// Returns the delay the BMC asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DriverError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Returns the node the error is about.
    pub fn node(&self) -> &str {
        match self {
            DriverError::InvalidEndpoint { node, .. }
            | DriverError::InvalidCaCertificate { node, .. }
            | DriverError::ClientSetup { node, .. }
            | DriverError::Unreachable { node, .. }
            | DriverError::TlsHandshake { node, .. }
            | DriverError::Timeout { node, .. }
            | DriverError::Authentication { node, .. }
            | DriverError::Http { node, .. }
            | DriverError::InvalidResponse { node, .. }
            | DriverError::SystemNotFound { node, .. }
            | DriverError::Unsupported { node, .. }
            | DriverError::IpmiCommand { node, .. }
            | DriverError::IpmiAuthentication { node, .. }
            | DriverError::IpmiInvalidResponse { node, .. }
            | DriverError::IpmiTimeout { node, .. }
            | DriverError::IpmiUnreachable { node, .. }
            | DriverError::LicenceRequired { node, .. }
            | DriverError::TaskFailed { node, .. }
            | DriverError::Failed { node, .. } => node,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{DriverError, ResponseProblem};

    fn http(status: u16) -> DriverError {
        DriverError::Http {
            node: "n1".into(),
            url: "http://bmc/redfish/v1/Systems/1".into(),
            method: http::Method::GET,
            status,
            message: None,
            body: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn server_errors_and_throttling_are_retryable() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(http(status).is_retryable(), "HTTP {status}");
        }
    }

    #[test]
    fn client_errors_are_permanent() {
        for status in [400, 404, 405, 409, 415] {
            assert!(!http(status).is_retryable(), "HTTP {status}");
        }
    }

    #[test]
    fn only_truncated_bodies_are_retryable() {
        let invalid = |problem| DriverError::InvalidResponse {
            node: "n1".into(),
            url: "u".into(),
            method: http::Method::GET,
            problem,
            body: String::new(),
        };
        assert!(invalid(ResponseProblem::Truncated("eof".into())).is_retryable());
        assert!(!invalid(ResponseProblem::Html).is_retryable());
        assert!(!invalid(ResponseProblem::InvalidJson("x".into())).is_retryable());
    }

    #[test]
    fn timeout_is_retryable() {
        let error = DriverError::Timeout {
            node: "n1".into(),
            url: "u".into(),
            method: http::Method::GET,
            timeout: Duration::from_secs(1),
        };
        assert!(error.is_retryable());
    }
}
