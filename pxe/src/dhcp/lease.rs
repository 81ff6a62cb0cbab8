//! Leases: the address each MAC has and until when, and how addresses are
//! picked from the pool.
//!
//! Invariants, kept by [`LeaseTable::insert`] and checked when the lease file
//! is loaded: a MAC has at most one lease, and an address belongs to at most
//! one MAC. An expired lease stays in the table so that its MAC gets the same
//! address back. Another MAC gets that address only when every pool address
//! has been leased before.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::Scope;
use super::error::DhcpError;
use super::lease_file;
use super::lease_journal::{self, Journal, Record};
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

/// The server's leases, kept in memory and persisted as a JSON snapshot
/// plus a journal of the changes since (see `lease_journal.rs`).
///
/// Cheap to clone. All clones share one table, so the site agent can read a
/// machine's address while the server runs. The server saves the changes of
/// each batch of packets, synced to disk, before it sends the replies that
/// depend on them.
#[derive(Clone, Debug)]
pub struct LeaseStore {
    table: Arc<Mutex<LeaseTable>>,
    path: Option<Arc<PathBuf>>,
    /// Held from taking the changes to writing them, so two writers (the
    /// server loop and [`LeaseStore::reserve`]) never interleave and newer
    /// changes never land before older ones.
    write: Arc<Mutex<Writer>>,
}

/// The persistent side of a [`LeaseStore`].
#[derive(Debug, Default)]
struct Writer {
    /// Generation of the snapshot on disk; each snapshot takes the next.
    generation: u64,
    /// The journal that continues that snapshot, or `None` when the next save
    /// must write a snapshot: at the first save, and after a failed append.
    journal: Option<Journal>,
}

