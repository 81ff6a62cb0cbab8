//! The lease file: a JSON snapshot of the lease table, replaced atomically.
//! The changes since a snapshot live in its journal (`lease_journal.rs`).
//!
//! A write goes to a temporary file in the same directory, which is synced and
//! renamed over the old file, and then the directory is synced. A crash at any
//! point leaves either the old or the new file, never a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::error::DhcpError;
use super::lease::{Lease, LeaseTable};

/// Format version written into the file. Loading rejects other versions.
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    version: u32,
    /// Snapshot generation, which the journal's header repeats. Files written
    /// before the journal existed have none, and no journal either.
    #[serde(default)]
    generation: u64,
    leases: Vec<Lease>,
    #[serde(default)]
    quarantined: Vec<Quarantine>,
}

/// A declined address and the Unix time in seconds at which it becomes usable.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Quarantine {
    ip: Ipv4Addr,
    until: u64,
}

/// Reads the lease file and returns its table and generation, or an empty
/// table of generation 0 when it does not exist.
pub(super) fn load(path: &Path) -> Result<(LeaseTable, u64), DhcpError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok((LeaseTable::default(), 0));
        }
        Err(source) => {
            return Err(DhcpError::LeaseFileRead {
                path: path.to_path_buf(),
                source,
            });
        }
    };

    let file: LeaseFile =
        serde_json::from_slice(&bytes).map_err(|source| DhcpError::LeaseFileParse {
            path: path.to_path_buf(),
            source,
        })?;
    let invalid = |reason: String| DhcpError::LeaseFileInvalid {
        path: path.to_path_buf(),
        reason,
    };
    if file.version != FORMAT_VERSION {
        return Err(invalid(format!(
            "version {} is not supported; expected {FORMAT_VERSION}",
            file.version
        )));
    }

    let mut table = LeaseTable::default();
    for lease in file.leases {
        if let Some(other) = table.by_ip.get(&lease.ip) {
            return Err(invalid(format!(
                "address {} is leased to both {other} and {}",
                lease.ip, lease.mac
            )));
        }
        if table.by_mac.contains_key(&lease.mac) {
            return Err(invalid(format!("{} has more than one lease", lease.mac)));
        }
        table.by_ip.insert(lease.ip, lease.mac);
        table.by_mac.insert(lease.mac, lease);
    }
    table.quarantined = file
        .quarantined
        .into_iter()
        .map(|entry| (entry.ip, entry.until))
        .collect();
    Ok((table, file.generation))
}

/// A copy of the table's entries, taken under its lock and serialized after.
#[derive(Debug)]
pub(super) struct Snapshot {
    leases: Vec<Lease>,
    quarantined: Vec<Quarantine>,
}

impl Snapshot {
    pub(super) fn of(table: &LeaseTable) -> Self {
        Self {
            leases: table.by_mac.values().cloned().collect(),
            quarantined: table
                .quarantined
                .iter()
                .map(|(ip, until)| Quarantine {
                    ip: *ip,
                    until: *until,
                })
                .collect(),
        }
    }
}

/// Serializes a snapshot in a stable order (leases and quarantined
/// addresses sorted by address), so equal tables produce identical files.
pub(super) fn serialize(snapshot: &Snapshot, generation: u64) -> Vec<u8> {
    let mut leases = snapshot.leases.clone();
    leases.sort_by_key(|lease| lease.ip);
    let mut quarantined: Vec<Quarantine> = snapshot
        .quarantined
        .iter()
        .map(|entry| Quarantine {
            ip: entry.ip,
            until: entry.until,
        })
        .collect();
    quarantined.sort_by_key(|entry| entry.ip);

    let file = LeaseFile {
        version: FORMAT_VERSION,
        generation,
        leases,
        quarantined,
    };
    let mut bytes =
        serde_json::to_vec_pretty(&file).expect("lease file has only string keys and plain values");
    bytes.push(b'\n');
    bytes
}

/// Replaces the file at `path` with `bytes` so that readers and crashes see
/// either the old or the new content.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DhcpError> {
    let write_error = |source| DhcpError::LeaseFileWrite {
        path: path.to_path_buf(),
        source,
    };
    let temporary = temporary_path(path);

    let result = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&temporary);
        return Err(write_error(source));
    }

    // The rename is durable only once the directory entry is on disk.
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(write_error)
}

