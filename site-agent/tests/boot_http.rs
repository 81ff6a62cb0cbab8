//! The boot HTTP server on a real socket: image blobs with Range, HEAD,
//! ETag and sendfile, and the router's routes beside them.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackhand_images::{ImageStore, Sha256Digest};
use rackhand_pxe::dhcp::KnownMacs;
use rackhand_site_agent::boot_server::BootContext;
use rackhand_site_agent::site_nodes::SiteNodes;
use rackhand_site_agent::state::State;
use reqwest::StatusCode;
use reqwest::header;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Size of the test blob: over 1 MiB and not a multiple of any buffer.
const BLOB_LEN: usize = 1024 * 1024 + 4099;

struct Server {
    address: SocketAddr,
    store: ImageStore,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = ImageStore::open(&dir.path().join("store")).expect("store opens");
        let state = State::open(&dir.path().join("state"))
            .await
            .expect("state opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener binds");
        let address = listener.local_addr().expect("bound address");
        let context = Arc::new(BootContext {
            state,
            store: store.clone(),
            base_url: format!("http://{address}"),
            nodes: Arc::new(SiteNodes::new(KnownMacs::new())),
            callbacks: Arc::new(Notify::new()),
            access_log: Mutex::new(None),
            ironic_http_root: None,
            firmware_dir: Some(dir.path().join("firmware")),
            script_template: None,
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rackhand_site_agent::boot_http::serve(
            listener,
            context,
            shutdown.clone(),
        ));
        Server {
            address,
            store,
            shutdown,
            task,
            dir,
        }
    }

    /// Imports `content` and returns its digest.
    async fn import(&self, content: &[u8]) -> Sha256Digest {
        let source = self.dir.path().join("source");
        std::fs::write(&source, content).expect("source file written");
        self.store.import(&source).await.expect("import").digest
    }

    fn url(&self, digest: &Sha256Digest) -> String {
        format!("http://{}/images/{digest}/disk.img", self.address)
    }
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain HTTP still
    // needs one installed to build a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

fn header_text(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("ASCII header").to_string())
}

#[tokio::test]
async fn whole_blob_is_byte_exact_with_headers() {
    let server = Server::start().await;
    let content = pseudo_random(BLOB_LEN, 1);
    let digest = server.import(&content).await;

    let response = client().get(server.url(&digest)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_text(&response, header::CONTENT_LENGTH),
        Some(BLOB_LEN.to_string())
    );
    assert_eq!(
        header_text(&response, header::ACCEPT_RANGES).as_deref(),
        Some("bytes")
    );
    assert_eq!(
        header_text(&response, header::ETAG),
        Some(format!("\"{digest}\""))
    );
    let body = response.bytes().await.expect("body");
    assert!(body[..] == content[..], "body differs from the blob");
}

#[tokio::test]
async fn head_has_get_headers_and_no_body() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(BLOB_LEN, 2)).await;
    let get = client().get(server.url(&digest)).send().await.expect("GET");
    let head = client()
        .head(server.url(&digest))
        .send()
        .await
        .expect("HEAD");

    assert_eq!(head.status(), StatusCode::OK);
    for name in [
        header::CONTENT_LENGTH,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::CONTENT_TYPE,
        header::CACHE_CONTROL,
    ] {
        assert_eq!(
            header_text(&head, name.clone()),
            header_text(&get, name.clone()),
            "{name}"
        );
    }
    assert!(head.bytes().await.expect("HEAD body").is_empty());
}

#[tokio::test]
async fn single_ranges_return_exact_bytes() {
    let server = Server::start().await;
    let content = pseudo_random(BLOB_LEN, 3);
    let digest = server.import(&content).await;
    let len = BLOB_LEN as u64;

    let cases = [
        ("bytes=0-0", 0, 0),
        ("bytes=100-65635", 100, 65635),
        ("bytes=1048000-", 1_048_000, len - 1),
        ("bytes=-4099", len - 4099, len - 1),
        ("bytes=1000-99999999", 1000, len - 1),
    ];
    for (range, start, end) in cases {
        let response = client()
            .get(server.url(&digest))
            .header(header::RANGE, range)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header_text(&response, header::CONTENT_RANGE),
            Some(format!("bytes {start}-{end}/{len}")),
            "{range}"
        );
        let body = response.bytes().await.expect("body");
        assert!(
            body[..] == content[start as usize..=end as usize],
            "{range}: body differs"
        );
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_length() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(BLOB_LEN, 4)).await;

    let response = client()
        .get(server.url(&digest))
        .header(header::RANGE, format!("bytes={BLOB_LEN}-"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header_text(&response, header::CONTENT_RANGE),
        Some(format!("bytes */{BLOB_LEN}"))
    );
}

