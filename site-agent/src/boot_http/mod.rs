//! The boot HTTP server's connection handling: an HTTP/1.1 loop that sends
//! image blobs with sendfile(2) and hands every other request to the axum
//! router of [`crate::boot_server`].
//!
//! # Design
//!
//! Installers, iPXE and the Ironic Python Agent fetch kernels, initrds and
//! multi-gigabyte disk images here. hyper writes response bodies from user
//! space buffers, which costs a copy per byte and keeps the server well
//! below what the disk and the NIC can do, so image responses bypass it: the
//! loop parses each request head itself and, for `/images/…`, writes the
//! head and then lets the kernel copy the verified file to the socket.
//!
//! Contract: the server accepts only requests without a body, except a
//! `POST /callback/…` whose body of at most 64 KiB it reads and drops
//! (cloud-init's `phone_home` posts a form). Any other request announcing a
//! body gets 400 and the connection closes. Connections are kept alive
//! and pipelined requests are served in order. An image body that cannot
//! be sent in full closes the connection, so a client never mistakes a
//! short body for a whole one.

mod head;
mod image;
mod range;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::boot_server::{self, BootContext};
use head::{HeadError, RequestHead, read_head, response_head};
use image::{Served, image_digest, send_small, serve_image};

/// Time a connection may stay idle between requests, and the time a client
/// gets to send a whole request head.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest body the router may return; its scripts and messages are a few
/// kilobytes.
const MAX_ROUTER_BODY: usize = 1024 * 1024;

/// Largest body a `POST /callback/…` may carry. cloud-init's `phone_home`
/// posts a form of its host keys and names, a few kilobytes at most, and
/// the callback ignores it.
const MAX_CALLBACK_BODY: usize = 64 * 1024;

/// Time open connections get to finish after shutdown before they are
/// aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the boot HTTP routes on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, context: Arc<BootContext>, shutdown: CancellationToken) {
    let router = boot_server::router(context.clone());
    let mut connections = JoinSet::new();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                let connection = Connection {
                    context: context.clone(),
                    router: router.clone(),
                    peer,
                };
                let span = tracing::debug_span!("boot_http_connection", peer = %peer);
                connections.spawn(connection.run(stream, shutdown.clone()).instrument(span));
            }
            Err(error) => {
                // Accept fails for a full file table or a connection reset
                // before it was accepted; both pass, so wait and go on.
                tracing::warn!(error = %error, "accepting a boot HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// One accepted connection.
struct Connection {
    context: Arc<BootContext>,
    router: Router,
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, mut stream: TcpStream, shutdown: CancellationToken) {
        let mut buffer = Vec::new();
        loop {
            let read = tokio::select! {
                read = tokio::time::timeout(IDLE_TIMEOUT, read_head(&mut stream, &mut buffer)) => read,
                _ = shutdown.cancelled() => return,
            };
            let request = match read {
                Ok(Ok(request)) => request,
                Ok(Err(HeadError::Closed)) | Err(_) => return,
                Ok(Err(HeadError::Io(error))) => {
                    tracing::debug!(peer = %self.peer, error = %error, "reading a boot HTTP request failed");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::debug!(peer = %self.peer, error = %error, "invalid boot HTTP request");
                    let status = match error {
                        HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    let _ = write_error_and_close(&mut stream, status, &error.to_string()).await;
                    return;
                }
            };

            let mut request = request;
            if let Err(message) =
                discard_callback_body(&mut stream, &mut buffer, &mut request).await
            {
                tracing::debug!(peer = %self.peer, error = message, "discarding a callback body failed");
                let _ = write_error_and_close(&mut stream, StatusCode::BAD_REQUEST, message).await;
                return;
            }

            if !self.respond(&mut stream, request).await {
                return;
            }
        }
    }

    /// Answers one request. Returns whether the connection stays open.
    async fn respond(&self, stream: &mut TcpStream, mut request: RequestHead) -> bool {
        let started = Instant::now();
        if request.has_body() {
            let _ = write_error_and_close(
                stream,
                StatusCode::BAD_REQUEST,
                "request bodies are not accepted",
            )
            .await;
            return false;
        }

        let path = request_path(&request.target).to_string();
        let served = match image_digest(&path) {
            Some(digest) => self.serve_image_route(stream, &request, digest).await,
            None => {
                // The router's access log middleware logs these requests.
                return match self.serve_router(stream, &mut request).await {
                    Ok(()) => request.keep_alive,
                    Err(error) => {
                        tracing::debug!(peer = %self.peer, error = %error, "sending a boot HTTP response failed");
                        false
                    }
                };
            }
        };

        match served {
            Ok(served) => {
                boot_server::record_access(
                    &self.context,
                    &self.peer.to_string(),
                    &request.method,
                    &path,
                    served.status,
                    Some(served.length),
                    started.elapsed(),
                );
                match served.body_error {
                    None => request.keep_alive,
                    Some(error) => {
                        tracing::debug!(peer = %self.peer, path = %path, error = %error, "image transfer ended early");
                        false
                    }
                }
            }
            Err(error) => {
                tracing::debug!(peer = %self.peer, path = %path, error = %error, "sending an image response failed");
                false
            }
        }
    }

    async fn serve_image_route(
        &self,
        stream: &mut TcpStream,
        request: &RequestHead,
        digest: Result<rackhand_images::Sha256Digest, ()>,
    ) -> std::io::Result<Served> {
        if request.method != Method::GET && request.method != Method::HEAD {
            return send_small(
                stream,
                request,
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are allowed here\n".to_string(),
            )
            .await;
        }
        match digest {
            Ok(digest) => serve_image(&self.context, stream, request, digest).await,
            Err(()) => {
                send_small(
                    stream,
                    request,
                    StatusCode::NOT_FOUND,
                    "expected /images/<sha256>/<name>\n".to_string(),
                )
                .await
            }
        }
    }

    /// Runs the request through the router and writes its response.
    async fn serve_router(
        &self,
        stream: &mut TcpStream,
        request: &mut RequestHead,
    ) -> std::io::Result<()> {
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(request.target.as_str());
        if let Some(headers) = builder.headers_mut() {
            *headers = std::mem::take(&mut request.headers);
        }
        let routed = match builder
            .extension(ConnectInfo(self.peer))
            .body(Body::empty())
        {
            Ok(routed) => routed,
            Err(error) => {
                return write_error(
                    stream,
                    StatusCode::BAD_REQUEST,
                    &error.to_string(),
                    request.keep_alive,
                )
                .await;
            }
        };

        let response = match self.router.clone().oneshot(routed).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (mut parts, body) = response.into_parts();
        // Files the router serves (the Ironic conductor's kernels and
        // ramdisks, the iPXE binaries) announce their length and are
        // streamed; scripts and messages are buffered.
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if let Some(length) = announced.filter(|length| *length > MAX_ROUTER_BODY as u64) {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts.headers.remove(header::CONNECTION);
            let head = response_head(parts.status, &parts.headers, request.keep_alive);
            stream.write_all(&head).await?;
            if request.method == Method::HEAD {
                return Ok(());
            }
            let mut chunks = body.into_data_stream();
            let mut sent: u64 = 0;
            while let Some(chunk) = futures_util::StreamExt::next(&mut chunks).await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                sent += chunk.len() as u64;
                stream.write_all(&chunk).await?;
            }
            if sent != length {
                // The client cannot tell a short body from a complete one
                // on a kept-alive connection, so the connection ends.
                return Err(std::io::Error::other(format!(
                    "a routed body sent {sent} of its announced {length} bytes"
                )));
            }
            return Ok(());
        }
        let body = match axum::body::to_bytes(body, MAX_ROUTER_BODY).await {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(error = %error, "boot route returned an unreadable body");
                return write_error(
                    stream,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    request.keep_alive,
                )
                .await;
            }
        };

        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove(header::CONNECTION);
        if request.method != Method::HEAD || !parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut bytes = response_head(parts.status, &parts.headers, request.keep_alive);
        if request.method != Method::HEAD {
            bytes.extend_from_slice(&body);
        }
        stream.write_all(&bytes).await
    }
}

