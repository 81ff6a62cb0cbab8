//! The accepted forms of an IPMI endpoint URL and their settings.
//!
//! Accepted: `ipmi://HOST`, `ipmi://HOST:PORT`, `HOST`, `HOST:PORT`, with
//! `[v6-address]` for IPv6 literals, and the optional query parameters
//! `privilege` (`user`, `operator`, `administrator`; default
//! `administrator`) and `cipher_suite` (`3` or `17`; default: try 17, then
//! fall back to 3 when the BMC rejects 17's algorithms). The port defaults to
//! 623, the RMCP port. Credentials in the URL, a path or a fragment are
//! rejected: the username and password come from the endpoint's own fields.

use super::crypto::CipherSuite;

/// The UDP port of RMCP and RMCP+.
pub const DEFAULT_PORT: u16 = 623;

/// An IPMI privilege level a session can request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    User,
    Operator,
    Administrator,
}

impl Privilege {
    /// Returns the privilege level number (2, 3, 4).
    pub fn code(self) -> u8 {
        match self {
            Privilege::User => 0x02,
            Privilege::Operator => 0x03,
            Privilege::Administrator => 0x04,
        }
    }
}

/// A checked IPMI endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiAddress {
    pub host: String,
    pub port: u16,
    pub privilege: Privilege,
    /// `None` tries suite 17, then 3.
    pub cipher_suite: Option<CipherSuite>,
}

impl IpmiAddress {
    /// Returns `host:port` as errors and logs show it (`[v6]:port` for IPv6).
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses one of the forms in the module documentation. The error is
    /// the reason, for [`crate::DriverError::InvalidEndpoint`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("ipmi://{text}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|error| format!("not a URL: {error}"))?;

        if url.scheme() != "ipmi" {
            return Err(format!(
                "scheme {:?} is not ipmi; use ipmi://host:port",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials belong in the username and password fields".to_string());
        }
        if !(url.path().is_empty() || url.path() == "/") || url.fragment().is_some() {
            return Err("an IPMI URL has no path or fragment".to_string());
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(address)) => address.to_string(),
            Some(host) => host.to_string(),
            None => return Err("no host".to_string()),
        };
        if host.is_empty() {
            return Err("no host".to_string());
        }

        let mut address = IpmiAddress {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            privilege: Privilege::Administrator,
            cipher_suite: None,
        };
        for (key, value) in url.query_pairs() {
            address.apply_query(&key, &value)?;
        }
        Ok(address)
    }

    fn apply_query(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "privilege" => {
                self.privilege = match value.to_ascii_lowercase().as_str() {
                    "user" => Privilege::User,
                    "operator" => Privilege::Operator,
                    "administrator" | "admin" => Privilege::Administrator,
                    _ => {
                        return Err(format!(
                            "privilege {value:?} is not user, operator or administrator"
                        ));
                    }
                }
            }
            "cipher_suite" => {
                let suite = value.parse::<u8>().ok().and_then(CipherSuite::from_id);
                match suite {
                    Some(suite) => self.cipher_suite = Some(suite),
                    None => return Err(format!("cipher_suite {value:?} is not 3 or 17")),
                }
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {key:?}; expected privilege or cipher_suite"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{CipherSuite, IpmiAddress, Privilege};

    #[test]
    fn bare_host_gets_default_port() {
        let address = IpmiAddress::parse("10.0.0.5").expect("valid");
        assert_eq!(address.host, "10.0.0.5");
        assert_eq!(address.port, 623);
        assert_eq!(address.privilege, Privilege::Administrator);
        assert_eq!(address.cipher_suite, None);
    }

    #[test]
    fn url_with_port_and_query_parses() {
        let address =
            IpmiAddress::parse("ipmi://bmc.example:6230?privilege=operator&cipher_suite=3")
                .expect("valid");
        assert_eq!(address.host, "bmc.example");
        assert_eq!(address.port, 6230);
        assert_eq!(address.privilege, Privilege::Operator);
        assert_eq!(address.cipher_suite, Some(CipherSuite::Suite3));
        assert_eq!(address.display(), "bmc.example:6230");
    }

    #[test]
    fn ipv6_literal_keeps_brackets_in_display() {
        let address = IpmiAddress::parse("[::1]:6230").expect("valid");
        assert_eq!(address.host, "::1");
        assert_eq!(address.display(), "[::1]:6230");
    }

    #[test]
    fn invalid_forms_are_rejected() {
        for text in [
            "https://bmc",
            "ipmi://admin:pw@bmc",
            "ipmi://bmc/path",
            "ipmi://bmc?cipher_suite=1",
            "ipmi://bmc?privilege=root",
            "ipmi://bmc?kg=1",
            "ipmi://bmc:99999",
            "",
        ] {
            assert!(IpmiAddress::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn credentials_error_omits_password() {
        let error = IpmiAddress::parse("ipmi://admin:hunter2@bmc").expect_err("rejected");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