#[tokio::test]
async fn multiple_ranges_return_whole_blob() {
    let server = Server::start().await;
    let content = pseudo_random(BLOB_LEN, 5);
    let digest = server.import(&content).await;

    let response = client()
        .get(server.url(&digest))
        .header(header::RANGE, "bytes=0-9,100-199")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("body").len(), BLOB_LEN);
}

#[tokio::test]
async fn matching_if_none_match_is_304() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(BLOB_LEN, 6)).await;

    let response = client()
        .get(server.url(&digest))
        .header(header::IF_NONE_MATCH, format!("\"{digest}\""))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header_text(&response, header::ETAG),
        Some(format!("\"{digest}\""))
    );
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn stale_if_range_returns_whole_blob() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(BLOB_LEN, 7)).await;

    let response = client()
        .get(server.url(&digest))
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"0000\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("body").len(), BLOB_LEN);
}

#[tokio::test]
async fn matching_if_range_keeps_range() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(BLOB_LEN, 8)).await;

    let response = client()
        .get(server.url(&digest))
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, format!("\"{digest}\""))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.expect("body").len(), 10);
}

#[tokio::test]
async fn concurrent_clients_get_exact_bytes() {
    let server = Server::start().await;
    let content = Arc::new(pseudo_random(BLOB_LEN, 9));
    let digest = server.import(&content).await;

    let mut downloads = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let url = server.url(&digest);
        let content = content.clone();
        downloads.spawn(async move {
            // A client each, so every download has its own connection.
            let body = client()
                .get(url)
                .send()
                .await
                .expect("GET")
                .bytes()
                .await
                .expect("body");
            body[..] == content[..]
        });
    }
    let mut exact = 0;
    while let Some(result) = downloads.join_next().await {
        exact += usize::from(result.expect("download task"));
    }
    assert_eq!(exact, 16);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd lists")
        .count()
}

#[tokio::test]
async fn client_disconnect_mid_transfer_frees_connection() {
    let server = Server::start().await;
    // Larger than the loopback socket buffers, so the server is still
    // sending when the client goes away.
    let digest = server.import(&pseudo_random(64 * 1024 * 1024, 10)).await;
    let fds_before = open_fds();

    let address = server.address;
    let request = format!("GET /images/{digest}/disk.img HTTP/1.1\r\nHost: x\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream.write_all(request.as_bytes()).expect("send request");
        let mut start = vec![0u8; 64 * 1024];
        stream.read_exact(&mut start).expect("read the start");
    })
    .await
    .expect("client task");

    let mut fds_after = open_fds();
    for _ in 0..50 {
        if fds_after <= fds_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = open_fds();
    }
    assert!(
        fds_after <= fds_before,
        "{fds_after} fds open after the disconnect, {fds_before} before"
    );
    assert!(!server.task.is_finished(), "server stopped");

    let response = client()
        .head(server.url(&digest))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(response.status(), StatusCode::OK);
}

fn tamper(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the blob for writing");
    file.write_all(b"tampered").expect("overwrite the start");
}

#[tokio::test]
async fn tampered_blob_is_never_served() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(BLOB_LEN, 11)).await;
    tamper(&server.store.blob_path(&digest));

    for range in [None, Some("bytes=0-99")] {
        let mut request = client().get(server.url(&digest));
        if let Some(range) = range {
            request = request.header(header::RANGE, range);
        }
        let response = request.send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{range:?}");
        let body = response.bytes().await.expect("body");
        assert!(
            !body.windows(8).any(|window| window == b"tampered"),
            "{range:?}: tampered bytes were sent"
        );
    }
}

