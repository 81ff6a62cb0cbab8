//! Tests of the edge cache against a small upstream HTTP server on
//! 127.0.0.1 that can honour or ignore ranges, cut a body, hold it midway,
//! send wrong bytes and record the requests it saw.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream;
use rackhand_images::{
    CacheConfig, ImageCache, ImageError, ImageStore, Origin, Sha256Digest, rehash_all,
    run_scheduled_rehash,
};
use tokio::sync::Notify;

/// How the upstream responds to the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behavior {
    /// Honour `Range` and `If-Range`.
    Normal,
    /// Respond to every request with 200 and the whole image.
    IgnoreRanges,
    /// Send this many body bytes, then abort the connection; later
    /// requests get `Normal`.
    CutOnceAfter(usize),
    /// Send this many body bytes, then wait for `release`.
    HoldAfter(usize),
    /// Send the image with its first byte flipped.
    WrongBytes,
}

#[derive(Debug, Clone)]
struct SeenRequest {
    name: String,
    range: Option<String>,
    if_range: Option<String>,
    /// The `origin-marker` header, which only an [`Origin`]'s requests carry.
    origin_marker: Option<String>,
}

struct Upstream {
    images: HashMap<String, Vec<u8>>,
    behavior: Mutex<Behavior>,
    etag: Mutex<String>,
    seen: Mutex<Vec<SeenRequest>>,
    release: Notify,
}

impl Upstream {
    fn set_behavior(&self, behavior: Behavior) {
        *self.behavior.lock().expect("behavior lock") = behavior;
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").clone()
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

async fn serve_image(
    State(upstream): State<Arc<Upstream>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let range = header_text(&headers, header::RANGE);
    let if_range = header_text(&headers, header::IF_RANGE);
    upstream.seen.lock().expect("seen lock").push(SeenRequest {
        name: name.clone(),
        range: range.clone(),
        if_range: if_range.clone(),
        origin_marker: header_text(&headers, header::HeaderName::from_static("origin-marker")),
    });
    if name == "refused" {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"error":"the control plane's copy failed verification"}"#,
            ))
            .expect("valid response");
    }
    let Some(image) = upstream.images.get(&name) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found"))
            .expect("valid response");
    };

    let behavior = {
        let mut current = upstream.behavior.lock().expect("behavior lock");
        let now = *current;
        if matches!(now, Behavior::CutOnceAfter(_)) {
            *current = Behavior::Normal;
        }
        now
    };
    let etag = upstream.etag.lock().expect("etag lock").clone();

    let mut data = image.clone();
    if behavior == Behavior::WrongBytes {
        data[0] ^= 0xff;
    }
    let validator_matches = if_range.as_deref().is_none_or(|value| value == etag);
    let start = range
        .as_deref()
        .and_then(|value| value.strip_prefix("bytes="))
        .and_then(|value| value.strip_suffix('-'))
        .and_then(|value| value.parse::<usize>().ok())
        .filter(|_| behavior != Behavior::IgnoreRanges && validator_matches);

    let total = data.len();
    if start.is_some_and(|start| start >= total) {
        return Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{total}"))
            .body(Body::empty())
            .expect("valid response");
    }
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes");
    let body = match start {
        Some(start) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", total - 1),
            );
            data.split_off(start)
        }
        None => {
            builder = builder.status(StatusCode::OK);
            data
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, body.len());
    builder
        .body(body_with(behavior, body, upstream.clone()))
        .expect("valid response")
}

/// Builds the body in two parts, so a cut or a hold happens between them.
fn body_with(behavior: Behavior, mut body: Vec<u8>, upstream: Arc<Upstream>) -> Body {
    let split = match behavior {
        Behavior::CutOnceAfter(at) | Behavior::HoldAfter(at) => at.min(body.len()),
        _ => return Body::from(body),
    };
    let rest = body.split_off(split);
    let first = stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]);
    let second = stream::once(async move {
        if let Behavior::HoldAfter(_) = behavior {
            upstream.release.notified().await;
            Ok(Bytes::from(rest))
        } else {
            // Give the first part time to leave before the abort.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::other("connection cut by the test"))
        }
    });
    Body::from_stream(first.chain(second))
}

