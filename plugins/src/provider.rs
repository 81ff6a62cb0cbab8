//! The interface between the pipeline and a panel provider.

use std::collections::BTreeMap;
use std::future::Future;

use rackhand_protocol::Secret;
use serde::{Deserialize, Serialize};

/// The service the `driver` phase requests from a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// Stable across retries; the provider stores it as the panel's external
    /// id and looks it up before creating anything.
    pub correlation_key: String,
    pub order_id: i64,
    pub hostname: String,
    pub customer_email: String,
    /// Product settings the plugin file declares (plan, package, node group…).
    pub parameters: BTreeMap<String, String>,
}

/// A service a provider created (or found from an earlier attempt).
#[derive(Debug, Clone)]
pub struct ProvisionedService {
    /// The panel's own id of the service.
    pub external_id: String,
    /// Whether this call created it (false: an earlier attempt had).
    pub created: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The panel's last response, secrets removed, for the activity log.
    pub upstream: serde_json::Value,
}

/// A provider failure, classified the way the job queue retries.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Timeouts, connection errors, 5xx, 429: a later attempt may succeed.
    #[error("provider {provider} call {call} failed: {message}")]
    Transient {
        provider: String,
        call: String,
        message: String,
    },
    /// Validation errors and most 4xx responses: retrying cannot help.
    #[error("provider {provider} call {call} was refused: {message}")]
    Permanent {
        provider: String,
        call: String,
        message: String,
    },
}

impl ProviderError {
    /// Returns whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Transient { .. })
    }
}

/// A panel provider as the pipeline uses it.
pub trait Provider: Send + Sync {
    /// Returns the provider's name as products reference it (`pterodactyl`, …).
    fn name(&self) -> &str;

    /// Creates the service for an order, or returns the one an earlier
    /// attempt with the same correlation key created.
    fn provision(
        &self,
        request: &ProvisionRequest,
    ) -> impl Future<Output = Result<ProvisionedService, ProviderError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_retryable() {
        let error = ProviderError::Transient {
            provider: "pterodactyl".into(),
            call: "create_server".into(),
            message: "timed out".into(),
        };
        assert!(error.is_retryable());
        assert!(error.to_string().contains("create_server"));
    }

    #[test]
    fn permanent_errors_are_not_retryable() {
        let error = ProviderError::Permanent {
            provider: "whm".into(),
            call: "createacct".into(),
            message: "username taken".into(),
        };
        assert!(!error.is_retryable());
    }
}
