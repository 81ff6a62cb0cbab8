//! [`ImageStream`]: an image's bytes in order, from the verified blob or
//! from a download in flight as its bytes arrive.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{CachedBlob, Flight, Pin, Progress};
use crate::error::ImageError;

/// Size of the chunks an [`ImageStream`] returns at most.
const STREAM_CHUNK_SIZE: usize = 256 * 1024;

/// A reader of one image, pinned against eviction while it lives.
///
/// Call [`ImageStream::next_chunk`] until it returns `Ok(None)`. A stream of
/// a download in flight returns an error instead of the end when the
/// download fails, including when the finished bytes do not match the
/// digest. [`super::ImageCache::stream`] says what the caller must do with
/// the bytes it already sent.
#[derive(Debug)]
pub struct ImageStream {
    source: Source,
    offset: u64,
    expected_size: Option<u64>,
    _pin: Pin,
}

#[derive(Debug)]
enum Source {
    Stored {
        file: tokio::fs::File,
        path: std::path::PathBuf,
    },
    Live {
        flight: Arc<Flight>,
        progress: watch::Receiver<Progress>,
    },
}

impl ImageStream {
    pub(crate) fn stored(cached: CachedBlob, path: std::path::PathBuf) -> Self {
        ImageStream {
            expected_size: Some(cached.blob.size),
            source: Source::Stored {
                file: cached.blob.file,
                path,
            },
            offset: 0,
            _pin: cached.pin,
        }
    }

    pub(crate) fn live(flight: Arc<Flight>, pin: Pin, expected_size: Option<u64>) -> Self {
        let progress = flight.progress.subscribe();
        ImageStream {
            source: Source::Live { flight, progress },
            offset: 0,
            expected_size,
            _pin: pin,
        }
    }

    /// Returns the image's size when known in advance: always for a stored
    /// blob, for a download only when the request gave an expected size.
    pub fn size(&self) -> Option<u64> {
        self.expected_size
    }

    /// Returns whether the stream reads a blob already verified in the
    /// store, as opposed to a download in flight.
    pub fn is_verified(&self) -> bool {
        matches!(self.source, Source::Stored { .. })
    }

    /// Returns the next bytes, waiting for a download in flight to write
    /// them, or `None` at the end of a verified image.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ImageError> {
        match &mut self.source {
            Source::Stored { file, path } => {
                let mut buffer = vec![0u8; STREAM_CHUNK_SIZE];
                let read = file
                    .read(&mut buffer)
                    .await
                    .map_err(|error| ImageError::io("read", path.as_path(), error))?;
                if read == 0 {
                    return Ok(None);
                }
                buffer.truncate(read);
                self.offset += read as u64;
                Ok(Some(buffer))
            }
            Source::Live { flight, progress } => {
                let chunk = next_live_chunk(flight, progress, self.offset).await?;
                if let Some(bytes) = &chunk {
                    self.offset += bytes.len() as u64;
                }
                Ok(chunk)
            }
        }
    }
}

/// Reads the bytes after `offset` that the flight has published, waiting
/// for more while it runs.
async fn next_live_chunk(
    flight: &Arc<Flight>,
    progress: &mut watch::Receiver<Progress>,
    offset: u64,
) -> Result<Option<Vec<u8>>, ImageError> {
    loop {
        let state = progress.borrow_and_update().clone();
        let available = match state {
            Progress::Running { written } => written,
            Progress::Finished(Ok(size)) => size,
            Progress::Finished(Err(source)) => {
                return Err(ImageError::DownloadFailed {
                    digest: flight.digest,
                    source,
                });
            }
        };

        if offset < available {
            let length = usize::try_from(available - offset)
                .unwrap_or(usize::MAX)
                .min(STREAM_CHUNK_SIZE);
            return read_at(flight, offset, length).await.map(Some);
        }
        if matches!(state, Progress::Finished(Ok(_))) {
            return Ok(None);
        }

        // This stream owns an `Arc` of the flight, which owns the sender, so
        // `changed` cannot fail while the stream lives.
        if progress.changed().await.is_err() {
            return Err(ImageError::io(
                "read",
                &flight.path,
                std::io::Error::other("the download stopped without a result"),
            ));
        }
    }
}

async fn read_at(flight: &Arc<Flight>, offset: u64, length: usize) -> Result<Vec<u8>, ImageError> {
    let file = Arc::clone(&flight.file);
    let read = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; length];
        let read = file.read_at(&mut buffer, offset)?;
        buffer.truncate(read);
        Ok::<_, std::io::Error>(buffer)
    })
    .await
    .map_err(|source| ImageError::Task {
        path: flight.path.clone(),
        source,
    })?
    .map_err(|error| ImageError::io("read", &flight.path, error))?;

    if read.is_empty() {
        // Published bytes are never removed while the flight runs; an empty
        // read means the file was truncated by a failing download or by
        // another program.
        return Err(ImageError::io(
            "read",
            &flight.path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("partial file is shorter than the {offset} bytes already published"),
            ),
        ));
    }
    Ok(read)
}
