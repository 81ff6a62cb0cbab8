//! Errors of the Ironic client, classified as retryable or permanent.

use std::time::Duration;

use crate::driver::{DriverError, ResponseProblem};

/// An error from the Ironic REST API or from a provisioning step.
///
/// Every variant names the node (or `-` for calls that concern no node), and
/// every variant that comes from a request names the URL. Messages copied
/// from Ironic are its `faultstring`, with the configured secrets replaced by
/// `[redacted]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IronicError {
    /// The configuration or the endpoint URL cannot be used as given.
    #[error("invalid Ironic endpoint {url:?} for node {node}: {reason}")]
    InvalidConfig {
        node: String,
        url: String,
        reason: String,
    },

    /// The HTTP client could not be built (TLS setup).
    #[error("failed to set up the HTTP client for Ironic at {url}")]
    ClientSetup {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// No connection, or it broke before a response arrived.
    #[error("Ironic is unreachable at {url} (node {node})")]
    Unreachable {
        node: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// No complete response within the configured timeout.
    #[error("{method} {url} to Ironic for node {node} timed out after {timeout:?}")]
    Timeout {
        node: String,
        url: String,
        method: http::Method,
        timeout: Duration,
    },

    /// HTTP 401 or 403 from Ironic, or a Keystone token request that failed.
    #[error(
        "Ironic rejected user {username:?} at {url} (node {node}) with HTTP {status}{}; check the Ironic credentials",
        detail(message)
    )]
    Authentication {
        node: String,
        url: String,
        /// The Basic or Keystone user, empty without credentials.
        username: String,
        status: u16,
        message: Option<String>,
    },

    /// Any other non-success HTTP status.
    #[error(
        "{method} {url} to Ironic for node {node} failed with HTTP {status}{}",
        detail(message)
    )]
    Api {
        node: String,
        url: String,
        method: http::Method,
        status: u16,
        /// Ironic's `faultstring`, decoded from the double-encoded
        /// `error_message`, or the start of the body when it had none.
        message: Option<String>,
    },

    /// A success status with a body that is not the expected JSON.
    #[error("invalid response from Ironic for node {node} to {method} {url}: {problem}")]
    InvalidResponse {
        node: String,
        url: String,
        method: http::Method,
        problem: ResponseProblem,
        /// The first 512 bytes of the body, for the operator.
        body: String,
    },

    /// The server supports no API microversion this client can speak.
    #[error(
        "Ironic at {url} offers API versions {server_min} to {server_max}; this client needs {client_min} to {client_max}"
    )]
    NoCommonVersion {
        url: String,
        server_min: String,
        server_max: String,
        client_min: String,
        client_max: String,
    },

    /// The node reached a failure state (`deploy failed`, `clean failed`,
    /// `inspect failed`, …) or its conductor reported `last_error`. Permanent:
    /// an operator has to look at the node.
    #[error("node {node} at {url} is in {provision_state:?}: {message}")]
    ProvisionFailed {
        node: String,
        url: String,
        provision_state: String,
        /// `last_error` as first seen, else the last error event of the
        /// node's history.
        message: String,
    },

    /// A power or boot change that Ironic accepted and then reported as
    /// failed through `last_error`.
    #[error("{operation} on node {node} at {url} failed: {message}")]
    OperationFailed {
        node: String,
        url: String,
        operation: String,
        message: String,
    },

    /// The node stayed in one state longer than the deadline for that state.
    #[error(
        "node {node} at {url} stayed in {provision_state:?} for more than {deadline:?} while heading for {target:?}"
    )]
    StateTimeout {
        node: String,
        url: String,
        provision_state: String,
        target: String,
        deadline: Duration,
    },

    /// The node is busy with another instance, or in a state from which the
    /// requested action cannot start.
    #[error("node {node} at {url} cannot {action}: {reason}")]
    Conflict {
        node: String,
        url: String,
        action: String,
        reason: String,
    },
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(message) => format!(": {message}"),
        None => String::new(),
    }
}

