//! The HTTP side of the Redfish driver: one authenticated JSON request at a
//! time, and the mapping of every failure to a [`DriverError`].

use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION, RETRY_AFTER};
use rackhand_protocol::Secret;
use reqwest::{Response, StatusCode, Url, redirect};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::session::{Auth, Credentials};
use super::tls;
use crate::driver::{BmcEndpoint, DriverError, ResponseProblem};

/// Maximum body size read from a BMC. A ComputerSystem is a few KiB; the
/// limit stops a broken BMC from filling memory.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Maximum length of a body excerpt or BMC message kept in an error.
pub(crate) const EXCERPT_BYTES: usize = 512;

/// Maximum redirects followed for one request. sushy-tools 2.2.0 redirects
/// a ComputerSystem name to its UUID path with one 307.
const MAX_REDIRECTS: usize = 5;

/// Maximum `@Message.ExtendedInfo` entries copied into an error message.
const MAX_EXTENDED_INFO: usize = 4;

/// Maximum times one request is sent: the first try, a new session login
/// after a 401, and waits for `Retry-After` on 429 or 503.
const MAX_ATTEMPTS: usize = 4;

/// Longest `Retry-After` the client waits out itself on HTTP 429 or 503. A
/// longer delay is returned to the caller in [`DriverError::Http`], whose
/// retry policy spans minutes, so one step does not block for that long.
pub(crate) const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(10);

/// An authenticated JSON client for one BMC.
#[derive(Debug)]
pub(crate) struct RedfishClient {
    http: reqwest::Client,
    node: String,
    username: String,
    password: Secret,
    /// Time limit of one request. The driver raises it to the vendor's
    /// default once it has detected the vendor (see the `profile` module).
    timeout: Mutex<Duration>,
    pub(super) auth: tokio::sync::Mutex<Auth>,
}

/// A complete HTTP response, body read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub retry_after: Option<Duration>,
    pub etag: Option<String>,
    pub location: Option<String>,
    /// `X-Auth-Token`, only read from a session login response.
    pub auth_token: Option<Secret>,
    pub body: Vec<u8>,
}

/// Headers a request carries besides authentication and content type.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Extra<'a> {
    pub if_match: Option<&'a str>,
}

