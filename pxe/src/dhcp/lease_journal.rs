//! The lease journal: the changes since the last lease file snapshot, one
//! JSON line per lease or quarantine entry, appended and synced once per
//! batch of packets.
//!
//! Rewriting the whole lease file after every packet costs a serialization
//! of every lease and two `fsync`s, which held the server to a few hundred
//! leases a second. The journal costs one `write` and one `fdatasync` per
//! batch, however many packets the batch held. When the journal grows past
//! [`compact_after`] lines, the table is written as a new snapshot and the
//! journal starts over.
//!
//! Crash safety: every line contains an entry's whole state, not a difference,
//! so replaying a line twice changes nothing. The first line names the
//! snapshot generation the journal continues; a journal of another
//! generation is stale (its changes are already in the snapshot) and is
//! skipped. A crash in the middle of an append leaves a torn last line,
//! which loading skips: the replies of that batch were not sent yet. After a
//! failed append the journal is abandoned and the next save writes a
//! snapshot, so a torn line never sits before whole ones.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::DhcpError;
use super::lease::{Lease, LeaseTable};
use crate::MacAddr;

/// Journal lines after which the next save writes a snapshot: twice the
/// table's entries, and at least this many, so a snapshot's cost is spread
/// over many batches.
const MIN_COMPACT_LINES: usize = 4096;

/// First line of a journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    journal: u32,
    generation: u64,
}

/// Journal format version in the header.
const JOURNAL_VERSION: u32 = 1;

/// One journal line: an entry's state after a batch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Record {
    /// The MAC's lease is now this one.
    Lease(Lease),
    /// The MAC has no lease any more.
    Forget(MacAddr),
    /// The address is quarantined until this Unix time.
    Quarantine { ip: Ipv4Addr, until: u64 },
    /// The address is no longer quarantined.
    Unquarantine(Ipv4Addr),
}

/// Returns the journal's path beside the lease file.
pub(super) fn journal_path(lease_file: &Path) -> PathBuf {
    let mut name = lease_file.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    lease_file.with_file_name(name)
}

/// Returns how many journal lines may pile up before a snapshot.
pub(super) fn compact_after(entries: usize) -> usize {
    entries.saturating_mul(2).max(MIN_COMPACT_LINES)
}

/// The open journal of the current snapshot generation.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    /// Lines appended since the header.
    pub(super) lines: usize,
}

impl Journal {
    /// Starts an empty journal for snapshot `generation`: header written to
    /// a temporary file, synced, renamed over the old journal, directory
    /// synced.
    pub(super) fn create(lease_file: &Path, generation: u64) -> Result<Self, DhcpError> {
        let path = journal_path(lease_file);
        let mut bytes = serde_json::to_vec(&Header {
            journal: JOURNAL_VERSION,
            generation,
        })
        .expect("journal header has only plain values");
        bytes.push(b'\n');
        super::lease_file::write_atomic(&path, &bytes)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| DhcpError::LeaseFileWrite { path, source })?;
        Ok(Self { file, lines: 0 })
    }

    /// Appends `bytes` (whole lines) and waits until they are on disk.
    pub(super) fn append(&mut self, bytes: &[u8], lines: usize) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.lines += lines;
        Ok(())
    }
}

/// Appends the line of `record` to `out`.
pub(super) fn push_record(out: &mut Vec<u8>, record: &Record) {
    serde_json::to_writer(&mut *out, record).expect("journal records have only plain values");
    out.push(b'\n');
}

