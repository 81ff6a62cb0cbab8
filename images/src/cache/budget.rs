//! The cache's size budget: pins, last-use times (kept in `usage.json`) and
//! least-recently-used eviction.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::Sha256Digest;
use crate::error::ImageError;
use crate::store::{ImageStore, Layout, StoredBlob};

/// The budget and the bookkeeping behind eviction decisions.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    index_path: PathBuf,
    tmp_dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Number of live [`Pin`]s per digest.
    pins: HashMap<Sha256Digest, usize>,
    /// Last use per digest, in milliseconds since the Unix epoch.
    last_used: HashMap<Sha256Digest, u64>,
    /// Sizes reserved by flights that have not stored their blob yet.
    reserved: HashMap<Sha256Digest, u64>,
}

/// A guard that keeps its blob from being evicted until it is dropped.
#[derive(Debug)]
pub struct Pin {
    digest: Sha256Digest,
    budget: Arc<Budget>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        if let Some(count) = state.pins.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                state.pins.remove(&self.digest);
            }
        }
    }
}

impl Budget {
    /// Creates the budget and reads the last-use index. A missing or invalid
    /// index only loses the LRU order: unknown blobs count as least recent.
    pub fn load(limit: u64, layout: &Layout) -> Self {
        let last_used = std::fs::read(&layout.usage_index)
            .ok()
            .and_then(|text| serde_json::from_slice::<HashMap<Sha256Digest, u64>>(&text).ok())
            .unwrap_or_default();
        Budget {
            limit,
            index_path: layout.usage_index.clone(),
            tmp_dir: layout.tmp.clone(),
            state: Mutex::new(State {
                last_used,
                ..State::default()
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no code panics while holding the budget lock")
    }

    /// Pins `digest` until the returned guard is dropped.
    pub fn pin(self: &Arc<Self>, digest: &Sha256Digest) -> Pin {
        *self.lock().pins.entry(*digest).or_insert(0) += 1;
        Pin {
            digest: *digest,
            budget: Arc::clone(self),
        }
    }

    /// Records a use of `digest` now and saves the index.
    pub fn touch(&self, digest: &Sha256Digest) {
        let mut state = self.lock();
        // Uses within one millisecond still get distinct, ordered stamps.
        let latest = state.last_used.values().copied().max().unwrap_or(0);
        let stamp = now_millis().max(latest + 1);
        state.last_used.insert(*digest, stamp);
        self.save(&state);
    }

    /// Drops the reservation of a flight that ended.
    pub fn release(&self, digest: &Sha256Digest) {
        self.lock().reserved.remove(digest);
    }

    /// Reserves `size` bytes for the download of `digest`, evicting
    /// unpinned blobs from the least recently used on until it fits.
    ///
    /// Fails without evicting anything when `size` alone exceeds the budget,
    /// and after evicting every unpinned blob when the pinned ones and other
    /// reservations still leave too little room.
    pub fn reserve(
        &self,
        store: &ImageStore,
        digest: &Sha256Digest,
        size: u64,
    ) -> Result<(), ImageError> {
        if size > self.limit {
            return Err(ImageError::LargerThanBudget {
                digest: *digest,
                size,
                budget: self.limit,
            });
        }

        // Listing under the lock keeps a concurrent eviction from counting
        // the same blob twice; the folder holds at most a few hundred blobs.
        let mut state = self.lock();
        let blobs = store.list()?;
        let others = |other: &Sha256Digest| other != digest;
        let mut used: u64 = blobs
            .iter()
            .filter(|blob| others(&blob.digest))
            .map(|blob| blob.size)
            .sum::<u64>()
            + state
                .reserved
                .iter()
                .filter(|(other, _)| others(other))
                .map(|(_, size)| size)
                .sum::<u64>();

        let mut candidates: Vec<&StoredBlob> = blobs
            .iter()
            .filter(|blob| others(&blob.digest) && !state.pins.contains_key(&blob.digest))
            .collect();
        candidates.sort_by_key(|blob| state.last_used.get(&blob.digest).copied().unwrap_or(0));

        let mut evicted = false;
        for blob in candidates {
            if used.saturating_add(size) <= self.limit {
                break;
            }
            store.remove(&blob.digest)?;
            state.last_used.remove(&blob.digest);
            used -= blob.size;
            evicted = true;
            tracing::info!(digest = %blob.digest, size = blob.size, "evicted least recently used image");
        }
        if evicted {
            self.save(&state);
        }

        if used.saturating_add(size) > self.limit {
            return Err(ImageError::CacheFull {
                digest: *digest,
                size,
                in_use: used,
                budget: self.limit,
            });
        }
        state.reserved.insert(*digest, size);
        Ok(())
    }

    /// Writes the last-use index atomically. A failure is logged and
    /// otherwise ignored: it only costs the LRU order after a restart.
    fn save(&self, state: &State) {
        let result = serde_json::to_vec(&state.last_used)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                let mut tmp = tempfile::Builder::new()
                    .prefix("usage-")
                    .tempfile_in(&self.tmp_dir)?;
                tmp.write_all(&json)?;
                tmp.persist(&self.index_path).map_err(|error| error.error)?;
                Ok(())
            });
        if let Err(error) = result {
            tracing::warn!(
                path = %self.index_path.display(),
                %error,
                "cannot save the image cache's last-use index"
            );
        }
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
