//! Starting the PXE services (DHCP, TFTP, boot HTTP) on the provisioning
//! interface.
//!
//! The agent stays in the host's network namespace, where it reaches the
//! control plane and the BMCs. The three server sockets are opened through a
//! [`SocketFactory`] whose thread entered the provisioning namespace, because
//! a socket keeps the namespace it was created in; TFTP keeps the factory to
//! open one socket per transfer there too.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rackhand_pxe::dhcp::{
    BootFiles, DhcpConfig, DhcpMode, DhcpServer, KnownMacs, LeaseStore, PXE_PORT,
};
use rackhand_pxe::netns::{SocketFactory, UdpOptions};
use rackhand_pxe::tftp::{TftpOptions, TftpServer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::boot_http;
use crate::boot_server::BootContext;
use crate::config::PxeConfig;

/// Builds the DHCP server's settings from the `[pxe]` section.
fn dhcp_config(config: &PxeConfig) -> DhcpConfig {
    let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(config.prefix_len)));
    // Proxy mode leases nothing and ignores the pool, which it may lack.
    let (pool_start, pool_end) = config
        .pool
        .map_or((config.server_ip, config.server_ip), |pool| {
            (pool.start, pool.end)
        });
    DhcpConfig {
        mode: config.dhcp_mode,
        server_ip: config.server_ip,
        interface: Some(config.interface.clone()),
        subnet_mask: mask,
        pool_start,
        pool_end,
        router: config.router,
        dns_servers: config.dns_servers.clone(),
        lease_time: config.lease_time,
        boot: BootFiles {
            tftp_server: config.server_ip,
            bios: config.bios_boot_file.clone(),
            uefi_x64: config.uefi_boot_file.clone(),
            uefi_arm64: config.arm64_boot_file.clone(),
            http_x64: config.http_boot_x64_url.clone(),
            http_ia32: config.http_boot_ia32_url.clone(),
            http_arm64: config.http_boot_arm64_url.clone(),
            ipxe_script_url: format!("{}/boot/{{mac}}.ipxe", config.http_base()),
        },
        relay_subnets: config.relay_subnets.clone(),
        discovery_pool: config.discovery_pool,
        decline_quarantine: config.decline_quarantine,
        ping_check: config.ping_check,
        arp_check: config.arp_check,
    }
}

/// Opens the sockets and spawns the servers into `tasks`.
pub fn start(
    config: &PxeConfig,
    state_dir: &Path,
    known: KnownMacs,
    boot: Arc<BootContext>,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let factory = match &config.netns {
        Some(name) => SocketFactory::for_namespace(name)?,
        None => SocketFactory::host(),
    };

    let dhcp_socket = factory
        .udp(
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)),
            UdpOptions {
                broadcast: true,
                reuse_addr: true,
                bind_device: Some(config.interface.clone()),
            },
        )
        .with_context(|| format!("cannot open the DHCP socket on {}", config.interface))?;
    let leases = LeaseStore::open(state_dir.join("dhcp-leases.json"))?;
    let mut dhcp = DhcpServer::new(dhcp_config(config), known, leases, dhcp_socket)?
        .with_ping_factory(factory.clone());
    if config.dhcp_mode == DhcpMode::Proxy {
        let pxe_socket = factory
            .udp(
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PXE_PORT)),
                UdpOptions {
                    broadcast: true,
                    reuse_addr: true,
                    bind_device: Some(config.interface.clone()),
                },
            )
            .with_context(|| {
                format!(
                    "cannot open the proxyDHCP socket on port {PXE_PORT} of {}",
                    config.interface
                )
            })?;
        dhcp = dhcp.with_pxe_socket(pxe_socket)?;
    }
    let dhcp_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(error) = dhcp.run(dhcp_shutdown).await {
            tracing::error!(error = %error, "DHCP server stopped");
        }
    });

    if config.tftp {
        let tftp_socket = factory
            .udp(
                SocketAddr::V4(SocketAddrV4::new(config.server_ip, 69)),
                UdpOptions {
                    broadcast: false,
                    reuse_addr: true,
                    bind_device: None,
                },
            )
            .with_context(|| format!("cannot open the TFTP socket on {}:69", config.server_ip))?;
        let tftp = TftpServer::new(
            config.tftp_root.clone(),
            tftp_socket,
            factory.clone(),
            TftpOptions::default(),
        )
        .with_context(|| format!("cannot serve TFTP from {}", config.tftp_root.display()))?;
        let tftp_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = tftp.run(tftp_shutdown).await {
                tracing::error!(error = %error, "TFTP server stopped");
            }
        });
    }

    let address = SocketAddr::V4(SocketAddrV4::new(config.server_ip, config.http_port));
    let listener = factory
        .tcp_listener(address)
        .with_context(|| format!("cannot open the boot HTTP socket on {address}"))?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tasks.spawn(boot_http::serve(listener, boot, shutdown));
    tracing::info!(
        netns = config.netns.as_deref().unwrap_or("-"),
        interface = %config.interface,
        dhcp_mode = ?config.dhcp_mode,
        server_ip = %config.server_ip,
        http_port = config.http_port,
        tftp = config.tftp,
        "PXE services started"
    );
    Ok(())
}
