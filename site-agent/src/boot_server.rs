//! The boot HTTP server on the provisioning network: per-MAC iPXE scripts,
//! the verified kernel and initrd, and the booted system's callback.
//!
//! - `GET /boot/<mac>.ipxe`: the boot script while a boot is armed for the
//!   MAC (after verifying both files again), a wait-and-retry script while
//!   none is armed yet, and an `exit` script (the firmware tries its next
//!   boot device) once the boot succeeded or failed.
//! - `GET|HEAD /images/<sha256>/<name>`: a blob of the image store, served
//!   from the very file handle that was verified. [`crate::boot_http`]
//!   answers this route itself, to send the file with sendfile(2).
//! - `GET /callback/<token>?event=…&message=…&ip=…`: the installer's report
//!   on the armed boot whose one-time token matches: `started` and
//!   `progress` record a progress line, `done` (the default) completes the
//!   boot and `failed` ends it with the installer's message.
//!
//! - `GET /install/<token>/<name>`: the armed boot's per-order install
//!   files (see [`crate::install_files`]).
//!
//! Every request is written to the access log (`state_dir/access.log`),
//! with callback and install tokens masked.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State as AxumState};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rackhand_images::ImageStore;
use rackhand_protocol::MacAddr;
use rackhand_pxe::ipxe;
use tokio::sync::Notify;

use crate::image_step::verify_image;
use crate::site_nodes::SiteNodes;
use crate::state::State;

/// Seconds a node waits before asking for its script again while no boot
/// is armed for it.
const RETRY_SECONDS: u32 = 5;

/// The state the handlers share.
#[derive(Debug)]
pub struct BootContext {
    pub state: State,
    pub store: ImageStore,
    /// `http://<server_ip>:<port>`, as the netbooting machines reach us.
    pub base_url: String,
    /// The site's nodes, from the control plane's list and received tasks.
    pub nodes: Arc<SiteNodes>,
    pub callbacks: Arc<Notify>,
    pub access_log: Mutex<Option<std::fs::File>>,
    /// The Ironic conductor's `http_root`, served under `/ironic/`.
    pub ironic_http_root: Option<std::path::PathBuf>,
    /// The iPXE binaries (`pxe.tftp_root`), served under `/firmware/` for
    /// UEFI HTTP boot clients.
    pub firmware_dir: Option<std::path::PathBuf>,
    /// The operator's boot script template (`pxe.boot_script_template`).
    pub script_template: Option<Arc<crate::script_template::ScriptTemplate>>,
}

type Shared = Arc<BootContext>;

/// Builds the router of every route but `/images/…`, which
/// [`crate::boot_http::serve`] answers itself.
pub fn router(context: Shared) -> Router {
    let mut router = Router::new()
        .route("/boot/{file}", get(script))
        // cloud-init's phone_home module POSTs its form; the body is not read.
        .route("/callback/{token}", get(callback).post(callback))
        .route("/install/{token}/{name}", get(crate::install_files::serve))
        .route("/firmware/{*file}", get(firmware))
        .with_state(context.clone());
    if let Some(root) = &context.ironic_http_root {
        router = router.merge(crate::ironic_boot::router(root.clone()));
    }
    router.layer(middleware::from_fn_with_state(context, access_log))
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn script_response(result: Result<String, ipxe::IpxeError>) -> Response {
    match result {
        Ok(script) => text(StatusCode::OK, script),
        Err(error) => {
            tracing::error!(error = %error, "cannot render an iPXE script");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "#!ipxe\nexit 1\n".to_string(),
            )
        }
    }
}

