//! Reverse DNS for service addresses.
//!
//! The network phase calls [`Dns::upsert_ptr`] once per service; the call is
//! idempotent (PowerDNS `REPLACE` creates or overwrites the record set), so a
//! retry after a crash converges on the same single record.
//
// TODO: add the Cloudflare and internal DNS drivers beside PowerDNS.

pub mod powerdns;

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::config::DnsConfig;

/// The configured DNS driver.
#[derive(Debug)]
pub enum Dns {
    None,
    PowerDns(powerdns::PowerDns),
}

/// A PTR record as written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PtrRecord {
    pub zone: String,
    pub name: String,
    pub content: String,
    pub ttl: u32,
}

/// A DNS change that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DnsError {
    pub message: String,
    pub retryable: bool,
    /// The upstream's response body, for the activity log.
    pub upstream: Option<Value>,
}

impl Dns {
    /// Builds the driver named in the configuration.
    pub fn from_config(config: &DnsConfig) -> anyhow::Result<Dns> {
        Ok(match config {
            DnsConfig::None => Dns::None,
            DnsConfig::PowerDns(config) => Dns::PowerDns(powerdns::PowerDns::new(config.clone())?),
        })
    }

    /// Creates or replaces the PTR record of `address` pointing at `fqdn`
    /// (without trailing dot) in `zone`. Returns `None` when no driver is
    /// configured.
    pub async fn upsert_ptr(
        &self,
        zone: &str,
        address: Ipv4Addr,
        fqdn: &str,
    ) -> Result<Option<PtrRecord>, DnsError> {
        match self {
            Dns::None => Ok(None),
            Dns::PowerDns(powerdns) => powerdns.upsert_ptr(zone, address, fqdn).await.map(Some),
        }
    }
}
