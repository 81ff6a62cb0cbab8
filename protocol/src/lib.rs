//! Messages that the control plane and its site agents exchange, and the few
//! value types both sides share.
//!
//! The agent dials the control plane over mutually authenticated TLS and
//! speaks JSON over HTTP. Every request carries [`PROTOCOL_HEADER`] with
//! [`PROTOCOL_VERSION`]; the control plane rejects versions it does not
//! speak with 400 and a message naming both versions, so a mismatched agent
//! fails loudly at start instead of misreading a task.
//!
//! Wire contract: fields are only ever added, never renamed or retyped,
//! within one protocol version; a new required field needs a new version.

pub mod agent;
pub mod hardware;
pub mod images;
mod mac;
mod secret;

pub use mac::{MacAddr, MacAddrError};
pub use secret::Secret;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The HTTP header that carries [`PROTOCOL_VERSION`] on every agent request.
pub const PROTOCOL_HEADER: &str = "rackhand-protocol";

/// The phases every order runs through, in order.
///
/// The names are the ones operators see in `activity_log` rows and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Billing,
    Allocate,
    Driver,
    Image,
    Network,
    Handoff,
}

impl Phase {
    /// Every phase in pipeline order.
    pub const ALL: [Phase; 6] = [
        Phase::Billing,
        Phase::Allocate,
        Phase::Driver,
        Phase::Image,
        Phase::Network,
        Phase::Handoff,
    ];

    /// Returns the phase's lowercase name, as stored and displayed.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Billing => "billing",
            Phase::Allocate => "allocate",
            Phase::Driver => "driver",
            Phase::Image => "image",
            Phase::Network => "network",
            Phase::Handoff => "handoff",
        }
    }

    /// Returns the phase that follows this one, or `None` after `handoff`.
    pub fn next(self) -> Option<Phase> {
        let index = Phase::ALL.iter().position(|p| *p == self)?;
        Phase::ALL.get(index + 1).copied()
    }

    /// Whether the phase runs on the site agent rather than the control plane.
    pub fn runs_on_agent(self) -> bool {
        matches!(self, Phase::Driver | Phase::Image)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = UnknownPhase;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPhase(s.to_string()))
    }
}

/// A phase name that is not one of [`Phase::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown phase {0:?}; expected one of billing, allocate, driver, image, network, handoff")]
pub struct UnknownPhase(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_pipeline_order() {
        assert_eq!(Phase::Billing.next(), Some(Phase::Allocate));
        assert_eq!(Phase::Network.next(), Some(Phase::Handoff));
        assert_eq!(Phase::Handoff.next(), None);
    }

    #[test]
    fn phase_names_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>().ok(), Some(phase));
        }
    }

    #[test]
    fn unknown_phase_names_the_value() {
        let error = "install".parse::<Phase>().err().map(|e| e.to_string());
        assert!(error.is_some_and(|m| m.contains("\"install\"")));
    }
}
