//! The content-addressed blob store: import, look-up and the verified open
//! that runs before every boot and every serve.

mod record;
mod upload;
mod verify;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::digest::{Sha256Digest, copy_hashing};
use crate::error::ImageError;
use record::{BlobRecord, Identity, sync_dir};
pub use upload::Upload;

/// Age after which a leftover file in `tmp/` counts as abandoned by a crashed
/// import and is removed when the store opens.
const ABANDONED_TMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Maximum number of `tmp/` entries examined when the store opens, so a
/// folder filled by some other program cannot stall start-up.
const MAX_TMP_ENTRIES_SCANNED: usize = 10_000;

/// A blob that [`ImageStore::import`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Sha256Digest,
    pub size: u64,
}

/// An open blob whose content was proven to hash to `digest`.
#[derive(Debug)]
pub struct VerifiedBlob {
    /// The checked file, positioned at offset 0. Serve from this handle, not
    /// by opening the path again, so what was checked is what is sent.
    pub file: tokio::fs::File,
    pub size: u64,
    pub digest: Sha256Digest,
    /// `true` when the record did not vouch for the file and its whole
    /// content was hashed again (and matched).
    pub rehashed: bool,
}

/// A local image store under one root folder.
///
/// Cloning is cheap; clones share the same folders.
#[derive(Debug, Clone)]
pub struct ImageStore {
    layout: Arc<Layout>,
}

/// The store's folders.
#[derive(Debug)]
pub(crate) struct Layout {
    pub blobs: PathBuf,
    pub quarantine: PathBuf,
    pub tmp: PathBuf,
    /// Downloads in progress, kept across restarts so they can resume.
    pub partial: PathBuf,
    /// The cache's last-use index.
    pub usage_index: PathBuf,
}

impl Layout {
    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.blobs.join(digest.to_hex())
    }

    pub fn record_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.blobs.join(format!("{}.json", digest.to_hex()))
    }
}

