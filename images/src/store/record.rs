//! The sidecar record (`blobs/<hex>.json`) that lets a check skip re-hashing
//! a blob whose inode, size and change time are as they were when it was last
//! hashed.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::ImageError;

/// Margin after a file's change time before a record of it can be trusted.
///
/// Linux stamps `ctime` from a clock that advances once per timer tick (10 ms
/// at the lowest common `HZ` of 100), so a write in the same tick as the
/// recorded state can leave `ctime` unchanged. The margin is two such ticks.
const CTIME_TICK_MARGIN: Duration = Duration::from_millis(20);

/// Margin for file systems that store whole seconds only (recognised by a
/// zero nanosecond part).
const CTIME_SECOND_MARGIN: Duration = Duration::from_millis(1100);

/// The state of a blob's inode when the store last hashed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRecord {
    pub size: u64,
    pub inode: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub sha256: Sha256Digest,
    /// Wall-clock time read just before the `fstat` that produced the fields
    /// above, in nanoseconds since the Unix epoch.
    pub recorded_at_nanos: u128,
}

/// The fields of `fstat` that a record compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub size: u64,
    pub inode: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
}

impl Identity {
    pub fn of(metadata: &Metadata) -> Self {
        Identity {
            size: metadata.len(),
            inode: metadata.ino(),
            ctime_sec: metadata.ctime(),
            ctime_nsec: metadata.ctime_nsec(),
        }
    }

    /// Returns how long after `recorded_at` the next clock tick that could
    /// stamp a new `ctime` is guaranteed to have passed, or zero when it
    /// already has.
    pub fn racy_wait(&self, recorded_at: SystemTime) -> Duration {
        let margin = if self.ctime_nsec == 0 {
            CTIME_SECOND_MARGIN
        } else {
            CTIME_TICK_MARGIN
        };
        let ctime = ctime_as_system_time(self.ctime_sec, self.ctime_nsec);
        let safe_after = ctime + margin;
        safe_after
            .duration_since(recorded_at)
            .unwrap_or(Duration::ZERO)
            .min(margin)
    }
}

impl BlobRecord {
    pub fn new(identity: Identity, sha256: Sha256Digest, recorded_at: SystemTime) -> Self {
        BlobRecord {
            size: identity.size,
            inode: identity.inode,
            ctime_sec: identity.ctime_sec,
            ctime_nsec: identity.ctime_nsec,
            sha256,
            recorded_at_nanos: recorded_at
                .duration_since(UNIX_EPOCH)
                .map(|since| since.as_nanos())
                .unwrap_or(0),
        }
    }

    /// Returns whether the record proves that the file with `identity`
    /// still contains the content hashed to `digest`.
    ///
    /// A record made within one clock tick of the file's last change is not
    /// trusted ("racy", as git calls the same case for its index): a write in
    /// that tick would not have moved `ctime`.
    pub fn vouches_for(&self, identity: Identity, digest: &Sha256Digest) -> bool {
        let same = self.sha256 == *digest
            && self.size == identity.size
            && self.inode == identity.inode
            && self.ctime_sec == identity.ctime_sec
            && self.ctime_nsec == identity.ctime_nsec;
        let recorded_at = UNIX_EPOCH + nanos_to_duration(self.recorded_at_nanos);
        same && identity.racy_wait(recorded_at).is_zero()
    }

    /// Reads the record at `path`. A missing or unreadable record is `None`,
    /// which makes the caller re-hash; it is never an error.
    pub fn read(path: &Path) -> Option<BlobRecord> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(error) => {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), %error, "blob record unreadable");
                }
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "blob record invalid");
                None
            }
        }
    }

    /// Writes the record to `path` atomically: a synced temporary file in
    /// `tmp_dir` renamed over `path`, then the parent folder synced.
    pub fn write(&self, path: &Path, tmp_dir: &Path) -> Result<(), ImageError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|error| ImageError::io("serialize record", path, io::Error::other(error)))?;

        let mut tmp = tempfile::Builder::new()
            .prefix("record-")
            .tempfile_in(tmp_dir)
            .map_err(|error| ImageError::io("create temporary file in", tmp_dir, error))?;
        tmp.write_all(&json)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|error| ImageError::io("write", tmp.path(), error))?;
        tmp.persist(path)
            .map_err(|error| ImageError::io("rename record to", path, error.error))?;

        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

/// Flushes a folder's entries (a rename inside it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| ImageError::io("sync folder", dir, error))
}

fn ctime_as_system_time(sec: i64, nsec: i64) -> SystemTime {
    let nanos = Duration::from_nanos(u64::try_from(nsec).unwrap_or(0));
    match u64::try_from(sec) {
        Ok(sec) => UNIX_EPOCH + Duration::from_secs(sec) + nanos,
        // A change time before 1970 only comes from a broken clock; treating
        // it as the epoch keeps the record trusted as long as it matches.
        Err(_) => UNIX_EPOCH,
    }
}

fn nanos_to_duration(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{BlobRecord, Identity};
    use crate::digest::Sha256Digest;

    fn identity(ctime_sec: i64, ctime_nsec: i64) -> Identity {
        Identity {
            size: 10,
            inode: 7,
            ctime_sec,
            ctime_nsec,
        }
    }

    #[test]
    fn record_long_after_change_is_trusted() {
        let id = identity(1_000, 5);
        let record = BlobRecord::new(
            id,
            Sha256Digest([1; 32]),
            UNIX_EPOCH + Duration::from_secs(1_001),
        );
        assert!(record.vouches_for(id, &Sha256Digest([1; 32])));
    }

    #[test]
    fn record_in_same_tick_is_not_trusted() {
        let id = identity(1_000, 5);
        let recorded_at = UNIX_EPOCH + Duration::new(1_000, 1_000_005);
        let record = BlobRecord::new(id, Sha256Digest([1; 32]), recorded_at);
        assert!(!record.vouches_for(id, &Sha256Digest([1; 32])));
    }

    #[test]
    fn whole_second_ctime_needs_longer_wait() {
        let id = identity(1_000, 0);
        let recorded_at = UNIX_EPOCH + Duration::new(1_000, 500_000_000);
        assert!(!id.racy_wait(recorded_at).is_zero());
    }

    #[test]
    fn record_with_other_inode_is_not_trusted() {
        let id = identity(1_000, 5);
        let record = BlobRecord::new(
            id,
            Sha256Digest([1; 32]),
            UNIX_EPOCH + Duration::from_secs(2_000),
        );
        let moved = Identity { inode: 8, ..id };
        assert!(!record.vouches_for(moved, &Sha256Digest([1; 32])));
    }
}
