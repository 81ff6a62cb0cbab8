//! The phases a worker runs for an order, after `billing`: `allocate`,
//! `driver` and `image` (handed to the site agent), `network` and `handoff`.
//!
//! Each phase function is idempotent: it first looks for what an earlier
//! attempt created (the order's node, the task row, the service's address,
//! the sealed password, the e-mail state) and continues from there.

pub mod agent;
pub mod allocate;
pub mod credentials;
pub mod handoff;
pub mod network;

use rackhand_protocol::Phase;
use serde_json::Value;

use crate::app::App;
use crate::jobs::ClaimedJob;

/// The result of a phase run that did not fail.
#[derive(Debug)]
pub enum PhaseOutcome {
    /// The phase is complete; the job moves on.
    Done {
        summary: String,
        payload: Option<Value>,
    },
    /// The phase was handed to the site agent; its result advances the job.
    Dispatched { summary: String },
}

/// Whether a failed phase may succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Transient,
    Permanent,
}

/// A failed phase run. `message` must never contain a secret.
#[derive(Debug)]
pub struct PhaseError {
    pub retry: Retry,
    pub message: String,
    /// The upstream's last response, secrets removed before storing.
    pub upstream: Option<Value>,
}

impl PhaseError {
    pub fn transient(message: impl Into<String>) -> PhaseError {
        PhaseError {
            retry: Retry::Transient,
            message: message.into(),
            upstream: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> PhaseError {
        PhaseError {
            retry: Retry::Permanent,
            message: message.into(),
            upstream: None,
        }
    }

    pub fn with_upstream(mut self, upstream: Option<Value>) -> PhaseError {
        self.upstream = upstream;
        self
    }
}

impl From<sqlx::Error> for PhaseError {
    fn from(error: sqlx::Error) -> PhaseError {
        // A database error is retried: most are lock timeouts or a restart
        // of the database, and a real schema problem exhausts the attempts.
        PhaseError::transient(format!("database error: {error}"))
    }
}

/// The order facts a phase needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderContext {
    pub id: i64,
    pub uid: String,
    pub site_id: i64,
    pub product_id: i64,
    pub node_id: Option<i64>,
    pub hostname: String,
    pub customer_email: String,
    /// Operator retries that re-ran the site agent's steps.
    pub agent_retries: i64,
}

/// Returns the correlation key of an order's phase: stable across attempts,
/// restarts and re-hand-outs, and unique across databases because the
/// order's uid is random.
///
/// The site agent's steps (`driver`, `image`) also carry the order's count
/// of operator retries: a retry must power-cycle and netboot the node again,
/// which the agent does only under a key it has not seen. The other phases
/// keep one key for the order's life, so a retry never sends a second
/// e-mail or creates a second DNS record.
pub fn correlation_key(order: &OrderContext, phase: Phase) -> String {
    let uid = &order.uid;
    match phase {
        Phase::Driver | Phase::Image if order.agent_retries > 0 => {
            format!("{uid}/{phase}/retry-{}", order.agent_retries)
        }
        _ => format!("{uid}/{phase}"),
    }
}

/// Runs one attempt of the job's current phase.
pub async fn run(
    app: &App,
    job: &ClaimedJob,
    owner: &str,
    order: &OrderContext,
) -> Result<PhaseOutcome, PhaseError> {
    let key = correlation_key(order, job.phase);
    match job.phase {
        Phase::Billing => Err(PhaseError::permanent(
            "billing runs in the webhook handler, not in a worker",
        )),
        Phase::Allocate => allocate::run(app, order).await,
        Phase::Driver => {
            agent::preflight(app, order).await?;
            agent::dispatch(app, job, owner, order, &key).await
        }
        Phase::Image => {
            crate::install::prepare(app, order).await?;
            agent::dispatch(app, job, owner, order, &key).await
        }
        Phase::Network => network::run(app, order, &key).await,
        Phase::Handoff => handoff::run(app, order, &key).await,
    }
}
