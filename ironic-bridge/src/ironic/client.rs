//! The HTTP side of the Ironic bridge: microversion negotiation,
//! authentication (none, HTTP basic, Keystone v3 tokens), retries of locked
//! nodes, and the decoding of Ironic's error bodies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE};
use rackhand_protocol::Secret;
use reqwest::{Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OnceCell};
use tracing::Instrument;

use super::error::IronicError;
use crate::driver::{DEFAULT_TIMEOUT, ResponseProblem};

/// The header that selects the API microversion of each request.
pub const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";

/// The oldest microversion this client speaks: 1.56 accepts a configdrive
/// as JSON (`meta_data`, `user_data`, `network_data`), which deploy sends.
pub const MIN_API_VERSION: ApiVersion = ApiVersion::new(1, 56);

/// The newest microversion this client was tested against (Ironic 39.0).
pub const MAX_API_VERSION: ApiVersion = ApiVersion::new(1, 115);

/// Microversion of `GET /v1/nodes/<id>/history`.
pub const HISTORY_API_VERSION: ApiVersion = ApiVersion::new(1, 78);

/// Microversion of `GET /v1/nodes/<id>/inventory`.
pub const INVENTORY_API_VERSION: ApiVersion = ApiVersion::new(1, 81);

/// Maximum body size read from Ironic. A node list of a large site stays far
/// below; the limit stops a broken proxy from filling memory.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Maximum length of a body excerpt or message kept in an error.
const EXCERPT_BYTES: usize = 512;

/// Attempts of one request while Ironic returns 409 "locked". The conductor
/// keeps a node's lock during a power change or a state transition, for
/// seconds on a real BMC (about 18 s after an abort, measured on Ironic 39
/// with sushy-tools). The API itself waits about 2 s before it returns 409.
const LOCKED_ATTEMPTS: u32 = 6;

/// The first delay after a 409 "locked"; it doubles up to [`LOCKED_MAX_DELAY`].
const LOCKED_FIRST_DELAY: Duration = Duration::from_millis(500);
const LOCKED_MAX_DELAY: Duration = Duration::from_secs(4);

/// An Ironic API microversion, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        ApiVersion { major, minor }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A microversion string that is not `major.minor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Ironic API version {0:?}; expected major.minor such as 1.81")]
pub struct ParseApiVersionError(pub String);

impl FromStr for ApiVersion {
    type Err = ParseApiVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseApiVersionError(s.to_string());
        let (major, minor) = s.trim().split_once('.').ok_or_else(invalid)?;
        Ok(ApiVersion {
            major: major.parse().map_err(|_| invalid())?,
            minor: minor.parse().map_err(|_| invalid())?,
        })
    }
}

/// Picks the highest microversion inside both ranges, or `None` when they do
/// not overlap.
pub fn negotiate(
    server_min: ApiVersion,
    server_max: ApiVersion,
    client_min: ApiVersion,
    client_max: ApiVersion,
) -> Option<ApiVersion> {
    let highest = server_max.min(client_max);
    (highest >= server_min && highest >= client_min).then_some(highest)
}

/// The authentication the client uses with Ironic.
///
/// `Debug` prints passwords as `[redacted]`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum IronicAuth {
    /// `auth_strategy = noauth`: no credentials at all.
    #[default]
    None,
    /// `auth_strategy = http_basic`.
    Basic { username: String, password: Secret },
    /// Keystone v3 password authentication: the client fetches a token,
    /// sends it as `X-Auth-Token`, caches it and fetches a new one once when
    /// Ironic returns 401.
    Keystone(KeystoneAuth),
}

/// Keystone v3 password credentials scoped to a project.
#[derive(Debug, Clone)]
pub struct KeystoneAuth {
    /// The identity endpoint including `/v3`, e.g. `https://keystone:5000/v3`.
    pub auth_url: String,
    pub username: String,
    pub password: Secret,
    pub user_domain: String,
    pub project: String,
    pub project_domain: String,
}

