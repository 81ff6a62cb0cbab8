//! Errors of the image store.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

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

    /// The HTTP client for upstream downloads could not be built.
    #[error("cannot build the HTTP client for image downloads")]
    Client {
        #[source]
        source: reqwest::Error,
    },

    /// The request to the upstream failed (connection refused or cut, read
    /// timeout). `url` has its query and credentials removed.
    #[error("download of image {digest} from {url} failed")]
    Http {
        digest: Sha256Digest,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The image's URL is relative, which names a file on the control plane,
    /// but the cache was given no [`Origin`](crate::Origin) to fetch it from.
    #[error(
        "image {digest} has the relative URL {url}, but this cache has no control plane to fetch it from"
    )]
    NoOrigin { digest: Sha256Digest, url: String },

    /// The upstream returned a status other than 200 or 206.
    #[error(
        "download of image {digest} from {url} failed: upstream returned HTTP {status}{}",
        detail_note(detail)
    )]
    UpstreamStatus {
        digest: Sha256Digest,
        url: String,
        status: u16,
        /// The `error` message of a JSON error body (the control plane's
        /// reason), if the upstream sent one.
        detail: Option<String>,
    },

    /// The upstream's response contradicts the request or the catalogue: a
    /// `Content-Range` that does not start where the request asked, or more
    /// or fewer bytes than the expected size.
    #[error("download of image {digest} from {url} is invalid: {reason}")]
    InvalidResponse {
        digest: Sha256Digest,
        url: String,
        reason: String,
    },

    /// The downloaded bytes do not hash to the requested digest. The partial
    /// file was deleted and nothing was stored.
    #[error(
        "download of image from {url} does not match: expected sha256 {expected}, downloaded content hashes to {actual}"
    )]
    DownloadMismatch {
        url: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },

    /// One image alone is larger than the whole cache budget.
    #[error(
        "image {digest} of {size} bytes is larger than the cache budget of {budget} bytes; raise the budget or serve the image from elsewhere"
    )]
    LargerThanBudget {
        digest: Sha256Digest,
        size: u64,
        budget: u64,
    },

    /// The image fits the budget, but too much of the cache is in use
    /// (served or downloading) to evict enough.
    #[error(
        "no room for image {digest} of {size} bytes: {in_use} of the {budget} budget bytes are in use by downloads and open streams; retry when they finish"
    )]
    CacheFull {
        digest: Sha256Digest,
        size: u64,
        in_use: u64,
        budget: u64,
    },

    /// The shared download that this request joined failed; every caller
    /// that waited for it gets this error with the same cause.
    #[error("download of image {digest} failed")]
    DownloadFailed {
        digest: Sha256Digest,
        #[source]
        source: Arc<ImageError>,
    },
}

fn detail_note(detail: &Option<String>) -> String {
    match detail {
        Some(detail) => format!(": {detail}"),
        None => String::new(),
    }
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
