//! The agent's preflight: what `check-config` and `run` refuse before an
//! enrollment token is spent. Needs root (SO_BINDTODEVICE).

use std::path::Path;

use rackhand_site_agent::config::Config;

fn config(dir: &Path, pxe: &str, token: bool) -> Config {
    let token_line = if token {
        "enrollment_token = \"rhe_test\"\n"
    } else {
        ""
    };
    let text = format!(
        "state_dir = \"{}\"\n[control_plane]\nurl = \"https://127.0.0.1:1\"\nca_fingerprint = \"sha256:{}\"\n{token_line}{pxe}",
        dir.join("state").display(),
        "0".repeat(64)
    );
    Config::parse(&dir.join("agent.toml"), &text).expect("the config parses")
}

fn pxe_section(netns: Option<&str>, interface: &str) -> String {
    let netns = netns
        .map(|n| format!("netns = \"{n}\"\n"))
        .unwrap_or_default();
    format!(
        "[pxe]\n{netns}interface = \"{interface}\"\nserver_ip = \"10.98.0.1\"\nprefix_len = 24\npool_start = \"10.98.0.100\"\npool_end = \"10.98.0.199\"\ntftp = false\n"
    )
}

#[test]
fn missing_netns_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(
        dir.path(),
        &pxe_section(Some("rh-no-such-ns"), "eth0"),
        true,
    );

    let error = rackhand_site_agent::preflight(&config)
        .expect_err("no namespace")
        .to_string();

    assert!(error.contains("pxe.netns"), "{error}");
}

#[test]
fn missing_interface_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), &pxe_section(None, "rhnosuch0"), true);

    let error = format!(
        "{:#}",
        rackhand_site_agent::preflight(&config).expect_err("no interface")
    );

    assert!(error.contains("pxe.interface"), "{error}");
}

#[test]
fn loopback_interface_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), &pxe_section(None, "lo"), true);

    rackhand_site_agent::preflight(&config).expect("lo exists");
}

#[test]
fn unenrolled_agent_without_token_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), "", false);

    let error = rackhand_site_agent::preflight(&config)
        .expect_err("no token")
        .to_string();

    assert!(error.contains("enrollment_token"), "{error}");
}
