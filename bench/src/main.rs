//! `rackhand-bench`: runs Rackhand's boot HTTP, TFTP and DHCP servers
//! without a control plane, and times image verification, for `bench/run`.
//!
//! The servers are the site agent's own code paths (`boot_http::serve`,
//! `TftpServer`, `DhcpServer` with a lease file, `ImageStore::open_verified`),
//! fed with synthetic site nodes and images instead of a control plane's
//! lists.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rackhand_images::{ImageStore, Sha256Digest};
use rackhand_protocol::MacAddr;
use rackhand_protocol::agent::SiteNode;
use rackhand_pxe::dhcp::{
    BootFiles, DECLINE_QUARANTINE, DhcpConfig, DhcpMode, DhcpServer, KnownMacs, LeaseStore,
};
use rackhand_pxe::netns::{SocketFactory, UdpOptions};
use rackhand_pxe::tftp::{TftpOptions, TftpServer};
use rackhand_site_agent::boot_server::BootContext;
use rackhand_site_agent::site_nodes::SiteNodes;
use rackhand_site_agent::state::State;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "rackhand-bench",
    about = "Rackhand servers and probes for bench/run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the boot HTTP routes (and TFTP) until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Serve DHCP on one interface as the site agent does (full mode, lease
    /// file in the state folder), until SIGTERM or SIGINT.
    Dhcp(DhcpArgs),
    /// Print the leases a restarted DHCP server would load from a state
    /// folder, one `MAC IP STATE` line each.
    DhcpLeases {
        /// Folder of `dhcp-leases.json` and its journal.
        #[arg(long)]
        state: PathBuf,
    },
    /// Hash a stored blob the way the boot path does when its record is
    /// missing, and print the time of each repetition.
    Verify {
        /// Image store folder (with `blobs/`).
        #[arg(long)]
        store: PathBuf,
        /// sha256 of the blob to verify.
        #[arg(long)]
        digest: Sha256Digest,
        /// Repetitions; each prints `seconds=<s> bytes=<n>`.
        #[arg(long, default_value_t = 1)]
        reps: u32,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Image store folder; created when missing.
    #[arg(long)]
    store: PathBuf,
    /// Folder for the agent's SQLite state and access log.
    #[arg(long)]
    state: PathBuf,
    /// Address of the boot HTTP server.
    #[arg(long)]
    http: SocketAddr,
    /// Address of the TFTP server; no TFTP when absent.
    #[arg(long, requires = "tftp_root")]
    tftp: Option<SocketAddr>,
    /// Folder that TFTP serves.
    #[arg(long)]
    tftp_root: Option<PathBuf>,
    /// Largest TFTP `windowsize` granted (the agent's default when absent).
    #[arg(long)]
    max_windowsize: Option<u16>,
    /// Synthetic site nodes (reservations) to hold, with distinct MACs.
    #[arg(long, default_value_t = 0)]
    nodes: u32,
    /// Synthetic images to import into the store before serving.
    #[arg(long, default_value_t = 0)]
    images: u32,
    /// Size of each synthetic image in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    image_size: u64,
    /// File that receives the digests of the synthetic images, one a line.
    #[arg(long)]
    digests_out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DhcpArgs {
    /// Provisioning interface; the socket is bound to 0.0.0.0:67 on it.
    #[arg(long)]
    interface: String,
    /// The server's address on the interface.
    #[arg(long)]
    server_ip: Ipv4Addr,
    /// Prefix length of the provisioning subnet.
    #[arg(long)]
    prefix_len: u8,
    /// First pool address.
    #[arg(long)]
    pool_start: Ipv4Addr,
    /// Last pool address.
    #[arg(long)]
    pool_end: Ipv4Addr,
    /// Folder of the lease file (`dhcp-leases.json`, as in the agent's state
    /// folder).
    #[arg(long)]
    state: PathBuf,
    /// File of the site nodes' MACs, one a line: the agent answers only
    /// MACs it knows.
    #[arg(long)]
    macs: PathBuf,
    /// Lease time in seconds.
    #[arg(long, default_value_t = 3600)]
    lease_seconds: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Dhcp(args) => serve_dhcp(args).await,
        Command::DhcpLeases { state } => print_leases(&state),
        Command::Verify {
            store,
            digest,
            reps,
        } => verify(&store, digest, reps).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rackhand-bench: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = ImageStore::open(&args.store)?;
    let state = State::open(&args.state).await?;
    let nodes = Arc::new(SiteNodes::new(KnownMacs::new()));
    nodes.replace_listed(nodes.fetch_started(), synthetic_nodes(args.nodes));

    let digests =
        import_synthetic_images(&store, &args.state, args.images, args.image_size).await?;
    if let Some(path) = &args.digests_out {
        let text: String = digests.iter().map(|digest| format!("{digest}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }

    let access_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.state.join("access.log"))
        .context("cannot open the access log")?;
    let context = Arc::new(BootContext {
        state,
        store,
        base_url: format!("http://{}", args.http),
        nodes,
        callbacks: Arc::new(Notify::new()),
        access_log: Mutex::new(Some(access_log)),
        ironic_http_root: None,
        firmware_dir: None,
        script_template: None,
    });

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    tasks.spawn(rackhand_site_agent::boot_http::serve(
        listener,
        context,
        shutdown.clone(),
    ));

    if let (Some(address), Some(root)) = (args.tftp, args.tftp_root) {
        let factory = SocketFactory::host();
        let socket = factory.udp(address, UdpOptions::default())?;
        let mut options = TftpOptions::default();
        if let Some(max) = args.max_windowsize {
            options.max_windowsize = max;
        }
        let tftp = TftpServer::new(root, socket, factory, options)?;
        let tftp_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = tftp.run(tftp_shutdown).await {
                eprintln!("rackhand-bench: TFTP server stopped: {error}");
            }
        });
    }

    println!("ready");
    std::io::stdout().flush()?;
    wait_for_signal().await?;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Runs the DHCP server with the settings `pxe_services` derives from an
/// agent's `[pxe]` section without a router or boot file overrides.
async fn serve_dhcp(args: DhcpArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.macs)
        .with_context(|| format!("cannot read {}", args.macs.display()))?;
    let known = KnownMacs::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let mac: MacAddr = line
            .parse()
            .with_context(|| format!("{}: {line:?} is not a MAC", args.macs.display()))?;
        known.insert(mac);
    }

    anyhow::ensure!(
        (1..=30).contains(&args.prefix_len),
        "--prefix-len {} must be 1 to 30",
        args.prefix_len
    );
    let config = DhcpConfig {
        mode: DhcpMode::Full,
        server_ip: args.server_ip,
        interface: Some(args.interface.clone()),
        subnet_mask: Ipv4Addr::from(u32::MAX << (32 - u32::from(args.prefix_len))),
        pool_start: args.pool_start,
        pool_end: args.pool_end,
        router: None,
        dns_servers: Vec::new(),
        lease_time: std::time::Duration::from_secs(args.lease_seconds),
        boot: BootFiles {
            tftp_server: args.server_ip,
            bios: "undionly.kpxe".to_owned(),
            uefi_x64: "snponly.efi".to_owned(),
            uefi_arm64: None,
            http_x64: None,
            http_ia32: None,
            http_arm64: None,
            ipxe_script_url: format!("http://{}:8080/boot/{{mac}}.ipxe", args.server_ip),
        },
        relay_subnets: Vec::new(),
        discovery_pool: None,
        decline_quarantine: DECLINE_QUARANTINE,
        ping_check: None,
        arp_check: None,
    };

    let socket = SocketFactory::host()
        .udp(
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)),
            UdpOptions {
                broadcast: true,
                reuse_addr: true,
                bind_device: Some(args.interface.clone()),
            },
        )
        .with_context(|| format!("cannot open the DHCP socket on {}", args.interface))?;
    let leases = LeaseStore::open(args.state.join("dhcp-leases.json"))?;
    let server = DhcpServer::new(config, known, leases, socket)?;

    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    println!("ready");
    std::io::stdout().flush()?;
    wait_for_signal().await?;
    shutdown.cancel();
    task.await.context("DHCP server task failed")??;
    Ok(())
}

