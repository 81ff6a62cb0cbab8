//! The image library end to end without a VM: the CLI uploads a signed
//! image into a running control plane that requires signatures, stages it
//! to a site, and the site agent downloads it over its mTLS connection into
//! its cache, verifies it and reports it staged, which `rackhand image
//! show` prints with the signer's fingerprint.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rackhand_e2e::stack::{Process, free_port, random_suffix, sha256_file, tail};
use rackhand_e2e::workspace;
use serde_json::Value;

/// Runs `rackhand ARGS…` against the control plane and returns its stdout.
fn rackhand(api_url: &str, token: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(workspace::binary("rackhand"))
        .args(args)
        .env("RACKHAND_URL", api_url)
        .env("RACKHAND_TOKEN", token)
        .output()?;
    if !output.status.success() {
        bail!(
            "rackhand {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes `size` bytes of a pattern that differs per `seed`.
fn write_file(path: &Path, size: usize, seed: u8) -> anyhow::Result<()> {
    let data: Vec<u8> = (0..size)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect();
    fs::write(path, data)?;
    Ok(())
}

/// Runs gpg in `home` in batch mode with an empty passphrase and returns
/// its stdout.
fn gpg(home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(args)
        .output()
        .context("running gpg (the gnupg package)")?;
    if !output.status.success() {
        bail!(
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Creates a signing key in a new GNUPGHOME under `dir`, writes its public
/// keyring to `keyring` and returns the key's fingerprint.
fn signing_key(dir: &Path, keyring: &Path) -> anyhow::Result<String> {
    let home = dir.join("gnupg");
    fs::create_dir_all(&home)?;
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    gpg(
        &home,
        &[
            "--quick-generate-key",
            "Image Signer <signer@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
    )?;
    gpg(
        &home,
        &["--output", &keyring.display().to_string(), "--export"],
    )?;
    let listing = gpg(&home, &["--with-colons", "--list-keys"])?;
    listing
        .lines()
        .find_map(|line| line.strip_prefix("fpr:"))
        .and_then(|rest| rest.trim_matches(':').split(':').next_back())
        .map(str::to_string)
        .context("gpg listed no fingerprint")
}

/// Writes a detached signature of `file` to `file.sig` and returns its path.
fn sign(dir: &Path, file: &Path) -> anyhow::Result<String> {
    let signature = format!("{}.sig", file.display());
    gpg(
        &dir.join("gnupg"),
        &[
            "--detach-sign",
            "--output",
            &signature,
            &file.display().to_string(),
        ],
    )?;
    Ok(signature)
}

fn control_plane_config(
    state: &Path,
    api_port: u16,
    agent_port: u16,
    token: &str,
    keyring: &Path,
) -> String {
    let token_sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ));
    format!(
        r#"state_dir = "{state}"

[api]
listen = "127.0.0.1:{api_port}"
[[api.tokens]]
name = "e2e"
role = "admin"
sha256 = "{token_sha}"

[agents]
listen = "127.0.0.1:{agent_port}"

[images]
signature_keyring = "{keyring}"
require_signatures = true
"#,
        state = state.display(),
        keyring = keyring.display(),
    )
}

fn agent_config(state: &Path, agent_port: u16, enrollment: &Value) -> anyhow::Result<String> {
    Ok(format!(
        r#"state_dir = "{state}"

[control_plane]
url = "https://127.0.0.1:{agent_port}"
ca_fingerprint = "{fingerprint}"
enrollment_token = "{token}"
"#,
        state = state.display(),
        fingerprint = enrollment["ca_fingerprint"]
            .as_str()
            .context("ca_fingerprint")?,
        token = enrollment["token"].as_str().context("token")?,
    ))
}

/// Polls `rackhand image show` until the stage at `dc1` leaves
/// `requested` and `downloading`, for at most `timeout`.
fn wait_for_stage(api_url: &str, token: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let shown: Value = serde_json::from_str(&rackhand(
            api_url,
            token,
            &["--json", "image", "show", "live"],
        )?)?;
        let status = shown["stages"][0]["status"].as_str().unwrap_or_default();
        if status == "staged" || status == "failed" {
            return Ok(shown);
        }
        if Instant::now() > deadline {
            bail!("the stage is still {status:?} after {timeout:?}: {shown}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_image_is_prestaged_on_agent() -> anyhow::Result<()> {
    let dir = workspace::root()
        .join("target")
        .join("e2e")
        .join("image-prestage");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;

    let (api_port, agent_port) = (free_port()?, free_port()?);
    let api_url = format!("http://127.0.0.1:{api_port}");
    let token = format!("e2e-token-{}", random_suffix());
    let keyring = dir.join("signers.gpg");
    let fingerprint = signing_key(&dir, &keyring)?;
    let cp_config = dir.join("control-plane.toml");
    fs::write(
        &cp_config,
        control_plane_config(
            &dir.join("cp-state"),
            api_port,
            agent_port,
            &token,
            &keyring,
        ),
    )?;
    let mut control_plane = Process::spawn(
        "control plane",
        &workspace::binary("rackhand-control-plane"),
        &["serve", "--config", &cp_config.display().to_string()],
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        &dir.join("control-plane.log"),
    )?;
    control_plane.wait_for_log("control plane started", Duration::from_secs(30))?;

    // Files of a few MiB, so the agent's download spans many chunks.
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    write_file(&kernel, 3 << 20, 1)?;
    write_file(&initrd, 5 << 20, 2)?;
    let (kernel_signature, initrd_signature) = (sign(&dir, &kernel)?, sign(&dir, &initrd)?);
    rackhand(&api_url, &token, &["site", "create", "dc1"])?;
    let created = rackhand(
        &api_url,
        &token,
        &[
            "image",
            "create",
            "--name",
            "live",
            "--upload",
            "--kernel",
            &kernel.display().to_string(),
            "--initrd",
            &initrd.display().to_string(),
            "--kernel-signature",
            &kernel_signature,
            "--initrd-signature",
            &initrd_signature,
        ],
    )?;
    assert!(created.contains("image live ready"), "{created}");

    let enrollment: Value = serde_json::from_str(&rackhand(
        &api_url,
        &token,
        &["--json", "site", "enroll-token", "dc1"],
    )?)?;
    let agent_state = dir.join("agent-state");
    let agent_toml = dir.join("agent.toml");
    fs::write(
        &agent_toml,
        agent_config(&agent_state, agent_port, &enrollment)?,
    )?;
    let mut agent = Process::spawn(
        "agent",
        &workspace::binary("rackhand-site-agent"),
        &["run", "--config", &agent_toml.display().to_string()],
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        &dir.join("agent.log"),
    )?;
    agent.wait_for_log("site agent started", Duration::from_secs(30))?;

    rackhand(
        &api_url,
        &token,
        &["image", "stage", "live", "--site", "dc1"],
    )?;
    // The agent reads its site state every 15 s.
    let shown = wait_for_stage(&api_url, &token, Duration::from_secs(60))
        .with_context(|| format!("agent log:\n{}", tail(&agent.log_text(), 30)))?;

    assert_eq!(shown["stages"][0]["status"], "staged", "{shown}");
    for (file, role) in [(&kernel, 0), (&initrd, 1)] {
        let sha256 = sha256_file(file)?;
        assert_eq!(shown["files"][role]["sha256"], sha256.as_str());
        let cached = agent_state.join("images").join("blobs").join(&sha256);
        assert_eq!(sha256_file(&cached)?, sha256, "{}", cached.display());
    }
    let printed = rackhand(&api_url, &token, &["image", "show", "live"])?;
    assert!(printed.contains("dc1"), "{printed}");
    assert!(printed.contains("staged"), "{printed}");
    assert!(printed.contains(&fingerprint), "{printed}");
    assert!(
        agent.log_text().contains("image pre-staged"),
        "{}",
        tail(&agent.log_text(), 30)
    );

    agent.stop();
    control_plane.stop();
    Ok(())
}
