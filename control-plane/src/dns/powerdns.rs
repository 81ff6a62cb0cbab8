//! The PowerDNS Authoritative HTTP API driver (`/api/v1/servers/<id>/zones`).
//!
//! Facts this relies on (PowerDNS 4.7): names and PTR contents must be
//! canonical (trailing dot) or the API answers 422; `PATCH` with changetype
//! `REPLACE` creates or replaces an RRset and answers 204; 401, 404, 409 and
//! 400 come back as plain text, 422 as JSON `{"error": …}`, so error bodies
//! are read as text and parsed only when they are JSON.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::PowerDnsConfig;
use crate::dns::{DnsError, PtrRecord};
use crate::http_client;
use crate::ipam;

/// A PowerDNS API client.
#[derive(Debug)]
pub struct PowerDns {
    config: PowerDnsConfig,
    client: reqwest::Client,
}

impl PowerDns {
    pub fn new(config: PowerDnsConfig) -> anyhow::Result<PowerDns> {
        let client = http_client::build(Duration::from_secs(15))?;
        Ok(PowerDns { config, client })
    }

    fn zone_url(&self, zone: &str) -> String {
        format!(
            "{}/api/v1/servers/{}/zones/{zone}",
            self.config.api_url, self.config.server_id
        )
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(u16, String), DnsError> {
        let response = request
            .header("X-API-Key", self.config.api_key.expose())
            .send()
            .await
            .map_err(|error| DnsError {
                message: format!(
                    "PowerDNS {what} at {} failed: {}",
                    self.config.api_url,
                    reqwest_reason(&error)
                ),
                retryable: true,
                upstream: None,
            })?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Ok((status, body))
    }

    fn upstream_error(&self, what: &str, status: u16, body: &str) -> DnsError {
        let parsed = serde_json::from_str::<Value>(body).ok();
        let detail = parsed
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.chars().take(200).collect());
        let hint = match status {
            401 => " (check dns.api_key)",
            404 => " (check dns.server_id and the zone name)",
            _ => "",
        };
        DnsError {
            message: format!("PowerDNS {what} answered {status}: {detail}{hint}"),
            retryable: status >= 500 || status == 429,
            upstream: Some(parsed.unwrap_or_else(|| json!({ "status": status, "body": detail }))),
        }
    }

    /// Makes sure `zone` exists, creating it as a Native zone when allowed.
    async fn ensure_zone(&self, zone: &str) -> Result<(), DnsError> {
        let url = format!("{}?rrsets=false", self.zone_url(zone));
        let (status, body) = self.send(self.client.get(url), "zone lookup").await?;
        match status {
            200 => return Ok(()),
            404 => {}
            _ => return Err(self.upstream_error("zone lookup", status, &body)),
        }

        if !self.config.create_zones {
            return Err(DnsError {
                message: format!(
                    "reverse zone {zone} does not exist on PowerDNS; create it or set dns.create_zones = true"
                ),
                retryable: false,
                upstream: None,
            });
        }
        let url = format!(
            "{}/api/v1/servers/{}/zones",
            self.config.api_url, self.config.server_id
        );
        let body = json!({
            "name": zone,
            "kind": "Native",
            "nameservers": self.config.nameservers,
        });
        let (status, text) = self
            .send(self.client.post(url).json(&body), "zone creation")
            .await?;
        match status {
            // 409: another worker created it between our lookup and now.
            201 | 409 => {
                tracing::info!(zone, "created reverse zone");
                Ok(())
            }
            _ => Err(self.upstream_error("zone creation", status, &text)),
        }
    }

    /// Creates or replaces the PTR record of `address`.
    pub async fn upsert_ptr(
        &self,
        zone: &str,
        address: Ipv4Addr,
        fqdn: &str,
    ) -> Result<PtrRecord, DnsError> {
        self.ensure_zone(zone).await?;
        let record = PtrRecord {
            zone: zone.to_string(),
            name: ipam::ptr_name(address),
            content: format!("{}.", fqdn.trim_end_matches('.')),
            ttl: self.config.ttl,
        };
        let body = json!({
            "rrsets": [{
                "name": record.name,
                "type": "PTR",
                "ttl": record.ttl,
                "changetype": "REPLACE",
                "records": [{"content": record.content, "disabled": false}],
            }]
        });
        let (status, text) = self
            .send(
                self.client.patch(self.zone_url(zone)).json(&body),
                "PTR update",
            )
            .await?;
        if status != 204 && status != 200 {
            return Err(self.upstream_error("PTR update", status, &text));
        }
        Ok(record)
    }
}

/// Describes a transport error without its URL's query string (none of ours
/// carries secrets there, but the habit keeps it that way).
fn reqwest_reason(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}