impl RedfishClient {
    pub fn new(endpoint: &BmcEndpoint) -> Result<Self, DriverError> {
        let tls = tls::client_config(
            &endpoint.node,
            &endpoint.url,
            endpoint.ca_pem.as_deref(),
            endpoint.fingerprint.as_deref(),
        )?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(endpoint.timeout)
            .redirect(same_origin_redirects())
            // BMCs sit on a management network reached directly; a proxy
            // from the environment would receive the BMC credentials.
            .no_proxy()
            .build()
            .map_err(|source| DriverError::ClientSetup {
                node: endpoint.node.clone(),
                source: Box::new(source),
            })?;

        Ok(RedfishClient {
            http,
            node: endpoint.node.clone(),
            username: endpoint.username.clone(),
            password: endpoint.password.clone(),
            timeout: Mutex::new(endpoint.timeout),
            auth: tokio::sync::Mutex::new(Auth::Basic),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) fn username(&self) -> &str {
        &self.username
    }

    pub(super) fn password(&self) -> &Secret {
        &self.password
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Returns the time limit of one request.
    pub fn timeout(&self) -> Duration {
        *self.timeout.lock().expect("timeout lock is never poisoned")
    }

    /// Changes the time limit of the requests sent from now on.
    pub fn set_timeout(&self, timeout: Duration) {
        *self.timeout.lock().expect("timeout lock is never poisoned") = timeout;
    }

    /// Sends a GET and parses the success body as `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &Url) -> Result<T, DriverError> {
        Ok(self.get_with_etag(url).await?.0)
    }

    /// Sends a GET and parses the success body as `T`, with the resource's
    /// `ETag` header.
    pub async fn get_with_etag<T: DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<(T, Option<String>), DriverError> {
        let reply = self.send(Method::GET, url, None, Extra::default()).await?;
        let value = self.parse_json(&reply, &Method::GET, url)?;
        Ok((value, reply.etag))
    }

    /// Sends one request and returns the reply of a success status; any
    /// other status is an error.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        extra: Extra<'_>,
    ) -> Result<Reply, DriverError> {
        let reply = self.exchange(&method, url, body, extra).await?;
        self.check_status(&reply, &method, url)?;
        Ok(reply)
    }

    /// Sends a request with the current credentials. A 401 on a session
    /// token logs in again once; a 429 or 503 with a short `Retry-After` is
    /// waited out and sent again. Both are bounded by [`MAX_ATTEMPTS`].
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        extra: Extra<'_>,
    ) -> Result<Reply, DriverError> {
        let mut logged_in_again = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credentials = self.credentials().await?;
            let reply = self
                .exchange_once(method, url, body, &credentials, extra)
                .await?;
            if attempt >= MAX_ATTEMPTS {
                return Ok(reply);
            }

            if reply.status == StatusCode::UNAUTHORIZED
                && credentials.is_session()
                && !logged_in_again
            {
                tracing::debug!(node = %self.node, %url, "session token rejected; logging in again");
                self.forget_session(&credentials).await;
                logged_in_again = true;
                continue;
            }

            let throttled = matches!(
                reply.status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            match reply.retry_after {
                Some(wait) if throttled && wait <= MAX_RETRY_AFTER_WAIT => {
                    tracing::warn!(node = %self.node, %url, status = reply.status.as_u16(), wait_secs = wait.as_secs(), "BMC is busy; retrying after Retry-After");
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(reply),
            }
        }
    }

    /// Runs one request inside a debug span carrying `node` and `url`, with
    /// the client's timeout over the whole exchange.
    pub(super) async fn exchange_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        credentials: &Credentials,
        extra: Extra<'_>,
    ) -> Result<Reply, DriverError> {
        let span = tracing::debug_span!(
            "redfish_request",
            node = %self.node,
            url = %url,
            method = %method,
        );
        let timeout = self.timeout();
        async {
            let exchange = self.exchange_unbounded(method, url, body, credentials, extra);
            let reply = match tokio::time::timeout(timeout, exchange).await {
                Ok(reply) => reply?,
                Err(_elapsed) => return Err(self.timeout_error(method, url)),
            };
            tracing::debug!(
                status = reply.status.as_u16(),
                bytes = reply.body.len(),
                "redfish response"
            );
            Ok(reply)
        }
        .instrument(span)
        .await
    }

    async fn exchange_unbounded(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        credentials: &Credentials,
        extra: Extra<'_>,
    ) -> Result<Reply, DriverError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header(ACCEPT, "application/json");
        request = match credentials {
            Credentials::Basic => request.basic_auth(&self.username, Some(self.password.expose())),
            Credentials::Token(token) => request.header("X-Auth-Token", token.expose().as_str()),
            Credentials::None => request,
        };
        if let Some(if_match) = extra.if_match {
            request = request.header(IF_MATCH, if_match);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }

