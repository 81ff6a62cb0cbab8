//! The HTTP side of the mock: the accept loop (plain or TLS) and the request
//! pipeline that every request goes through: record, 503 budget, redirects,
//! faults, authentication, then the resource or operation.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::errors::{ErrorMessage, Failure, unauthorized};
use super::faults::{self, Redirect};
use super::profile::AuthMode;
use super::state::{RecordedRequest, RequestAuth, State, normalize};
use super::{jobs, operations};

/// Largest request body the mock reads.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub shutdown: watch::Receiver<bool>,
    /// `http://127.0.0.1:PORT` or `https://…`.
    pub base_url: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test;
        // the state is still usable for the rest of that test.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Accepts connections until `shutdown` turns true; each connection is
/// served by hyper's HTTP/1 server and closed on shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    // A client that rejects the certificate ends the
                    // handshake; nothing to serve then.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(TokioIo::new(stream), service, shutdown).await;
                    }
                }
                None => serve_connection(TokioIo::new(stream), service, shutdown).await,
            }
        });
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<Router>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// A request after its body was read.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub method: Method,
    /// Normalised path (no trailing slash).
    pub path: String,
    pub raw_path: String,
    pub headers: HeaderMap,
    pub body: Option<Value>,
    pub body_is_empty: bool,
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let incoming = Incoming {
        method: parts.method.clone(),
        path: normalize(parts.uri.path()),
        raw_path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body: serde_json::from_slice(&bytes).ok(),
        body_is_empty: bytes.iter().all(u8::is_ascii_whitespace),
    };
    let mut response = pipeline(&shared, parts.uri.query(), incoming).await;
    if !response.headers().contains_key("OData-Version") {
        response
            .headers_mut()
            .insert("OData-Version", HeaderValue::from_static("4.0"));
    }
    response
}

async fn pipeline(shared: &Shared, query: Option<&str>, request: Incoming) -> Response {
    // Everything up to the fault decision happens under the lock; a fault
    // that hangs must not hold it.
    let fault = {
        let mut state = shared.lock();
        let auth = request_auth(&state, &request.headers);
        state.record(RecordedRequest {
            method: request.method.to_string(),
            path: request.raw_path.clone(),
            query: query.map(str::to_string),
            auth,
            if_match: header_text(&request.headers, header::IF_MATCH.as_str()),
            content_type: header_text(&request.headers, header::CONTENT_TYPE.as_str()),
            body: request.body.clone(),
        });

        if let Some((left, secs)) = state.unavailable
            && left > 0
        {
            state.unavailable = Some((left - 1, secs));
            return faults::unavailable(state.vendor(), secs);
        }

        if let Some(response) = redirect(&state, shared, &request) {
            return response;
        }

        let method = request.method.as_str();
        let rule = state
            .faults
            .iter_mut()
            .find(|rule| rule.matches(method, &request.path));
        match rule {
            Some(rule) => {
                if let Some(left) = rule.remaining.as_mut() {
                    *left -= 1;
                }
                let fault = rule.fault.clone();
                Some((fault, state.get(&request.path), state.vendor()))
            }
            None => None,
        }
    };
    if let Some((fault, resource, vendor)) = fault {
        return faults::respond(vendor, &fault, resource.as_ref(), shared.shutdown.clone()).await;
    }

    let mut state = shared.lock();
    if let Err(failure) = authenticate(&state, &request) {
        let mut response = failure.render(state.vendor());
        if state.settings.auth != AuthMode::SessionOnly {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Redfish\""),
            );
        }
        return response;
    }
    let result = match request.method {
        Method::GET | Method::HEAD => get(&mut state, &request.path),
        Method::POST => operations::post(&mut state, &shared.base_url, &request),
        Method::PATCH => operations::patch(&mut state, &request),
        Method::DELETE => operations::delete(&mut state, &request),
        _ => Err(Failure::method_not_allowed(
            request.method.as_str(),
            &request.path,
        )),
    };
    result.unwrap_or_else(|failure| failure.render(state.vendor()))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn request_auth(state: &State, headers: &HeaderMap) -> RequestAuth {
    if let Some(token) = header_text(headers, "x-auth-token") {
        return RequestAuth::Session {
            valid: state.sessions.contains_key(&token),
        };
    }
    match basic_credentials(headers) {
        Some((username, _)) => RequestAuth::Basic { username },
        None => RequestAuth::None,
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_text(headers, header::AUTHORIZATION.as_str())?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Returns whether the path is served without credentials, as the Redfish specification
/// requires for the service root and session login.
fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => matches!(
            path,
            "/redfish" | "/redfish/v1" | "/redfish/v1/odata" | "/redfish/v1/$metadata"
        ),
        Method::POST => path == "/redfish/v1/SessionService/Sessions",
        _ => false,
    }
}

fn authenticate(state: &State, request: &Incoming) -> Result<(), Failure> {
    if is_public(&request.method, &request.path) {
        return Ok(());
    }
    let settings = &state.settings;
    if let Some(token) = header_text(&request.headers, "x-auth-token")
        && settings.auth != AuthMode::BasicOnly
        && state.sessions.contains_key(&token)
    {
        return Ok(());
    }
    if let Some((user, password)) = basic_credentials(&request.headers)
        && settings.auth != AuthMode::SessionOnly
        && user == settings.username
        && password == settings.password
    {
        return Ok(());
    }
    Err(unauthorized(state.vendor(), &request.path))
}

fn redirect(state: &State, shared: &Shared, request: &Incoming) -> Option<Response> {
    let (_, target) = state
        .redirects
        .iter()
        .find(|(from, _)| *from == request.path)?;
    let location = match target {
        Redirect::SameHost { to } => format!("{}{}", shared.base_url, to),
        Redirect::OtherHost => {
            let other = shared.base_url.replace("127.0.0.1", "127.0.0.2");
            format!("{other}{}", request.raw_path)
        }
    };
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let value = HeaderValue::from_str(&location).ok()?;
    response.headers_mut().insert(header::LOCATION, value);
    Some(response)
}

/// Builds a JSON response with the resource's `ETag`.
pub(crate) fn json_response(status: StatusCode, etag: Option<String>, body: &Value) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            "application/json;odata.metadata=minimal;charset=utf-8",
        )],
        Body::from(body.to_string()),
    )
        .into_response();
    if let Some(value) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn get(state: &mut State, path: &str) -> Result<Response, Failure> {
    if path == "/redfish" {
        return Ok(json_response(
            StatusCode::OK,
            None,
            &json!({"v1": "/redfish/v1/"}),
        ));
    }
    if state.tasks.contains_key(path) {
        return Ok(jobs::poll_task(state, path));
    }
    if state.jobs.contains_key(path) {
        jobs::advance_job(state, path);
    }
    if path == state.settings.system || path == state.settings.chassis {
        // Finishes a PoweringOn whose delay has passed.
        state.power_state();
    }
    if state.settings.vendor == super::Vendor::Supermicro
        && !state.settings.supermicro_licensed
        && path.starts_with(&format!("{}/Storage", state.settings.system))
    {
        return Err(super::errors::license_required("Storage"));
    }
    let body = state.get(path).ok_or_else(|| Failure::not_found(path))?;
    Ok(json_response(StatusCode::OK, Some(state.etag(path)), &body))
}

/// Builds the 400 failure for a body that is missing or not a JSON object.
pub(crate) fn invalid_body(request: &Incoming) -> Failure {
    Failure::bad_request(ErrorMessage::new(
        "MalformedJSON",
        format!(
            "The request body submitted to {} was malformed JSON.",
            request.path
        ),
        &[],
    ))
}