impl ImageStore {
    /// Opens the store at `root`, creating `blobs/`, `quarantine/` and `tmp/`
    /// when missing, and removes `tmp/` files older than a day that crashed
    /// imports left behind.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let layout = Layout {
            blobs: root.join("blobs"),
            quarantine: root.join("quarantine"),
            tmp: root.join("tmp"),
            partial: root.join("partial"),
            usage_index: root.join("usage.json"),
        };
        for dir in [
            &layout.blobs,
            &layout.quarantine,
            &layout.tmp,
            &layout.partial,
        ] {
            fs::create_dir_all(dir).map_err(|error| ImageError::io("create folder", dir, error))?;
        }

        remove_abandoned_tmp_files(&layout.tmp);
        // A download not resumed within a day is unlikely to be resumed, and
        // its partial file counts against no budget.
        remove_abandoned_tmp_files(&layout.partial);
        Ok(ImageStore {
            layout: Arc::new(layout),
        })
    }

    /// Copies `source` into the store under its sha256 and returns the digest.
    ///
    /// The copy is hashed while it is written to `tmp/`, synced, made
    /// read-only and renamed to `blobs/<hex>`, so a blob path never shows a
    /// partial file. Importing content that is already stored (and still
    /// verifies) leaves the existing blob untouched. A stored blob that no
    /// longer verifies is quarantined and replaced by the new copy.
    ///
    /// `source` must be a regular file; it is read to its end once.
    pub async fn import(&self, source: &Path) -> Result<StoredBlob, ImageError> {
        let layout = Arc::clone(&self.layout);
        let source = source.to_path_buf();
        let task_path = source.clone();
        tokio::task::spawn_blocking(move || import_blocking(&layout, &source))
            .await
            .map_err(|source| ImageError::Task {
                path: task_path,
                source,
            })?
    }

    /// Starts an upload: a temporary file in `tmp/` that the caller fills
    /// with [`Upload::write`] and stores with [`Upload::commit`]. Dropping
    /// the upload deletes the temporary file.
    pub fn begin_upload(&self) -> Result<Upload, ImageError> {
        Upload::create(Arc::clone(&self.layout))
    }

    /// Returns whether a blob file for `digest` exists. This does not verify
    /// it: call [`ImageStore::open_verified`] before using the content.
    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        self.layout.blob_path(digest).is_file()
    }

    /// Opens the blob for `digest` and proves that its content hashes to
    /// `digest` before returning it.
    ///
    /// The check runs on the open file. When its size, inode and change time
    /// match the record written when it was last hashed, it is trusted
    /// without reading. Otherwise the whole file is hashed again. A blob that
    /// fails is moved to `quarantine/` and reported as
    /// [`ImageError::DigestMismatch`]; later calls return
    /// [`ImageError::NotFound`].
    pub async fn open_verified(&self, digest: &Sha256Digest) -> Result<VerifiedBlob, ImageError> {
        let layout = Arc::clone(&self.layout);
        let digest = *digest;
        let task_path = self.blob_path(&digest);
        let checked = tokio::task::spawn_blocking(move || {
            verify::verify_blocking(&layout, &digest, verify::Trust::Record)
        })
        .await
        .map_err(|source| ImageError::Task {
            path: task_path,
            source,
        })??;

        Ok(VerifiedBlob {
            file: tokio::fs::File::from_std(checked.file),
            size: checked.size,
            digest,
            rehashed: checked.rehashed,
        })
    }

    /// Returns the path where the blob for `digest` is stored (whether or not
    /// it exists).
    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.layout.blob_path(digest)
    }

    /// Hashes the blob for `digest` in full, ignoring its record, and
    /// quarantines it when the content no longer matches. Returns the blob's
    /// size. Errors are those of [`ImageStore::open_verified`].
    pub async fn rehash(&self, digest: &Sha256Digest) -> Result<u64, ImageError> {
        let layout = Arc::clone(&self.layout);
        let digest = *digest;
        let task_path = self.blob_path(&digest);
        let checked = tokio::task::spawn_blocking(move || {
            verify::verify_blocking(&layout, &digest, verify::Trust::Nothing)
        })
        .await
        .map_err(|source| ImageError::Task {
            path: task_path,
            source,
        })??;
        Ok(checked.size)
    }

    /// Lists the stored blobs with their sizes, in no particular order.
    /// Files in `blobs/` whose names are not a digest are skipped.
    pub fn list(&self) -> Result<Vec<StoredBlob>, ImageError> {
        let blobs = &self.layout.blobs;
        let entries =
            fs::read_dir(blobs).map_err(|error| ImageError::io("list folder", blobs, error))?;

        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| ImageError::io("list folder", blobs, error))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<Sha256Digest>().ok())
            else {
                continue;
            };
            // A blob removed between the listing and the stat is skipped.
            if let Ok(metadata) = entry.metadata()
                && metadata.is_file()
            {
                listed.push(StoredBlob {
                    digest,
                    size: metadata.len(),
                });
            }
        }
        Ok(listed)
    }

    /// Removes the blob for `digest` and its record. A missing blob is not an
    /// error. Readers that opened the blob before keep reading it.
    pub fn remove(&self, digest: &Sha256Digest) -> Result<(), ImageError> {
        for path in [
            self.layout.blob_path(digest),
            self.layout.record_path(digest),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(ImageError::io("remove", &path, error)),
            }
        }
        Ok(())
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Moves `file`, a download at `path` in `partial/` whose content the
    /// caller hashed to `digest`, into `blobs/` and records it. `file` must be
    /// the open handle of `path`, so the recorded identity is the moved file's.
    pub(crate) async fn adopt(
        &self,
        file: Arc<File>,
        path: PathBuf,
        digest: Sha256Digest,
    ) -> Result<(), ImageError> {
        let layout = Arc::clone(&self.layout);
        let task_path = path.clone();
        tokio::task::spawn_blocking(move || adopt_blocking(&layout, &file, &path, &digest))
            .await
            .map_err(|source| ImageError::Task {
                path: task_path,
                source,
            })?
    }
}

fn adopt_blocking(
    layout: &Layout,
    file: &File,
    path: &Path,
    digest: &Sha256Digest,
) -> Result<(), ImageError> {
    file.sync_all()
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o444)))
        .map_err(|error| ImageError::io("sync", path, error))?;

    let blob = layout.blob_path(digest);
    fs::rename(path, &blob).map_err(|error| ImageError::io("rename into", &blob, error))?;
    sync_dir(&layout.blobs)?;
    record_fresh_blob(layout, file, digest)
}

