//! Image files the control plane serves to agents, and pre-staging: the
//! images an operator asked a site to download ahead of any boot, and the
//! agent's report of each one's status.
//!
//! The control plane lists its site's stage requests in
//! [`SiteState::staged_images`](crate::agent::SiteState); the agent, which
//! polls the site state, downloads each listed image into its cache and
//! posts a [`StageReport`] to [`STAGE_REPORT_PATH`] whenever an image's
//! status changes.

use serde::{Deserialize, Serialize};

/// Prefix of `GET {IMAGE_FILE_PATH_PREFIX}{sha256}`: a file uploaded to the
/// control plane, by its lowercase hex sha256, with `Range` support.
pub const IMAGE_FILE_PATH_PREFIX: &str = "/agent/v1/images/";

/// Returns the agent path of the uploaded file `sha256`. Image specs carry
/// it as a relative URL, which the agent resolves against its control
/// plane's URL and fetches with its own client certificate.
pub fn image_file_path(sha256: &str) -> String {
    format!("{IMAGE_FILE_PATH_PREFIX}{sha256}")
}

/// `POST`: the agent reports the status of one staged image.
pub const STAGE_REPORT_PATH: &str = "/agent/v1/image-stages";

/// An image the site's agent should hold in its cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedImage {
    pub name: String,
    /// When the operator last asked, in Unix milliseconds. A new request for
    /// an image that failed makes the agent try again.
    #[serde(default)]
    pub requested_at: i64,
    /// Every file the image's install method needs.
    pub files: Vec<StagedFile>,
}

/// One file of a [`StagedImage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// `kernel`, `initrd` or `disk`.
    pub role: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Size in bytes, when the catalogue records it.
    #[serde(default)]
    pub size: Option<u64>,
    /// Download URL: an upstream URL, or a path on the control plane (see
    /// [`image_file_path`]). `None` when the file must be imported on
    /// the agent by hand.
    #[serde(default)]
    pub url: Option<String>,
}

/// The status of a staged image on one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Requested by an operator; the agent has not reported yet.
    Requested,
    Downloading,
    /// Every file is in the cache, verified, and pinned against eviction
    /// for as long as the request exists.
    Staged,
    Failed,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Requested => "requested",
            StageStatus::Downloading => "downloading",
            StageStatus::Staged => "staged",
            StageStatus::Failed => "failed",
        }
    }
}

/// Body of [`STAGE_REPORT_PATH`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub image: String,
    pub status: StageStatus,
    /// Why staging failed, for [`StageStatus::Failed`].
    #[serde(default)]
    pub error: Option<String>,
}