/// The Ironic API endpoint and the client's settings for it.
#[derive(Debug, Clone)]
pub struct IronicConfig {
    /// The API root, e.g. `http://ironic:6385` (a path prefix before `/v1`,
    /// as behind a proxy, is kept).
    pub url: String,
    pub auth: IronicAuth,
    /// Time limit for each request, connection and body included.
    pub timeout: Duration,
    /// PEM certificates trusted in addition to the public web roots.
    pub ca_pem: Option<String>,
    /// Caps the negotiated microversion below [`MAX_API_VERSION`], for a
    /// site that must pin an older behaviour.
    pub max_api_version: Option<ApiVersion>,
}

impl IronicConfig {
    /// Creates a configuration without credentials (`noauth`) and with the
    /// default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        IronicConfig {
            url: url.into(),
            auth: IronicAuth::None,
            timeout: DEFAULT_TIMEOUT,
            ca_pem: None,
            max_api_version: None,
        }
    }
}

/// A client of one Ironic API. Cheap to share behind an `Arc`; each call
/// names the node it is about.
#[derive(Debug)]
pub struct IronicClient {
    http: reqwest::Client,
    base: String,
    auth: IronicAuth,
    timeout: Duration,
    max_version: ApiVersion,
    version: OnceCell<ApiVersion>,
    token: Mutex<Option<Secret>>,
}

/// A complete HTTP response, body read.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    token: Option<String>,
}

impl IronicClient {
    /// Checks the configuration and builds the HTTP client. Sends nothing:
    /// the first call negotiates the microversion.
    pub fn new(config: IronicConfig) -> Result<Self, IronicError> {
        let invalid = |reason: &str| IronicError::InvalidConfig {
            node: "-".to_string(),
            url: config.url.clone(),
            reason: reason.to_string(),
        };
        let url = Url::parse(&config.url).map_err(|error| invalid(&error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials belong in the auth settings, not in the URL",
            ));
        }
        if url.query().is_some() {
            return Err(invalid("the API root takes no query"));
        }
        let max_version = config
            .max_api_version
            .unwrap_or(MAX_API_VERSION)
            .min(MAX_API_VERSION);