/// Returns a temporary name beside `path`, unique per process and call, so
/// that two stores on one file never write the same temporary file.
fn temporary_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{sequence}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::MacAddr;
    use crate::dhcp::config::tests::sample_config;
    use crate::dhcp::lease::{DECLINE_QUARANTINE, LeaseState, LeaseStore};

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, last])
    }

    #[test]
    fn lease_file_round_trip() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let config = sample_config();
        let store = LeaseStore::open(&path).expect("missing file is an empty store");
        {
            let mut table = store.lock();
            let ip = table
                .offer(mac(1), None, &config.local_scope(), 1_000)
                .expect("pool has room");
            table.request(
                mac(1),
                ip,
                &config.local_scope(),
                Duration::from_secs(3600),
                1_001,
            );
            let declined = table
                .offer(mac(2), None, &config.local_scope(), 1_000)
                .expect("pool has room");
            table.decline(mac(2), declined, 1_002, DECLINE_QUARANTINE);
        }
        store
            .reserve(mac(3), Ipv4Addr::new(10, 98, 0, 10))
            .expect("address is free");

        let reloaded = LeaseStore::open(&path).expect("file written by reserve");

        assert_eq!(reloaded.leases(), store.leases());
        assert_eq!(reloaded.lock().quarantined, store.lock().quarantined);
        let bound = reloaded.lease(&mac(1)).expect("lease survives reload");
        assert_eq!(bound.state, LeaseState::Bound);
        assert_eq!(bound.expires_at, 4_601);
        assert!(
            reloaded
                .lease(&mac(3))
                .expect("reservation survives")
                .reserved
        );
    }

    #[test]
    fn missing_lease_file_gives_empty_store() {
        let directory = tempfile::tempdir().expect("temporary directory");

        let store = LeaseStore::open(directory.path().join("absent.json")).expect("empty store");

        assert!(store.leases().is_empty());
    }

    #[test]
    fn duplicate_address_in_file_is_rejected() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let text = r#"{"version":1,"leases":[
            {"mac":"52:54:00:00:00:01","ip":"10.98.0.100","state":"bound","expires_at":5},
            {"mac":"52:54:00:00:00:02","ip":"10.98.0.100","state":"bound","expires_at":5}]}"#;
        fs::write(&path, text).expect("write test file");

        let error = LeaseStore::open(&path).expect_err("two MACs on one address");

        assert!(
            matches!(error, DhcpError::LeaseFileInvalid { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("leases.json"), "{error}");
    }

    #[test]
    fn corrupt_lease_file_names_path() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        fs::write(&path, "{not json").expect("write test file");

        let error = LeaseStore::open(&path).expect_err("invalid JSON");

        assert!(
            matches!(error, DhcpError::LeaseFileParse { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("leases.json"), "{error}");
    }

    #[test]
    fn unknown_version_is_rejected() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        fs::write(&path, r#"{"version":2,"leases":[]}"#).expect("write test file");

        let error = LeaseStore::open(&path).expect_err("future version");

        assert!(error.to_string().contains("version 2"), "{error}");
    }

    #[test]
    fn concurrent_saves_leave_a_whole_file() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");
        let store = LeaseStore::open(&path).expect("empty store");
        let config = sample_config();

        std::thread::scope(|scope| {
            for writer in 0..4u8 {
                let store = store.clone();
                let config = &config;
                scope.spawn(move || {
                    for round in 0..20u8 {
                        let mac = mac(writer * 20 + round);
                        store.lock().offer(mac, None, &config.local_scope(), 1_000);
                        store.save().expect("directory is writable");
                    }
                });
            }
        });

        let reloaded = LeaseStore::open(&path).expect("file is whole JSON");
        assert_eq!(reloaded.leases(), store.leases());
        assert_eq!(reloaded.leases().len(), 80);
    }

    #[test]
    fn write_leaves_no_temporary_file() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("leases.json");

        write_atomic(&path, b"{}").expect("directory is writable");

        let names: Vec<_> = fs::read_dir(directory.path())
            .expect("readable directory")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("leases.json")]);
    }

    #[test]
    fn write_into_missing_directory_fails_with_path() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("absent").join("leases.json");

        let error = write_atomic(&path, b"{}").expect_err("directory does not exist");

        assert!(error.to_string().contains("absent"), "{error}");
    }
}