/// Deterministic test bytes: `size` bytes from a linear congruential
/// generator seeded with `seed`.
fn image_bytes(seed: u32, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..size)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> Sha256Digest {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    Sha256Digest(bytes)
}

/// Size of the test images: several read chunks, still small on disk.
const IMAGE_SIZE: usize = 300 * 1024;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    upstream: Arc<Upstream>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fixture {
    fn url(&self, name: &str) -> String {
        format!("{}/images/{name}", self.base)
    }

    fn image(&self, name: &str) -> &[u8] {
        &self.upstream.images[name]
    }

    fn digest(&self, name: &str) -> Sha256Digest {
        sha256(self.image(name))
    }

    fn cache(&self, budget_bytes: u64) -> ImageCache {
        let store = ImageStore::open(&self.root).expect("open store");
        ImageCache::new(store, &CacheConfig::new(budget_bytes)).expect("build cache")
    }

    fn partial_path(&self, name: &str) -> PathBuf {
        self.root
            .join("partial")
            .join(format!("{}.part", self.digest(name).to_hex()))
    }
}

/// Starts the upstream with images `a`, `b`, `c` and `d` of [`IMAGE_SIZE`].
async fn fixture() -> Fixture {
    let images = ["a", "b", "c", "d"]
        .into_iter()
        .zip(1u32..)
        .map(|(name, seed)| (name.to_string(), image_bytes(seed, IMAGE_SIZE)))
        .collect();
    let upstream = Arc::new(Upstream {
        images,
        behavior: Mutex::new(Behavior::Normal),
        etag: Mutex::new("\"v1\"".to_string()),
        seen: Mutex::new(Vec::new()),
        release: Notify::new(),
    });

    let router = Router::new()
        .route("/images/{name}", axum::routing::get(serve_image))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let address = listener.local_addr().expect("upstream address");
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("upstream serves");
    });

    let dir = tempfile::tempdir().expect("create temporary folder");
    let root = dir.path().join("store");
    Fixture {
        _dir: dir,
        root,
        upstream,
        base: format!("http://{address}"),
        server,
    }
}

/// Waits up to five seconds for `condition`.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn read_blob(cache: &ImageCache, digest: &Sha256Digest) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut cached = cache.open_verified(digest).await.expect("blob verifies");
    let mut content = Vec::new();
    cached
        .blob
        .file
        .read_to_end(&mut content)
        .await
        .expect("read blob");
    content
}