        let tls = crate::redfish::tls::client_config(
            &config.url,
            &config.url,
            config.ca_pem.as_deref(),
            None,
        )
        .map_err(|source| IronicError::ClientSetup {
            url: config.url.clone(),
            source: Box::new(source),
        })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            // Ironic serves every resource in place, and a redirect could carry
            // credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|source| IronicError::ClientSetup {
                url: config.url.clone(),
                source: Box::new(source),
            })?;

        Ok(IronicClient {
            http,
            base: config.url.trim_end_matches('/').to_string(),
            auth: config.auth,
            timeout: config.timeout,
            max_version,
            version: OnceCell::new(),
            token: Mutex::new(None),
        })
    }

    /// Returns the user the client authenticates as, empty without
    /// credentials.
    pub fn username(&self) -> &str {
        match &self.auth {
            IronicAuth::None => "",
            IronicAuth::Basic { username, .. } => username,
            IronicAuth::Keystone(keystone) => &keystone.username,
        }
    }

    /// Returns the API root this client talks to.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Returns the microversion used for every request, negotiating it from
    /// `GET /` on the first call: the highest version that both the server
    /// and this client support.
    pub async fn api_version(&self) -> Result<ApiVersion, IronicError> {
        self.version
            .get_or_try_init(|| self.negotiate_version())
            .await
            .copied()
    }

    async fn negotiate_version(&self) -> Result<ApiVersion, IronicError> {
        // The root endpoint accepts every version, and 1.1 is the oldest.
        let reply = self
            .exchange("-", Method::GET, "/", None, ApiVersion::new(1, 1))
            .await?;
        let url = self.url_of("/");
        if !reply.status.is_success() {
            return Err(self.status_error("-", &Method::GET, "/", &reply));
        }
        let root: serde_json::Value = self.parse_json("-", &Method::GET, "/", &reply)?;
        let range = root.get("default_version").and_then(|version| {
            let min = version.get("min_version")?.as_str()?.parse().ok()?;
            let max = version.get("version")?.as_str()?.parse().ok()?;
            Some((min, max))
        });
        let Some((server_min, server_max)) = range else {
            let problem = ResponseProblem::UnexpectedContent(
                "no default_version with min_version and version".to_string(),
            );
            return Err(self.invalid_response("-", &Method::GET, "/", problem, &reply.body));
        };

        let version = negotiate(server_min, server_max, MIN_API_VERSION, self.max_version)
            .ok_or_else(|| IronicError::NoCommonVersion {
                url: url.clone(),
                server_min: server_min.to_string(),
                server_max: server_max.to_string(),
                client_min: MIN_API_VERSION.to_string(),
                client_max: self.max_version.to_string(),
            })?;
        tracing::debug!(%url, %server_min, %server_max, %version, "negotiated ironic api version");
        Ok(version)
    }

    /// Sends a GET and parses the success body as `T`.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        node: &str,
        path: &str,
    ) -> Result<T, IronicError> {
        let reply = self.send(node, Method::GET, path, None).await?;
        self.parse_json(node, &Method::GET, path, &reply)
    }

    /// Like [`Self::get_json`], but a 404 is `None`.
    pub(crate) async fn get_optional<T: DeserializeOwned>(
        &self,
        node: &str,
        path: &str,
    ) -> Result<Option<T>, IronicError> {
        match self.get_json(node, path).await {
            Ok(value) => Ok(Some(value)),
            Err(IronicError::Api { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sends a request with an optional JSON body and returns the success
    /// reply. A 409 "locked" is retried with a bounded backoff, and with
    /// Keystone a 401 fetches a new token once.
    pub(crate) async fn send(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, IronicError> {
        let version = self.api_version().await?;
        let mut delay = LOCKED_FIRST_DELAY;
        let mut renewed_token = false;
        let mut attempt = 1;
        // Ends on success, on an error other than "locked" or a first 401,
        // or after LOCKED_ATTEMPTS attempts plus one token renewal.
        loop {
            let reply = self
                .exchange(node, method.clone(), path, body, version)
                .await?;
            if reply.status.is_success() {
                return Ok(reply);
            }

            let error = self.status_error(node, &method, path, &reply);
            if reply.status == StatusCode::UNAUTHORIZED
                && matches!(self.auth, IronicAuth::Keystone(_))
                && !renewed_token
            {
                tracing::debug!(
                    node,
                    "ironic rejected the keystone token; fetching a new one"
                );
                self.forget_token(reply.token.as_deref()).await;
                renewed_token = true;
                continue;
            }
            if reply.status == StatusCode::CONFLICT
                && is_locked(error.ironic_message())
                && attempt < LOCKED_ATTEMPTS
            {
                tracing::warn!(
                    node,
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "ironic node locked; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LOCKED_MAX_DELAY);
                attempt += 1;
                continue;
            }
            return Err(error);
        }
    }

    /// Runs one request inside a debug span, with the timeout over the whole
    /// exchange.
    async fn exchange(
        &self,
        node: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        version: ApiVersion,
    ) -> Result<Reply, IronicError> {
        let url = self.url_of(path);
        let span = tracing::debug_span!("ironic_request", node_id = node, %url, %method);
        async {
            let exchange = self.exchange_unbounded(node, &method, &url, body, version);
            let reply = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(reply) => reply?,
                Err(_elapsed) => return Err(self.timeout_error(node, &method, &url)),
            };
            tracing::debug!(
                status = reply.status.as_u16(),
                bytes = reply.body.len(),
                "ironic response"
            );
            Ok(reply)
        }
        .instrument(span)
        .await
    }

    async fn exchange_unbounded(
        &self,
        node: &str,
        method: &Method,
        url: &str,
        body: Option<&serde_json::Value>,
        version: ApiVersion,
    ) -> Result<Reply, IronicError> {
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(VERSION_HEADER, version.to_string())
            .header(ACCEPT, "application/json");
        let mut token_used = None;
        match &self.auth {
            IronicAuth::None => {}
            IronicAuth::Basic { username, password } => {
                request = request.basic_auth(username, Some(password.expose()));
            }
            IronicAuth::Keystone(keystone) => {
                let token = self.token(node, keystone).await?;
                request = request.header("X-Auth-Token", token.expose());
                token_used = Some(token.expose().clone());
            }
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }

        let mut response = request
            .send()
            .await
            .map_err(|error| self.transport_error(node, method, url, error))?;
        let status = response.status();
        let body = self.read_body(node, &mut response, method, url).await?;
        Ok(Reply {
            status,
            body,
            token: token_used,
        })
    }

    /// Returns the cached Keystone token, fetching one when there is none.
    async fn token(&self, node: &str, keystone: &KeystoneAuth) -> Result<Secret, IronicError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            return Ok(token.clone());
        }
        let token = self.fetch_token(node, keystone).await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Drops the cached token if it is still the one that was rejected, so
    /// concurrent calls fetch one new token between them.
    async fn forget_token(&self, rejected: Option<&str>) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().map(|token| token.expose().as_str()) == rejected {
            *cached = None;
        }
    }

    async fn fetch_token(
        &self,
        node: &str,
        keystone: &KeystoneAuth,
    ) -> Result<Secret, IronicError> {
        let url = format!("{}/auth/tokens", keystone.auth_url.trim_end_matches('/'));
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": keystone.username,
                "domain": {"name": keystone.user_domain},
                "password": keystone.password.expose(),
            }}},
            "scope": {"project": {
                "name": keystone.project,
                "domain": {"name": keystone.project_domain},
            }},
        }});
        let method = Method::POST;
        let request = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body.to_string())
            .send();
        let mut response = match tokio::time::timeout(self.timeout, request).await {
            Ok(response) => {
                response.map_err(|error| self.transport_error(node, &method, &url, error))?
            }
            Err(_elapsed) => return Err(self.timeout_error(node, &method, &url)),
        };
        let status = response.status();
        let token = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = self.read_body(node, &mut response, &method, &url).await?;
        match token {
            Some(token) if status.is_success() && !token.is_empty() => {
                tracing::debug!(node_id = node, auth_url = %keystone.auth_url, "fetched keystone token");
                Ok(Secret::new(token))
            }
            _ => Err(IronicError::Authentication {
                node: node.to_string(),
                url,
                username: keystone.username.clone(),
                status: status.as_u16(),
                message: Some(
                    keystone_message(&body)
                        .map(|message| self.redact(&message))
                        .unwrap_or_else(|| "Keystone returned no X-Subject-Token".to_string()),
                ),
            }),
        }
    }

    /// Reads the body up to [`MAX_BODY_BYTES`].
    async fn read_body(
        &self,
        node: &str,
        response: &mut Response,
        method: &Method,
        url: &str,
    ) -> Result<Vec<u8>, IronicError> {
        let mut body = Vec::new();
        // Ends at the end of the body, on an error or at MAX_BODY_BYTES.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        let problem = ResponseProblem::TooLarge {
                            limit: MAX_BODY_BYTES,
                        };
                        return Err(self.invalid_at(node, method, url, problem, &body));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(error) if error.is_timeout() => {
                    return Err(self.timeout_error(node, method, url));
                }
                Err(error) => {
                    let problem = ResponseProblem::Truncated(error_chain(&error));
                    return Err(self.invalid_at(node, method, url, problem, &body));
                }
            }
        }
    }

    fn status_error(&self, node: &str, method: &Method, path: &str, reply: &Reply) -> IronicError {
        let url = self.url_of(path);
        let message = fault_message(&reply.body)
            .or_else(|| {
                let text = String::from_utf8_lossy(&reply.body);
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                (!text.is_empty()).then_some(text)
            })
            .map(|message| truncate_chars(&self.redact(&message), EXCERPT_BYTES));
        let status = reply.status.as_u16();
        if status == 401 || status == 403 {
            return IronicError::Authentication {
                node: node.to_string(),
                url,
                username: self.username().to_string(),
                status,
                message,
            };
        }
        IronicError::Api {
            node: node.to_string(),
            url,
            method: method.clone(),
            status,
            message,
        }
    }

    pub(crate) fn parse_json<T: DeserializeOwned>(
        &self,
        node: &str,
        method: &Method,
        path: &str,
        reply: &Reply,
    ) -> Result<T, IronicError> {
        if reply.body.trim_ascii_start().starts_with(b"<") {
            return Err(self.invalid_response(
                node,
                method,
                path,
                ResponseProblem::Html,
                &reply.body,
            ));
        }
        if reply.body.trim_ascii().is_empty() {
            let problem = ResponseProblem::InvalidJson("empty body".to_string());
            return Err(self.invalid_response(node, method, path, problem, &reply.body));
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
            self.invalid_response(node, method, path, problem, &reply.body)
        })
    }

    pub(crate) fn invalid_response(
        &self,
        node: &str,
        method: &Method,
        path: &str,
        problem: ResponseProblem,
        body: &[u8],
    ) -> IronicError {
        self.invalid_at(node, method, &self.url_of(path), problem, body)
    }

    fn invalid_at(
        &self,
        node: &str,
        method: &Method,
        url: &str,
        problem: ResponseProblem,
        body: &[u8],
    ) -> IronicError {
        let text = String::from_utf8_lossy(&body[..body.len().min(4 * EXCERPT_BYTES)]);
        IronicError::InvalidResponse {
            node: node.to_string(),
            url: url.to_string(),
            method: method.clone(),
            problem,
            body: truncate_chars(&self.redact(&text), EXCERPT_BYTES),
        }
    }

    fn timeout_error(&self, node: &str, method: &Method, url: &str) -> IronicError {
        IronicError::Timeout {
            node: node.to_string(),
            url: url.to_string(),
            method: method.clone(),
            timeout: self.timeout,
        }
    }

    fn transport_error(
        &self,
        node: &str,
        method: &Method,
        url: &str,
        error: reqwest::Error,
    ) -> IronicError {
        if error.is_timeout() {
            return self.timeout_error(node, method, url);
        }
        IronicError::Unreachable {
            node: node.to_string(),
            url: url.to_string(),
            source: error,
        }
    }

    /// Returns the full URL of an API path such as `/v1/nodes/x`.
    pub(crate) fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Replaces the configured password and the cached token in `text`.
    fn redact(&self, text: &str) -> String {
        let password = match &self.auth {
            IronicAuth::None => None,
            IronicAuth::Basic { password, .. } => Some(password.expose().as_str()),
            IronicAuth::Keystone(keystone) => Some(keystone.password.expose().as_str()),
        };
        match password {
            Some(password) if !password.is_empty() => text.replace(password, "[redacted]"),
            _ => text.to_string(),
        }
    }
}

