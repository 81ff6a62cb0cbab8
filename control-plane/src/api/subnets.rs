//! Subnets that service addresses come from.
//!
//! A subnet is refused when it overlaps any other subnet, because two
//! overlapping subnets would hand the same address (or one subnet's gateway)
//! to two services. Its range must lie inside the usable host addresses, and
//! its reverse zone, when given, must contain the subnet's PTR names.

use std::net::Ipv4Addr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body, unique_violation};
use crate::api::inventory::{Created, check_name, site_id};
use crate::app::SharedApp;
use crate::db;
use crate::ipam::{self, Ipv4Cidr};
use crate::names;

/// Widest service subnet accepted; wider ones are almost always a typo.
const MIN_PREFIX_LEN: u8 = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubnet {
    name: String,
    site: String,
    cidr: String,
    gateway: Option<Ipv4Addr>,
    range_start: Option<Ipv4Addr>,
    range_end: Option<Ipv4Addr>,
    ptr_zone: Option<String>,
}

fn parse_cidr(text: &str) -> Result<Ipv4Cidr, ApiError> {
    if text.contains(':') {
        return Err(ApiError::invalid(
            "cidr",
            format!("{text:?} is an IPv6 network; only IPv4 service subnets are supported"),
        ));
    }
    let cidr: Ipv4Cidr = text
        .parse()
        .map_err(|e: ipam::CidrError| ApiError::invalid("cidr", e.to_string()))?;
    let first_octet = cidr.network.octets()[0];
    let special = match first_octet {
        0 => Some("0.0.0.0/8 is \"this network\" (RFC 791)"),
        127 => Some("127.0.0.0/8 is loopback"),
        224..=239 => Some("224.0.0.0/4 is multicast"),
        240..=255 => Some("240.0.0.0/4 is reserved"),
        _ => None,
    };
    if let Some(reason) = special {
        return Err(ApiError::invalid(
            "cidr",
            format!("{cidr} cannot hold service addresses: {reason}"),
        ));
    }
    if cidr.prefix_len < MIN_PREFIX_LEN {
        return Err(ApiError::invalid(
            "cidr",
            format!(
                "{cidr} is wider than /{MIN_PREFIX_LEN}; give the subnet the addresses come from"
            ),
        ));
    }
    Ok(cidr)
}

/// Checks gateway and range against the network's usable host addresses.
fn check_addresses(cidr: Ipv4Cidr, subnet: &NewSubnet) -> Result<(), ApiError> {
    let (first, last) = cidr.host_range();
    if let Some(gateway) = subnet.gateway
        && !cidr.contains(gateway)
    {
        return Err(ApiError::invalid(
            "gateway",
            format!("{gateway} is outside {cidr}"),
        ));
    }
    for (field, address) in [
        ("range_start", subnet.range_start),
        ("range_end", subnet.range_end),
    ] {
        if let Some(address) = address
            && (address < first || address > last)
        {
            return Err(ApiError::invalid(
                field,
                format!("{address} is not a usable host address of {cidr} ({first} to {last})"),
            ));
        }
    }
    let start = subnet.range_start.unwrap_or(first);
    let end = subnet.range_end.unwrap_or(last);
    if start > end {
        return Err(ApiError::invalid(
            "range_end",
            format!("{end} is before range_start {start}"),
        ));
    }
    if subnet.gateway.is_some_and(|g| g == start && g == end) {
        return Err(ApiError::invalid(
            "range_start",
            format!(
                "the range {start} to {end} holds only the gateway; no address is left for services"
            ),
        ));
    }
    Ok(())
}

/// Checks that `zone` contains the PTR names of every address of `cidr`.
fn check_ptr_zone(cidr: Ipv4Cidr, zone: &str) -> Result<String, ApiError> {
    let bare = zone.trim_end_matches('.').to_ascii_lowercase();
    names::check_fqdn(&bare).map_err(|m| ApiError::invalid("ptr_zone", m))?;
    let zone = format!("{bare}.");
    let (first, last) = cidr.host_range();
    let inside = |address| ipam::ptr_name(address).ends_with(&format!(".{zone}"));
    if !inside(first) || !inside(last) {
        return Err(ApiError::invalid(
            "ptr_zone",
            format!(
                "{zone} does not contain the PTR names of {cidr} (such as {}); use {} or a zone above it",
                ipam::ptr_name(first),
                cidr.reverse_zone()
            ),
        ));
    }
    Ok(zone)
}

