//! Rackhand's site agent: sits beside the racks, enrolls once with the
//! control plane, then runs the bare-metal steps of its site's orders
//! (`driver`: BMC boot override and power-on; `image`: verified netboot and
//! callback) and the PXE services they need.
//!
//! Design note. The agent always dials out: it long-polls the control plane
//! for tasks over mutual TLS, so datacenters need no inbound rule. Every
//! side effect is recorded in the local SQLite state under its correlation
//! key before it happens, and every result is stored until acknowledged, so
//! a task handed out again after a crash of either side is answered from
//! the records instead of being repeated. The PXE services answer only the
//! MACs of the site's nodes, refreshed from the control plane and added from
//! each task as it arrives (see [`site_nodes`]).

pub mod boot_http;
pub mod boot_server;
pub mod client;
pub mod config;
pub mod driver_step;
pub mod enroll;
pub mod failpoint;
pub mod image_step;
pub mod install_files;
pub mod ironic_boot;
pub mod operations;
pub mod pxe_services;
pub mod script_template;
pub mod site_nodes;
pub mod staging;
pub mod state;
pub mod tasks;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rackhand_images::ImageStore;
use rackhand_pxe::dhcp::KnownMacs;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::boot_server::BootContext;
use crate::client::ControlPlane;
use crate::config::Config;
use crate::driver_step::{DriverSettings, IronicSettings};
use crate::failpoint::Failpoints;
use crate::site_nodes::SiteNodes;
use crate::staging::Stager;
use crate::state::State;

/// How often the node list is refreshed from the control plane.
const SITE_REFRESH: Duration = Duration::from_secs(15);

