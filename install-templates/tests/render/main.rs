//! Integration tests of rackhand-install-templates: the built-in renderers
//! and operator templates.
//!
//! Set `RACKHAND_UPDATE_GOLDEN=1` to rewrite the files under
//! `tests/golden/` after an intended change, then review the diff.

use std::path::Path;
use std::process::Command;

use rackhand_install_templates::OrderContext;
use rackhand_install_templates::operator::sample_input;

mod builtin;
mod operator;

/// An SSH key whose comment tries quoting, command substitution, a command
/// separator and a YAML mapping.
const HOSTILE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0 it's \"me\" $(touch PWNED) `touch PWNED` ; touch PWNED # x: y";

fn hostile_context() -> OrderContext {
    let mut input = sample_input(true);
    input.ssh_authorized_keys = vec![HOSTILE_KEY.to_owned()];
    input.callback_url = "https://agent.example.net/cb?token='$(touch PWNED)'".to_owned();
    OrderContext::new(input).expect("hostile but well-formed input is accepted")
}

/// Runs `script` with `sh -c` in `directory` after `prelude` and returns
/// stdout; fails the test when `sh` fails.
fn run_sh(directory: &Path, prelude: &str, script: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("{prelude}\n{script}"))
        .current_dir(directory)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