        let mut response = request
            .send()
            .await
            .map_err(|error| self.transport_error(method, url, error))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE);
        let etag = header(ETAG);
        let location = header(LOCATION);
        let auth_token = header(http::HeaderName::from_static("x-auth-token")).map(Secret::new);
        let retry_after = header(RETRY_AFTER).and_then(|value| parse_retry_after(&value));
        let body = self.read_body(&mut response, method, url).await?;

        Ok(Reply {
            status,
            content_type,
            retry_after,
            etag,
            location,
            auth_token,
            body,
        })
    }

    /// Reads the body up to [`MAX_BODY_BYTES`].
    async fn read_body(
        &self,
        response: &mut Response,
        method: &Method,
        url: &Url,
    ) -> Result<Vec<u8>, DriverError> {
        let mut body = Vec::new();
        // Ends at the end of the body, on an error or at MAX_BODY_BYTES.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(self.invalid_response(
                            method,
                            url,
                            ResponseProblem::TooLarge {
                                limit: MAX_BODY_BYTES,
                            },
                            &body,
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) if error.is_timeout() => return Err(self.timeout_error(method, url)),
                Err(error) => {
                    let problem = ResponseProblem::Truncated(error_chain(&error));
                    return Err(self.invalid_response(method, url, problem, &body));
                }
            }
        }
    }

    /// Turns a non-success status into the matching error.
    pub fn check_status(
        &self,
        reply: &Reply,
        method: &Method,
        url: &Url,
    ) -> Result<(), DriverError> {
        if reply.status.is_success() {
            return Ok(());
        }

        let message = redfish_message(&reply.body).map(|message| self.redact(&message));
        let status = reply.status.as_u16();
        // Checked before 403, because Supermicro rejects a request that
        // needs a missing licence with 403.
        if reply.status.is_client_error() && is_licence_error(&reply.body) {
            return Err(DriverError::LicenceRequired {
                node: self.node.clone(),
                url: url.to_string(),
                method: method.clone(),
                status,
                message,
            });
        }
        if reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN {
            return Err(DriverError::Authentication {
                node: self.node.clone(),
                url: url.to_string(),
                username: self.username.clone(),
                status,
                message,
            });
        }

        Err(DriverError::Http {
            node: self.node.clone(),
            url: url.to_string(),
            method: method.clone(),
            status,
            message,
            body: self.excerpt(&reply.body),
            retry_after: reply.retry_after,
        })
    }

    pub fn parse_json<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        method: &Method,
        url: &Url,
    ) -> Result<T, DriverError> {
        let is_html = reply
            .content_type
            .as_deref()
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("text/html"))
            || reply.body.trim_ascii_start().starts_with(b"<");
        if is_html {
            return Err(self.invalid_response(method, url, ResponseProblem::Html, &reply.body));
        }
        if reply.body.trim_ascii().is_empty() {
            let problem = ResponseProblem::InvalidJson("empty body".to_string());
            return Err(self.invalid_response(method, url, problem, &reply.body));
        }

        serde_json::from_slice(&reply.body).map_err(|error| {
            let detail = error.to_string();
            let problem = match error.classify() {
                serde_json::error::Category::Eof => ResponseProblem::Truncated(detail),
                serde_json::error::Category::Data => ResponseProblem::UnexpectedContent(detail),
                serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                    ResponseProblem::InvalidJson(detail)
                }
            };
            self.invalid_response(method, url, problem, &reply.body)
        })
    }

    pub fn invalid_response(
        &self,
        method: &Method,
        url: &Url,
        problem: ResponseProblem,
        body: &[u8],
    ) -> DriverError {
        DriverError::InvalidResponse {
            node: self.node.clone(),
            url: url.to_string(),
            method: method.clone(),
            problem,
            body: self.excerpt(body),
        }
    }

    fn timeout_error(&self, method: &Method, url: &Url) -> DriverError {
        DriverError::Timeout {
            node: self.node.clone(),
            url: url.to_string(),
            method: method.clone(),
            timeout: self.timeout(),
        }
    }

    fn transport_error(&self, method: &Method, url: &Url, error: reqwest::Error) -> DriverError {
        if error.is_timeout() {
            return self.timeout_error(method, url);
        }
        if is_tls_failure(&error) {
            return DriverError::TlsHandshake {
                node: self.node.clone(),
                url: url.to_string(),
                source: error,
            };
        }
        if error.is_redirect() {
            let problem = ResponseProblem::UnexpectedContent(error_chain(&error));
            return self.invalid_response(method, url, problem, b"");
        }
        DriverError::Unreachable {
            node: self.node.clone(),
            url: url.to_string(),
            source: error,
        }
    }

    /// Returns at most [`EXCERPT_BYTES`] of `body` as text, password redacted.
    fn excerpt(&self, body: &[u8]) -> String {
        // Redact before cutting, so a password that straddles the cut
        // cannot leave a prefix behind.
        let window = EXCERPT_BYTES + self.password.expose().len();
        let text = String::from_utf8_lossy(&body[..body.len().min(window)]);
        truncate_chars(&self.redact(&text), EXCERPT_BYTES)
    }

    fn redact(&self, text: &str) -> String {
        let password = self.password.expose();
        if password.is_empty() {
            text.to_string()
        } else {
            text.replace(password.as_str(), "[redacted]")
        }
    }
}

/// Follows redirects on the same scheme, host and port only, so basic-auth
/// credentials never travel to another server.
fn same_origin_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Extracts the human-readable error from a Redfish error body: the
/// `@Message.ExtendedInfo` messages, else `error.message`.
pub(crate) fn redfish_message(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = json.get("error");
    let extended = error
        .and_then(|error| error.get("@Message.ExtendedInfo"))
        .or_else(|| json.get("@Message.ExtendedInfo"))
        .and_then(serde_json::Value::as_array);

    let messages: Vec<&str> = extended
        .into_iter()
        .flatten()
        .take(MAX_EXTENDED_INFO)
        .filter_map(|info| info.get("Message").and_then(serde_json::Value::as_str))
        .collect();
    let message = if messages.is_empty() {
        error?.get("message")?.as_str()?.to_string()
    } else {
        messages.join("; ")
    };
    Some(truncate_chars(&message, EXCERPT_BYTES))
}