/// Checks what the agent needs from the machine before it changes anything:
/// the provisioning namespace and interface exist, and an agent that is not
/// enrolled yet can read its enrollment token. `check-config` runs it too.
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    if let Some(pxe) = &config.pxe {
        let factory = match &pxe.netns {
            Some(name) => {
                if !std::path::Path::new("/run/netns").join(name).exists() {
                    anyhow::bail!(
                        "{}: pxe.netns {name:?} does not exist (see `ip netns list`); create it or fix the key",
                        config.path.display()
                    );
                }
                rackhand_pxe::netns::SocketFactory::for_namespace(name)?
            }
            None => rackhand_pxe::netns::SocketFactory::host(),
        };
        let probe = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
        let options = rackhand_pxe::netns::UdpOptions {
            bind_device: Some(pxe.interface.clone()),
            ..Default::default()
        };
        factory.udp(probe, options).with_context(|| {
            format!(
                "{}: pxe.interface {:?} is not usable in network namespace {}; fix the key or the network",
                config.path.display(),
                pxe.interface,
                pxe.netns.as_deref().unwrap_or("of the agent")
            )
        })?;
    }
    if !enroll::IdentityFiles::in_dir(&config.state_dir).exist() {
        let token = config.control_plane.enrollment_token.as_ref().with_context(|| {
            format!(
                "{}: this agent is not enrolled yet; set control_plane.enrollment_token_file to a token from `rackhand site enroll-token SITE`",
                config.path.display()
            )
        })?;
        token
            .read()
            .map_err(|message| anyhow::anyhow!("{}: {message}", config.path.display()))?;
    }
    Ok(())
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let failpoints = Failpoints::from_env();
    if !failpoints.armed().is_empty() {
        tracing::warn!(failpoints = ?failpoints.armed(), "failpoints are armed; this process is under test");
    }
    let state = State::open(&config.state_dir).await.with_context(|| {
        format!(
            "cannot open the agent state in {}",
            config.state_dir.display()
        )
    })?;
    let store = ImageStore::open(&config.image_store)?;
    // Image files with a URL (upstream, or a path on the control plane for
    // uploaded files) are downloaded into the store on their first boot or
    // when staged; the boot server reads the store.
    let cache = rackhand_images::ImageCache::new(
        store.clone(),
        &rackhand_images::CacheConfig::new(config.image_cache_budget),
    )?;
    // Before the one-time token is spent: an agent that then cannot open
    // its PXE sockets would need a new token after the fix.
    preflight(&config)?;
    let identity = enroll::ensure_identity(&config.state_dir, &config.control_plane).await?;
    let control_plane = ControlPlane::new(&config.control_plane.url, &identity)?;
    cache.set_origin(control_plane.image_origin(&identity)?);
    let stager = Stager::new(cache.clone(), control_plane.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        site = %identity.site,
        control_plane = %config.control_plane.url,
        "site agent started"
    );

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let callbacks = Arc::new(Notify::new());
    let nodes = Arc::new(SiteNodes::new(KnownMacs::new()));

    let boot_base_url = config
        .pxe
        .as_ref()
        .map(|p| p.http_base())
        .unwrap_or_default();
    let boot = Arc::new(BootContext {
        state: state.clone(),
        store: store.clone(),
        base_url: boot_base_url.clone(),
        nodes: nodes.clone(),
        callbacks: callbacks.clone(),
        access_log: Mutex::new(open_access_log(&config)),
        ironic_http_root: config.ironic.as_ref().map(|i| i.http_root.clone()),
        firmware_dir: config.pxe.as_ref().map(|p| p.tftp_root.clone()),
        script_template: config
            .pxe
            .as_ref()
            .and_then(|p| p.boot_script_template.clone()),
    });
    if let Some(ironic) = &config.ironic {
        // The conductor fetches images in the agent's own namespace.
        let listener = tokio::net::TcpListener::bind(ironic.conductor_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on ironic.conductor_listen {}",
                    ironic.conductor_listen
                )
            })?;
        tracing::info!(listen = %ironic.conductor_listen, "serving images to the Ironic conductor");
        tasks.spawn(boot_http::serve(listener, boot.clone(), shutdown.clone()));
    }

    // Learn the site's nodes before serving DHCP, so the first netboot
    // after a restart is not turned away.
    refresh_site(&control_plane, &nodes, &stager).await;
    if let Some(pxe) = &config.pxe {
        pxe_services::start(
            pxe,
            &config.state_dir,
            nodes.known_macs().clone(),
            boot.clone(),
            &mut tasks,
            shutdown.clone(),
        )?;
    } else {
        tracing::warn!("no [pxe] section: this agent serves no DHCP, TFTP or boot HTTP");
    }

    let sync_plane = control_plane.clone();
    let sync_shutdown = shutdown.clone();
    let sync_nodes = nodes.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SITE_REFRESH) => refresh_site(&sync_plane, &sync_nodes, &stager).await,
                _ = sync_shutdown.cancelled() => return,
            }
        }
    });

    tasks.spawn(rackhand_images::run_scheduled_rehash(
        store.clone(),
        config.image_rehash_interval,
        shutdown.clone().cancelled_owned(),
    ));
    tasks.spawn(operations::run(
        control_plane.clone(),
        config.bmc.timeout,
        shutdown.clone(),
    ));
    let runner = Arc::new(tasks::Runner::new(
        control_plane,
        state,
        cache,
        failpoints,
        DriverSettings {
            bmc_timeout: config.bmc.timeout,
            power_on_grace: config.bmc.power_on_grace,
            ironic: config.ironic.as_ref().map(|i| IronicSettings {
                conductor_url: i.conductor_url.clone(),
                boot_base_url: boot_base_url.clone(),
            }),
        },
        callbacks,
        nodes,
    ));
    tasks.spawn(tasks::run(runner, shutdown.clone()));

    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tracing::info!("site agent stopped");
    Ok(())
}

fn open_access_log(config: &Config) -> Option<std::fs::File> {
    let path = config.state_dir.join("access.log");
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::warn!(path = %path.display(), error = %error, "cannot open the access log; requests are not logged to a file");
            None
        }
    }
}

async fn refresh_site(control_plane: &ControlPlane, nodes: &SiteNodes, stager: &Stager) {
    let started = nodes.fetch_started();
    match control_plane.site().await {
        Ok(site) => {
            nodes.replace_listed(started, site.nodes);
            stager.apply(site.staged_images);
        }
        Err(error) => tracing::warn!(
            error = format!("{error:#}"),
            "refreshing the site's nodes failed"
        ),
    }
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