/// Returns whether Ironic's message reports the node as locked by a conductor,
/// which clears by itself when the conductor finishes.
fn is_locked(message: Option<&str>) -> bool {
    message.is_some_and(|message| message.contains("is locked by host"))
}

/// Extracts `faultstring` from an Ironic error body. Ironic encodes the
/// fault as a JSON string inside `error_message`
/// (`{"error_message": "{\"faultstring\": \"...\"}"}`); older releases and
/// some proxies send the fault object itself.
pub fn fault_message(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let fault = json.get("error_message")?;
    let fault = match fault {
        serde_json::Value::String(inner) => match serde_json::from_str(inner) {
            Ok(serde_json::Value::Object(object)) => serde_json::Value::Object(object),
            // A plain string is the message itself.
            _ => return Some(inner.clone()),
        },
        other => other.clone(),
    };
    let message = fault.get("faultstring")?.as_str()?;
    Some(truncate_chars(message, EXCERPT_BYTES))
}

/// Extracts `error.message` from a Keystone error body.
fn keystone_message(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(json.get("error")?.get("message")?.as_str()?.to_string())
}

/// Percent-encodes a node name or UUID for a URL path segment.
pub(crate) fn segment(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
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

/// Formats an error and its sources as one line.
fn error_chain(error: &reqwest::Error) -> String {
    use std::error::Error as _;
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

#[cfg(test)]
mod tests;
