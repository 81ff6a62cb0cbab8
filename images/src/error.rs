//! Errors of the image store.

use std::io;
use std::path::PathBuf;

use crate::digest::Sha256Digest;

/// An error from an image store operation.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file system call failed on `path`.
    #[error("failed to {operation} {path}")]
    Io {
        /// The operation that failed, such as "open" or "rename".
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file to import is a directory, a device or a pipe, which the store
    /// cannot hash to a fixed end.
    #[error("cannot import {path}: not a regular file")]
    NotAFile { path: PathBuf },

    /// No blob with this digest is in the store (never imported, or
    /// quarantined after a failed check).
    #[error("image {digest} not found in the store")]
    NotFound { digest: Sha256Digest },

    /// The blob's content no longer hashes to its name. The blob was moved to
    /// `quarantine/` (when `quarantined` is set) and will not be served again.
    #[error(
        "image {path} is corrupt: expected sha256 {expected}, content hashes to {actual}{}",
        quarantine_note(quarantined)
    )]
    DigestMismatch {
        path: PathBuf,
        expected: Sha256Digest,
        actual: Sha256Digest,
        /// The blob's new path, or `None` when moving it failed or another
        /// writer had already replaced it.
        quarantined: Option<PathBuf>,
    },

    /// The blocking hashing task panicked or was cancelled.
    #[error("hashing task for {path} failed")]
    Task {
        path: PathBuf,
        #[source]
        source: tokio::task::JoinError,
    },
}

fn quarantine_note(quarantined: &Option<PathBuf>) -> String {
    match quarantined {
        Some(path) => format!("; moved to {}", path.display()),
        None => String::new(),
    }
}

impl ImageError {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
