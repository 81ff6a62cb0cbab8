//! Leases: the address each MAC has and until when, and how addresses are
//! picked from the pool.
//!
//! Invariants, kept by [`LeaseTable::insert`] and checked when the lease file
//! is loaded: a MAC has at most one lease, and an address belongs to at most
//! one MAC. An expired lease stays in the table so that its MAC gets the same
//! address back. Another MAC gets that address only when every pool address
//! has been leased before.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::Scope;
use super::error::DhcpError;
use super::lease_file;
use crate::MacAddr;

/// How long an offered address stays set aside for the client while it
/// collects offers. EDK2 firmware waits about 4 s before its REQUEST, so one
/// minute leaves a wide margin.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);

/// Default of [`DhcpConfig::decline_quarantine`](super::DhcpConfig): how long
/// a declined address is kept out of use. A DHCPDECLINE means another host
/// already uses the address, and that host rarely leaves within minutes.
pub const DECLINE_QUARANTINE: Duration = Duration::from_secs(3600);

/// State of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Sent in a DHCPOFFER and not yet requested.
    Offered,
    /// Confirmed with a DHCPACK.
    Bound,
    /// Given back by the client with DHCPRELEASE.
    Released,
}

/// One MAC's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub state: LeaseState,
    /// Unix time in seconds at which the lease, or the offer's hold, ends.
    pub expires_at: u64,
    /// Set by [`LeaseStore::reserve`]: no other MAC ever gets this address,
    /// even after the lease expires.
    #[serde(default)]
    pub reserved: bool,
}

impl Lease {
    fn is_reclaimable(&self, now: u64) -> bool {
        !self.reserved && self.expires_at <= now
    }
}

/// The server's leases, kept in memory and persisted as JSON.
///
/// Cheap to clone. All clones share one table, so the site agent can read a
/// machine's address while the server runs. The server writes the file after
/// every change, before it sends the reply that depends on it.
#[derive(Clone, Debug)]
pub struct LeaseStore {
    table: Arc<Mutex<LeaseTable>>,
    path: Option<Arc<PathBuf>>,
    /// Held from snapshot to rename, so two writers (the server loop and
    /// [`LeaseStore::reserve`]) never interleave and a newer snapshot never
    /// lands before an older one.
    write: Arc<Mutex<()>>,
}

impl LeaseStore {
    /// Loads the lease file at `path`, or starts empty when it does not exist
    /// yet. The file is written at the first change.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DhcpError> {
        let path = path.into();
        let table = lease_file::load(&path)?;
        Ok(Self {
            table: Arc::new(Mutex::new(table)),
            path: Some(Arc::new(path)),
            write: Arc::default(),
        })
    }

    /// Creates a store that keeps leases only in memory, for tests and for
    /// networks where forgetting leases at restart is acceptable.
    pub fn in_memory() -> Self {
        Self {
            table: Arc::default(),
            path: None,
            write: Arc::default(),
        }
    }

    /// Returns the lease file's path, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    /// Returns the lease of `mac`, also when it has expired.
    pub fn lease(&self, mac: &MacAddr) -> Option<Lease> {
        self.lock().by_mac.get(mac).cloned()
    }

    /// Returns all leases, sorted by address.
    pub fn leases(&self) -> Vec<Lease> {
        let mut leases: Vec<Lease> = self.lock().by_mac.values().cloned().collect();
        leases.sort_by_key(|lease| lease.ip);
        leases
    }

    /// Reserves `ip` for `mac` permanently and writes the lease file.
    ///
    /// The address may lie outside the pool. It must be a host address of the
    /// server's subnet other than the server's and the router's, because the
    /// server otherwise drops the reservation with a warning at the MAC's next
    /// DHCPDISCOVER and offers a pool address. Fails when another MAC has a
    /// lease on `ip`.
    pub fn reserve(&self, mac: MacAddr, ip: Ipv4Addr) -> Result<(), DhcpError> {
        self.lock().reserve(mac, ip)?;
        self.save()
    }

    /// Writes the lease file now if anything changed since the last write.
    /// Blocks on file I/O, including `fsync`. A failed write leaves the
    /// table marked as changed, so the next call tries again.
    pub fn save(&self) -> Result<(), DhcpError> {
        let _writing = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        match self.take_snapshot() {
            Some((path, bytes)) => lease_file::write_atomic(&path, &bytes).inspect_err(|_| {
                self.lock().changed = true;
            }),
            None => Ok(()),
        }
    }

    /// Serializes the table if it changed since the last snapshot and the
    /// store has a file, and clears the change mark.
    fn take_snapshot(&self) -> Option<(PathBuf, Vec<u8>)> {
        let mut table = self.lock();
        if !table.changed {
            return None;
        }
        table.changed = false;
        let path = self.path.as_deref()?.clone();
        Some((path, lease_file::serialize(&table)))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        // Every table method restores the invariants before it can panic, so
        // a poisoned lock still guards a consistent table.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Outcome of a DHCPREQUEST for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    /// The address is the client's; send DHCPACK.
    Ack,
    /// The client may not use the address; send DHCPNAK with this message.
    Nak(&'static str),
}

/// In-memory leases plus the addresses quarantined after a DHCPDECLINE.
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    pub(super) by_mac: HashMap<MacAddr, Lease>,
    pub(super) by_ip: HashMap<Ipv4Addr, MacAddr>,
    /// Declined addresses and the Unix time at which they become usable.
    pub(super) quarantined: HashMap<Ipv4Addr, u64>,
    /// Whether the table differs from the lease file.
    changed: bool,
}

