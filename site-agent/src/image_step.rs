//! The `image` step: verify the image, arm the node's netboot, and wait for
//! the booted system's callback.
//!
//! Verification runs twice: here, before the boot is armed, and again in
//! the boot HTTP server each time the node requests its script or a file.
//! Either failure names the image and both hashes, quarantines the file
//! (the image store's doing) and fails the step; a file that does not match
//! is never served.

use std::sync::Arc;
use std::time::Duration;

use rackhand_images::{ImageCache, ImageError, ImageStore, Sha256Digest};
use rackhand_protocol::agent::{ImageSpec, ImageStep, InstallMethod, Outcome};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::driver_step::DriverSettings;
use crate::site_nodes::SiteNodes;
use crate::state::{NewBoot, State, now_ms};

/// Maximum sleep between reads of the boot record when no callback wakes
/// the step.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Checks that every file of an image, given by role and digest, is in the
/// store and unchanged. Returns a message naming the image and what is
/// wrong.
pub async fn verify_image(
    store: &ImageStore,
    image: &str,
    files: &[(&str, &str)],
) -> Result<(), String> {
    for &(role, digest) in files {
        let parsed: Sha256Digest = digest
            .parse()
            .map_err(|e| format!("image {image}: {role} digest is invalid: {e}"))?;
        match store.open_verified(&parsed).await {
            Ok(_) => {}
            Err(ImageError::NotFound { .. }) => {
                return Err(format!(
                    "image {image}: {role} sha256 {digest} is not in this agent's image store and has no URL to download it from; import it on this agent with `rackhand-site-agent image import`, or create the image again with its files uploaded (`rackhand image create --upload`) or with upstream URLs"
                ));
            }
            Err(ImageError::DigestMismatch {
                path,
                expected,
                actual,
                ..
            }) => {
                return Err(format!(
                    "image {image}: {role} {} has sha256 {actual}, expected {expected}; it was quarantined and will not be served. Retry the order to download it again when the image has an upstream URL or was uploaded; otherwise import the right file with `rackhand-site-agent image import` first",
                    path.display()
                ));
            }
            Err(other) => return Err(format!("image {image}: {role}: {other}")),
        }
    }
    Ok(())
}

/// Runs the step. `progress` carries a line for the control plane's
/// activity log; `callbacks` is notified by the boot server.
pub async fn run(
    state: &State,
    cache: &ImageCache,
    callbacks: &Arc<Notify>,
    progress: &watch::Sender<Option<String>>,
    ironic: Option<IronicContext<'_>>,
    key: &str,
    step: &ImageStep,
) -> Outcome {
    match arm_and_wait(state, cache, callbacks, progress, ironic, key, step).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Failed {
            retryable: true,
            error: format!("agent state database error: {error}"),
            upstream: None,
        },
    }
}

/// What the image step of an Ironic-driven node needs besides the step.
#[derive(Debug, Clone, Copy)]
pub struct IronicContext<'a> {
    pub settings: &'a DriverSettings,
    pub nodes: &'a SiteNodes,
}

/// How often the step asks Ironic whether its deployment failed.
const IRONIC_POLL_INTERVAL: Duration = Duration::from_secs(5);

