//! Pre-staging: images an operator asked this site to hold in its cache
//! ahead of any boot.
//!
//! The control plane lists the requests in the site state, which the agent
//! reads every 15 s. For each new request a task downloads the image's
//! files through the [`ImageCache`] (so a boot that needs the same file at
//! the same time shares the download), verifies them, and reports
//! `downloading`, then `staged` or `failed` with the error.
//!
//! Staged files are pinned against the cache's LRU eviction for as long as
//! the request exists: an operator who staged an image expects it to be
//! there at the next boot. A pinned image that does not leave room for a
//! new download makes that download fail with the cache's "no room" error,
//! which names the budget. A staged file that disappears anyway (the
//! scheduled re-hash quarantined it) is downloaded again on the next
//! refresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rackhand_images::{ImageCache, ImageError, Pin, Sha256Digest};
use rackhand_protocol::images::{StageReport, StageStatus, StagedFile, StagedImage};

use crate::client::ControlPlane;

/// The stage requests this agent works on, by image name.
#[derive(Debug, Clone)]
pub struct Stager {
    cache: ImageCache,
    control_plane: ControlPlane,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    request: StagedImage,
    /// Set by the staging task: its final status and, when staged, the
    /// pins that keep the files in the cache.
    outcome: Arc<Mutex<Option<Outcome>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
enum Outcome {
    /// Every file is stored and verified; the pins keep them from eviction.
    Staged {
        _pins: Vec<Pin>,
    },
    Failed,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stager {
    pub fn new(cache: ImageCache, control_plane: ControlPlane) -> Self {
        Stager {
            cache,
            control_plane,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Brings the running stages in line with the control plane's list:
    /// starts new and renewed requests, restarts staged images whose files
    /// left the store, and drops (unpins) requests no longer listed.
    pub fn apply(&self, requests: Vec<StagedImage>) {
        let mut entries = self
            .entries
            .lock()
            .expect("no code panics while holding the stage map lock");
        entries.retain(|name, _| requests.iter().any(|request| &request.name == name));
        for request in requests {
            let restart = match entries.get(&request.name) {
                None => true,
                Some(entry) => entry.request != request || self.lost_files(entry),
            };
            if restart {
                let entry = self.start(request);
                entries.insert(entry.request.name.clone(), entry);
            }
        }
    }

    /// Returns whether a staged image lost one of its files from the store.
    fn lost_files(&self, entry: &Entry) -> bool {
        let staged = matches!(
            *entry
                .outcome
                .lock()
                .expect("no code panics while holding an outcome lock"),
            Some(Outcome::Staged { .. })
        );
        staged
            && entry.request.files.iter().any(|file| {
                file.sha256
                    .parse::<Sha256Digest>()
                    .is_ok_and(|digest| !self.cache.store().contains(&digest))
            })
    }

    fn start(&self, request: StagedImage) -> Entry {
        let outcome = Arc::new(Mutex::new(None));
        let task = tokio::spawn(stage(
            self.cache.clone(),
            self.control_plane.clone(),
            request.clone(),
            Arc::clone(&outcome),
        ));
        Entry {
            request,
            outcome,
            task,
        }
    }
}

/// Downloads and verifies every file of `request`, reporting the status
/// before and after.
async fn stage(
    cache: ImageCache,
    control_plane: ControlPlane,
    request: StagedImage,
    outcome: Arc<Mutex<Option<Outcome>>>,
) {
    report(
        &control_plane,
        &request.name,
        StageStatus::Downloading,
        None,
    )
    .await;
    let mut pins = Vec::new();
    let mut result = Ok(());
    for file in &request.files {
        match stage_file(&cache, file).await {
            Ok(pin) => pins.push(pin),
            Err(error) => {
                result = Err(format!("{}: {error}", file.role));
                break;
            }
        }
    }
    match result {
        Ok(()) => {
            tracing::info!(image = %request.name, files = pins.len(), "image pre-staged");
            *outcome
                .lock()
                .expect("no code panics while holding an outcome lock") =
                Some(Outcome::Staged { _pins: pins });
            report_final(&control_plane, &request.name, StageStatus::Staged, None).await;
        }
        Err(error) => {
            tracing::warn!(image = %request.name, error = %error, "image pre-staging failed");
            *outcome
                .lock()
                .expect("no code panics while holding an outcome lock") = Some(Outcome::Failed);
            report_final(
                &control_plane,
                &request.name,
                StageStatus::Failed,
                Some(error),
            )
            .await;
        }
    }
}

/// Makes one file present and verified in the cache and pins it.
async fn stage_file(cache: &ImageCache, file: &StagedFile) -> Result<Pin, String> {
    let digest: Sha256Digest = file
        .sha256
        .parse()
        .map_err(|error| format!("invalid digest: {error}"))?;
    // Pinned first, so no eviction runs between the download and the pin.
    let pin = cache.pin(&digest);
    if !cache.store().contains(&digest) {
        let Some(url) = &file.url else {
            return Err(format!(
                "sha256 {digest} is not in this agent's image store and has no URL to download it from; import it with `rackhand-site-agent image import` or upload it to the control plane"
            ));
        };
        cache
            .prestage(&digest, url, file.size)
            .await
            .map_err(|error| error_chain(&error))?;
    }
    cache
        .open_verified(&digest)
        .await
        .map_err(|error| error_chain(&error))?;
    Ok(pin)
}

fn error_chain(error: &ImageError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Attempts at sending a final status, and the wait between them: about a
/// minute in all, longer than a control plane restart takes.
const FINAL_REPORT_ATTEMPTS: u32 = 5;
const FINAL_REPORT_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// Sends a status report. Returns whether the control plane accepted it; a
/// failure is logged.
async fn report(
    control_plane: &ControlPlane,
    image: &str,
    status: StageStatus,
    error: Option<String>,
) -> bool {
    let report = StageReport {
        image: image.to_string(),
        status,
        error,
    };
    match control_plane.report_stage(&report).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(
                image,
                status = status.as_str(),
                error = format!("{error:#}"),
                "reporting a pre-staging status failed"
            );
            false
        }
    }
}

/// Sends the final status of a stage, retrying for about a minute, because
/// the operator would otherwise see `downloading` until the next request.
async fn report_final(
    control_plane: &ControlPlane,
    image: &str,
    status: StageStatus,
    error: Option<String>,
) {
    for attempt in 1..=FINAL_REPORT_ATTEMPTS {
        if report(control_plane, image, status, error.clone()).await {
            return;
        }
        if attempt < FINAL_REPORT_ATTEMPTS {
            tokio::time::sleep(FINAL_REPORT_RETRY).await;
        }
    }
    // NOTE: after the last attempt the control plane shows the status it
    // last received until the operator stages the image again.
}
