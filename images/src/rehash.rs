//! The scheduled full re-hash of every stored blob, which catches what the
//! per-boot check trusts its record for (bit rot under an unchanged inode,
//! a forged clock, a blob and record changed together).

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::store::ImageStore;

/// The outcome of one full re-hash.
#[derive(Debug, Default)]
pub struct RehashReport {
    /// Blobs whose content still matched.
    pub verified: usize,
    /// Blobs that no longer matched and were moved to `quarantine/`.
    pub quarantined: Vec<Sha256Digest>,
    /// Blobs that could not be read (removed meanwhile or an I/O error).
    pub failed: usize,
}

/// Re-hashes every blob in `store` in full, one at a time so that the
/// re-hash takes one core and one disk stream at most, and quarantines the
/// ones that no longer match.
///
/// Only a failure to list the store is an error; a blob that cannot be read
/// is logged and counted in [`RehashReport::failed`].
pub async fn rehash_all(store: &ImageStore) -> Result<RehashReport, ImageError> {
    let mut report = RehashReport::default();
    for blob in store.list()? {
        match store.rehash(&blob.digest).await {
            Ok(_) => report.verified += 1,
            Err(ImageError::DigestMismatch { .. }) => {
                tracing::error!(digest = %blob.digest, "stored image failed its scheduled re-hash and was quarantined");
                report.quarantined.push(blob.digest);
            }
            // Evicted or quarantined since the listing.
            Err(ImageError::NotFound { .. }) => {}
            Err(error) => {
                tracing::warn!(
                    digest = %blob.digest,
                    error = &error as &dyn std::error::Error,
                    "cannot re-hash stored image"
                );
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// Runs [`rehash_all`] every `interval`, first one `interval` after the
/// start, until `shutdown` completes. Each boot already checks its blobs, so
/// there is no reason to re-hash everything at start-up.
pub async fn run_scheduled_rehash(
    store: ImageStore,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    // After a long re-hash, wait a whole interval instead of starting again.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }

        let started = Instant::now();
        match rehash_all(&store).await {
            Ok(report) => tracing::info!(
                verified = report.verified,
                quarantined = report.quarantined.len(),
                failed = report.failed,
                seconds = started.elapsed().as_secs(),
                "scheduled image re-hash finished"
            ),
            Err(error) => tracing::error!(
                error = &error as &dyn std::error::Error,
                "scheduled image re-hash failed"
            ),
        }
    }
}
