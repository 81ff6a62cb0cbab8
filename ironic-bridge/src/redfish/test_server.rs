//! A minimal HTTP/1.1 server on loopback that returns canned responses and
//! records each request, for the driver's unit tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Maximum connections one server accepts before it stops listening.
const MAX_CONNECTIONS: usize = 200;

/// Maximum size of a request head plus body.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Time limit for reading one request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a [`Canned::Silent`] route keeps the connection open without a
/// response.
const SILENT_HOLD: Duration = Duration::from_secs(10);

/// A response the server sends for one route.
#[derive(Debug, Clone)]
pub(crate) enum Canned {
    /// A complete response with this status, `Content-Type` and body.
    Full {
        status: u16,
        content_type: &'static str,
        body: String,
        headers: Vec<(&'static str, String)>,
    },
    /// These bytes verbatim, then the connection closes.
    Raw(Vec<u8>),
    /// No response; the connection stays open for [`SILENT_HOLD`].
    Silent,
}

impl Canned {
    pub fn json(status: u16, body: impl Into<String>) -> Canned {
        Canned::Full {
            status,
            content_type: "application/json",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn html(status: u16, body: impl Into<String>) -> Canned {
        Canned::Full {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

type Route = (&'static str, String, Canned);

/// A running server; it stops when dropped.
#[derive(Debug)]
pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server that serves `(method, path, response)` routes. Any
    /// other request gets a Redfish-style 404. A route listed several times
    /// answers with its responses in order, then repeats the last.
    pub async fn start(routes: Vec<(&'static str, &str, Canned)>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("listener has an address");
        let routes: Arc<Vec<Route>> = Arc::new(
            routes
                .into_iter()
                .map(|(method, path, canned)| (method, path.to_string(), canned))
                .collect(),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));

        let recorder = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let routes = Arc::clone(&routes);
                let recorder = Arc::clone(&recorder);
                tokio::spawn(serve(stream, routes, recorder));
            }
        });

        TestServer {
            url: format!("http://{address}"),
            requests,
            task,
        }
    }

    /// Returns `url` followed by `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Returns every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .expect("recorder lock is never poisoned")
            .clone()
    }

    /// Returns the requests with this method.
    pub fn requests_with(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.method == method)
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Responds to one request and closes the connection.
async fn serve(
    mut stream: TcpStream,
    routes: Arc<Vec<Route>>,
    recorder: Arc<Mutex<Vec<Recorded>>>,
) {
    let Ok(Some(request)) = tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await
    else {
        return;
    };
    // A route listed several times answers its n-th request with its n-th
    // response, and repeats the last one after that.
    let matching: Vec<&Canned> = routes
        .iter()
        .filter(|(method, path, _)| *method == request.method && *path == request.path)
        .map(|(_, _, canned)| canned)
        .collect();
    let earlier = recorder
        .lock()
        .expect("recorder lock is never poisoned")
        .iter()
        .filter(|seen| seen.method == request.method && seen.path == request.path)
        .count();
    let canned = matching
        .get(earlier.min(matching.len().saturating_sub(1)))
        .map(|canned| (*canned).clone())
        .unwrap_or_else(|| {
            Canned::json(
                404,
                r#"{"error":{"code":"Base.1.0.GeneralError","message":"Not found"}}"#,
            )
        });
    recorder
        .lock()
        .expect("recorder lock is never poisoned")
        .push(request);

    let bytes = match canned {
        Canned::Full {
            status,
            content_type,
            body,
            headers,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Canned\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            [head.into_bytes(), body.into_bytes()].concat()
        }
        Canned::Raw(bytes) => bytes,
        Canned::Silent => {
            tokio::time::sleep(SILENT_HOLD).await;
            return;
        }
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

/// Reads one request head and its `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position;
        }
        if buffer.len() > MAX_REQUEST_BYTES {
            return None;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };

    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);

    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length.min(MAX_REQUEST_BYTES) {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }

    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}
