//! Starting the control plane: open the database, load or create the keys
//! and the CA, bind both listeners, start the workers, and stop cleanly on
//! SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::dns::Dns;
use crate::failpoint::Failpoints;
use crate::mail::Mailer;
use crate::pki::Ca;
use crate::seal::Sealer;
use crate::{agents, api, db, jobs};

/// Checks what `serve` would find wrong at start without changing anything:
/// the templates compile and render, and existing key, CA and state files
/// can be read. Used by `rackhand-control-plane check-config`.
pub fn check(config: &Config) -> anyhow::Result<()> {
    Mailer::new(&config.handoff, config.smtp.as_ref())?;
    if config.state_dir.exists() && !config.state_dir.is_dir() {
        anyhow::bail!(
            "state_dir {} exists and is not a folder",
            config.state_dir.display()
        );
    }
    if !config.state_dir.exists() {
        let parent = config
            .state_dir
            .parent()
            .unwrap_or_else(|| std::path::Path::new("/"));
        if !parent.is_dir() {
            anyhow::bail!(
                "state_dir {} cannot be created: {} is not a folder",
                config.state_dir.display(),
                parent.display()
            );
        }
    }
    if config.sealing_key_file.exists() {
        Sealer::load(&config.sealing_key_file)?;
    }
    let pki = config.state_dir.join("pki");
    if pki.join("ca.key").exists() {
        Ca::load_or_create(&pki)?;
    }
    check_signature_setup(config)?;
    Ok(())
}

/// Checks the keyring and `gpgv` when signatures are configured, so that a
/// setup that cannot check any signature stops the start instead of failing
/// each signed upload.
fn check_signature_setup(config: &Config) -> anyhow::Result<()> {
    if let Some(keyring) = &config.images.signature_keyring {
        crate::signatures::check_setup(&config.images.gpgv, keyring)
            .with_context(|| format!("invalid config file {}", config.path.display()))?;
    }
    Ok(())
}

/// Builds the shared state from a checked configuration.
pub async fn build_app(config: Config) -> anyhow::Result<Arc<App>> {
    create_private_dir(&config.state_dir)?;
    let pool = db::open(&config.database_url)
        .await
        .with_context(|| format!("cannot open database {}", config.database_url))?;
    let sealer = load_sealer(&config, &pool).await?;
    let ca = Ca::load_or_create(&config.state_dir.join("pki"))?;
    let dns = Dns::from_config(&config.dns)?;
    let mailer = Mailer::new(&config.handoff, config.smtp.as_ref())?;
    let images =
        rackhand_images::ImageStore::open(&config.images.store_dir).with_context(|| {
            format!(
                "cannot open the image store images.store_dir {}",
                config.images.store_dir.display()
            )
        })?;
    Ok(Arc::new(App {
        images,
        pool,
        config,
        sealer,
        dns,
        mailer,
        ca,
        failpoints: Failpoints::from_env(),
        jobs_ready: Notify::new(),
        tasks_ready: Notify::new(),
        operations_ready: Notify::new(),
        consoles: Default::default(),
    }))
}

/// Creates `dir` if needed and makes it readable only by its owner: it
/// contains the database (customer data), the CA key and the sealing key.
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state_dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot restrict the permissions of state_dir {}",
            dir.display()
        )
    })
}

/// Loads the sealing key, creating it only for a database that contains no
/// sealed value yet: a missing key for existing secrets is an error, never
/// a silent new key that would make them unreadable.
async fn load_sealer(config: &Config, pool: &db::Pool) -> anyhow::Result<Sealer> {
    let path = &config.sealing_key_file;
    if path.exists() {
        return Ok(Sealer::load(path)?);
    }
    let sealed: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM nodes) + (SELECT COUNT(*) FROM services WHERE root_password_sealed IS NOT NULL)",
    )
    .fetch_one(pool)
    .await?;
    if sealed > 0 {
        anyhow::bail!(
            "sealing key file {} is missing but the database contains sealed secrets; restore the key file",
            path.display()
        );
    }
    let sealer = Sealer::generate(path)?;
    tracing::warn!(path = %path.display(), "created a new sealing key; back it up, sealed secrets cannot be read without it");
    Ok(sealer)
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    check_signature_setup(&config)?;
    // Bind first, so a port in use stops the start before any state is
    // created.
    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot bind api.listen {}", config.api.listen))?;
    let agent_listener = TcpListener::bind(config.agents.listen)
        .await
        .with_context(|| format!("cannot bind agents.listen {}", config.agents.listen))?;
    let app = build_app(config).await?;
    let shutdown = CancellationToken::new();

    let armed = app.failpoints.armed();
    if !armed.is_empty() {
        tracing::warn!(failpoints = ?armed, "failpoints are armed; this process is under test");
    }

    let tls_config = Arc::new(app.ca.server_config(&app.config.agents.server_names)?);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        api = %api_listener.local_addr()?,
        agents = %agent_listener.local_addr()?,
        ca_fingerprint = %app.ca.fingerprint,
        "control plane started"
    );
    if app.config.api.tokens.is_empty() {
        tracing::warn!("no [[api.tokens]] configured; every operator API request will be rejected");
    }

    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..app.config.worker.concurrency {
        tasks.spawn(jobs::worker::run(app.clone(), index, shutdown.clone()));
    }
    tasks.spawn(agents::tls::serve(
        agent_listener,
        tls_config,
        agents::router(app.clone()),
        shutdown.clone(),
    ));
    let api_shutdown = shutdown.clone();
    let api_router = api::router(app.clone());
    tasks.spawn(async move {
        let result = axum::serve(api_listener, api_router)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::error!(error = %error, "operator API server failed");
        }
    });

    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    app.pool.close().await;
    tracing::info!("control plane stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