async fn script(AxumState(context): AxumState<Shared>, Path(file): Path<String>) -> Response {
    let Some(mac) = file
        .strip_suffix(".ipxe")
        .and_then(|m| m.parse::<MacAddr>().ok())
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{file:?} is not <mac>.ipxe\n"),
        );
    };
    let node = context.nodes.name_of(&mac);
    let boot = match context.state.latest_boot_for(mac).await {
        Ok(boot) => boot,
        Err(error) => {
            tracing::error!(mac = %mac, error = %error, "reading the boot record failed");
            return script_response(ipxe::retry_script(
                &script_url(&context, mac),
                RETRY_SECONDS,
                "agent state unavailable; retrying",
            ));
        }
    };

    let Some(boot) = boot else {
        if node.is_none() {
            return text(
                StatusCode::NOT_FOUND,
                format!("MAC {mac} is not a node of this site\n"),
            );
        }
        let message =
            format!("Rackhand: no boot armed for {mac} yet; retrying in {RETRY_SECONDS} s");
        return script_response(ipxe::retry_script(
            &script_url(&context, mac),
            RETRY_SECONDS,
            &message,
        ));
    };

    match boot.state.as_str() {
        "armed" => {}
        "called_back" if boot.writes_disk() => {
            // The BMC may keep the network first in the boot order; the
            // installed system is on the disk.
            tracing::info!(mac = %mac, node = %boot.node_name, correlation_key = %boot.correlation_key, "installed node netbooted; telling it to boot its local disk");
            return script_response(ipxe::local_disk_script(&format!(
                "Rackhand: {} is installed; booting its local disk",
                boot.node_name
            )));
        }
        "called_back" => {
            return script_response(ipxe::exit_script(&format!(
                "Rackhand: {} is installed; trying the next boot device",
                boot.node_name
            )));
        }
        _ => {
            return script_response(ipxe::exit_script(&format!(
                "Rackhand: the last boot of {} failed; nothing to boot",
                boot.node_name
            )));
        }
    }

    // Verify again right before this boot.
    if let Err(message) = verify_image(&context.store, &boot.image_name, &boot.files()).await {
        tracing::error!(mac = %mac, node = %boot.node_name, error = %message, "image failed verification before boot; not booting it");
        match context
            .state
            .finish_boot(&boot.correlation_key, "failed", Some(&message), None)
            .await
        {
            Ok(_) => context.callbacks.notify_waiters(),
            Err(error) => tracing::error!(error = %error, "recording the failed boot failed"),
        }
        return script_response(ipxe::exit_script(
            "Rackhand: the image failed verification; not booting it",
        ));
    }

    if context.nodes.via_ironic(&mac) {
        tracing::info!(mac = %mac, node = %boot.node_name, "serving the chain to Ironic's boot script");
        return text(
            StatusCode::OK,
            crate::ironic_boot::chain_script(&context.base_url, mac),
        );
    }
    let cmdline = match crate::install_files::install_args(
        &context.state,
        &boot.correlation_key,
        boot_cmdline(&context.base_url, &boot),
        &context.base_url,
        &boot.token,
    )
    .await
    {
        Ok(cmdline) => cmdline,
        Err(error) => {
            tracing::error!(mac = %mac, error = %error, "reading the boot's install files failed");
            return script_response(ipxe::retry_script(
                &script_url(&context, mac),
                RETRY_SECONDS,
                "agent state unavailable; retrying",
            ));
        }
    };
    let kernel_url = format!("{}/images/{}/vmlinuz", context.base_url, boot.kernel_sha256);
    let initrd_url = format!(
        "{}/images/{}/initrd.img",
        context.base_url, boot.initrd_sha256
    );
    tracing::info!(mac = %mac, node = %boot.node_name, image = %boot.image_name, "serving boot script");
    if let Some(template) = &context.script_template {
        let values = crate::script_template::ScriptValues {
            kernel_url,
            initrd_url,
            initrd_name: "initrd.img".to_string(),
            cmdline,
            callback_url: format!("{}/callback/{}", context.base_url, boot.token),
            base_url: context.base_url.clone(),
            mac: mac.to_string(),
            node: boot.node_name.clone(),
            hostname: boot.hostname.clone(),
            image: boot.image_name.clone(),
            install_method: boot.install_method.clone(),
        };
        let rendered = template.render(&values).map_err(|error| error.to_string());
        return armed_script_response(&context, &boot, rendered).await;
    }
    let rendered = ipxe::boot_script(&ipxe::BootScript {
        kernel_url,
        initrds: vec![("initrd.img".to_string(), initrd_url)],
        cmdline,
    })
    .map_err(|error| error.to_string());
    armed_script_response(&context, &boot, rendered).await
}