/// Returns whether a Redfish error body says that a BMC licence is missing:
/// a `MessageId` or message that mentions a licence, such as Supermicro's
/// `SMC.1.0.OemLicenseNotPassed` ("Not licensed to perform this request")
/// or the DMTF `License` registry's messages.
pub(crate) fn is_licence_error(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = json.get("error").unwrap_or(&json);
    let mut texts: Vec<&str> = ["code", "message"]
        .iter()
        .filter_map(|key| error.get(*key).and_then(serde_json::Value::as_str))
        .collect();
    let extended = error
        .get("@Message.ExtendedInfo")
        .and_then(serde_json::Value::as_array);
    for info in extended.into_iter().flatten().take(MAX_EXTENDED_INFO) {
        for key in ["MessageId", "Message"] {
            if let Some(text) = info.get(key).and_then(serde_json::Value::as_str) {
                texts.push(text);
            }
        }
    }
    texts.iter().any(|text| {
        let text = text.to_ascii_lowercase();
        text.contains("licens") || text.contains("licenc")
    })
}

/// Cuts `text` to at most `max_bytes` bytes on a character boundary.
fn truncate_chars(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Returns whether a rustls error (a rejected certificate, no common
/// protocol version) is in the error's source chain.
fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut source = error.source();
    // Error chains are short; the bound only guards against a cycle.
    for _ in 0..8 {
        let Some(cause) = source else { return false };
        if cause.is::<rustls::Error>() {
            return true;
        }
        // io::Error::source skips the error it wraps, and hyper wraps the
        // rustls error in two io::Errors, so look inside each layer.
        let mut wrapped = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
        for _ in 0..4 {
            let Some(inner) = wrapped else { break };
            if inner.is::<rustls::Error>() {
                return true;
            }
            wrapped = inner
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref);
        }
        source = cause.source();
    }
    false
}

/// Formats an error and its sources as one line.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Error chains are short; the bound only guards against a cycle.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Longest `Retry-After` honoured. A BMC clock set years ahead would
/// otherwise stall a task poll until its deadline.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` value (RFC 9110 section 10.2.3): a delay in
/// seconds or an HTTP date. A date in the past means no wait, and either
/// form is capped at [`MAX_RETRY_AFTER`].
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_RETRY_AFTER, parse_retry_after, redfish_message, truncate_chars};

    #[test]
    fn message_prefers_extended_info() {
        let body = br#"{"error":{"code":"Base.1.8.GeneralError","message":"A general error has occurred.",
            "@Message.ExtendedInfo":[{"MessageId":"Base.1.8.PropertyValueNotInList","Message":"Bad value."},
            {"Message":"Second."}]}}"#;
        assert_eq!(
            redfish_message(body).as_deref(),
            Some("Bad value.; Second.")
        );
    }

    #[test]
    fn message_falls_back_to_error_message() {
        let body = br#"{"error":{"code":"Base.1.0.GeneralError","message":"Power state Nmi is not supported"}}"#;
        assert_eq!(
            redfish_message(body).as_deref(),
            Some("Power state Nmi is not supported")
        );
    }

    #[test]
    fn message_absent_from_html() {
        assert_eq!(redfish_message(b"<html>oops</html>"), None);
    }

    #[test]
    fn truncate_respects_char_boundary() {
        assert_eq!(truncate_chars("aé", 2), "a");
        assert_eq!(truncate_chars("abc", 5), "abc");
    }

    #[test]
    fn retry_after_in_seconds_is_read() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_date_becomes_delay() {
        let later = std::time::SystemTime::now() + Duration::from_secs(90);
        let delay = parse_retry_after(&httpdate::fmt_http_date(later)).expect("a delay");

        assert!(delay > Duration::from_secs(80), "{delay:?}");
        assert!(delay <= Duration::from_secs(90), "{delay:?}");
    }

    #[test]
    fn retry_after_date_in_past_means_no_wait() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_is_capped_at_an_hour() {
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn garbled_retry_after_is_ignored() {
        assert_eq!(parse_retry_after("soon"), None);
    }
}