impl IronicError {
    /// Returns whether the same call may succeed if tried again later.
    ///
    /// Connection failures, timeouts, truncated bodies, HTTP 5xx, 408, 429,
    /// 409 (a node locked by its conductor after the client's own retries)
    /// and a state deadline are retryable: a retry with the same
    /// `instance_uuid` resumes the deployment. Failure states, rejected
    /// actions and other 4xx are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            IronicError::Unreachable { .. }
            | IronicError::Timeout { .. }
            | IronicError::StateTimeout { .. } => true,
            IronicError::Api { status, .. } => *status >= 500 || matches!(*status, 408 | 409 | 429),
            IronicError::InvalidResponse { problem, .. } => {
                matches!(problem, ResponseProblem::Truncated(_))
            }
            IronicError::InvalidConfig { .. }
            | IronicError::ClientSetup { .. }
            | IronicError::Authentication { .. }
            | IronicError::NoCommonVersion { .. }
            | IronicError::ProvisionFailed { .. }
            | IronicError::OperationFailed { .. }
            | IronicError::Conflict { .. } => false,
        }
    }

    /// Returns Ironic's own message, when the error carries one.
    pub fn ironic_message(&self) -> Option<&str> {
        match self {
            IronicError::Api { message, .. } | IronicError::Authentication { message, .. } => {
                message.as_deref()
            }
            IronicError::ProvisionFailed { message, .. }
            | IronicError::OperationFailed { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl From<IronicError> for DriverError {
    /// Maps an Ironic error onto the driver interface's error, keeping the
    /// node, the URL, the retry class and Ironic's message.
    fn from(error: IronicError) -> Self {
        match error {
            IronicError::InvalidConfig { node, url, reason } => {
                DriverError::InvalidEndpoint { node, url, reason }
            }
            IronicError::ClientSetup { url, source } => {
                DriverError::ClientSetup { node: url, source }
            }
            IronicError::Unreachable { node, url, source } => {
                DriverError::Unreachable { node, url, source }
            }
            IronicError::Timeout {
                node,
                url,
                method,
                timeout,
            } => DriverError::Timeout {
                node,
                url,
                method,
                timeout,
            },
            IronicError::Authentication {
                node,
                url,
                username,
                status,
                message,
            } => DriverError::Authentication {
                node,
                url,
                username,
                status,
                message,
            },
            IronicError::Api {
                node,
                url,
                method,
                status,
                message,
            } => DriverError::Http {
                node,
                url,
                method,
                status,
                body: message.clone().unwrap_or_default(),
                message,
                retry_after: None,
            },
            IronicError::InvalidResponse {
                node,
                url,
                method,
                problem,
                body,
            } => DriverError::InvalidResponse {
                node,
                url,
                method,
                problem,
                body,
            },
            IronicError::StateTimeout {
                node,
                url,
                deadline,
                ..
            } => DriverError::Timeout {
                node,
                url,
                method: http::Method::GET,
                timeout: deadline,
            },
            IronicError::OperationFailed {
                node,
                url,
                operation,
                message,
            } => DriverError::Failed {
                node,
                url,
                operation,
                message,
            },
            error @ (IronicError::NoCommonVersion { .. }
            | IronicError::ProvisionFailed { .. }
            | IronicError::Conflict { .. }) => DriverError::Failed {
                node: error_node(&error),
                url: error_url(&error),
                operation: "ironic request".to_string(),
                message: error.to_string(),
            },
        }
    }
}

fn error_node(error: &IronicError) -> String {
    match error {
        IronicError::ProvisionFailed { node, .. } | IronicError::Conflict { node, .. } => {
            node.clone()
        }
        _ => "-".to_string(),
    }
}

fn error_url(error: &IronicError) -> String {
    match error {
        IronicError::NoCommonVersion { url, .. }
        | IronicError::ProvisionFailed { url, .. }
        | IronicError::Conflict { url, .. } => url.clone(),
        _ => String::new(),
    }
}