impl LeaseTable {
    /// Stores `lease`, replacing the MAC's previous lease.
    ///
    /// # Panics
    ///
    /// Panics when another MAC has a lease on the address. Callers check with
    /// [`LeaseTable::holder`] first, so a double assignment is a bug.
    pub(super) fn insert(&mut self, lease: Lease) {
        let holder = self.by_ip.get(&lease.ip).copied();
        assert!(
            holder.is_none_or(|holder| holder == lease.mac),
            "address {} given to {} while {holder:?} holds it",
            lease.ip,
            lease.mac
        );

        self.remove(&lease.mac);
        self.by_ip.insert(lease.ip, lease.mac);
        self.by_mac.insert(lease.mac, lease);
        self.changed = true;
    }

    pub(super) fn remove(&mut self, mac: &MacAddr) -> Option<Lease> {
        let lease = self.by_mac.remove(mac)?;
        self.by_ip.remove(&lease.ip);
        self.changed = true;
        Some(lease)
    }

    fn holder(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.by_ip.get(&ip).copied()
    }

    fn is_quarantined(&self, ip: Ipv4Addr, now: u64) -> bool {
        self.quarantined.get(&ip).is_some_and(|until| *until > now)
    }

    /// Returns an address for `mac` and sets it aside as offered.
    ///
    /// Preference: the MAC's existing lease, then the client's requested
    /// address (option 50) when free, then the lowest pool address never
    /// leased, then the pool address whose lease expired longest ago. `None`
    /// means the pool is exhausted.
    pub(crate) fn offer(
        &mut self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        scope: &Scope,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let expired = self.quarantined.len();
        self.quarantined.retain(|_, until| *until > now);
        if self.quarantined.len() != expired {
            self.changed = true;
        }
        let hold_until = now.saturating_add(OFFER_HOLD.as_secs());

        if let Some(lease) = self.by_mac.get(&mac).cloned() {
            if scope.is_assignable(lease.ip) && !self.is_quarantined(lease.ip, now) {
                // A live lease or offer stays as it is, so a client that
                // repeats its DHCPDISCOVER causes no lease file write.
                let live = matches!(lease.state, LeaseState::Bound | LeaseState::Offered)
                    && lease.expires_at > now;
                if !live {
                    self.insert(Lease {
                        state: LeaseState::Offered,
                        expires_at: hold_until,
                        ..lease
                    });
                }
                return Some(lease.ip);
            }
            tracing::warn!(%mac, ip = %lease.ip, "dropping lease outside the usable range");
            self.remove(&mac);
        }

        let ip = self.free_address(requested, scope, now)?;
        self.insert(Lease {
            mac,
            ip,
            state: LeaseState::Offered,
            expires_at: hold_until,
            reserved: false,
        });
        Some(ip)
    }

    fn free_address(
        &mut self,
        requested: Option<Ipv4Addr>,
        scope: &Scope,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let usable =
            |table: &Self, ip: Ipv4Addr| scope.is_assignable(ip) && !table.is_quarantined(ip, now);

        if let Some(ip) = requested
            && scope.pool_contains(ip)
            && self.holder(ip).is_none()
            && usable(self, ip)
        {
            return Some(ip);
        }

        // Bounded by MAX_POOL_SIZE, which the config check enforces.
        if let Some(ip) = scope
            .pool()
            .find(|ip| self.holder(*ip).is_none() && usable(self, *ip))
        {
            return Some(ip);
        }

        let oldest = self
            .by_mac
            .values()
            .filter(|lease| scope.pool_contains(lease.ip) && lease.is_reclaimable(now))
            .filter(|lease| usable(self, lease.ip))
            .min_by_key(|lease| (lease.expires_at, lease.ip))
            .cloned()?;
        tracing::info!(
            mac = %oldest.mac,
            ip = %oldest.ip,
            "reclaiming expired lease because the pool has no unused address"
        );
        self.remove(&oldest.mac);
        Some(oldest.ip)
    }

