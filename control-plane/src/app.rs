//! The control plane's shared state, built once at start and handed to the
//! API handlers, the agent API and the workers.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::db::Pool;
use crate::dns::Dns;
use crate::failpoint::Failpoints;
use crate::mail::Mailer;
use crate::pki::Ca;
use crate::seal::Sealer;

/// Everything a request or a job needs.
#[derive(Debug)]
pub struct App {
    pub pool: Pool,
    pub config: Config,
    pub sealer: Sealer,
    pub dns: Dns,
    pub mailer: Mailer,
    pub ca: Ca,
    /// Files uploaded into the image library, by sha256.
    pub images: rackhand_images::ImageStore,
    pub failpoints: Failpoints,
    /// Woken when a job becomes runnable, so idle workers need not poll.
    pub jobs_ready: Notify,
    /// Woken when an agent task becomes claimable, to end long polls early.
    pub tasks_ready: Notify,
    /// Woken when a node operation is queued, to end long polls early.
    pub operations_ready: Notify,
    /// Console sessions whose operator waits for the agent to join.
    pub consoles: crate::console::Sessions,
}

/// The shared handle.
pub type SharedApp = Arc<App>;
