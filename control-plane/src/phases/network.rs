//! The `network` phase: give the service its IPv4 address from the node's
//! subnet and publish the address's PTR record.
//!
//! The address is the lowest free one in the subnet's range (excluding the
//! network, broadcast and gateway addresses). It is stored in the service
//! row, unique per subnet, before DNS is touched, so a retry reuses the same
//! address; the PTR write is idempotent. For a product with an install
//! template the image phase assigns the address earlier (see
//! [`ensure_address`]), and this phase finds and keeps it. This address is the service's
//! public one, unrelated to the provisioning-network address the site
//! agent's DHCP gives the node during the install.
//
// TODO: drive the switch port and firewall baseline as their own jobs, and
// update the DCIM record after each step.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::json;

use crate::app::App;
use crate::db;
use crate::ipam::{self, Ipv4Cidr};
use crate::phases::{OrderContext, PhaseError, PhaseOutcome};

/// How many times a lost race for an address is retried in one attempt.
const MAX_ADDRESS_RACES: usize = 16;

#[derive(sqlx::FromRow)]
struct Subnet {
    id: i64,
    cidr: String,
    gateway: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    ptr_zone: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Service {
    ipv4: String,
    fqdn: String,
    ptr_done: i64,
}

/// Runs the phase.
pub async fn run(app: &App, order: &OrderContext, _key: &str) -> Result<PhaseOutcome, PhaseError> {
    let (subnet, cidr, service) = assign(app, order).await?;
    let address: Ipv4Addr = service.ipv4.parse().map_err(|_| {
        PhaseError::permanent(format!("stored address {:?} is invalid", service.ipv4))
    })?;

    let zone = subnet
        .ptr_zone
        .clone()
        .unwrap_or_else(|| cidr.reverse_zone());
    if service.ptr_done == 1 {
        return Ok(done(&service, None, "PTR record already published"));
    }
    let record = app
        .dns
        .upsert_ptr(&zone, address, &service.fqdn)
        .await
        .map_err(|error| PhaseError {
            retry: if error.retryable {
                crate::phases::Retry::Transient
            } else {
                crate::phases::Retry::Permanent
            },
            message: error.message,
            upstream: error.upstream,
        })?;
    sqlx::query("UPDATE services SET ptr_done = 1 WHERE order_id = ?")
        .bind(order.id)
        .execute(&app.pool)
        .await?;

    let note = match &record {
        Some(record) => format!("PTR {} -> {}", record.name, record.content),
        None => "reverse DNS not managed (dns.driver = none)".to_string(),
    };
    Ok(done(&service, record.map(|r| json!(r)), &note))
}

/// Assigns the order's service address unless an earlier step did, so the
/// image phase can write into the install files the address this phase
/// later publishes.
pub async fn ensure_address(app: &App, order: &OrderContext) -> Result<(), PhaseError> {
    assign(app, order).await.map(|_| ())
}

/// Loads the node's subnet and returns it with the order's service row,
/// creating the row with the next free address when there is none.
async fn assign(
    app: &App,
    order: &OrderContext,
) -> Result<(Subnet, Ipv4Cidr, Service), PhaseError> {
    let node_id = order
        .node_id
        .ok_or_else(|| PhaseError::permanent("order has no reserved node"))?;
    let subnet: Subnet = sqlx::query_as(
        "SELECT s.id, s.cidr, s.gateway, s.range_start, s.range_end, s.ptr_zone
         FROM nodes n JOIN subnets s ON s.id = n.subnet_id WHERE n.id = ?",
    )
    .bind(node_id)
    .fetch_one(&app.pool)
    .await?;
    let cidr: Ipv4Cidr = subnet
        .cidr
        .parse()
        .map_err(|e: ipam::CidrError| PhaseError::permanent(e.to_string()))?;

    let fqdn = format!("{}.{}", order.hostname, app.config.network.domain);
    let service = assign_address(app, order, node_id, &subnet, cidr, &fqdn).await?;
    Ok((subnet, cidr, service))
}

fn done(service: &Service, ptr: Option<serde_json::Value>, note: &str) -> PhaseOutcome {
    PhaseOutcome::Done {
        summary: format!("address {} ({}); {note}", service.ipv4, service.fqdn),
        payload: Some(json!({ "ipv4": service.ipv4, "fqdn": service.fqdn, "ptr": ptr })),
    }
}

/// Returns the order's service row, creating it with the next free address.
async fn assign_address(
    app: &App,
    order: &OrderContext,
    node_id: i64,
    subnet: &Subnet,
    cidr: Ipv4Cidr,
    fqdn: &str,
) -> Result<Service, PhaseError> {
    let (mut first, mut last) = cidr.host_range();
    if let Some(start) = subnet.range_start.as_deref().and_then(|s| s.parse().ok()) {
        first = start;
    }
    if let Some(end) = subnet.range_end.as_deref().and_then(|s| s.parse().ok()) {
        last = end;
    }
    let excluded: Vec<Ipv4Addr> = subnet
        .gateway
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();

    for _ in 0..MAX_ADDRESS_RACES {
        if let Some(service) = find_service(app, order.id).await? {
            return Ok(service);
        }

        let used: Vec<String> = sqlx::query_scalar("SELECT ipv4 FROM services WHERE subnet_id = ?")
            .bind(subnet.id)
            .fetch_all(&app.pool)
            .await?;
        let used: HashSet<Ipv4Addr> = used.iter().filter_map(|a| a.parse().ok()).collect();
        let Some(address) = ipam::next_free(first, last, &used, &excluded) else {
            return Err(PhaseError::permanent(format!(
                "subnet {} has no free address between {first} and {last}",
                subnet.cidr
            )));
        };

        // Unique on (subnet_id, ipv4) and on order_id: losing either race
        // inserts nothing, and the loop reads again.
        sqlx::query(
            "INSERT INTO services (order_id, node_id, subnet_id, ipv4, fqdn, state, created_at)
             VALUES (?, ?, ?, ?, ?, 'provisioning', ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(order.id)
        .bind(node_id)
        .bind(subnet.id)
        .bind(address.to_string())
        .bind(fqdn)
        .bind(db::now_ms())
        .execute(&app.pool)
        .await?;
    }
    Err(PhaseError::transient(
        "lost the race for a free address too many times",
    ))
}

async fn find_service(app: &App, order_id: i64) -> Result<Option<Service>, sqlx::Error> {
    sqlx::query_as("SELECT ipv4, fqdn, ptr_done FROM services WHERE order_id = ?")
        .bind(order_id)
        .fetch_optional(&app.pool)
        .await
}