#[tokio::test]
async fn unknown_digest_is_404() {
    let server = Server::start().await;
    let digest: Sha256Digest = "00".repeat(32).parse().expect("valid digest");
    let response = client().get(server.url(&digest)).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn post_to_image_is_405() {
    let server = Server::start().await;
    let digest = server.import(&pseudo_random(1000, 12)).await;
    let response = client()
        .post(server.url(&digest))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn request_with_body_is_400() {
    let server = Server::start().await;
    let response = client()
        .get(format!(
            "http://{}/boot/52-54-00-00-00-01.ipxe",
            server.address
        ))
        .body("unexpected")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn callback_post_form_reaches_router() {
    let server = Server::start().await;
    // cloud-init's phone_home posts its values as a form.
    let response = client()
        .post(format!(
            "http://{}/callback/0123456789abcdef0123456789abcdef",
            server.address
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("instance_id=i-1&hostname=web-21&fqdn=web-21.example.net")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.text().await.expect("body");
    assert!(body.contains("unknown callback token"), "{body}");
}

#[tokio::test]
async fn callback_post_over_64_kib_is_400() {
    let server = Server::start().await;
    let response = client()
        .post(format!(
            "http://{}/callback/0123456789abcdef0123456789abcdef",
            server.address
        ))
        .body(vec![b'a'; 64 * 1024 + 1])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn callback_post_body_keeps_pipelined_request() {
    let server = Server::start().await;
    let address = server.address;
    let request = "POST /callback/0123456789abcdef0123456789abcdef HTTP/1.1\r\nContent-Length: 11\r\n\r\nhostname=a1GET /boot/52-54-00-00-00-01.ipxe HTTP/1.1\r\nConnection: close\r\n\r\n";
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        stream.write_all(request.as_bytes()).expect("send requests");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read responses");
        response
    })
    .await
    .expect("client task");

    let text = String::from_utf8_lossy(&response);
    assert_eq!(text.matches("HTTP/1.1 404").count(), 2, "{text}");
    assert!(text.contains("unknown callback token"), "{text}");
    assert!(text.contains("not a node of this site"), "{text}");
}

#[tokio::test]
async fn router_routes_share_the_connection_loop() {
    let server = Server::start().await;
    let response = client()
        .get(format!(
            "http://{}/boot/52-54-00-00-00-01.ipxe",
            server.address
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.text().await.expect("body");
    assert!(body.contains("not a node of this site"), "{body}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = Server::start().await;
    let content = pseudo_random(1000, 13);
    let digest = server.import(&content).await;

    let address = server.address;
    let request = format!(
        "GET /images/{digest}/a HTTP/1.1\r\nRange: bytes=0-4\r\n\r\nGET /images/{digest}/a HTTP/1.1\r\nRange: bytes=5-9\r\nConnection: close\r\n\r\n"
    );
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set timeout");
        stream.write_all(request.as_bytes()).expect("send requests");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read responses");
        response
    })
    .await
    .expect("client task");

    let text = String::from_utf8_lossy(&response);
    assert_eq!(text.matches("HTTP/1.1 206").count(), 2, "{text}");
    let first = text.find("bytes 0-4/1000").expect("first range");
    let second = text.find("bytes 5-9/1000").expect("second range");
    assert!(first < second, "{text}");
    assert!(response.ends_with(&content[5..10]), "second body differs");
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let server = Server::start().await;
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("server stops within 10 s")
        .expect("server task");
}

#[tokio::test]
async fn shutdown_ends_transfer_in_progress() {
    let server = Server::start().await;
    let blob_len = 64 * 1024 * 1024;
    let digest = server.import(&pseudo_random(blob_len, 14)).await;

    let address = server.address;
    let request = format!("GET /images/{digest}/disk.img HTTP/1.1\r\nHost: x\r\n\r\n");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel::<()>();
    let client = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set timeout");
        stream.write_all(request.as_bytes()).expect("send request");
        let mut start = vec![0u8; 64 * 1024];
        stream.read_exact(&mut start).expect("read the start");
        started_tx.send(()).expect("test waits");
        stopped_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server stops");

        let mut total = start.len();
        let mut buffer = vec![0u8; 1024 * 1024];
        // Bounded by the blob size plus the read timeout.
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => total += read,
            }
        }
        total
    });

    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("waiting task")
        .expect("client started reading");
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .expect("server stops within 15 s")
        .expect("server task");
    stopped_tx.send(()).expect("client waits");

    let received = client.await.expect("client task");
    assert!(
        received < blob_len,
        "the whole blob was sent after shutdown ({received} bytes)"
    );
}

#[tokio::test]
async fn large_routed_file_is_streamed_whole() {
    let server = Server::start().await;
    let firmware = server.dir.path().join("firmware");
    std::fs::create_dir_all(&firmware).expect("firmware folder");
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    std::fs::write(firmware.join("big.efi"), &bytes).expect("file");

    let url = format!("http://{}/firmware/big.efi", server.address);
    let response = client().get(&url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header_text(&response, header::CONTENT_LENGTH).as_deref(),
        Some(bytes.len().to_string().as_str())
    );
    let body = response.bytes().await.expect("body");
    assert!(body.as_ref() == bytes.as_slice(), "the body differs");
}

#[path = "boot_http/callbacks.rs"]
mod callbacks;

#[path = "boot_http/image_write.rs"]
mod image_write;
#[path = "boot_http/install_files.rs"]
mod install_files;
