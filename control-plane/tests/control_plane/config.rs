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

/// Writes a config with `[images]` set to `images` into a temporary folder
/// and returns the error of `check-config`'s checks.
fn check_error(dir: &Path, images: &str) -> String {
    let text =
        format!("state_dir = \"state\"\n[api]\nlisten = \"127.0.0.1:0\"\n[images]\n{images}\n");
    let config =
        Config::parse(&dir.join("cp.toml"), &text).unwrap_or_else(|error| panic!("{error}"));
    let error = rackhand_control_plane::server::check(&config).expect_err("the setup is rejected");
    format!("{error:#}")
}

#[test]
fn armored_keyring_is_rejected_with_dearmor_hint() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(
        dir.path().join("signers.asc"),
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n",
    )
    .expect("the keyring writes");

    let error = check_error(dir.path(), "signature_keyring = \"signers.asc\"");

    assert!(error.contains("ASCII-armored"), "{error}");
    assert!(error.contains("gpg --dearmor"), "{error}");
}

#[test]
fn missing_gpgv_is_rejected_naming_package() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    // Any non-armored bytes pass the keyring check, which reads only the start.
    std::fs::write(dir.path().join("signers.gpg"), [0x99u8, 0x01, 0x0d])
        .expect("the keyring writes");

    let error = check_error(
        dir.path(),
        "signature_keyring = \"signers.gpg\"\ngpgv = \"/nonexistent/gpgv\"",
    );

    assert!(error.contains("/nonexistent/gpgv"), "{error}");
    assert!(error.contains("apt-get install gpgv"), "{error}");
}

#[test]
fn missing_keyring_is_rejected_with_export_hint() {
    let dir = tempfile::tempdir().expect("a temporary folder");

    let error = check_error(dir.path(), "signature_keyring = \"signers.gpg\"");

    assert!(error.contains("gpg --export"), "{error}");
}