/// Returns the response to an armed boot's script request. A script that cannot be
/// rendered fails the boot at once, so the order fails with the reason
/// instead of waiting for a callback that cannot come. The error is logged
/// and recorded with the callback token masked, because the failing value
/// is often the command line, which carries it.
async fn armed_script_response(
    context: &BootContext,
    boot: &crate::state::Boot,
    rendered: Result<String, String>,
) -> Response {
    let error = match rendered {
        Ok(script) => return text(StatusCode::OK, script),
        Err(error) => error.replace(&boot.token, "[token]"),
    };
    let message = format!(
        "the boot script of {} cannot be rendered: {error}; fix the image's kernel_args or pxe.boot_script_template, then retry the order",
        boot.node_name
    );
    tracing::error!(mac = %boot.mac, node = %boot.node_name, correlation_key = %boot.correlation_key, error = %message, "cannot render a boot script");
    match context
        .state
        .finish_boot(&boot.correlation_key, "failed", Some(&message), None)
        .await
    {
        Ok(_) => context.callbacks.notify_waiters(),
        Err(error) => tracing::error!(error = %error, "recording the failed boot failed"),
    }
    script_response(ipxe::exit_script(
        "Rackhand: the boot script cannot be rendered; see the agent log",
    ))
}

/// Serves an iPXE binary from the firmware folder. The name must be a
/// relative path without `..`, and the file must lie inside the folder.
async fn firmware(AxumState(context): AxumState<Shared>, Path(file): Path<String>) -> Response {
    let Some(dir) = &context.firmware_dir else {
        return text(
            StatusCode::NOT_FOUND,
            "no firmware folder is configured\n".to_string(),
        );
    };
    crate::ironic_boot::serve_file_in(dir, &file, "application/efi").await
}

/// Returns the kernel command line of an armed boot: the image's arguments,
/// the one-time callback URL and the host name.
pub fn boot_cmdline(base_url: &str, boot: &crate::state::Boot) -> String {
    let callback = format!("{base_url}/callback/{}", boot.token);
    let mut cmdline = boot.kernel_args.trim().to_string();
    if !cmdline.is_empty() {
        cmdline.push(' ');
    }
    cmdline.push_str(&format!(
        "rackhand.callback={callback} rackhand.hostname={}",
        boot.hostname
    ));
    if let (true, Some(digest), Some(size)) = (
        boot.install_method == rackhand_protocol::agent::InstallMethod::Image.as_str(),
        &boot.disk_sha256,
        boot.disk_size,
    ) {
        // The installer contract of an image write: download, write to the
        // first disk, check the written bytes against the digest, call back.
        cmdline.push_str(&format!(
            " rackhand.image={base_url}/images/{digest}/disk.img rackhand.image_sha256={digest} rackhand.image_size={size}"
        ));
    }
    cmdline
}

fn script_url(context: &BootContext, mac: MacAddr) -> String {
    format!("{}/boot/{}.ipxe", context.base_url, mac.to_hyphenated())
}

#[derive(Debug, serde::Deserialize)]
struct CallbackQuery {
    ip: Option<String>,
    /// `started`, `progress`, `done` (the default, for installers that only
    /// call once) or `failed`.
    event: Option<String>,
    /// A short text for `started`, `progress` and `failed`.
    message: Option<String>,
}

/// Maximum characters of an installer message kept; the rest is cut.
const MAX_CALLBACK_MESSAGE_CHARS: usize = 200;

/// Returns the installer's message on one line, cut to a bounded length.
fn callback_message(message: Option<&str>) -> String {
    let one_line: String = message
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CALLBACK_MESSAGE_CHARS)
        .collect();
    one_line.trim().to_string()
}

