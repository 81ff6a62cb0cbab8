//! cloud-init 22.4 (Debian 12's package, installed by
//! `tests/peers/install templates`) as a checker of the NoCloud files that
//! Rackhand serves: its `cloud-init schema` command and its Python modules.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::workspace;

/// Installs cloud-init when it is missing, through the peers' installer.
/// Needs root when something is missing, and changes nothing otherwise.
pub fn ensure_installed() -> anyhow::Result<()> {
    let output = Command::new(workspace::peer_script("install"))
        .arg("templates")
        .output()
        .context("running tests/peers/install templates")?;
    if !output.status.success() {
        bail!(
            "tests/peers/install templates failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Returns the interpreter named in the `cloud-init` launcher's `#!` line.
/// A `python3` found earlier on `PATH` (pyenv, a venv) may lack the
/// `cloudinit` module, which only the launcher's interpreter is sure to have.
pub fn python_interpreter() -> anyhow::Result<PathBuf> {
    let launcher = Command::new("sh")
        .args(["-c", "command -v cloud-init"])
        .output()
        .context("running sh to find cloud-init")?;
    let launcher = String::from_utf8_lossy(&launcher.stdout).trim().to_owned();
    if launcher.is_empty() {
        bail!("cloud-init is not on PATH; run tests/peers/install templates");
    }
    let text = std::fs::read_to_string(&launcher)
        .with_context(|| format!("reading the cloud-init launcher {launcher}"))?;
    let first_line = text.lines().next().unwrap_or_default();
    let interpreter = first_line
        .strip_prefix("#!")
        .map(str::trim)
        .with_context(|| format!("{launcher} has no #! line: {first_line:?}"))?;
    Ok(PathBuf::from(interpreter))
}

/// Runs `script` with cloud-init's Python and `args` as `sys.argv[1:]`,
/// inside network namespace `netns` when one is given, and returns stdout.
/// A non-zero exit fails with the script's stderr.
pub fn run_python(netns: Option<&str>, script: &str, args: &[&str]) -> anyhow::Result<String> {
    let interpreter = python_interpreter()?;
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(&interpreter);
            command
        }
        None => Command::new(&interpreter),
    };
    let output = command
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", interpreter.display()))?;
    if !output.status.success() {
        bail!(
            "cloud-init's Python failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Validates a `#cloud-config` file with `cloud-init schema --config-file`.
/// In 22.4 the command checks cloud-config only, not meta-data or
/// network-config.
pub fn check_schema(path: &Path) -> anyhow::Result<()> {
    let output = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(path)
        .output()
        .context("running cloud-init schema")?;
    if !output.status.success() {
        bail!(
            "cloud-init schema rejected {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