/// Replays the journal beside `lease_file` onto `table` when it continues
/// snapshot `generation`. Returns the number of lines applied; a torn last
/// line is skipped with a warning.
pub(super) fn replay(
    lease_file: &Path,
    generation: u64,
    table: &mut LeaseTable,
) -> Result<usize, DhcpError> {
    let path = journal_path(lease_file);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(DhcpError::LeaseFileRead { path, source }),
    };
    let invalid = |line: usize, reason: String| DhcpError::LeaseFileInvalid {
        path: path.clone(),
        reason: format!("line {line}: {reason}"),
    };

    let mut lines = text.split(|byte| *byte == b'\n').enumerate().peekable();
    let Some((_, header)) = lines.next() else {
        return Ok(0);
    };
    let header: Header = match serde_json::from_slice(header) {
        Ok(header) => header,
        // A journal is created whole by rename, so a bad header is damage.
        Err(error) => return Err(invalid(1, error.to_string())),
    };
    if header.journal != JOURNAL_VERSION {
        return Err(invalid(
            1,
            format!(
                "journal version {} is not supported; expected {JOURNAL_VERSION}",
                header.journal
            ),
        ));
    }
    if header.generation != generation {
        tracing::debug!(path = %path.display(), "skipping lease journal of an older snapshot");
        return Ok(0);
    }

    let mut applied = 0;
    while let Some((index, line)) = lines.next() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => {
                table.apply(record);
                applied += 1;
            }
            Err(_) if lines.peek().is_none_or(|(_, rest)| rest.is_empty()) => {
                tracing::warn!(
                    path = %path.display(),
                    line = index + 1,
                    "skipping torn last line of the lease journal; its batch was never answered"
                );
            }
            Err(error) => return Err(invalid(index + 1, error.to_string())),
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dhcp::config::tests::sample_config;
    use crate::dhcp::lease::{LeaseState, LeaseStore};

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0x00, 0x00, 0x01, last])
    }

    /// Offers and binds an address to `mac` at time 1,000 and saves.
    fn bind(store: &LeaseStore, mac: MacAddr) -> Ipv4Addr {
        let scope = sample_config().local_scope();
        let ip = {
            let mut table = store.lock();
            let ip = table
                .offer(mac, None, &scope, 1_000)
                .expect("pool has room");
            table.request(mac, ip, &scope, Duration::from_secs(3600), 1_000);
            ip
        };
        store.save().expect("directory is writable");
        ip
    }

    #[test]
    fn saved_lease_survives_without_a_new_snapshot() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        bind(&store, mac(1));

        let ip = bind(&store, mac(2));
        // Dropped without a further save, as a killed process is.
        drop(store);
        let reloaded = LeaseStore::open(&path).expect("snapshot and journal");

        let lease = reloaded.lease(&mac(2)).expect("journal line replayed");
        assert_eq!((lease.ip, lease.state), (ip, LeaseState::Bound));
    }

    #[test]
    fn second_save_appends_to_the_journal() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        bind(&store, mac(1));
        let snapshot = fs::read(&path).expect("first save writes a snapshot");

        bind(&store, mac(2));

        assert_eq!(fs::read(&path).expect("snapshot"), snapshot);
        let journal = fs::read_to_string(journal_path(&path)).expect("journal");
        assert_eq!(journal.lines().count(), 2, "{journal}");
    }

    #[test]
    fn torn_last_journal_line_is_skipped() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        bind(&store, mac(1));
        bind(&store, mac(2));
        drop(store);
        let mut journal = OpenOptions::new()
            .append(true)
            .open(journal_path(&path))
            .expect("journal exists");
        journal
            .write_all(br#"{"lease":{"mac":"52:54:00:00:01:03","ip":"10.9"#)
            .expect("append");

        let reloaded = LeaseStore::open(&path).expect("torn line skipped");

        assert!(reloaded.lease(&mac(2)).is_some());
        assert!(reloaded.lease(&mac(3)).is_none());
    }

    #[test]
    fn damaged_journal_line_before_whole_ones_names_the_line() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        bind(&store, mac(1));
        drop(store);
        let journal = journal_path(&path);
        let mut text = fs::read_to_string(&journal).expect("journal");
        text.push_str("{not json\n{\"forget\":\"52:54:00:00:01:01\"}\n");
        fs::write(&journal, text).expect("write journal");

        let error = LeaseStore::open(&path).expect_err("damage in the middle");

        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn journal_of_an_older_snapshot_is_skipped() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        bind(&store, mac(1));
        // A line for generation 1 that the snapshot of generation 2 already
        // holds differently: the crash came after the snapshot's rename and
        // before the new journal's.
        let stale = fs::read_to_string(journal_path(&path)).expect("journal")
            + "{\"forget\":\"52:54:00:00:01:01\"}\n";
        drop(store);
        let store = LeaseStore::open(&path).expect("reload");
        store
            .lock()
            .offer(mac(9), None, &sample_config().local_scope(), 1_000);
        store.save().expect("reload's first save writes snapshot 2");
        drop(store);
        fs::write(journal_path(&path), stale).expect("put the stale journal back");

        let reloaded = LeaseStore::open(&path).expect("stale journal skipped");

        assert!(reloaded.lease(&mac(1)).is_some());
    }

    #[test]
    fn long_journal_is_compacted_into_a_snapshot() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        let scope = sample_config().local_scope();
        store.lock().offer(mac(1), None, &scope, 1_000);
        store.save().expect("snapshot");

        // Each save rewrites the same lease, one line each.
        for round in 0..compact_after(1) as u64 + 1 {
            let mut table = store.lock();
            let ip = table
                .offer(mac(1), None, &scope, 1_000)
                .expect("same address");
            table.request(mac(1), ip, &scope, Duration::from_secs(3600), 1_000 + round);
            drop(table);
            store.save().expect("directory is writable");
        }

        let journal = fs::read_to_string(journal_path(&path)).expect("journal");
        assert!(
            journal.lines().count() < 10,
            "{} lines",
            journal.lines().count()
        );
        let reloaded = LeaseStore::open(&path).expect("reload");
        assert_eq!(reloaded.leases(), store.leases());
    }

    #[test]
    fn lines_of_one_batch_replay_in_any_order() {
        let mut table = LeaseTable::default();
        let ip = Ipv4Addr::new(10, 98, 0, 100);
        table.apply(Record::Lease(Lease {
            mac: mac(1),
            ip,
            state: LeaseState::Bound,
            expires_at: 5,
            reserved: false,
        }));

        // The batch moved the address from mac(1) to mac(2); its lines came
        // in the other order.
        table.apply(Record::Lease(Lease {
            mac: mac(2),
            ip,
            state: LeaseState::Offered,
            expires_at: 6,
            reserved: false,
        }));
        table.apply(Record::Forget(mac(1)));

        assert_eq!(table.by_ip.get(&ip), Some(&mac(2)));
    }
}