async fn callback(
    AxumState(context): AxumState<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let boot = match context.state.boot_by_token(&token).await {
        Ok(Some(boot)) => boot,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                "unknown callback token\n".to_string(),
            );
        }
        Err(error) => {
            tracing::error!(error = %error, "reading the boot record failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, "try again\n".to_string());
        }
    };
    let ip = query.ip.clone().unwrap_or_else(|| peer.ip().to_string());
    let message = callback_message(query.message.as_deref());
    let recorded = match query.event.as_deref().unwrap_or("done") {
        "done" => {
            context
                .state
                .finish_boot(&boot.correlation_key, "called_back", None, Some(&ip))
                .await
        }
        "failed" => {
            let error = format!(
                "the installer on {} reported a failure: {}",
                boot.node_name,
                if message.is_empty() {
                    "no message"
                } else {
                    &message
                }
            );
            tracing::warn!(node = %boot.node_name, mac = %boot.mac, correlation_key = %boot.correlation_key, error = %error, "installer reported a failure");
            context
                .state
                .finish_boot(&boot.correlation_key, "failed", Some(&error), Some(&ip))
                .await
        }
        event @ ("started" | "progress") => {
            let progress = if message.is_empty() {
                format!("installer {event}")
            } else {
                format!("installer {event}: {message}")
            };
            tracing::info!(node = %boot.node_name, correlation_key = %boot.correlation_key, progress = %progress, "installer progress");
            let result = context
                .state
                .boot_progress(&boot.correlation_key, &progress)
                .await;
            if let Ok(true) = result {
                context.callbacks.notify_waiters();
                return text(StatusCode::OK, "ok\n".to_string());
            }
            result
        }
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown event {other:?}; use started, progress, done or failed\n"),
            );
        }
    };
    match recorded {
        Ok(true) => {
            tracing::info!(node = %boot.node_name, mac = %boot.mac, ip = %ip, correlation_key = %boot.correlation_key, event = query.event.as_deref().unwrap_or("done"), "booted system called back");
            context.callbacks.notify_waiters();
            text(StatusCode::OK, "ok\n".to_string())
        }
        Ok(false) if boot.state == "called_back" && query.event.as_deref() != Some("failed") => {
            text(StatusCode::OK, "ok (already recorded)\n".to_string())
        }
        Ok(false) => text(
            StatusCode::GONE,
            format!("this boot already ended as {}\n", boot.state),
        ),
        Err(error) => {
            tracing::error!(error = %error, "recording the callback failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "try again\n".to_string())
        }
    }
}

/// Writes one access log line per request that the router answers.
async fn access_log(
    AxumState(context): AxumState<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.to_string())
        .unwrap_or_else(|| "-".to_string());
    let response = next.run(request).await;

    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    record_access(
        &context,
        &peer,
        &method,
        &path,
        response.status(),
        bytes,
        started.elapsed(),
    );
    response
}

/// Writes one access log line: time, client, method, path (callback tokens
/// masked), status, bytes announced, duration.
pub(crate) fn record_access(
    context: &BootContext,
    peer: &str,
    method: &Method,
    path: &str,
    status: StatusCode,
    bytes: Option<u64>,
    elapsed: Duration,
) {
    let path = mask_token(path);
    let bytes = bytes.map_or_else(|| "-".to_string(), |bytes| bytes.to_string());
    let line = format!(
        "{} {peer} {method} {path} {} {bytes} {}ms\n",
        crate::state::now_ms(),
        status.as_u16(),
        elapsed.as_millis()
    );
    if let Ok(mut guard) = context.access_log.lock()
        && let Some(file) = guard.as_mut()
    {
        use std::io::Write as _;
        if let Err(error) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %error, "writing the access log failed");
        }
    }
    tracing::debug!(target: "rackhand::access", peer = %peer, method = %method, path = %path, status = status.as_u16(), "boot request");
}

fn mask_token(path: &str) -> String {
    if path.starts_with("/callback/") {
        return "/callback/[token]".to_string();
    }
    match path.strip_prefix("/install/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, name)) => format!("/install/[token]/{name}"),
            None => "/install/[token]".to_string(),
        },
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_token;

    #[test]
    fn callback_tokens_are_masked() {
        assert_eq!(mask_token("/callback/abc123"), "/callback/[token]");
        assert_eq!(
            mask_token("/boot/52-54-00-00-00-01.ipxe"),
            "/boot/52-54-00-00-00-01.ipxe"
        );
    }

    #[test]
    fn install_tokens_are_masked() {
        assert_eq!(
            mask_token("/install/abc123/ks.cfg"),
            "/install/[token]/ks.cfg"
        );
        assert_eq!(mask_token("/install/abc123"), "/install/[token]");
    }
}
