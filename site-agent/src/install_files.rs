//! Per-order install files (kickstart, preseed, a NoCloud seed) that the
//! control plane rendered and the image step stored with the armed boot.
//!
//! `GET /install/<token>/<name>` serves a file only while the boot whose
//! one-time token is `<token>` is armed and before its deadline. An unknown
//! token gets 404 and an ended boot 410. A boot with a NoCloud seed also
//! serves an empty `vendor-data` (see [`NOCLOUD_VENDOR_DATA_FILE`]). The
//! files contain the root password hash, so they are sent with
//! `Cache-Control: no-store` and never logged, and the access log masks
//! the token.
//!
//! The control plane cannot know the boot's callback URL, so the files name
//! [`CALLBACK_URL_PLACEHOLDER`], which is replaced here when a file is sent.
//!
//! NOTE: the token also appears in the node's iPXE script, which the boot
//! server sends to any client that asks for the node's MAC, so the files
//! are as private as the provisioning network.

use std::sync::Arc;

use axum::extract::{Path, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rackhand_protocol::Secret;
use rackhand_protocol::agent::{
    CALLBACK_URL_PLACEHOLDER, InstallFile, KICKSTART_FILE, MAX_CMDLINE_NETWORK_CONFIG_BYTES,
    NOCLOUD_NETWORK_CONFIG_FILE, NOCLOUD_USER_DATA_FILE, PRESEED_FILE,
};

use crate::boot_server::BootContext;
use crate::state::now_ms;

/// Maximum length of an install file name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// NoCloud `vendor-data`, which the control plane never sends. cloud-init
/// 22.4 requests it from an http seed after `meta-data` and `user-data`,
/// and `util.read_seeded` retries a failed request 10 times a second
/// apart, so a 404 cost 10 s in a run of Debian 12's cloud-init. A boot
/// with `user-data` therefore gets an empty `vendor-data`, which cloud-init
/// treats as none.
pub const NOCLOUD_VENDOR_DATA_FILE: &str = "vendor-data";

/// Returns the URL of a boot's install file `name`, or the folder of its
/// files when `name` is empty.
pub fn install_url(base_url: &str, token: &str, name: &str) -> String {
    format!("{base_url}/install/{token}/{name}")
}

/// Checks that every file name is one URL path segment of letters, digits,
/// `.`, `_` and `-`, so it can be served and named on a kernel command line.
pub fn check_names(files: &[InstallFile]) -> Result<(), String> {
    for file in files {
        let name = &file.name;
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(format!(
                "install file name {name:?} is invalid: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', not starting with '.'; the control plane sent it, so update the control plane"
            ));
        }
    }
    Ok(())
}

/// Appends the installer's kernel argument for the install files a boot
/// has: `inst.ks=` for kickstart (Anaconda), `auto=true priority=critical
/// url=` for preseed (debian-installer), and `ds=nocloud-net;s=` for a
/// NoCloud seed. `nocloud-net` is the form cloud-init 22.x (Debian 12 ships
/// 22.4) needs for an `http://` seed; later releases still accept it.
///
/// cloud-init 22.4 fetches only `meta-data`, `user-data` and `vendor-data`
/// from an http seed (`DataSourceNoCloud` calls `util.read_seeded`), so the
/// seed's `network-config` also goes on the line as
/// `network-config=<base64>`, which cloud-init reads before any data
/// source's network configuration (`cloudinit.net.cmdline`). A
/// `network_config` longer than [`MAX_CMDLINE_NETWORK_CONFIG_BYTES`] is
/// left off; the control plane refuses to render one.
pub fn with_install_args(
    cmdline: String,
    base_url: &str,
    token: &str,
    names: &[String],
    network_config: Option<&str>,
) -> String {
    let has = |name: &str| names.iter().any(|n| n == name);
    let mut args: Vec<String> = Vec::new();
    if has(KICKSTART_FILE) {
        args.push(format!(
            "inst.ks={}",
            install_url(base_url, token, KICKSTART_FILE)
        ));
    }
    if has(PRESEED_FILE) {
        args.push(format!(
            "auto=true priority=critical url={}",
            install_url(base_url, token, PRESEED_FILE)
        ));
    }
    if has(NOCLOUD_USER_DATA_FILE) {
        args.push(format!(
            "ds=nocloud-net;s={}",
            install_url(base_url, token, "")
        ));
        match network_config {
            Some(config) if config.len() <= MAX_CMDLINE_NETWORK_CONFIG_BYTES => {
                args.push(format!(
                    "network-config={}",
                    base64::engine::general_purpose::STANDARD.encode(config)
                ));
            }
            Some(config) => {
                tracing::warn!(
                    bytes = config.len(),
                    limit = MAX_CMDLINE_NETWORK_CONFIG_BYTES,
                    "the NoCloud network-config is too long for the kernel command line; cloud-init 22.x will not apply it"
                );
            }
            None => {}
        }
    }
    if args.is_empty() {
        return cmdline;
    }
    let mut cmdline = cmdline.trim().to_string();
    for arg in args {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&arg);
    }
    cmdline
}

