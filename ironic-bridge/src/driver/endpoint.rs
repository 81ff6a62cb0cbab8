//! How to reach one node's BMC: driver kind, address, credentials, limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rackhand_protocol::agent::BmcAccess;
use rackhand_protocol::{MacAddr, Secret};

/// Default time limit for one BMC request, connection and body included.
///
/// A choice, not a measurement: long enough for a BMC that is slow to respond
/// while it carries out a reset, short enough that a dead BMC fails the step
/// quickly and the retry policy takes over.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The protocol family used to drive a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// DMTF Redfish over HTTP(S).
    Redfish,
    /// Dell iDRAC: Redfish with Dell OEM extensions.
    Idrac,
    /// HPE iLO: Redfish with HPE OEM extensions.
    Ilo,
    /// IPMI 2.0 over RMCP+ (`lanplus`).
    Ipmi,
    /// Through an OpenStack Ironic conductor.
    Ironic,
}

impl DriverKind {
    /// Returns the configuration name (`redfish`, `idrac`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            DriverKind::Redfish => "redfish",
            DriverKind::Idrac => "idrac",
            DriverKind::Ilo => "ilo",
            DriverKind::Ipmi => "ipmi",
            DriverKind::Ironic => "ironic",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A driver name that no driver kind matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown BMC driver {value:?}; expected one of redfish, idrac, ilo, ipmi, ironic")]
pub struct ParseDriverKindError {
    /// The rejected name.
    pub value: String,
}

impl FromStr for DriverKind {
    type Err = ParseDriverKindError;

    /// Parses a driver name, ignoring ASCII case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let kind = match s.trim().to_ascii_lowercase().as_str() {
            "redfish" => DriverKind::Redfish,
            "idrac" => DriverKind::Idrac,
            "ilo" => DriverKind::Ilo,
            "ipmi" => DriverKind::Ipmi,
            "ironic" => DriverKind::Ironic,
            _ => {
                return Err(ParseDriverKindError {
                    value: s.to_string(),
                });
            }
        };
        Ok(kind)
    }
}

/// Everything a driver needs to reach one node's BMC.
///
/// `Debug` prints the password as `[redacted]`.
#[derive(Debug, Clone)]
pub struct BmcEndpoint {
    pub kind: DriverKind,
    /// For Redfish: a service root (`https://bmc`, `https://bmc/redfish/v1`),
    /// from which the ComputerSystem is discovered, or a ComputerSystem URL
    /// (`https://bmc/redfish/v1/Systems/<id>`). It must not contain
    /// credentials.
    pub url: String,
    pub username: String,
    pub password: Secret,
    /// The node's name or id, used in errors and log fields.
    pub node: String,
    /// Time limit for each request to the BMC.
    pub timeout: Duration,
    /// PEM certificates trusted for the BMC's TLS certificate in addition to
    /// the public web roots; BMCs usually carry a certificate from a private
    /// or self-signed CA.
    pub ca_pem: Option<String>,
    /// The SHA-256 fingerprint of the BMC's TLS certificate, as 64 hex
    /// digits with or without colons. When set, only the certificate with
    /// this fingerprint is accepted, whatever CA signed it.
    pub fingerprint: Option<String>,
    /// The node's boot NIC. When `url` is a service root that lists several
    /// ComputerSystems, the one with an EthernetInterface of this MAC is
    /// driven.
    pub boot_mac: Option<MacAddr>,
}

impl BmcEndpoint {
    /// Creates an endpoint with [`DEFAULT_TIMEOUT`], no extra CA, no
    /// certificate fingerprint and no boot MAC.
    pub fn new(
        kind: DriverKind,
        url: impl Into<String>,
        username: impl Into<String>,
        password: Secret,
        node: impl Into<String>,
    ) -> Self {
        BmcEndpoint {
            kind,
            url: url.into(),
            username: username.into(),
            password,
            node: node.into(),
            timeout: DEFAULT_TIMEOUT,
            ca_pem: None,
            fingerprint: None,
            boot_mac: None,
        }
    }

    /// Creates an endpoint from the BMC access data that the control plane
    /// sends in a phase step.
    pub fn from_access(
        access: &BmcAccess,
        node: impl Into<String>,
    ) -> Result<Self, ParseDriverKindError> {
        let kind = access.driver.parse()?;
        let mut endpoint = BmcEndpoint::new(
            kind,
            access.url.clone(),
            access.username.clone(),
            access.password.clone(),
            node,
        );
        endpoint.ca_pem.clone_from(&access.ca_pem);
        endpoint.fingerprint.clone_from(&access.fingerprint);
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use rackhand_protocol::Secret;

    use super::{BmcEndpoint, DriverKind};

    #[test]
    fn kind_parses_every_name() {
        for kind in [
            DriverKind::Redfish,
            DriverKind::Idrac,
            DriverKind::Ilo,
            DriverKind::Ipmi,
            DriverKind::Ironic,
        ] {
            assert_eq!(kind.as_str().parse::<DriverKind>(), Ok(kind));
        }
    }

    #[test]
    fn kind_ignores_case_and_spaces() {
        assert_eq!(" Redfish ".parse::<DriverKind>(), Ok(DriverKind::Redfish));
    }

    #[test]
    fn unknown_kind_error_names_value() {
        let error = "amt".parse::<DriverKind>().expect_err("unknown driver");
        assert_eq!(error.value, "amt");
        assert!(error.to_string().contains("\"amt\""), "{error}");
    }

    #[test]
    fn endpoint_debug_hides_password() {
        let endpoint = BmcEndpoint::new(
            DriverKind::Redfish,
            "https://bmc.example",
            "admin",
            Secret::new("hunter2-secret".to_string()),
            "node-1",
        );
        let debug = format!("{endpoint:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }
}