    /// Confirms `ip` for `mac` for `lease_time` from `now` (DHCPREQUEST).
    ///
    /// A MAC without a lease gets `ip` only when it lies in the pool and is
    /// free, which covers clients that kept their address across a loss of
    /// the lease file.
    pub(crate) fn request(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        scope: &Scope,
        lease_time: Duration,
        now: u64,
    ) -> RequestOutcome {
        if !scope.is_assignable(ip) {
            return RequestOutcome::Nak("requested address is not on this network");
        }
        if self.is_quarantined(ip, now) {
            return RequestOutcome::Nak("requested address was declined and is quarantined");
        }

        let reserved = match self.by_mac.get(&mac) {
            Some(lease) if lease.ip == ip => lease.reserved,
            Some(_) => return RequestOutcome::Nak("requested address differs from the lease"),
            None if !scope.pool_contains(ip) => {
                return RequestOutcome::Nak("requested address is outside the pool");
            }
            None if self.holder(ip).is_some() => {
                return RequestOutcome::Nak("requested address is leased to another client");
            }
            None => false,
        };

        self.insert(Lease {
            mac,
            ip,
            state: LeaseState::Bound,
            expires_at: now.saturating_add(lease_time.as_secs()),
            reserved,
        });
        RequestOutcome::Ack
    }

    /// Ends the lease of `mac` on `ip` now (DHCPRELEASE). The MAC keeps its
    /// claim on the address until another MAC needs it.
    pub(crate) fn release(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        let Some(lease) = self
            .by_mac
            .get(&mac)
            .filter(|lease| lease.ip == ip)
            .cloned()
        else {
            return false;
        };
        self.insert(Lease {
            state: LeaseState::Released,
            expires_at: now,
            ..lease
        });
        true
    }

    /// Drops the lease of `mac` on `ip`, reservation included, and keeps the
    /// address out of use for `quarantine` (DHCPDECLINE).
    pub(crate) fn decline(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        now: u64,
        quarantine: Duration,
    ) -> bool {
        if self.by_mac.get(&mac).is_none_or(|lease| lease.ip != ip) {
            return false;
        }
        self.remove(&mac);
        self.quarantine(ip, now, quarantine);
        true
    }

    /// Keeps `ip` out of use for `quarantine` from `now`, and drops an offer
    /// of it that no client has requested yet. A bound lease stays, because
    /// its client may be the host that uses the address.
    pub(crate) fn quarantine(&mut self, ip: Ipv4Addr, now: u64, quarantine: Duration) {
        let until = now.saturating_add(quarantine.as_secs());
        self.quarantined.insert(ip, until);
        self.changed = true;
        if let Some(holder) = self.holder(ip)
            && self
                .by_mac
                .get(&holder)
                .is_some_and(|lease| lease.state == LeaseState::Offered && !lease.reserved)
        {
            self.remove(&holder);
        }
    }

    /// Forgets an offer that the client turned down by requesting another
    /// server's address. Bound and reserved leases stay.
    pub(crate) fn withdraw_offer(&mut self, mac: MacAddr) -> bool {
        let withdraw = self
            .by_mac
            .get(&mac)
            .is_some_and(|lease| lease.state == LeaseState::Offered && !lease.reserved);
        if withdraw {
            self.remove(&mac);
        }
        withdraw
    }

    fn reserve(&mut self, mac: MacAddr, ip: Ipv4Addr) -> Result<(), DhcpError> {
        if let Some(holder) = self.holder(ip).filter(|holder| *holder != mac) {
            return Err(DhcpError::ReservationConflict { mac, ip, holder });
        }
        let (state, expires_at) = match self.by_mac.get(&mac) {
            Some(lease) if lease.ip == ip => (lease.state, lease.expires_at),
            _ => (LeaseState::Released, 0),
        };

        self.insert(Lease {
            mac,
            ip,
            state,
            expires_at,
            reserved: true,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