impl LeaseStore {
    /// Loads the lease file at `path`, or starts empty when it does not exist
    /// yet. The file is written at the first change.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, DhcpError> {
        let path = path.into();
        let (mut table, generation) = lease_file::load(&path)?;
        let replayed = lease_journal::replay(&path, generation, &mut table)?;
        // The first save writes a snapshot that holds the replayed lines.
        table.dirty.clear();
        table.snapshot_due = replayed > 0;
        Ok(Self {
            table: Arc::new(Mutex::new(table)),
            path: Some(Arc::new(path)),
            write: Arc::new(Mutex::new(Writer {
                generation,
                journal: None,
            })),
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

    /// Returns whether the table has changes that [`LeaseStore::save`] has
    /// not written yet. Always `false` for an in-memory store.
    pub fn has_unsaved_changes(&self) -> bool {
        self.path.is_some() && self.lock().changed()
    }

    /// Writes the changes since the last save and waits until they are on
    /// disk: appended to the journal, or as a new snapshot when the journal
    /// is long, missing or broken. Blocks on file I/O, including `fsync`. A
    /// failed write makes the next call write a whole snapshot, so nothing
    /// is lost while the disk recovers.
    pub fn save(&self) -> Result<(), DhcpError> {
        let Some(path) = self.path.as_deref() else {
            return Ok(());
        };
        let mut writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let compact_after = writer.journal.as_ref().map(|journal| journal.lines);
        let Some(change) = self.lock().take_changes(compact_after) else {
            return Ok(());
        };

        let result = match change {
            Change::Lines { bytes, lines } => {
                let journal = writer
                    .journal
                    .as_mut()
                    .expect("take_changes returns lines only while a journal is open");
                journal
                    .append(&bytes, lines)
                    .map_err(|source| DhcpError::LeaseFileWrite {
                        path: lease_journal::journal_path(path),
                        source,
                    })
            }
            Change::Snapshot(table) => write_snapshot(path, &mut writer, &table),
        };
        if result.is_err() {
            writer.journal = None;
            self.lock().snapshot_due = true;
        }
        result
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        // Every table method restores the invariants before it can panic, so
        // a poisoned lock still guards a consistent table.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes `table` as snapshot generation `generation + 1` and starts its
/// empty journal. A crash between the two leaves the old journal, whose
/// generation no longer matches, so loading skips it.
fn write_snapshot(
    path: &Path,
    writer: &mut Writer,
    table: &lease_file::Snapshot,
) -> Result<(), DhcpError> {
    writer.journal = None;
    let generation = writer.generation + 1;
    lease_file::write_atomic(path, &lease_file::serialize(table, generation))?;
    writer.generation = generation;
    writer.journal = Some(Journal::create(path, generation)?);
    Ok(())
}

/// What [`LeaseTable::take_changes`] hands the writer.
enum Change {
    /// Journal lines for the changed entries.
    Lines { bytes: Vec<u8>, lines: usize },
    /// The whole table, for a snapshot.
    Snapshot(lease_file::Snapshot),
}

/// Entries changed since the last save.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    macs: HashSet<MacAddr>,
    quarantined: HashSet<Ipv4Addr>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.macs.is_empty() && self.quarantined.is_empty()
    }

    fn clear(&mut self) {
        self.macs.clear();
        self.quarantined.clear();
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
    /// Entries that differ from the lease file and its journal.
    dirty: Dirty,
    /// Whether the next save must write a whole snapshot.
    snapshot_due: bool,
}

impl LeaseTable {
    /// Returns whether the table differs from what was last saved.
    pub(super) fn changed(&self) -> bool {
        self.snapshot_due || !self.dirty.is_empty()
    }

    /// Forgets the unsaved changes, for tests that check what marks one.
    #[cfg(test)]
    pub(super) fn clear_changes(&mut self) {
        self.dirty.clear();
        self.snapshot_due = false;
    }

    /// Takes the unsaved changes: journal lines, or the whole table when a
    /// snapshot is due, no journal is open (`journal_lines` is `None`) or
    /// the journal would grow past its limit. `None` when nothing changed.
    fn take_changes(&mut self, journal_lines: Option<usize>) -> Option<Change> {
        if !self.changed() {
            return None;
        }
        let entries = self.by_mac.len() + self.quarantined.len();
        let lines = self.dirty.macs.len() + self.dirty.quarantined.len();
        let snapshot = self.snapshot_due
            || journal_lines
                .is_none_or(|done| done + lines > lease_journal::compact_after(entries));
        if snapshot {
            self.dirty.clear();
            self.snapshot_due = false;
            return Some(Change::Snapshot(lease_file::Snapshot::of(self)));
        }

        let mut bytes = Vec::with_capacity(lines * 128);
        for mac in self.dirty.macs.drain() {
            let record = match self.by_mac.get(&mac) {
                Some(lease) => Record::Lease(lease.clone()),
                None => Record::Forget(mac),
            };
            lease_journal::push_record(&mut bytes, &record);
        }
        for ip in self.dirty.quarantined.drain() {
            let record = match self.quarantined.get(&ip) {
                Some(until) => Record::Quarantine { ip, until: *until },
                None => Record::Unquarantine(ip),
            };
            lease_journal::push_record(&mut bytes, &record);
        }
        Some(Change::Lines { bytes, lines })
    }

    /// Applies one journal line while loading. A lease line takes its
    /// address from any other holder: within one batch, lines come in no
    /// particular order, and the batch's last state holds the invariants.
    pub(super) fn apply(&mut self, record: Record) {
        match record {
            Record::Lease(lease) => {
                if let Some(holder) = self.holder(lease.ip).filter(|holder| *holder != lease.mac) {
                    self.remove(&holder);
                }
                self.insert(lease);
            }
            Record::Forget(mac) => {
                self.remove(&mac);
            }
            Record::Quarantine { ip, until } => {
                self.quarantined.insert(ip, until);
            }
            Record::Unquarantine(ip) => {
                self.quarantined.remove(&ip);
            }
        }
    }

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
        self.dirty.macs.insert(lease.mac);
        self.by_mac.insert(lease.mac, lease);
    }

    pub(super) fn remove(&mut self, mac: &MacAddr) -> Option<Lease> {
        let lease = self.by_mac.remove(mac)?;
        self.by_ip.remove(&lease.ip);
        self.dirty.macs.insert(*mac);
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
        if !self.quarantined.is_empty() {
            let dirty = &mut self.dirty.quarantined;
            self.quarantined.retain(|ip, until| {
                let keep = *until > now;
                if !keep {
                    dirty.insert(*ip);
                }
                keep
            });
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
        self.dirty.quarantined.insert(ip);
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