fn import_blocking(layout: &Layout, source: &Path) -> Result<StoredBlob, ImageError> {
    let mut input = File::open(source).map_err(|error| ImageError::io("open", source, error))?;
    let metadata = input
        .metadata()
        .map_err(|error| ImageError::io("stat", source, error))?;
    if !metadata.is_file() {
        return Err(ImageError::NotAFile {
            path: source.to_path_buf(),
        });
    }

    let mut tmp = tempfile::Builder::new()
        .prefix("import-")
        .tempfile_in(&layout.tmp)
        .map_err(|error| ImageError::io("create temporary file in", &layout.tmp, error))?;
    let (digest, size) = copy_hashing(&mut input, &mut tmp)
        .map_err(|error| ImageError::io("copy into the store", source, error))?;
    tmp.as_file()
        .sync_all()
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o444))
        })
        .map_err(|error| ImageError::io("sync", tmp.path(), error))?;

    let stored = store_tmp_file(layout, tmp, digest, size)?;
    tracing::debug!(%digest, size, source = %source.display(), "image imported");
    Ok(stored)
}

/// Moves `tmp`, a synced read-only file in `tmp/` whose content hashes to
/// `digest`, into `blobs/` and records it. When a blob that still verifies
/// is already stored, `tmp` is deleted and the stored blob kept.
fn store_tmp_file(
    layout: &Layout,
    tmp: tempfile::NamedTempFile,
    digest: Sha256Digest,
    size: u64,
) -> Result<StoredBlob, ImageError> {
    match verify::verify_blocking(layout, &digest, verify::Trust::Record) {
        Ok(existing) => {
            tracing::debug!(%digest, size = existing.size, "image already stored");
            return Ok(StoredBlob {
                digest,
                size: existing.size,
            });
        }
        // A corrupt copy was just quarantined; the new copy replaces it.
        Err(ImageError::NotFound { .. } | ImageError::DigestMismatch { .. }) => {}
        Err(other) => return Err(other),
    }

    let blob = layout.blob_path(&digest);
    let file = tmp
        .persist(&blob)
        .map_err(|error| ImageError::io("rename into", &blob, error.error))?;
    sync_dir(&layout.blobs)?;
    record_fresh_blob(layout, &file, &digest)?;
    Ok(StoredBlob { digest, size })
}

/// Writes the record for a blob whose content was hashed as it was written.
///
/// Waits out the clock tick of the blob's last change first (at most about a
/// second, on file systems with whole-second times), so the record is trusted
/// from the first check on. When the file changed during that wait, no record
/// is written and the first check hashes the file again.
fn record_fresh_blob(
    layout: &Layout,
    file: &File,
    digest: &Sha256Digest,
) -> Result<(), ImageError> {
    let path = layout.blob_path(digest);
    let stat = || {
        file.metadata()
            .map(|metadata| Identity::of(&metadata))
            .map_err(|error| ImageError::io("stat", &path, error))
    };

    let before = stat()?;
    let wait = before.racy_wait(SystemTime::now());
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }

    let recorded_at = SystemTime::now();
    let identity = stat()?;
    if identity != before {
        tracing::debug!(%digest, "blob changed right after import; leaving it unrecorded");
        return Ok(());
    }
    BlobRecord::new(identity, *digest, recorded_at).write(&layout.record_path(digest), &layout.tmp)
}

/// Removes files in `tmp/` or `partial/` not modified for
/// [`ABANDONED_TMP_AGE`]. Failures are logged and skipped: leftovers waste
/// space but never affect a blob.
fn remove_abandoned_tmp_files(tmp: &Path) {
    let entries = match fs::read_dir(tmp) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::debug!(path = %tmp.display(), %error, "cannot list tmp folder");
            return;
        }
    };

    let now = SystemTime::now();
    for entry in entries.take(MAX_TMP_ENTRIES_SCANNED).flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let age = metadata
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if metadata.is_file() && age.is_some_and(|age| age > ABANDONED_TMP_AGE) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed abandoned tmp file"),
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "cannot remove tmp file");
                }
            }
        }
    }
}
