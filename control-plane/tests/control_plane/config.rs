//! The example configurations shipped under `deploy/` parse and check.

use std::path::{Path, PathBuf};

use rackhand_control_plane::config::{Config, DnsConfig};

/// Maximum folder depth searched below `deploy/`.
const MAX_DEPTH: usize = 4;

/// Collects the control plane example configs below `dir`: the `.toml`
/// files whose name starts with `control-plane`, because the other examples
/// (such as `site-agent.toml`) belong to other binaries.
fn control_plane_examples(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a folder entry is readable").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if path.is_dir() && depth < MAX_DEPTH {
            control_plane_examples(&path, depth + 1, found);
        } else if name.starts_with("control-plane") && name.ends_with(".toml") {
            found.push(path);
        }
    }
}

fn deploy_dir() -> PathBuf {
    rackhand_e2e::workspace::root().join("deploy")
}

#[test]
fn every_example_config_parses() {
    let mut examples = Vec::new();
    control_plane_examples(&deploy_dir(), 0, &mut examples);

    assert!(
        !examples.is_empty(),
        "no control-plane*.toml below {}",
        deploy_dir().display()
    );
    for path in &examples {
        if let Err(error) = load_filled_in(path) {
            panic!("{}: {error}", path.display());
        }
    }
}

/// Loads an example with its `REPLACE_ME` placeholders filled in, as an
/// operator would before the first start.
fn load_filled_in(path: &Path) -> Result<Config, rackhand_control_plane::config::ConfigError> {
    let text = std::fs::read_to_string(path).expect("the example is readable");
    Config::parse(
        path,
        &text.replace("REPLACE_ME", "filled-in-by-the-operator-0123"),
    )
}

#[test]
fn unedited_example_is_rejected() {
    let path = deploy_dir().join("examples").join("control-plane.toml");

    let error = Config::load(&path)
        .expect_err("placeholders are refused")
        .to_string();

    assert!(error.contains("REPLACE_ME"), "{error}");
}

#[test]
fn main_example_sets_every_section() {
    let path = deploy_dir().join("examples").join("control-plane.toml");

    let config = load_filled_in(&path).unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(config.api.tokens.len(), 2);
    assert!(config.stripe.is_some());
    assert!(config.smtp.is_some());
    assert!(matches!(config.dns, DnsConfig::PowerDns(_)));
    assert_eq!(config.network.domain, "servers.example.net");
}

#[test]
fn required_signatures_need_a_keyring() {
    let text = "state_dir = \"state\"\n[api]\nlisten = \"127.0.0.1:0\"\n[images]\nrequire_signatures = true\n";

    let error = Config::parse(Path::new("cp.toml"), text)
        .expect_err("signatures cannot be required without keys")
        .to_string();

    assert!(error.contains("images.require_signatures"), "{error}");
    assert!(error.contains("signature_keyring"), "{error}");
}

#[test]
fn image_store_defaults_under_state_dir() {
    let text = "state_dir = \"/var/lib/rh\"\n[api]\nlisten = \"127.0.0.1:0\"\n";

    let config =
        Config::parse(Path::new("cp.toml"), text).unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(config.images.store_dir, Path::new("/var/lib/rh/images"));
}
