//! Rackhand's local image store: netboot files (kernels, initrds, later disk
//! images) kept by their sha256 and proven against it before every use.
//!
//! # Design
//!
//! The store is one folder with four sub-folders and an index:
//!
//! - `blobs/<hex>`: the content, read-only, named by its lowercase hex
//!   sha256, with `blobs/<hex>.json` beside it recording the size, inode and
//!   change time (`ctime`, seconds and nanoseconds) seen when it was last
//!   hashed.
//! - `tmp/`: imports in progress. A blob reaches `blobs/` only by a rename
//!   after it was fully written, hashed and synced, so a blob path never
//!   names a partial file.
//! - `quarantine/`: blobs that failed a check, kept for inspection and never
//!   served.
//! - `partial/`: downloads of the edge cache ([`ImageCache`]) in progress,
//!   `<hex>.part` with the upstream's validator in `<hex>.validator`, kept
//!   across restarts so a download can resume.
//! - `usage.json`: the cache's last use of each blob, for LRU eviction.
//!
//! Invariant: [`ImageStore::open_verified`] returns a handle only to content
//! that hashes to the requested digest. Hashing a multi-gigabyte disk image
//! before every boot costs seconds, so the record lets the check skip the
//! hash when the open file's size, inode and `ctime` are unchanged. The kernel
//! sets `ctime` on every write, rename and metadata change. No system call
//! sets it to a chosen value (`touch -d` and `utimensat` set `atime` and
//! `mtime` only), so an in-place edit or a replacement forces a re-hash. A
//! record taken within one clock tick of the file's last change is not
//! trusted, because a write in the same tick would leave `ctime` unchanged.
//!
//! The check works on the open file (`fstat`, then reading that handle), so
//! the file that was checked is the file that is served. The store does not
//! defend against three things. A process may write the blob through a handle
//! it opened before the check (blobs are mode 0444 to prevent that by
//! mistake). Root may change the system clock to forge a `ctime`. And anyone
//! who can write both a blob and its record can make them agree.
//!
//! Callers must treat every error from `open_verified` as "do not boot": a
//! [`ImageError::DigestMismatch`] means the blob was quarantined and must be
//! fetched again.
//!
//! Hashing uses `ring`'s SHA-256 with 1 MiB reads on tokio's blocking thread
//! pool, so a large hash never stalls the async runtime.

mod cache;
mod digest;
mod error;
mod rehash;
mod store;

pub use cache::{CacheConfig, CachedBlob, ImageCache, ImageStream, Origin, Pin};
pub use digest::{ParseDigestError, Sha256Digest};
pub use error::ImageError;
pub use rehash::{RehashReport, rehash_all, run_scheduled_rehash};
pub use store::{ImageStore, StoredBlob, Upload, VerifiedBlob};