/// Returns the name and network of an existing subnet that overlaps `cidr`.
async fn overlapping(
    app: &SharedApp,
    cidr: Ipv4Cidr,
) -> Result<Option<(String, String)>, ApiError> {
    let subnets: Vec<(String, String)> = sqlx::query_as("SELECT name, cidr FROM subnets")
        .fetch_all(&app.pool)
        .await?;
    Ok(subnets.into_iter().find(|(_, other)| {
        other
            .parse::<Ipv4Cidr>()
            .is_ok_and(|other| other.contains(cidr.network) || cidr.contains(other.network))
    }))
}

pub async fn create_subnet(
    State(app): State<SharedApp>,
    _operator: Operator,
    Body(subnet): Body<NewSubnet>,
) -> Result<Created, ApiError> {
    check_name("name", &subnet.name)?;
    let cidr = parse_cidr(&subnet.cidr)?;
    check_addresses(cidr, &subnet)?;
    let ptr_zone = subnet
        .ptr_zone
        .as_deref()
        .map(|z| check_ptr_zone(cidr, z))
        .transpose()?;
    let site_id = site_id(&app, &subnet.site).await?;
    if let Some((name, other)) = overlapping(&app, cidr).await? {
        return Err(ApiError::Conflict(format!(
            "{cidr} overlaps subnet {name:?} ({other}); two subnets would hand out the same addresses"
        )));
    }

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO subnets (site_id, name, cidr, gateway, range_start, range_end, ptr_zone, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(site_id)
    .bind(&subnet.name)
    .bind(cidr.to_string())
    .bind(subnet.gateway.map(|a| a.to_string()))
    .bind(subnet.range_start.map(|a| a.to_string()))
    .bind(subnet.range_end.map(|a| a.to_string()))
    .bind(&ptr_zone)
    .bind(db::now_ms())
    .fetch_one(&app.pool)
    .await
    .map_err(|e| unique_violation(e, || format!("subnet {:?} already exists", subnet.name)))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "name": subnet.name,
            "cidr": cidr.to_string(),
            "ptr_zone": ptr_zone.unwrap_or_else(|| cidr.reverse_zone()),
        })),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct SubnetRow {
    id: i64,
    name: String,
    site: String,
    cidr: String,
    gateway: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    ptr_zone: Option<String>,
}

pub async fn list_subnets(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<SubnetRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT n.id, n.name, s.name AS site, n.cidr, n.gateway, n.range_start, n.range_end, n.ptr_zone
         FROM subnets n JOIN sites s ON s.id = n.site_id ORDER BY n.id",
    )
    .fetch_all(&app.pool)
    .await?;
    let rows = rows
        .into_iter()
        .map(|mut row: SubnetRow| {
            if row.ptr_zone.is_none() {
                row.ptr_zone = row.cidr.parse::<Ipv4Cidr>().ok().map(|c| c.reverse_zone());
            }
            row
        })
        .collect();
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().expect("valid CIDR")
    }

    #[test]
    fn ptr_zone_must_contain_subnet() {
        assert!(check_ptr_zone(cidr("192.0.2.0/24"), "2.0.192.in-addr.arpa").is_ok());
        assert!(check_ptr_zone(cidr("192.0.2.0/24"), "192.in-addr.arpa.").is_ok());
        assert!(check_ptr_zone(cidr("192.0.2.0/24"), "example.com").is_err());
        assert!(check_ptr_zone(cidr("192.0.2.0/24"), "3.0.192.in-addr.arpa").is_err());
    }

    #[test]
    fn wide_and_ipv6_networks_are_rejected() {
        assert!(parse_cidr("0.0.0.0/0").is_err());
        assert!(parse_cidr("2001:db8::/64").is_err());
        assert!(parse_cidr("203.0.113.7/32").is_ok());
        assert!(parse_cidr("224.0.0.0/24").is_err());
        assert!(parse_cidr("127.0.0.0/8").is_err());
    }
}
