//! `GET|HEAD /images/<sha256>/<name>`: a verified blob of the image store,
//! sent from the verified file handle to the socket with sendfile(2).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use nix::errno::Errno;
use rackhand_images::{ImageError, Sha256Digest};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::head::{RequestHead, response_head};
use super::range::{Conditions, Selection, select};
use crate::boot_server::BootContext;

/// Most bytes handed to one sendfile call, so one call stays short.
const MAX_SENDFILE_CHUNK: usize = 64 * 1024 * 1024;

/// Time a client may leave the socket unwritable before the transfer is
/// abandoned (`SO_SNDTIMEO` during the transfer).
const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one image request, for the access log.
#[derive(Debug)]
pub(crate) struct Served {
    pub status: StatusCode,
    /// Body bytes announced in `Content-Length`.
    pub length: u64,
    /// Set when the body was not sent in full: the connection must close.
    pub body_error: Option<io::Error>,
}

/// Returns the digest of an image path, `/images/<sha256>/<name>`, or
/// `None` when `path` is not one.
pub(crate) fn image_digest(path: &str) -> Option<Result<Sha256Digest, ()>> {
    let rest = path.strip_prefix("/images/")?;
    let (digest, name) = rest.split_once('/')?;
    if name.is_empty() || name.contains('/') {
        return Some(Err(()));
    }
    Some(digest.parse().map_err(|_| ()))
}

/// Answers one image request on `stream`.
///
/// The blob is proven by [`rackhand_images::ImageStore::open_verified`]
/// before anything is sent, and the body comes from that same handle. A
/// blob that fails the check gets 404, as a missing one does.
pub(crate) async fn serve_image(
    context: &BootContext,
    stream: &mut TcpStream,
    request: &RequestHead,
    digest: Sha256Digest,
) -> io::Result<Served> {
    let verified = match context.store.open_verified(&digest).await {
        Ok(verified) => verified,
        Err(error) => {
            if matches!(error, ImageError::NotFound { .. }) {
                tracing::debug!(digest = %digest, "image file not in the store");
            } else {
                tracing::error!(digest = %digest, error = &error as &dyn std::error::Error, "refusing to serve an image file");
            }
            let body = format!("image file {digest} is not available\n");
            return send_small(stream, request, StatusCode::NOT_FOUND, body).await;
        }
    };
    let file = verified.file.into_std().await;
    let len = verified.size;

    let etag = format!("\"{digest}\"");
    let selection = select(
        len,
        &etag,
        Conditions {
            is_get: request.method == Method::GET,
            if_none_match: request.header(header::IF_NONE_MATCH),
            if_range: request.header(header::IF_RANGE),
            range: request.header(header::RANGE),
        },
    );

    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // The tag is 64 hex digits in quotes, always a valid header value.
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("a quoted hex digest is a valid header value"),
    );
    // The URL names the content, so it never changes.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );

    let (status, start, length) = match selection {
        Selection::Whole => (StatusCode::OK, 0, len),
        Selection::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                content_range(format!("bytes {start}-{end}/{len}")),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Selection::NotModified => (StatusCode::NOT_MODIFIED, 0, 0),
        Selection::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                content_range(format!("bytes */{len}")),
            );
            (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0)
        }
    };
    let has_body = matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);
    if has_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    if status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }

    stream
        .write_all(&response_head(status, &headers, request.keep_alive))
        .await?;
    let mut served = Served {
        status,
        length,
        body_error: None,
    };
    if has_body && request.method == Method::GET {
        served.body_error = send_file(stream, file, start, length).await.err();
    }
    Ok(served)
}

fn content_range(value: String) -> HeaderValue {
    HeaderValue::try_from(value).expect("a Content-Range of digits is a valid header value")
}

/// Sends `length` bytes of `file` from `offset` with sendfile(2), on the
/// blocking thread pool.
///
/// A blocking sendfile sleeps in the kernel until the socket drains, which
/// keeps a single fast client's socket busy better than waking the async
/// runtime each time the send buffer empties, and a file that is not in the
/// page cache is read off the runtime threads. A file that ends early
/// (truncated after the check) is an error, so the caller closes the
/// connection and the client sees a short body, never a wrong one.
async fn send_file(stream: &TcpStream, file: File, offset: u64, length: u64) -> io::Result<()> {
    // The duplicate shares the socket's file status flags. The connection
    // task waits for this transfer, so nothing else uses the socket while
    // it is blocking.
    let socket = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    let guard = ShutdownOnDrop(Some(socket.try_clone()?));
    let sent = tokio::task::spawn_blocking(move || {
        socket.set_nonblocking(false)?;
        socket.set_write_timeout(Some(SEND_STALL_TIMEOUT))?;
        let sent = send_file_blocking(&socket, &file, offset, length);
        // The runtime needs the socket non-blocking again. When that fails
        // the error closes the connection.
        let restored = socket
            .set_nonblocking(true)
            .and_then(|()| socket.set_write_timeout(None));
        sent.and(restored)
    })
    .await
    .map_err(io::Error::other)?;
    guard.disarm();
    sent
}

/// Shuts a socket down when dropped while armed. When the connection task
/// is aborted (at shutdown) during a transfer, this ends the blocking
/// sendfile at once, because the runtime waits for blocking tasks when it
/// stops.
struct ShutdownOnDrop(Option<std::net::TcpStream>);

impl ShutdownOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(socket) = self.0.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn send_file_blocking(
    socket: &std::net::TcpStream,
    file: &File,
    offset: u64,
    length: u64,
) -> io::Result<()> {
    let mut offset = i64::try_from(offset).map_err(io::Error::other)?;
    let mut remaining = length;

    // Each pass sends at least one byte or returns, so the loop is bounded
    // by `length`.
    while remaining > 0 {
        let chunk = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(MAX_SENDFILE_CHUNK);
        match nix::sys::sendfile::sendfile64(socket.as_fd(), file.as_fd(), Some(&mut offset), chunk)
        {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "image file ended before its verified size",
                ));
            }
            Ok(sent) => remaining -= sent as u64,
            Err(Errno::EINTR) => {}
            // A blocking socket reports EAGAIN when the send timeout expired.
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                ));
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Sends a short plain-text response (with no body for HEAD).
pub(crate) async fn send_small(
    stream: &mut TcpStream,
    request: &RequestHead,
    status: StatusCode,
    body: String,
) -> io::Result<Served> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut bytes = response_head(status, &headers, request.keep_alive);
    if request.method != Method::HEAD {
        bytes.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&bytes).await?;
    Ok(Served {
        status,
        length: body.len() as u64,
        body_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::image_digest;

    const DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn image_path_yields_digest() {
        let parsed = image_digest(&format!("/images/{DIGEST}/vmlinuz"));
        assert!(matches!(parsed, Some(Ok(_))));
    }

    #[test]
    fn image_path_without_name_is_invalid() {
        assert_eq!(image_digest(&format!("/images/{DIGEST}/")), Some(Err(())));
    }

    #[test]
    fn image_path_with_bad_digest_is_invalid() {
        assert_eq!(image_digest("/images/abc/vmlinuz"), Some(Err(())));
    }

    #[test]
    fn other_path_is_not_image() {
        assert_eq!(image_digest("/boot/52-54-00-00-00-01.ipxe"), None);
    }
}
