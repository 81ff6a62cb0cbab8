//! Hand-off of the `driver` and `image` phases to the order's site agent.
//!
//! The worker inserts the task row (keyed by the correlation key, so a
//! repeated dispatch finds the existing row) and parks the job as `waiting`
//! in the same transaction, so the agent can never report a result for a
//! job that is not yet waiting for it. The task's instructions, including
//! the BMC password, are built when the agent claims it (see
//! `agents::tasks`), so no unsealed secret is ever stored.

use crate::app::App;
use crate::db;
use crate::jobs::{self, ClaimedJob};
use crate::phases::{OrderContext, PhaseError, PhaseOutcome};

/// Checks, before the driver step powers the node on, what the control
/// plane can know about the image step: the product's image is complete,
/// its uploaded files are still in the store, it is signed where
/// `images.require_signatures` requires it, and the install template
/// renders (which also fixes the service address and root password). A
/// failure here fails the order with the node untouched. The image step
/// checks the signatures again, because the setting may change in between.
pub async fn preflight(app: &App, order: &OrderContext) -> Result<(), PhaseError> {
    let (image_id, image, state, install_method): (i64, String, String, String) = sqlx::query_as(
        "SELECT i.id, i.name, i.state, i.install_method FROM products p
         JOIN images i ON i.id = p.image_id WHERE p.id = ?",
    )
    .bind(order.product_id)
    .fetch_one(&app.pool)
    .await?;
    let retry = format!("then retry the order (rackhand order retry {})", order.id);
    if state != "ready" {
        return Err(PhaseError::permanent(format!(
            "image {image:?} is {state}; upload its missing files (rackhand image show {image} lists them), {retry}"
        )));
    }
    let uploaded: Vec<(String, String)> =
        sqlx::query_as("SELECT role, sha256 FROM image_files WHERE image_id = ? ORDER BY role")
            .bind(image_id)
            .fetch_all(&app.pool)
            .await?;
    for (role, sha256) in uploaded {
        let stored = sha256
            .parse::<rackhand_images::Sha256Digest>()
            .is_ok_and(|digest| app.images.contains(&digest));
        if !stored {
            return Err(PhaseError::permanent(format!(
                "the uploaded {role} of image {image:?} (sha256 {sha256}) is missing from the control plane's image store; upload the same file again with `rackhand image upload {image} {role} FILE`, {retry}"
            )));
        }
    }
    if app.config.images.require_signatures {
        let unsigned =
            crate::api::image_library::unsigned_roles(app, image_id, &install_method).await?;
        if !unsigned.is_empty() {
            return Err(PhaseError::permanent(
                crate::api::image_library::unsigned_order_message(&image, &unsigned, order.id),
            ));
        }
    }
    crate::install::prepare(app, order).await
}

/// Creates (or finds) the agent task for the job's phase and parks the job.
pub async fn dispatch(
    app: &App,
    job: &ClaimedJob,
    owner: &str,
    order: &OrderContext,
    key: &str,
) -> Result<PhaseOutcome, PhaseError> {
    if order.node_id.is_none() {
        return Err(PhaseError::permanent(
            "order has no reserved node; the allocate phase did not complete",
        ));
    }

    let now = db::now_ms();
    let mut tx = db::begin(&app.pool).await?;
    sqlx::query(
        "INSERT INTO agent_tasks
            (order_id, site_id, phase, correlation_key, state, attempt, run_after, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)
         ON CONFLICT (correlation_key) DO NOTHING",
    )
    .bind(order.id)
    .bind(order.site_id)
    .bind(job.phase.as_str())
    .bind(key)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if !jobs::wait_for_agent(&mut tx, job.id, owner).await? {
        return Err(PhaseError::transient(
            "lost the job's lease while dispatching",
        ));
    }
    tx.commit().await?;
    app.tasks_ready.notify_waiters();

    let (site, agents): (String, i64) = sqlx::query_as(
        "SELECT s.name, (SELECT COUNT(*) FROM agents a WHERE a.site_id = s.id AND a.revoked_at IS NULL)
         FROM sites s WHERE s.id = ?",
    )
    .bind(order.site_id)
    .fetch_one(&app.pool)
    .await?;
    let summary = if agents == 0 {
        format!("handed to site {site}; no agent is enrolled there yet, so the step waits for one")
    } else {
        format!("handed to the site agent of {site}")
    };
    Ok(PhaseOutcome::Dispatched { summary })
}
