//! Starting and stopping the real peers that `tests/peers/` scripts manage.
//!
//! Every script follows one contract: `SCRIPT start` installs what is missing,
//! starts the peer in the background, waits until it is ready and prints
//! `KEY=value` lines on stdout (logs go to stderr); `SCRIPT stop` stops exactly
//! what `start` started, by PID. Both take their settings from the
//! environment, and `RACKHAND_PEER_STATE` names the folder that holds one
//! instance's state, so tests running in parallel never share a peer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace;

/// A running peer, stopped when dropped.
#[derive(Debug)]
pub struct Peer {
    script: PathBuf,
    env: Vec<(String, String)>,
    vars: HashMap<String, String>,
    stopped: bool,
}

impl Peer {
    /// Starts the peer `name` (a script under `tests/peers/`) with its state in
    /// `state_dir` and the extra environment `env`, and returns the `KEY=value`
    /// pairs that the script printed.
    pub fn start(name: &str, state_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Peer> {
        let script = workspace::peer_script(name);
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "RACKHAND_PEER_STATE".to_string(),
            state_dir.display().to_string(),
        ));

        let output = Command::new(&script)
            .arg("start")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .with_context(|| format!("running {} start", script.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "{} start failed with {}:\n{}\n{}",
                script.display(),
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }

        let vars = parse_key_values(&stdout);
        Ok(Peer {
            script,
            env,
            vars,
            stopped: false,
        })
    }

    /// Returns the value the script printed for `key`, panicking with the
    /// known keys when it printed none (a test bug, not a runtime condition).
    pub fn var(&self, key: &str) -> &str {
        match self.vars.get(key) {
            Some(value) => value,
            None => panic!(
                "{} printed no {key}; printed keys: {:?}",
                self.script.display(),
                self.vars.keys().collect::<Vec<_>>()
            ),
        }
    }

    /// Returns every `KEY=value` pair the script printed.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// Runs `SCRIPT ARGS…` with this peer's environment and returns stdout.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.script)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .with_context(|| format!("running {} {args:?}", self.script.display()))?;
        if !output.status.success() {
            bail!(
                "{} {args:?} failed with {}: {}",
                self.script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the peer now and reports a failure to stop as an error.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stopped = true;
        self.run(&["stop"]).map(|_| ())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.stopped
            && let Err(error) = self.run(&["stop"])
        {
            eprintln!("warning: stopping peer failed: {error:#}");
        }
    }
}

/// Parses `KEY=value` lines, ignoring lines without `=`.
pub fn parse_key_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_key_values;

    #[test]
    fn key_values_skip_lines_without_equals() {
        let vars = parse_key_values("A=1\nnoise\nB=x=y\n");
        assert_eq!(vars.get("A").map(String::as_str), Some("1"));
        assert_eq!(vars.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(vars.len(), 2);
    }
}