fn partial_folder_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root.join("partial"))
        .expect("list partial folder")
        .next()
        .is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_share_one_download() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream
        .set_behavior(Behavior::HoldAfter(IMAGE_SIZE / 2));

    let mut fetches = Vec::new();
    for _ in 0..8 {
        let cache = cache.clone();
        let url = fx.url("a");
        fetches.push(tokio::spawn(async move {
            cache.fetch(&digest, &url, Some(IMAGE_SIZE as u64)).await
        }));
    }
    wait_until("the upstream saw the request", || {
        !fx.upstream.seen().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fx.upstream.release.notify_one();

    for fetch in fetches {
        let size = fetch.await.expect("fetch task").expect("fetch succeeds");
        assert_eq!(size, IMAGE_SIZE as u64);
    }
    assert_eq!(fx.upstream.seen().len(), 1);
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reads_bytes_before_download_ends() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    let held_at = IMAGE_SIZE / 3;
    fx.upstream.set_behavior(Behavior::HoldAfter(held_at));

    let mut first = cache
        .stream(&digest, &fx.url("a"), Some(IMAGE_SIZE as u64))
        .await
        .expect("open stream");
    let mut second = cache
        .stream(&digest, &fx.url("a"), Some(IMAGE_SIZE as u64))
        .await
        .expect("open second stream");
    assert!(!first.is_verified());

    let mut received = Vec::new();
    while received.len() < held_at {
        let chunk = tokio::time::timeout(Duration::from_secs(5), first.next_chunk())
            .await
            .expect("bytes arrive before the upstream finishes")
            .expect("chunk reads")
            .expect("not at the end yet");
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), held_at);
    assert!(!cache.store().contains(&digest));

    fx.upstream.release.notify_one();
    while let Some(chunk) = first.next_chunk().await.expect("chunk reads") {
        received.extend_from_slice(&chunk);
    }
    let mut second_received = Vec::new();
    while let Some(chunk) = second.next_chunk().await.expect("chunk reads") {
        second_received.extend_from_slice(&chunk);
    }

    assert_eq!(received, fx.image("a"));
    assert_eq!(second_received, fx.image("a"));
    assert!(cache.store().contains(&digest));
    assert_eq!(fx.upstream.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_stored_image_is_verified() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("b");
    cache
        .prestage(&digest, &fx.url("b"), None)
        .await
        .expect("pre-stage");

    let mut stream = cache
        .stream(&digest, &fx.url("b"), None)
        .await
        .expect("open stream");
    assert!(stream.is_verified());
    assert_eq!(stream.size(), Some(IMAGE_SIZE as u64));
    let mut received = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("chunk reads") {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received, fx.image("b"));
    assert_eq!(fx.upstream.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_download_resumes_with_range() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream
        .set_behavior(Behavior::CutOnceAfter(IMAGE_SIZE / 2));

    let error = cache
        .fetch(&digest, &fx.url("a"), Some(IMAGE_SIZE as u64))
        .await
        .expect_err("the cut download fails");
    assert!(
        matches!(error, ImageError::DownloadFailed { .. }),
        "{error}"
    );
    assert!(!cache.store().contains(&digest));
    let partial_length = std::fs::metadata(fx.partial_path("a"))
        .expect("the partial file stays for a resume")
        .len();
    assert!(partial_length > 0);

    let size = cache
        .fetch(&digest, &fx.url("a"), Some(IMAGE_SIZE as u64))
        .await
        .expect("the resumed download succeeds");
    assert_eq!(size, IMAGE_SIZE as u64);

    let seen = fx.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range, Some(format!("bytes={partial_length}-")));
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
    assert!(partial_folder_is_empty(&fx.root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_range_falls_back_to_full_download() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream
        .set_behavior(Behavior::CutOnceAfter(IMAGE_SIZE / 2));
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect_err("the cut download fails");

    fx.upstream.set_behavior(Behavior::IgnoreRanges);
    let size = cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("the full download succeeds");

    assert_eq!(size, IMAGE_SIZE as u64);
    let seen = fx.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].range.is_some());
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_validator_restarts_download() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream
        .set_behavior(Behavior::CutOnceAfter(IMAGE_SIZE / 2));
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect_err("the cut download fails");

    // The upstream now names a new version, so it responds to If-Range with 200.
    *fx.upstream.etag.lock().expect("etag lock") = "\"v2\"".to_string();
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("the restarted download succeeds");

    let seen = fx.upstream.seen();
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_are_rejected_and_not_stored() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream.set_behavior(Behavior::WrongBytes);

    let error = cache
        .fetch(&digest, &fx.url("a"), Some(IMAGE_SIZE as u64))
        .await
        .expect_err("wrong bytes fail");
    let ImageError::DownloadFailed { source, .. } = &error else {
        panic!("unexpected error {error}");
    };
    let ImageError::DownloadMismatch {
        url,
        expected,
        actual,
    } = source.as_ref()
    else {
        panic!("unexpected cause {source}");
    };
    assert_eq!(url, &fx.url("a"));
    assert_eq!(expected, &digest);
    let mut wrong = fx.image("a").to_vec();
    wrong[0] ^= 0xff;
    assert_eq!(actual, &sha256(&wrong));
    let message = source.to_string();
    assert!(message.contains(&fx.url("a")), "{message}");
    assert!(message.contains(&digest.to_hex()), "{message}");
    assert!(message.contains(&actual.to_hex()), "{message}");

    assert!(!cache.store().contains(&digest));
    assert!(partial_folder_is_empty(&fx.root));
    let reopened = cache
        .open_verified(&digest)
        .await
        .expect_err("nothing stored");
    assert!(
        matches!(reopened, ImageError::NotFound { .. }),
        "{reopened}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_wrong_bytes_ends_with_error() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream.set_behavior(Behavior::WrongBytes);

    let mut stream = cache
        .stream(&digest, &fx.url("a"), None)
        .await
        .expect("open stream");
    let mut received = 0;
    let end = loop {
        match stream.next_chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };

    let error = end.expect_err("the stream must not end cleanly");
    assert!(
        matches!(error, ImageError::DownloadFailed { .. }),
        "{error}"
    );
    assert!(received <= IMAGE_SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_hides_url_token() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let url = format!("{}?token=s3cr3t", fx.url("missing"));

    let error = cache
        .fetch(&fx.digest("a"), &url, None)
        .await
        .expect_err("404 fails");

    let ImageError::DownloadFailed { source, .. } = &error else {
        panic!("unexpected error {error}");
    };
    let message = source.to_string();
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(!message.contains("s3cr3t"), "{message}");
    assert!(!format!("{error:?}").contains("s3cr3t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_includes_json_reason() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);

    let error = cache
        .fetch(&fx.digest("a"), &fx.url("refused"), None)
        .await
        .expect_err("503 fails");

    let ImageError::DownloadFailed { source, .. } = &error else {
        panic!("unexpected error {error}");
    };
    let message = source.to_string();
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(
        message.contains("the control plane's copy failed verification"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_evicts_least_recently_used() {
    let fx = fixture().await;
    let cache = fx.cache(3 * IMAGE_SIZE as u64);
    for name in ["a", "b", "c"] {
        cache
            .fetch(&fx.digest(name), &fx.url(name), None)
            .await
            .expect("fetch fits the budget");
    }
    // Use `a` again, so `b` is now the least recently used.
    drop(cache.open_verified(&fx.digest("a")).await.expect("open a"));

    cache
        .fetch(&fx.digest("d"), &fx.url("d"), Some(IMAGE_SIZE as u64))
        .await
        .expect("fetch with eviction");

    assert!(cache.store().contains(&fx.digest("a")));
    assert!(!cache.store().contains(&fx.digest("b")));
    assert!(cache.store().contains(&fx.digest("c")));
    assert!(cache.store().contains(&fx.digest("d")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_order_survives_restart() {
    let fx = fixture().await;
    let cache = fx.cache(2 * IMAGE_SIZE as u64);
    for name in ["a", "b"] {
        cache
            .fetch(&fx.digest(name), &fx.url(name), None)
            .await
            .expect("fetch fits the budget");
    }
    drop(cache.open_verified(&fx.digest("a")).await.expect("open a"));
    drop(cache);

    let reopened = fx.cache(2 * IMAGE_SIZE as u64);
    reopened
        .fetch(&fx.digest("c"), &fx.url("c"), None)
        .await
        .expect("fetch with eviction");

    assert!(reopened.store().contains(&fx.digest("a")));
    assert!(!reopened.store().contains(&fx.digest("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_blob_is_not_evicted() {
    let fx = fixture().await;
    let cache = fx.cache(2 * IMAGE_SIZE as u64);
    for name in ["a", "b"] {
        cache
            .fetch(&fx.digest(name), &fx.url(name), None)
            .await
            .expect("fetch fits the budget");
    }
    // `a` is served (pinned) while `b` is used later: `a` is the LRU blob
    // but must stay.
    let served = cache.open_verified(&fx.digest("a")).await.expect("open a");
    drop(cache.open_verified(&fx.digest("b")).await.expect("open b"));

    cache
        .fetch(&fx.digest("c"), &fx.url("c"), None)
        .await
        .expect("fetch with eviction");

    assert!(cache.store().contains(&fx.digest("a")));
    assert!(!cache.store().contains(&fx.digest("b")));
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_pinned_gives_cache_full() {
    let fx = fixture().await;
    let cache = fx.cache(IMAGE_SIZE as u64);
    cache
        .fetch(&fx.digest("a"), &fx.url("a"), None)
        .await
        .expect("fetch fits the budget");
    let _pin = cache.pin(&fx.digest("a"));

    let error = cache
        .fetch(&fx.digest("b"), &fx.url("b"), None)
        .await
        .expect_err("no room");

    let ImageError::DownloadFailed { source, .. } = &error else {
        panic!("unexpected error {error}");
    };
    assert!(
        matches!(source.as_ref(), ImageError::CacheFull { .. }),
        "{source}"
    );
    assert!(cache.store().contains(&fx.digest("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_larger_than_budget_is_rejected() {
    let fx = fixture().await;
    let cache = fx.cache(IMAGE_SIZE as u64 - 1);

    let error = cache
        .fetch(&fx.digest("a"), &fx.url("a"), Some(IMAGE_SIZE as u64))
        .await
        .expect_err("too large");

    let ImageError::DownloadFailed { source, .. } = &error else {
        panic!("unexpected error {error}");
    };
    let ImageError::LargerThanBudget { size, budget, .. } = source.as_ref() else {
        panic!("unexpected cause {source}");
    };
    assert_eq!(*size, IMAGE_SIZE as u64);
    assert_eq!(*budget, IMAGE_SIZE as u64 - 1);
    assert!(source.to_string().contains("budget"), "{source}");
    assert!(!cache.store().contains(&fx.digest("a")));
}

/// Overwrites the start of a stored blob, as a disk fault or an attacker
/// with write access would.
fn tamper(path: &Path) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod blob");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open blob for writing");
    file.write_all(b"tampered").expect("overwrite blob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rehash_quarantines_tampered_blob() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    for name in ["a", "b"] {
        cache
            .fetch(&fx.digest(name), &fx.url(name), None)
            .await
            .expect("fetch");
    }
    tamper(&cache.store().blob_path(&fx.digest("a")));

    let report = rehash_all(cache.store()).await.expect("rehash runs");

    assert_eq!(report.quarantined, vec![fx.digest("a")]);
    assert_eq!(report.verified, 1);
    assert_eq!(report.failed, 0);
    assert!(!cache.store().contains(&fx.digest("a")));
    assert!(cache.store().contains(&fx.digest("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rehash_quarantines_tampered_blob() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("fetch");
    tamper(&cache.store().blob_path(&digest));

    let shutdown = Arc::new(Notify::new());
    let runner = tokio::spawn(run_scheduled_rehash(
        cache.store().clone(),
        Duration::from_millis(50),
        {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        },
    ));
    wait_until("the tampered blob is quarantined", || {
        !cache.store().contains(&digest)
    })
    .await;
    shutdown.notify_one();
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .expect("the runner stops on shutdown")
        .expect("the runner does not panic");

    let quarantined = std::fs::read_dir(fx.root.join("quarantine"))
        .expect("list quarantine")
        .count();
    assert!(quarantined >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_of_stored_image_sends_no_request() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("c");
    cache
        .fetch(&digest, &fx.url("c"), None)
        .await
        .expect("fetch");

    cache
        .fetch(&digest, &fx.url("c"), None)
        .await
        .expect("second fetch");

    assert_eq!(fx.upstream.seen().len(), 1);
    assert_eq!(fx.upstream.seen()[0].name, "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_error_hides_url_token() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let url = format!("http://user:pa55word@{address}/images/a?token=s3cr3t");

    let error = cache
        .fetch(&fx.digest("a"), &url, None)
        .await
        .expect_err("nothing listens");

    let mut chain = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(&error);
    while let Some(cause) = current {
        chain.push(cause.to_string());
        current = cause.source();
    }
    let chain = chain.join(": ");
    assert!(chain.contains(&address.to_string()), "{chain}");
    assert!(!chain.contains("s3cr3t"), "{chain}");
    assert!(!chain.contains("pa55word"), "{chain}");
    assert!(!format!("{error:?}").contains("s3cr3t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_partial_file_is_stored_without_request() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    std::fs::write(fx.partial_path("a"), fx.image("a")).expect("write partial file");

    let size = cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("the partial file is adopted");

    assert_eq!(size, IMAGE_SIZE as u64);
    assert!(fx.upstream.seen().is_empty());
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_partial_file_restarts_after_416() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    std::fs::write(fx.partial_path("a"), vec![7u8; IMAGE_SIZE + 10]).expect("write partial file");

    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("the restarted download succeeds");

    let seen = fx.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].range, Some(format!("bytes={}-", IMAGE_SIZE + 10)));
    assert_eq!(seen[1].range, None);
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_tampered_blob_downloads_again() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("fetch");
    tamper(&cache.store().blob_path(&digest));

    let mut stream = cache
        .stream(&digest, &fx.url("a"), None)
        .await
        .expect("open stream");
    let mut received = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("chunk reads") {
        received.extend_from_slice(&chunk);
    }

    assert!(!stream.is_verified());
    assert_eq!(received, fx.image("a"));
    assert_eq!(fx.upstream.seen().len(), 2);
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_download_resumes_with_new_validator() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("a");
    fx.upstream
        .set_behavior(Behavior::CutOnceAfter(IMAGE_SIZE / 2));
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect_err("the first download is cut");

    // The validator changes, so the second request restarts from zero, and
    // is cut again.
    *fx.upstream.etag.lock().expect("etag lock") = "\"v2\"".to_string();
    fx.upstream
        .set_behavior(Behavior::CutOnceAfter(IMAGE_SIZE / 3));
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect_err("the second download is cut");
    cache
        .fetch(&digest, &fx.url("a"), None)
        .await
        .expect("the third download resumes");

    let seen = fx.upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    assert_eq!(seen[2].if_range.as_deref(), Some("\"v2\""));
    assert!(seen[2].range.is_some());
    assert_eq!(read_blob(&cache, &digest).await, fx.image("a"));
}

/// Builds a client for the plain-HTTP test upstream; reqwest needs a rustls
/// provider even when no TLS connection is made.
fn plain_http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("the client builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_url_fetches_from_origin() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let mut headers = HeaderMap::new();
    headers.insert(
        "origin-marker",
        "control-plane".parse().expect("valid header"),
    );
    cache.set_origin(Origin {
        base_url: fx.base.clone(),
        client: plain_http_client(),
        headers,
    });
    let digest = fx.digest("b");

    let size = cache
        .fetch(&digest, "/images/b", None)
        .await
        .expect("the origin serves the image");

    assert_eq!(size, IMAGE_SIZE as u64);
    assert_eq!(read_blob(&cache, &digest).await, fx.image("b"));
    let seen = fx.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].origin_marker.as_deref(), Some("control-plane"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_url_without_origin_fails() {
    let fx = fixture().await;
    let cache = fx.cache(10 * IMAGE_SIZE as u64);
    let digest = fx.digest("b");

    let error = cache
        .fetch(&digest, "/images/b", None)
        .await
        .expect_err("no origin to resolve the path against");

    let ImageError::DownloadFailed { source, .. } = &error else {
        panic!("expected a failed download, got {error:?}");
    };
    assert!(
        matches!(source.as_ref(), ImageError::NoOrigin { url, .. } if url == "/images/b"),
        "{source:?}"
    );
    assert!(fx.upstream.seen().is_empty());
    assert!(!cache.store().contains(&digest));
}