/// Reads a boot's install files and returns `cmdline` with their kernel
/// arguments (see [`with_install_args`]).
pub async fn install_args(
    state: &crate::state::State,
    key: &str,
    cmdline: String,
    base_url: &str,
    token: &str,
) -> Result<String, sqlx::Error> {
    let names = state.install_file_names(key).await?;
    let network_config = if names.iter().any(|name| name == NOCLOUD_NETWORK_CONFIG_FILE) {
        state.install_file(key, NOCLOUD_NETWORK_CONFIG_FILE).await?
    } else {
        None
    };
    Ok(with_install_args(
        cmdline,
        base_url,
        token,
        &names,
        network_config
            .as_ref()
            .map(|config| config.expose().as_str()),
    ))
}

/// Replaces the callback placeholder with the boot's callback URL. The URL
/// is the agent's base URL and a hex token, characters that need no quoting
/// in YAML, JSON, shell words or preseed values, so the replacement keeps
/// the escaping the control plane applied.
pub fn fill_callback(content: &str, base_url: &str, token: &str) -> String {
    content.replace(
        CALLBACK_URL_PLACEHOLDER,
        &format!("{base_url}/callback/{token}"),
    )
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

/// `GET /install/<token>/<name>`.
pub async fn serve(
    AxumState(context): AxumState<Arc<BootContext>>,
    Path((token, name)): Path<(String, String)>,
) -> Response {
    let boot = match context.state.boot_by_token(&token).await {
        Ok(Some(boot)) => boot,
        Ok(None) => return text(StatusCode::NOT_FOUND, "unknown install token"),
        Err(error) => {
            tracing::error!(error = %error, "reading the boot record failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    };
    if boot.state != "armed" || now_ms() > boot.deadline_at {
        return text(
            StatusCode::GONE,
            &format!(
                "this boot ended as {}; its install files are gone",
                boot.state
            ),
        );
    }
    let mut lookup = context
        .state
        .install_file(&boot.correlation_key, &name)
        .await;
    if name == NOCLOUD_VENDOR_DATA_FILE && matches!(lookup, Ok(None)) {
        lookup = context
            .state
            .install_file(&boot.correlation_key, NOCLOUD_USER_DATA_FILE)
            .await
            .map(|user_data| user_data.map(|_| Secret::new(String::new())));
    }
    let content = match lookup {
        Ok(Some(content)) => content,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("this boot has no install file {name:?}"),
            );
        }
        Err(error) => {
            tracing::error!(error = %error, "reading an install file failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    };

    tracing::info!(node = %boot.node_name, mac = %boot.mac, correlation_key = %boot.correlation_key, file = %name, "serving install file");
    let body = fill_callback(content.expose(), &context.base_url, &token);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackhand_protocol::Secret;

    fn file(name: &str) -> InstallFile {
        InstallFile {
            name: name.to_string(),
            content: Secret::new(String::new()),
        }
    }

    #[test]
    fn kickstart_adds_inst_ks() {
        let names = vec![KICKSTART_FILE.to_string()];
        let cmdline = with_install_args(
            "console=ttyS0".into(),
            "http://10.0.0.1:8080",
            "ab12",
            &names,
            None,
        );
        assert_eq!(
            cmdline,
            "console=ttyS0 inst.ks=http://10.0.0.1:8080/install/ab12/ks.cfg"
        );
    }

    #[test]
    fn preseed_adds_auto_url() {
        let names = vec![PRESEED_FILE.to_string()];
        let cmdline = with_install_args(String::new(), "http://10.0.0.1", "ab12", &names, None);
        assert_eq!(
            cmdline,
            "auto=true priority=critical url=http://10.0.0.1/install/ab12/preseed.cfg"
        );
    }

    #[test]
    fn nocloud_seed_adds_folder_url() {
        let names = vec![
            "meta-data".to_string(),
            "network-config".to_string(),
            NOCLOUD_USER_DATA_FILE.to_string(),
        ];
        let cmdline = with_install_args("quiet".into(), "http://10.0.0.1", "ab12", &names, None);
        assert_eq!(
            cmdline,
            "quiet ds=nocloud-net;s=http://10.0.0.1/install/ab12/"
        );
    }

    #[test]
    fn nocloud_network_config_goes_on_cmdline() {
        let names = vec![NOCLOUD_USER_DATA_FILE.to_string()];
        let config = "version: 2\n";

        let cmdline = with_install_args(
            String::new(),
            "http://10.0.0.1",
            "ab12",
            &names,
            Some(config),
        );

        assert!(
            cmdline.ends_with(" network-config=dmVyc2lvbjogMgo="),
            "{cmdline}"
        );
    }

    #[test]
    fn long_network_config_stays_off_cmdline() {
        let names = vec![NOCLOUD_USER_DATA_FILE.to_string()];
        let config = "#".repeat(MAX_CMDLINE_NETWORK_CONFIG_BYTES + 1);

        let cmdline = with_install_args(
            String::new(),
            "http://10.0.0.1",
            "ab12",
            &names,
            Some(&config),
        );

        assert!(!cmdline.contains("network-config="), "{cmdline}");
    }

    #[test]
    fn network_config_needs_nocloud_seed() {
        let names = vec![KICKSTART_FILE.to_string()];

        let cmdline = with_install_args(
            String::new(),
            "http://10.0.0.1",
            "ab12",
            &names,
            Some("version: 2\n"),
        );

        assert!(!cmdline.contains("network-config="), "{cmdline}");
    }

    #[test]
    fn no_files_keep_cmdline() {
        let cmdline = with_install_args("quiet ".into(), "http://10.0.0.1", "ab12", &[], None);
        assert_eq!(cmdline, "quiet ");
    }

    #[test]
    fn names_with_slash_are_rejected() {
        let error = check_names(&[file("../etc/passwd")]).expect_err("rejected");
        assert!(error.contains("../etc/passwd"), "{error}");
    }

    #[test]
    fn hidden_names_are_rejected() {
        assert!(check_names(&[file(".ks.cfg")]).is_err());
    }

    #[test]
    fn standard_names_are_accepted() {
        let files = [file("ks.cfg"), file("user-data"), file("meta-data")];
        assert!(check_names(&files).is_ok());
    }

    #[test]
    fn callback_placeholder_is_filled() {
        let content = format!("curl --fail '{CALLBACK_URL_PLACEHOLDER}'\n");
        let filled = fill_callback(&content, "http://10.0.0.1:8080", "ab12");
        assert_eq!(filled, "curl --fail 'http://10.0.0.1:8080/callback/ab12'\n");
    }
}
