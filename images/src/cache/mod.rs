//! The site agent's edge cache: images downloaded once from their upstream
//! URL into the [`ImageStore`], shared while they download, and evicted in
//! least-recently-used order under a size budget.
//!
//! # Design
//!
//! - **One download per image.** A map of flights, keyed by digest,
//!   contains each download in progress. A request for a digest that is already in
//!   flight joins that flight instead of starting another. The download runs
//!   in its own task, so it continues when the request that started it goes
//!   away.
//! - **Streaming before the end.** The flight writes into `partial/<hex>.part`
//!   and publishes the number of bytes written through a
//!   [`tokio::sync::watch`] channel. An [`ImageStream`] reads the same file
//!   up to that count and waits for more. The count only grows within one
//!   flight: the file is truncated (when the upstream ignores a `Range`
//!   request) before the first count is published.
//! - **Verified before servable.** The file reaches `blobs/<hex>` by a
//!   rename only after its sha256 matched. A mismatch deletes the partial
//!   file. Bytes that an [`ImageStream`] already handed out are not
//!   verified, which is why the stream ends with an error in that case.
//! - **Resume.** A download cut midway leaves its partial file and the
//!   upstream's validator (`ETag`, else `Last-Modified`). The next flight
//!   hashes that prefix and asks for the rest with `Range` and `If-Range`.
//!   A `200` answer (range ignored or validator changed) restarts from zero.
//! - **Two kinds of source.** An absolute URL is fetched with the cache's
//!   own client. A relative URL (a path) names a file stored on the
//!   control plane and is fetched from the [`Origin`] with the agent's client.
//! - **Budget.** Before the body is written, the flight reserves the image's
//!   size and evicts least-recently-used blobs that nobody has pinned. Open
//!   streams, [`CachedBlob`]s and flights pin their digest.
//!
//! One `ImageCache` must own a store folder: two caches (or two processes)
//! on the same folder would each start their own download and write the same
//! partial file.

mod budget;
mod download;
mod stream;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::store::{ImageStore, VerifiedBlob};
use budget::Budget;
pub use budget::Pin;
pub use stream::ImageStream;

/// Settings of an [`ImageCache`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Maximum total size of the stored blobs plus the downloads in flight,
    /// in bytes. Partial files of failed downloads are not counted. They are
    /// resumed by the next request, or removed a day after their last write
    /// when the store opens.
    pub budget_bytes: u64,
    /// Timeout for connecting to an upstream.
    pub connect_timeout: Duration,
    /// Maximum wait for the next bytes of a response before the download
    /// fails (and can be resumed by the next request).
    pub read_timeout: Duration,
}

impl CacheConfig {
    /// Returns a configuration with `budget_bytes` and timeouts of 10 s to
    /// connect and 60 s between reads.
    pub fn new(budget_bytes: u64) -> Self {
        CacheConfig {
            budget_bytes,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// The edge cache over an [`ImageStore`]. Cloning is cheap; clones share
/// the flights, pins and budget.
#[derive(Debug, Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    store: ImageStore,
    client: reqwest::Client,
    budget: Arc<Budget>,
    flights: Mutex<HashMap<Sha256Digest, Arc<Flight>>>,
    origin: OnceLock<Origin>,
}

/// The source of relative image URLs (a path such as
/// `/agent/v1/images/<sha256>`): the site's control plane, reached through
/// the agent's own client (which carries its TLS client certificate) and
/// with the headers that every request to it carries. Range requests and
/// resumes work as for any upstream.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Base URL that relative paths are appended to, such as
    /// `https://control.example:8443`.
    pub base_url: String,
    pub client: reqwest::Client,
    pub headers: reqwest::header::HeaderMap,
}

/// A download in progress, shared by every request for its digest.
#[derive(Debug)]
pub(crate) struct Flight {
    digest: Sha256Digest,
    path: PathBuf,
    /// The partial file, opened for reading and writing. Readers use
    /// positioned reads, so they share the handle without sharing an offset.
    file: Arc<File>,
    progress: watch::Sender<Progress>,
}

/// The state that a flight publishes.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    /// Bytes `0..written` of the partial file are final for this flight.
    Running { written: u64 },
    /// The download ended: the blob's size once it is stored, or the error
    /// shared by every waiter.
    Finished(Result<u64, Arc<ImageError>>),
}

/// A blob proven against its digest and pinned against eviction until this
/// value is dropped.
#[derive(Debug)]
pub struct CachedBlob {
    pub blob: VerifiedBlob,
    pub pin: Pin,
}

/// The result of looking up a digest.
enum Joined {
    Stored,
    Flight(Arc<Flight>),
}