async fn arm_and_wait(
    state: &State,
    cache: &ImageCache,
    callbacks: &Arc<Notify>,
    progress: &watch::Sender<Option<String>>,
    ironic: Option<IronicContext<'_>>,
    key: &str,
    step: &ImageStep,
) -> Result<Outcome, sqlx::Error> {
    let image = &step.image;
    let store = cache.store();
    if state.boot(key).await?.is_none() {
        if let Err(outcome) = download_missing(cache, progress, step).await {
            return Ok(outcome);
        }
        if image.install_method == InstallMethod::Image && image.disk.is_none() {
            return Ok(failed(format!(
                "image {} writes a disk image but names none; register it again with its disk_sha256 and disk_size",
                image.name
            )));
        }
        if let Err(message) = verify_image(store, &image.name, &step_files(image)).await {
            tracing::error!(node = %step.node_name, correlation_key = key, error = %message, "image verification failed");
            return Ok(failed(message));
        }
        if let Some(message) = disk_size_mismatch(store, image) {
            tracing::error!(node = %step.node_name, correlation_key = key, error = %message, "disk image size differs from the catalogue");
            return Ok(failed(message));
        }
        if let Err(message) = crate::install_files::check_names(&step.install_files) {
            return Ok(failed(message));
        }
        state.store_install_files(key, &step.install_files).await?;
        let token = new_token();
        let deadline_at = now_ms() + i64::from(step.callback_timeout_seconds) * 1000;
        state
            .arm_boot(&NewBoot {
                correlation_key: key,
                mac: step.boot_mac,
                node_id: step.node_id,
                node_name: &step.node_name,
                image_name: &image.name,
                kernel_sha256: &image.kernel_sha256,
                initrd_sha256: &image.initrd_sha256,
                kernel_args: &image.kernel_args,
                hostname: &step.hostname,
                token: &token,
                deadline_at,
                install_method: image.install_method,
                disk: image.disk.as_ref(),
            })
            .await?;
        tracing::info!(node = %step.node_name, mac = %step.boot_mac, image = %image.name, correlation_key = key, "netboot armed");
    }
    progress.send_replace(Some(format!(
        "image {} verified; netboot armed for {}; waiting for its callback",
        image.name, step.boot_mac
    )));

    let ironic_driver = match &step.ironic {
        None => None,
        Some(access) => match start_ironic(state, ironic, access, key, step).await? {
            Ok(driver) => Some(driver),
            Err(outcome) => return Ok(outcome),
        },
    };
    let mut next_ironic_check = tokio::time::Instant::now() + IRONIC_POLL_INTERVAL;
    let mut last_progress: Option<String> = None;

    loop {
        let notified = callbacks.notified();
        let Some(boot) = state.boot(key).await? else {
            return Ok(failed(
                "the armed boot vanished from the agent's state".to_string(),
            ));
        };
        if boot.progress.is_some() && boot.progress != last_progress {
            last_progress.clone_from(&boot.progress);
            progress.send_replace(boot.progress.clone());
        }
        match boot.state.as_str() {
            "called_back" => {
                let ip = boot.callback_ip.unwrap_or_default();
                return Ok(Outcome::Succeeded {
                    summary: format!(
                        "{} booted image {} and called back from {ip}",
                        step.node_name, image.name
                    ),
                    payload: json!({
                        "node": step.node_name,
                        "mac": step.boot_mac,
                        "image": image.name,
                        "kernel_sha256": image.kernel_sha256,
                        "initrd_sha256": image.initrd_sha256,
                        "install_method": image.install_method,
                        "disk_sha256": image.disk.as_ref().map(|disk| &disk.sha256),
                        "callback_ip": ip,
                    }),
                });
            }
            "failed" | "expired" => {
                return Ok(failed(
                    boot.error
                        .unwrap_or_else(|| format!("boot ended as {}", boot.state)),
                ));
            }
            _ => {}
        }
        if now_ms() > boot.deadline_at {
            let message = format!(
                "no callback from {} ({}) within {} s of arming its netboot; check its console",
                step.node_name, step.boot_mac, step.callback_timeout_seconds
            );
            if state
                .finish_boot(key, "expired", Some(&message), None)
                .await?
            {
                return Ok(failed(message));
            }
            continue;
        }
        if let Some(driver) = &ironic_driver
            && tokio::time::Instant::now() >= next_ironic_check
        {
            next_ironic_check = tokio::time::Instant::now() + IRONIC_POLL_INTERVAL;
            match crate::ironic_boot::failure(driver).await {
                Ok(Some(message)) => {
                    if state
                        .finish_boot(key, "failed", Some(&message), None)
                        .await?
                    {
                        tracing::error!(node = %step.node_name, correlation_key = key, error = %message, "Ironic deployment failed");
                        return Ok(failed(message));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(node = %step.node_name, error = %error, "reading the Ironic node failed; waiting for the callback anyway");
                }
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// Has Ironic deploy the armed boot as a ramdisk. Returns the driver to
/// watch the deployment with, or the failed outcome.
async fn start_ironic(
    state: &State,
    ironic: Option<IronicContext<'_>>,
    access: &rackhand_protocol::agent::BmcAccess,
    key: &str,
    step: &ImageStep,
) -> Result<Result<rackhand_ironic_bridge::ironic::IronicDriver, Outcome>, sqlx::Error> {
    let Some((context, settings)) =
        ironic.and_then(|context| Some((context, context.settings.ironic.as_ref()?)))
    else {
        return Ok(Err(failed(format!(
            "node {} is driven through Ironic, but this agent's config has no [ironic] section; add one (see deploy/examples/site-agent.toml) and retry the order",
            step.node_name
        ))));
    };
    let Some(boot) = state.boot(key).await? else {
        return Ok(Err(failed(
            "the armed boot vanished from the agent's state".to_string(),
        )));
    };
    let driver =
        match crate::ironic_boot::driver(access, &step.node_name, context.settings.bmc_timeout) {
            Ok(driver) => driver,
            Err(error) => return Ok(Err(failed(error))),
        };
    let parts = crate::ironic_boot::configdrive_parts(&step.install_files, |text| {
        crate::install_files::fill_callback(text, &settings.boot_base_url, &boot.token)
    });
    let parts = match parts {
        Ok(parts) => parts,
        Err(error) => {
            let _ = state.finish_boot(key, "failed", Some(&error), None).await?;
            return Ok(Err(failed(error)));
        }
    };
    context.nodes.set_via_ironic(step.boot_mac, true);
    let deployment = crate::ironic_boot::Deployment {
        correlation_key: key,
        hostname: &step.hostname,
        kernel_url: format!(
            "{}/images/{}/vmlinuz",
            settings.conductor_url, boot.kernel_sha256
        ),
        ramdisk_url: format!(
            "{}/images/{}/initrd.img",
            settings.conductor_url, boot.initrd_sha256
        ),
        cmdline: crate::install_files::install_args(
            state,
            key,
            crate::boot_server::boot_cmdline(&settings.boot_base_url, &boot),
            &settings.boot_base_url,
            &boot.token,
        )
        .await?,
        user_data: parts.user_data,
        meta_data: parts.meta_data,
        network_data: parts.network_data,
    };
    match crate::ironic_boot::deploy(&driver, &deployment).await {
        Ok(summary) => {
            tracing::info!(node = %step.node_name, correlation_key = key, "{summary}");
            Ok(Ok(driver))
        }
        Err(error) if error.retryable => Ok(Err(Outcome::Failed {
            retryable: true,
            error: error.message,
            upstream: None,
        })),
        Err(error) => {
            let _ = state
                .finish_boot(key, "failed", Some(&error.message), None)
                .await?;
            Ok(Err(failed(error.message)))
        }
    }
}

/// Downloads the image's files that the store lacks from their upstream
/// URLs, once however many boots wait for them (the cache's single
/// flight). A file is stored only when its sha256 matches.
async fn download_missing(
    cache: &ImageCache,
    progress: &watch::Sender<Option<String>>,
    step: &ImageStep,
) -> Result<(), Outcome> {
    let image = &step.image;
    let disk = image
        .disk
        .as_ref()
        .map(|disk| ("disk image", &disk.sha256, &disk.url));
    let files = [
        ("kernel", &image.kernel_sha256, &image.kernel_url),
        ("initrd", &image.initrd_sha256, &image.initrd_url),
    ];
    for (role, digest, url) in files.into_iter().chain(disk) {
        let (Some(url), Ok(parsed)) = (url, digest.parse::<Sha256Digest>()) else {
            continue;
        };
        if cache.store().contains(&parsed) {
            continue;
        }
        progress.send_replace(Some(format!(
            "downloading the {role} of image {} into the agent's cache",
            image.name
        )));
        tracing::info!(node = %step.node_name, image = %image.name, role, "downloading an image file from its upstream");
        if let Err(error) = cache.fetch(&parsed, url, None).await {
            let retryable = !matches!(error, ImageError::DownloadMismatch { .. });
            tracing::error!(node = %step.node_name, image = %image.name, role, error = %error, "image download failed");
            return Err(Outcome::Failed {
                retryable,
                error: format!(
                    "image {}: downloading the {role} failed: {error}",
                    image.name
                ),
                upstream: None,
            });
        }
    }
    Ok(())
}

/// Compares the verified disk image's size with the catalogue's: the
/// installer hashes exactly that many bytes of the disk, so a wrong size
/// would fail every install after a full write.
fn disk_size_mismatch(store: &ImageStore, image: &ImageSpec) -> Option<String> {
    let disk = image.disk.as_ref()?;
    let digest: Sha256Digest = disk.sha256.parse().ok()?;
    let actual = std::fs::metadata(store.blob_path(&digest)).ok()?.len();
    (actual != disk.size).then(|| {
        format!(
            "image {}: the disk image is {actual} bytes but the catalogue says {}; register the image again with disk_size {actual}",
            image.name, disk.size
        )
    })
}

/// Lists the files of a step's image by role and digest, as
/// [`verify_image`] takes them.
fn step_files(image: &ImageSpec) -> Vec<(&'static str, &str)> {
    let mut files = vec![
        ("kernel", image.kernel_sha256.as_str()),
        ("initrd", image.initrd_sha256.as_str()),
    ];
    if let Some(disk) = &image.disk {
        files.push(("disk image", disk.sha256.as_str()));
    }
    files
}

fn failed(error: String) -> Outcome {
    Outcome::Failed {
        retryable: false,
        error,
        upstream: None,
    }
}

/// A one-time callback token: 128 random bits, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use rackhand_protocol::agent::ImageFile;

    use super::*;

    async fn store_with_disk(len: usize) -> (tempfile::TempDir, ImageStore, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ImageStore::open(&dir.path().join("store")).expect("store opens");
        let source = dir.path().join("disk.img");
        std::fs::write(&source, vec![7u8; len]).expect("disk written");
        let digest = store.import(&source).await.expect("import").digest;
        (dir, store, digest.to_string())
    }

    fn disk_image(sha256: String, size: u64) -> ImageSpec {
        ImageSpec {
            name: "disk".to_string(),
            install_method: InstallMethod::Image,
            disk: Some(ImageFile {
                sha256,
                size,
                url: None,
            }),
            ..ImageSpec::default()
        }
    }

    #[tokio::test]
    async fn disk_size_from_catalogue_matches() {
        let (_dir, store, digest) = store_with_disk(4096).await;

        assert_eq!(disk_size_mismatch(&store, &disk_image(digest, 4096)), None);
    }

    #[tokio::test]
    async fn wrong_disk_size_names_both_sizes() {
        let (_dir, store, digest) = store_with_disk(4096).await;

        let message = disk_size_mismatch(&store, &disk_image(digest, 8192)).expect("a mismatch");

        assert!(message.contains("4096 bytes"), "{message}");
        assert!(message.contains("says 8192"), "{message}");
        assert!(message.contains("disk_size 4096"), "{message}");
    }
}
