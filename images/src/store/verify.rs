//! The check behind [`ImageStore::open_verified`](super::ImageStore::open_verified):
//! trust the record or re-hash, and quarantine a blob that fails.

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Layout;
use super::record::{BlobRecord, Identity, sync_dir};
use crate::digest::{Sha256Digest, hash_reader};
use crate::error::ImageError;

/// A blob that passed the check, as a blocking file handle at offset 0.
#[derive(Debug)]
pub(crate) struct CheckedBlob {
    pub file: File,
    pub size: u64,
    pub rehashed: bool,
}

/// Whether a check may skip hashing when the record matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Skip the hash when the record vouches for the open file.
    Record,
    /// Always hash, as the scheduled full re-hash does to catch what the
    /// record cannot (a forged clock, a blob and record changed together,
    /// or bit rot under an unchanged inode).
    Nothing,
}

/// Opens the blob for `digest` and proves its content, on the calling
/// (blocking) thread.
///
/// Everything is decided from the open handle (`fstat`, then reading it), so
/// a rename over the path between the check and the use cannot swap the file
/// that is served.
pub(crate) fn verify_blocking(
    layout: &Layout,
    digest: &Sha256Digest,
    trust: Trust,
) -> Result<CheckedBlob, ImageError> {
    let path = layout.blob_path(digest);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::NotFound { digest: *digest });
        }
        Err(error) => return Err(ImageError::io("open", &path, error)),
    };

    // The clock is read before the fstat: a write after this instant gets a
    // later ctime, which is what the record's race check relies on.
    let checked_at = SystemTime::now();
    let metadata = file
        .metadata()
        .map_err(|error| ImageError::io("stat", &path, error))?;
    let identity = Identity::of(&metadata);

    let record_path = layout.record_path(digest);
    let record = BlobRecord::read(&record_path);
    if trust == Trust::Record
        && record
            .as_ref()
            .is_some_and(|record| record.vouches_for(identity, digest))
    {
        return Ok(CheckedBlob {
            file,
            size: identity.size,
            rehashed: false,
        });
    }

    tracing::debug!(
        %digest,
        path = %path.display(),
        recorded = record.is_some(),
        "blob record does not match; hashing again"
    );
    let (actual, hashed_size) =
        hash_reader(&mut file).map_err(|error| ImageError::io("read", &path, error))?;

    if actual != *digest {
        let quarantined = quarantine(layout, digest, identity.inode);
        return Err(ImageError::DigestMismatch {
            path,
            expected: *digest,
            actual,
            quarantined,
        });
    }

    // The record keeps the identity seen before hashing: if the file changed
    // while it was read, its ctime moved and the next check hashes again.
    // The content is proven either way; a record that cannot be written
    // (a full or read-only disk) only costs a re-hash on the next check.
    if let Err(error) =
        BlobRecord::new(identity, *digest, checked_at).write(&record_path, &layout.tmp)
    {
        tracing::warn!(
            %digest,
            error = &error as &dyn std::error::Error,
            "cannot update blob record; the next check hashes the blob again"
        );
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|error| ImageError::io("seek", &path, error))?;
    Ok(CheckedBlob {
        file,
        size: hashed_size,
        rehashed: true,
    })
}

/// Moves a corrupt blob and its record to `quarantine/` and returns the new
/// blob path, or `None` when nothing was moved.
///
/// The path is moved only while it still names the inode that was hashed, so
/// a good copy that a concurrent import renamed into place stays. A failed
/// move is logged here and otherwise ignored: the blob then stays in
/// `blobs/`, fails every check and is still never served.
fn quarantine(layout: &Layout, digest: &Sha256Digest, hashed_inode: u64) -> Option<PathBuf> {
    let blob = layout.blob_path(digest);
    match fs::symlink_metadata(&blob) {
        Ok(metadata) if metadata.ino() == hashed_inode => {}
        _ => return None,
    }

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    let target = layout
        .quarantine
        .join(format!("{}.{stamp}", digest.to_hex()));
    if let Err(error) = fs::rename(&blob, &target) {
        tracing::warn!(
            %digest,
            path = %blob.display(),
            %error,
            "cannot move corrupt blob to quarantine; it stays in place and fails every check"
        );
        return None;
    }

    let record_target = layout
        .quarantine
        .join(format!("{}.{stamp}.json", digest.to_hex()));
    if let Err(error) = fs::rename(layout.record_path(digest), &record_target)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!(%digest, %error, "cannot move blob record to quarantine");
    }
    if let Err(error) = sync_dir(&layout.blobs) {
        tracing::debug!(%digest, error = %error, "cannot sync blobs folder after quarantine");
    }

    tracing::debug!(%digest, path = %target.display(), "corrupt blob quarantined");
    Some(target)
}