impl ImageCache {
    /// Creates a cache over `store`, with an HTTP client on rustls (ring
    /// provider, webpki roots) that follows no redirects.
    pub fn new(store: ImageStore, config: &CacheConfig) -> Result<Self, ImageError> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();

        // No overall timeout: a multi-gigabyte image may take long, and the
        // read timeout catches an upstream that stops sending.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rackhand-images/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ImageError::Client { source })?;
        Ok(Self::with_client(store, config, client))
    }

    /// Creates a cache that downloads with `client`, for sites that need a
    /// proxy or a private CA.
    pub fn with_client(store: ImageStore, config: &CacheConfig, client: reqwest::Client) -> Self {
        let budget = Budget::load(config.budget_bytes, store.layout());
        ImageCache {
            inner: Arc::new(Inner {
                store,
                client,
                budget: Arc::new(budget),
                flights: Mutex::new(HashMap::new()),
                origin: OnceLock::new(),
            }),
        }
    }

    /// Sets the origin that relative image URLs are fetched from. Only the
    /// first call has an effect: the agent learns its control plane once,
    /// after enrollment.
    pub fn set_origin(&self, origin: Origin) {
        if self.inner.origin.set(origin).is_err() {
            tracing::debug!("image cache origin already set; keeping the first");
        }
    }

    /// Returns the store that contains the cached blobs.
    pub fn store(&self) -> &ImageStore {
        &self.inner.store
    }

    /// Makes the image `digest` servable: returns its size once it is in the
    /// store, downloading it from `upstream_url` first when it is missing.
    ///
    /// Concurrent calls for one digest share one download and all get its
    /// result. A blob already stored is not re-hashed here: a later
    /// [`ImageError::DigestMismatch`] from [`ImageCache::open_verified`]
    /// quarantines it, and the next `fetch` downloads it again.
    /// `expected_size`, when the catalogue records it, is checked
    /// against the upstream's answer and reserves budget before the body
    /// arrives. Follow with [`ImageCache::open_verified`] to serve the blob.
    pub async fn fetch(
        &self,
        digest: &Sha256Digest,
        upstream_url: &str,
        expected_size: Option<u64>,
    ) -> Result<u64, ImageError> {
        // The second attempt covers a blob evicted right after the look-up.
        for _ in 0..2 {
            match self.join(digest, upstream_url, expected_size)? {
                Joined::Stored => match self.stored_size(digest) {
                    Ok(size) => {
                        self.inner.budget.touch(digest);
                        return Ok(size);
                    }
                    Err(ImageError::NotFound { .. }) => continue,
                    Err(error) => return Err(error),
                },
                Joined::Flight(flight) => return wait_finished(&flight).await,
            }
        }
        Err(ImageError::NotFound { digest: *digest })
    }

    /// Downloads an image ahead of any boot, on an operator's request.
    /// Identical to [`ImageCache::fetch`]; returns the stored size.
    pub async fn prestage(
        &self,
        digest: &Sha256Digest,
        upstream_url: &str,
        expected_size: Option<u64>,
    ) -> Result<u64, ImageError> {
        tracing::debug!(%digest, "pre-staging image");
        self.fetch(digest, upstream_url, expected_size).await
    }

    /// Opens the stored blob `digest` with [`ImageStore::open_verified`],
    /// pins it against eviction for as long as the result lives and records
    /// the use for the LRU order.
    pub async fn open_verified(&self, digest: &Sha256Digest) -> Result<CachedBlob, ImageError> {
        let pin = self.inner.budget.pin(digest);
        let blob = self.inner.store.open_verified(digest).await?;
        self.inner.budget.touch(digest);
        Ok(CachedBlob { blob, pin })
    }

    /// Opens a stream of the image `digest`: from the verified blob when it
    /// is stored, otherwise from the download in flight (started here when
    /// none is), with bytes handed out as they arrive.
    ///
    /// A stream of a download in flight hands out bytes before they are
    /// verified. When the finished download does not match its digest (or
    /// fails otherwise), the stream's last call returns the error instead of
    /// the end. The boot server must therefore not present such a stream to
    /// firmware as a complete file before it has ended without an error:
    /// send it with chunked encoding or a length and cut the connection on
    /// the error. A caller that cannot take back what it sent calls
    /// [`ImageCache::fetch`] and then [`ImageCache::open_verified`].
    pub async fn stream(
        &self,
        digest: &Sha256Digest,
        upstream_url: &str,
        expected_size: Option<u64>,
    ) -> Result<ImageStream, ImageError> {
        // A stored blob that was evicted, or quarantined by the check, since
        // the look-up is downloaded again on the second attempt.
        let mut last_error = None;
        for _ in 0..2 {
            match self.join(digest, upstream_url, expected_size)? {
                Joined::Stored => match self.open_verified(digest).await {
                    Ok(cached) => {
                        let path = self.inner.store.blob_path(digest);
                        return Ok(ImageStream::stored(cached, path));
                    }
                    Err(
                        error @ (ImageError::NotFound { .. } | ImageError::DigestMismatch { .. }),
                    ) => {
                        tracing::debug!(%digest, error = &error as &dyn std::error::Error, "stored image unusable; downloading it again");
                        last_error = Some(error);
                    }
                    Err(error) => return Err(error),
                },
                Joined::Flight(flight) => {
                    let pin = self.inner.budget.pin(digest);
                    return Ok(ImageStream::live(flight, pin, expected_size));
                }
            }
        }
        Err(last_error.unwrap_or(ImageError::NotFound { digest: *digest }))
    }

    /// Pins `digest` against eviction until the returned guard is dropped,
    /// for callers that serve the blob by other means.
    pub fn pin(&self, digest: &Sha256Digest) -> Pin {
        self.inner.budget.pin(digest)
    }

    /// Finds the stored blob or the flight for `digest`, or starts a flight.
    ///
    /// The flight map's lock orders this against a finishing flight, which
    /// renames its blob into the store before it leaves the map: a digest
    /// that is in neither place is truly missing.
    fn join(
        &self,
        digest: &Sha256Digest,
        upstream_url: &str,
        expected_size: Option<u64>,
    ) -> Result<Joined, ImageError> {
        let mut flights = self
            .inner
            .flights
            .lock()
            .expect("no code panics while holding the flight map lock");
        if let Some(flight) = flights.get(digest) {
            return Ok(Joined::Flight(Arc::clone(flight)));
        }
        if self.inner.store.contains(digest) {
            return Ok(Joined::Stored);
        }

        let flight = Arc::new(Flight::open(
            self.inner.store.layout().partial.clone(),
            *digest,
        )?);
        flights.insert(*digest, Arc::clone(&flight));
        drop(flights);

        tracing::debug!(%digest, url = %download::redact_url(upstream_url), "starting image download");
        let span = tracing::debug_span!("image_download", %digest);
        tokio::spawn(
            download::run(
                Arc::clone(&self.inner),
                Arc::clone(&flight),
                upstream_url.to_string(),
                expected_size,
            )
            .instrument(span),
        );
        Ok(Joined::Flight(flight))
    }

    fn stored_size(&self, digest: &Sha256Digest) -> Result<u64, ImageError> {
        let path = self.inner.store.blob_path(digest);
        match std::fs::metadata(&path) {
            Ok(metadata) => Ok(metadata.len()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(ImageError::NotFound { digest: *digest })
            }
            Err(error) => Err(ImageError::io("stat", &path, error)),
        }
    }
}