fn print_leases(state: &Path) -> anyhow::Result<()> {
    let store = LeaseStore::open(state.join("dhcp-leases.json"))?;
    for lease in store.leases() {
        println!("{} {} {:?}", lease.mac, lease.ip, lease.state);
    }
    Ok(())
}

/// Returns `count` nodes with distinct locally administered MACs.
fn synthetic_nodes(count: u32) -> Vec<SiteNode> {
    (0..count)
        .map(|index| {
            let [_, a, b, c] = index.to_be_bytes();
            SiteNode {
                node_id: i64::from(index) + 1,
                name: format!("bench-node-{index:05}"),
                boot_mac: MacAddr([0x52, 0x54, 0x00, a, b, c]),
                boot: None,
            }
        })
        .collect()
}

/// Imports `count` distinct pseudo-random blobs of `size` bytes, written
/// one at a time through a scratch file in `scratch_dir`.
async fn import_synthetic_images(
    store: &ImageStore,
    scratch_dir: &Path,
    count: u32,
    size: u64,
) -> anyhow::Result<Vec<Sha256Digest>> {
    let scratch = scratch_dir.join("synthetic-image");
    let mut digests = Vec::with_capacity(count as usize);
    for index in 0..count {
        write_pseudo_random(&scratch, u64::from(index) + 1, size)?;
        digests.push(store.import(&scratch).await?.digest);
    }
    if count > 0 {
        std::fs::remove_file(&scratch)
            .with_context(|| format!("cannot remove {}", scratch.display()))?;
    }
    Ok(digests)
}

/// Writes `size` bytes of a xorshift stream seeded with `seed`.
fn write_pseudo_random(path: &Path, seed: u64, size: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut written = 0;
    while written < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let take = (size - written).min(8) as usize;
        file.write_all(&bytes[..take])?;
        written += take as u64;
    }
    file.flush()?;
    Ok(())
}

/// Removes the blob's record before each repetition, so
/// `open_verified` hashes the whole blob as it does after a change.
async fn verify(store_root: &Path, digest: Sha256Digest, reps: u32) -> anyhow::Result<()> {
    let store = ImageStore::open(store_root)?;
    let record = store_root
        .join("blobs")
        .join(format!("{}.json", digest.to_hex()));
    for _ in 0..reps {
        match std::fs::remove_file(&record) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", record.display()));
            }
        }
        let started = Instant::now();
        let verified = store.open_verified(&digest).await?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            verified.rehashed,
            "blob {digest} was not hashed again; its record could not be removed"
        );
        println!("seconds={seconds:.6} bytes={}", verified.size);
    }
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