/// Returns the path of a request target in origin form (`/a?b`) or
/// absolute form (`http://host/a?b`).
fn request_path(target: &str) -> &str {
    let without_query = target.split_once('?').map_or(target, |(path, _)| path);
    match without_query.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => without_query,
    }
}

async fn write_error(
    stream: &mut TcpStream,
    status: StatusCode,
    message: &str,
    keep_alive: bool,
) -> std::io::Result<()> {
    let body = format!("{message}\n");
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut bytes = response_head(status, &headers, keep_alive);
    bytes.extend_from_slice(body.as_bytes());
    stream.write_all(&bytes).await
}

async fn write_error_and_close(
    stream: &mut TcpStream,
    status: StatusCode,
    message: &str,
) -> std::io::Result<()> {
    write_error(stream, status, message, false).await?;
    stream.shutdown().await
}

/// Reads and drops the body of a `POST /callback/…` request and removes its
/// `Content-Length`, so the request reaches the router without a body.
/// Other requests are left unchanged. Bytes read past the body (a pipelined
/// request) go back into `buffer`.
async fn discard_callback_body(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    request: &mut RequestHead,
) -> Result<(), &'static str> {
    if request.method != Method::POST
        || !request_path(&request.target).starts_with("/callback/")
        || !request.has_body()
    {
        return Ok(());
    }
    if request.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err("a callback body must have a Content-Length; send it without chunked encoding");
    }
    let length: usize = request
        .header(header::CONTENT_LENGTH)
        .and_then(|length| length.trim().parse().ok())
        .ok_or("invalid Content-Length")?;
    if length > MAX_CALLBACK_BODY {
        return Err("a callback body may have at most 65536 bytes");
    }

    let buffered = length.min(buffer.len());
    buffer.drain(..buffered);
    let mut remaining = length - buffered;
    let mut chunk = [0u8; 4096];
    while remaining > 0 {
        let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| "timed out reading the callback body")?
            .map_err(|_| "reading the callback body failed")?;
        if read == 0 {
            return Err("the connection closed inside the callback body");
        }
        let used = read.min(remaining);
        buffer.extend_from_slice(&chunk[used..read]);
        remaining -= used;
    }
    request.headers.remove(header::CONTENT_LENGTH);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::request_path;

    #[test]
    fn origin_form_path_drops_query() {
        assert_eq!(request_path("/callback/t?ip=1"), "/callback/t");
    }

    #[test]
    fn absolute_form_path_drops_authority() {
        assert_eq!(
            request_path("http://10.0.0.1:8080/images/x/y"),
            "/images/x/y"
        );
    }

    #[test]
    fn absolute_form_without_path_is_root() {
        assert_eq!(request_path("http://10.0.0.1:8080"), "/");
    }
}
