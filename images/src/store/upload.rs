//! Uploads: files that arrive in pieces (an HTTP request body) and reach
//! the store only once complete and accepted by the caller.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use ring::digest::{Context, SHA256};

use super::{Layout, StoredBlob, store_tmp_file};
use crate::digest::Sha256Digest;
use crate::error::ImageError;

/// A file being written into the store's `tmp/` folder and hashed on the
/// way. [`Upload::commit`] moves it into `blobs/`; dropping the upload
/// instead deletes the temporary file, so an upload cut short or rejected
/// leaves nothing behind.
pub struct Upload {
    layout: Arc<Layout>,
    tmp: tempfile::NamedTempFile,
    context: Context,
    size: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("path", &self.tmp.path())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub(super) fn create(layout: Arc<Layout>) -> Result<Self, ImageError> {
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&layout.tmp)
            .map_err(|error| ImageError::io("create temporary file in", &layout.tmp, error))?;
        Ok(Upload {
            layout,
            tmp,
            context: Context::new(&SHA256),
            size: 0,
        })
    }

    /// Appends `bytes` to the file and to the hash. This is a blocking write;
    /// request body chunks are small and land in the page cache.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.tmp
            .write_all(bytes)
            .map_err(|error| ImageError::io("write", self.tmp.path(), error))?;
        self.context.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Returns the number of bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the sha256 of the bytes written so far.
    pub fn digest(&self) -> Sha256Digest {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.context.clone().finish().as_ref());
        Sha256Digest(bytes)
    }

    /// Returns the temporary file's path, for checks such as a detached
    /// signature that must read the whole file before it is stored.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Syncs the file, makes it read-only and moves it into `blobs/` under
    /// its sha256. Content that is already stored (and still verifies)
    /// keeps the existing blob.
    pub async fn commit(self) -> Result<StoredBlob, ImageError> {
        let digest = self.digest();
        let size = self.size;
        let task_path = self.tmp.path().to_path_buf();
        let Upload { layout, tmp, .. } = self;
        tokio::task::spawn_blocking(move || {
            tmp.as_file()
                .sync_all()
                .and_then(|()| {
                    tmp.as_file()
                        .set_permissions(fs::Permissions::from_mode(0o444))
                })
                .map_err(|error| ImageError::io("sync", tmp.path(), error))?;
            store_tmp_file(&layout, tmp, digest, size)
        })
        .await
        .map_err(|source| ImageError::Task {
            path: task_path,
            source,
        })?
    }
}