impl Flight {
    /// Opens (or creates) the partial file for `digest` in `partial_dir`,
    /// keeping any bytes an earlier flight left for resuming.
    fn open(partial_dir: PathBuf, digest: Sha256Digest) -> Result<Self, ImageError> {
        let path = partial_dir.join(format!("{}.part", digest.to_hex()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| ImageError::io("open", &path, error))?;
        let (progress, _) = watch::channel(Progress::Running { written: 0 });
        Ok(Flight {
            digest,
            path,
            file: Arc::new(file),
            progress,
        })
    }

    /// Path of the file keeping the upstream's validator for a resume.
    fn validator_path(&self) -> PathBuf {
        self.path.with_extension("validator")
    }
}

/// Waits until `flight` finishes and returns its result.
async fn wait_finished(flight: &Flight) -> Result<u64, ImageError> {
    let mut progress = flight.progress.subscribe();
    let finished = progress
        .wait_for(|state| matches!(state, Progress::Finished(_)))
        .await
        .map(|state| state.clone());
    match finished {
        Ok(Progress::Finished(Ok(size))) => Ok(size),
        Ok(Progress::Finished(Err(source))) => Err(ImageError::DownloadFailed {
            digest: flight.digest,
            source,
        }),
        // The flight owns its sender and always sends `Finished` before it
        // drops, so this arm only runs if the download task panicked.
        Ok(Progress::Running { .. }) | Err(_) => Err(ImageError::DownloadFailed {
            digest: flight.digest,
            source: Arc::new(ImageError::io(
                "download into",
                &flight.path,
                std::io::Error::other("the download task ended without a result"),
            )),
        }),
    }
}
