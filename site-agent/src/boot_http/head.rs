//! Reading HTTP/1.1 request heads from a connection, and writing response
//! heads.

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest request head accepted. Boot clients send a few hundred bytes.
pub(crate) const MAX_HEAD_LEN: usize = 16 * 1024;

/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 64;

/// One parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: Method,
    /// The request target as sent (origin form, or absolute form).
    pub target: String,
    pub headers: HeaderMap,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

impl RequestHead {
    /// Returns the value of header `name` if it is present and visible
    /// ASCII.
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Returns whether the request announces a body, which this server does
    /// not accept.
    pub fn has_body(&self) -> bool {
        let length = self.header(axum::http::header::CONTENT_LENGTH);
        self.headers
            .contains_key(axum::http::header::TRANSFER_ENCODING)
            || length.is_some_and(|length| length.trim() != "0")
    }
}

/// Why no request head could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// The client closed the connection between requests.
    #[error("connection closed")]
    Closed,
    #[error("request head is longer than {MAX_HEAD_LEN} bytes")]
    TooLarge,
    #[error("invalid request head: {0}")]
    Invalid(String),
    #[error("reading the request failed")]
    Io(#[source] std::io::Error),
}

/// Reads one request head. `buffer` carries bytes already read past the
/// previous head (a pipelined request) in and out.
pub(crate) async fn read_head(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<RequestHead, HeadError> {
    loop {
        if let Some((head, used)) = parse_head(buffer)? {
            buffer.drain(..used);
            return Ok(head);
        }
        if buffer.len() >= MAX_HEAD_LEN {
            return Err(HeadError::TooLarge);
        }

        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if read == 0 {
            return if buffer.is_empty() {
                Err(HeadError::Closed)
            } else {
                Err(HeadError::Invalid(
                    "connection closed inside the head".into(),
                ))
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Parses a complete head at the start of `bytes` and returns it with its
/// length, or `None` when more bytes are needed.
fn parse_head(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let used = match request.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(HeadError::Invalid(error.to_string())),
    };

    let method = request
        .method
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .ok_or_else(|| HeadError::Invalid("invalid method".into()))?;
    let target = request.path.unwrap_or("/").to_string();
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| HeadError::Invalid(format!("invalid header name {:?}", field.name)))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| HeadError::Invalid(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }

    // HTTP/1.1 keeps the connection by default, HTTP/1.0 only on request.
    let connection = headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let keep_alive = match request.version {
        Some(1) => !connection.iter().any(|token| token == "close"),
        _ => connection.iter().any(|token| token == "keep-alive"),
    };

    let head = RequestHead {
        method,
        target,
        headers,
        keep_alive,
    };
    Ok(Some((head, used)))
}

/// Formats a response head with `Date`, the given fields and
/// `Connection: close` when the connection ends after this response.
pub(crate) fn response_head(status: StatusCode, headers: &HeaderMap, keep_alive: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    head.extend_from_slice(
        format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes(),
    );
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RequestHead {
        let (head, used) = parse_head(text.as_bytes())
            .expect("valid head")
            .expect("complete head");
        assert_eq!(used, text.len());
        head
    }

    #[test]
    fn http11_keeps_connection_by_default() {
        let head = parse("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.keep_alive);
    }

    #[test]
    fn http11_close_ends_connection() {
        let head = parse("GET /a HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!head.keep_alive);
    }

    #[test]
    fn http10_ends_connection_by_default() {
        let head = parse("GET /a HTTP/1.0\r\n\r\n");
        assert!(!head.keep_alive);
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        let parsed = parse_head(b"GET /a HTTP/1.1\r\nHost:").expect("valid so far");
        assert!(parsed.is_none());
    }

    #[test]
    fn garbage_head_is_invalid() {
        let error = parse_head(b"\x00\x01 nonsense\r\n\r\n").expect_err("invalid");
        assert!(matches!(error, HeadError::Invalid(_)), "{error}");
    }

    #[test]
    fn zero_content_length_is_no_body() {
        let head = parse("GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(!head.has_body());
    }

    #[test]
    fn chunked_request_has_body() {
        let head = parse("GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(head.has_body());
    }
}
