//! Allocation tests on the lease table itself.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;
use crate::dhcp::config::DhcpConfig;
use crate::dhcp::config::tests::sample_config;

const NOW: u64 = 1_700_000_000;
const HOUR: Duration = Duration::from_secs(3600);

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, last])
}

fn pool(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 98, 0, last)
}

#[test]
fn first_offer_takes_lowest_pool_address() {
    let mut table = LeaseTable::default();

    let ip = table.offer(mac(1), None, &sample_config().local_scope(), NOW);

    assert_eq!(ip, Some(pool(100)));
}

#[test]
fn offer_honours_free_requested_address() {
    let mut table = LeaseTable::default();

    let ip = table.offer(mac(1), Some(pool(150)), &sample_config().local_scope(), NOW);

    assert_eq!(ip, Some(pool(150)));
}

#[test]
fn offer_ignores_requested_address_outside_pool() {
    let mut table = LeaseTable::default();

    let ip = table.offer(mac(1), Some(pool(20)), &sample_config().local_scope(), NOW);

    assert_eq!(ip, Some(pool(100)));
}

#[test]
fn offer_is_held_for_offer_hold() {
    let mut table = LeaseTable::default();

    table.offer(mac(1), None, &sample_config().local_scope(), NOW);

    let lease = table.by_mac.get(&mac(1)).expect("offer recorded");
    assert_eq!(lease.state, LeaseState::Offered);
    assert_eq!(lease.expires_at, NOW + OFFER_HOLD.as_secs());
}

#[test]
fn offer_to_bound_client_keeps_lease_expiry() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    let ip = table
        .offer(mac(1), None, &config.local_scope(), NOW)
        .expect("free pool");
    table.request(mac(1), ip, &config.local_scope(), HOUR, NOW);

    table.offer(mac(1), None, &config.local_scope(), NOW + 10);

    let lease = table.by_mac.get(&mac(1)).expect("lease kept");
    assert_eq!(lease.state, LeaseState::Bound);
    assert_eq!(lease.expires_at, NOW + 3600);
}

#[test]
fn repeated_offer_changes_nothing() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    let first = table.offer(mac(1), None, &config.local_scope(), NOW);
    table.clear_changes();

    let second = table.offer(mac(1), None, &config.local_scope(), NOW + 5);

    assert_eq!(first, second);
    assert!(!table.changed());
}

#[test]
fn expired_offer_is_renewed_with_same_address() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    let first = table.offer(mac(1), None, &config.local_scope(), NOW);

    let later = NOW + OFFER_HOLD.as_secs() + 1;
    let second = table.offer(mac(1), None, &config.local_scope(), later);

    assert_eq!(first, second);
    let lease = table.by_mac.get(&mac(1)).expect("offer recorded");
    assert_eq!(lease.expires_at, later + OFFER_HOLD.as_secs());
}

#[test]
fn unclaimed_address_is_preferred_over_expired_lease() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    let first = table
        .offer(mac(1), None, &config.local_scope(), NOW)
        .expect("free pool");
    table.request(mac(1), first, &config.local_scope(), HOUR, NOW);

    let second = table.offer(mac(2), None, &config.local_scope(), NOW + 7200);

    assert_eq!(second, Some(pool(101)));
    assert_eq!(table.by_mac.get(&mac(1)).map(|lease| lease.ip), Some(first));
}

#[test]
fn withdraw_offer_keeps_bound_lease() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    let ip = table
        .offer(mac(1), None, &config.local_scope(), NOW)
        .expect("free pool");
    table.request(mac(1), ip, &config.local_scope(), HOUR, NOW);

    assert!(!table.withdraw_offer(mac(1)));
    assert!(table.by_mac.contains_key(&mac(1)));
}

#[test]
fn request_for_router_address_is_nak() {
    let config = sample_config();
    let mut table = LeaseTable::default();

    let outcome = table.request(mac(1), pool(254), &config.local_scope(), HOUR, NOW);

    assert!(matches!(outcome, RequestOutcome::Nak(_)), "{outcome:?}");
}

#[test]
fn reservation_survives_expiry_and_pool_pressure() {
    let config = DhcpConfig {
        pool_start: pool(100),
        pool_end: pool(100),
        ..sample_config()
    };
    let mut table = LeaseTable::default();
    table.reserve(mac(1), pool(100)).expect("free address");

    let other = table.offer(mac(2), None, &config.local_scope(), NOW + 1_000_000);

    assert_eq!(other, None);
    assert!(
        table
            .by_mac
            .get(&mac(1))
            .is_some_and(|lease| lease.reserved)
    );
}

#[test]
fn reserve_moves_mac_to_new_address() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    let old = table
        .offer(mac(1), None, &config.local_scope(), NOW)
        .expect("free pool");

    table.reserve(mac(1), pool(20)).expect("free address");

    assert_eq!(table.holder(old), None);
    assert_eq!(table.holder(pool(20)), Some(mac(1)));
}

#[test]
fn unusable_lease_is_replaced_on_offer() {
    let config = sample_config();
    let mut table = LeaseTable::default();
    table
        .reserve(mac(1), Ipv4Addr::new(192, 168, 5, 5))
        .expect("free address");

    let ip = table.offer(mac(1), None, &config.local_scope(), NOW);

    assert_eq!(ip, Some(pool(100)));
}

#[test]
fn changes_mark_table_changed() {
    let mut table = LeaseTable::default();
    assert!(!table.changed());

    table.offer(mac(1), None, &sample_config().local_scope(), NOW);

    assert!(table.changed());
}
