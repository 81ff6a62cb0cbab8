//! `rackhand`: the operator CLI over the control plane's REST API.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use rackhand_control_plane::install::MAX_TEMPLATE_BYTES;
use serde_json::{Value, json};

#[path = "rackhand/image_files.rs"]
mod image_files;

#[derive(Parser)]
#[command(name = "rackhand", version, about = "Operate a Rackhand control plane")]
struct Cli {
    /// Base URL of the control plane's operator API.
    #[arg(
        long,
        env = "RACKHAND_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API token (prefer RACKHAND_TOKEN or --token-file over the command line).
    #[arg(long, env = "RACKHAND_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the API token.
    #[arg(long, env = "RACKHAND_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Datacenter sites.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Subnets that service addresses come from.
    #[command(subcommand)]
    Subnet(SubnetCommand),
    /// Bare-metal nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Netboot images (kernel + initrd, by sha256): register, upload, stage.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Products customers order.
    #[command(subcommand)]
    Product(ProductCommand),
    /// Install templates (kickstart, preseed, cloud-config, container, and
    /// seed templates for single NoCloud or configdrive files) that
    /// products' orders render into the files their installer reads.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Orders.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Enrolled site agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Payment webhook events as received (applied, ignored, rejected).
    WebhookEvents,
}

#[derive(Subcommand)]
enum SiteCommand {
    Create {
        name: String,
    },
    List,
    /// Create a one-time enrollment token for a site agent.
    EnrollToken {
        site: String,
    },
}

#[derive(Subcommand)]
enum SubnetCommand {
    Create(SubnetArgs),
    List,
}

#[derive(Args)]
struct SubnetArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    site: String,
    /// Network in CIDR notation, such as 203.0.113.0/24.
    #[arg(long)]
    cidr: String,
    #[arg(long)]
    gateway: Option<String>,
    /// First address handed to services (default: first host address).
    #[arg(long)]
    range_start: Option<String>,
    /// Last address handed to services (default: last host address).
    #[arg(long)]
    range_end: Option<String>,
    /// Reverse zone for PTR records (default: derived from the network).
    #[arg(long)]
    ptr_zone: Option<String>,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Add a node. Leave out --boot-mac, --cpu-cores, --ram-mib or --disk-gb
    /// and the site agent reads them from the BMC's inventory.
    Create(NodeArgs),
    /// Show a node with its last inventory.
    Show { name: String },
    /// Read the node's inventory from its BMC again and store it.
    Inspect { name: String },
    /// Show or change the power state.
    Power {
        name: String,
        /// status, on, off (orderly shutdown), force-off or reset.
        action: String,
        /// Act even while an order is provisioning the node.
        #[arg(long)]
        force: bool,
    },
    /// Set the boot device override.
    Boot {
        name: String,
        /// pxe, disk, cd, uefi-http or bios-setup.
        target: String,
        /// Keep the override for every boot, not just the next one.
        #[arg(long)]
        persistent: bool,
        /// uefi or legacy; by default the node keeps its mode.
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Insert an ISO (by URL) as the virtual CD, or eject it.
    Media {
        name: String,
        /// The ISO's http(s) URL; leave out with --eject.
        // Named `iso` so it cannot clash with the global --url option.
        #[arg(value_name = "ISO_URL")]
        iso: Option<String>,
        #[arg(long, conflicts_with = "iso")]
        eject: bool,
        #[arg(long)]
        force: bool,
    },
    /// Show sensor readings and overall health.
    Sensors { name: String },
    /// Show where the node's serial console is served, or attach to it
    /// (Serial-over-LAN through the site agent; Ctrl-] detaches).
    Console {
        name: String,
        #[arg(long)]
        attach: bool,
    },
    /// Show a node operation whose wait ran out.
    Operation { id: i64 },
    /// Change a node's BMC URL, user name or password (for example after an
    /// order failed on bad credentials; then retry the order).
    SetBmc {
        name: String,
        /// redfish, idrac, ilo, ipmi or ironic.
        #[arg(long)]
        bmc_driver: Option<String>,
        #[arg(long)]
        bmc_url: Option<String>,
        #[arg(long)]
        bmc_username: Option<String>,
        /// File holding the new BMC password, or `-` for standard input.
        #[arg(long)]
        bmc_password_file: Option<PathBuf>,
    },
    List {
        #[arg(long)]
        site: Option<String>,
    },
    /// Give a node its own boot files, which win over the site agent's
    /// [pxe] ones, or return it to the site's with --clear.
    SetBoot {
        name: String,
        /// File PXE firmware fetches over TFTP (relative to the TFTP root).
        #[arg(long)]
        tftp_file: Option<String>,
        /// Boot file URL for UEFI HTTP boot firmware.
        #[arg(long)]
        http_url: Option<String>,
        /// Script URL for a client already running iPXE.
        #[arg(long)]
        ipxe_script_url: Option<String>,
        #[arg(long, conflicts_with_all = ["tftp_file", "http_url", "ipxe_script_url"])]
        clear: bool,
    },
}

#[derive(Args)]
struct NodeArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    site: String,
    #[arg(long)]
    subnet: String,
    /// MAC address of the NIC the node netboots from (default: read from
    /// the BMC).
    #[arg(long)]
    boot_mac: Option<String>,
    #[arg(long)]
    cpu_cores: Option<u32>,
    /// RAM in MiB.
    #[arg(long)]
    ram_mib: Option<u32>,
    /// Disk in GB.
    #[arg(long)]
    disk_gb: Option<u32>,
    /// Read and store the inventory even when every value above is given.
    #[arg(long)]
    inspect: bool,
    /// redfish, idrac, ilo, ipmi or ironic.
    #[arg(long, default_value = "redfish")]
    bmc_driver: String,
    /// BMC address: a Redfish service root or ComputerSystem URL,
    /// ipmi://host[:port] for IPMI, or an Ironic node URL.
    #[arg(long)]
    bmc_url: String,
    #[arg(long)]
    bmc_username: String,
    /// File holding the BMC password, or `-` for standard input.
    #[arg(long)]
    bmc_password_file: PathBuf,
    /// PEM file of CA certificates trusted for the BMC's HTTPS certificate
    /// (BMCs usually carry a self-signed one).
    #[arg(long)]
    bmc_ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the BMC's certificate; only that certificate
    /// is then accepted.
    #[arg(long)]
    bmc_fingerprint: Option<String>,
}

#[derive(Subcommand)]
enum ImageCommand {
    Create(Box<ImageArgs>),
    List,
    /// Show an image's files (uploaded, signed) and its pre-staging per site.
    Show {
        name: String,
    },
    /// Upload one file of an image created with --upload, for example to
    /// retry a file that failed.
    Upload {
        name: String,
        /// kernel, initrd or disk.
        role: String,
        file: PathBuf,
        /// Detached OpenPGP signature of FILE (`gpg --detach-sign FILE`).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Delete an image that no product uses, such as one whose upload
    /// failed; its stored files go too unless another image uses them.
    Delete {
        name: String,
    },
    /// Have a site's agent download the image into its cache now and keep
    /// it there.
    Stage {
        name: String,
        #[arg(long)]
        site: String,
    },
}

#[derive(Args)]
struct ImageArgs {
    #[arg(long)]
    name: String,
    /// Where site agents download the kernel on its first boot (default:
    /// it must be imported on each agent with `rackhand-site-agent image import`).
    #[arg(long)]
    kernel_url: Option<String>,
    /// Where site agents download the initrd on its first boot.
    #[arg(long)]
    initrd_url: Option<String>,
    /// Kernel file; its sha256 is computed locally.
    #[arg(
        long,
        conflicts_with = "kernel_sha256",
        required_unless_present = "kernel_sha256"
    )]
    kernel: Option<PathBuf>,
    #[arg(long)]
    kernel_sha256: Option<String>,
    /// Initrd file; its sha256 is computed locally.
    #[arg(
        long,
        conflicts_with = "initrd_sha256",
        required_unless_present = "initrd_sha256"
    )]
    initrd: Option<PathBuf>,
    #[arg(long)]
    initrd_sha256: Option<String>,
    /// Extra kernel command-line arguments.
    #[arg(long, default_value = "")]
    kernel_args: String,
    /// OS family shown to operators and templates, such as debian or rhel.
    #[arg(long, default_value = "linux")]
    os_family: String,
    /// The install method, which names what the kernel and initrd do: live,
    /// image, kickstart, preseed, cloud-init or container. `image` writes
    /// --disk to the node's disk.
    #[arg(long, default_value = "live")]
    install_method: String,
    /// Disk image that an `image` install writes; its sha256 and size are
    /// computed locally.
    #[arg(long, conflicts_with = "disk_sha256")]
    disk: Option<PathBuf>,
    #[arg(long, requires = "disk_size")]
    disk_sha256: Option<String>,
    /// Size of the disk image in bytes, with --disk-sha256.
    #[arg(long)]
    disk_size: Option<u64>,
    /// The URL site agents download the disk image from on its first use.
    #[arg(long)]
    disk_url: Option<String>,
    /// Upload --kernel, --initrd and --disk into the control plane, which
    /// then serves them to the agents.
    #[arg(long, requires_all = ["kernel", "initrd"], conflicts_with_all = ["kernel_url", "initrd_url", "disk_url", "disk_sha256"])]
    upload: bool,
    /// Detached OpenPGP signature of --kernel, checked on upload.
    #[arg(long, requires = "upload")]
    kernel_signature: Option<PathBuf>,
    /// Detached OpenPGP signature of --initrd, checked on upload.
    #[arg(long, requires = "upload")]
    initrd_signature: Option<PathBuf>,
    /// Detached OpenPGP signature of --disk, checked on upload.
    #[arg(long, requires = "upload")]
    disk_signature: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ProductCommand {
    Create(ProductArgs),
    List,
}

#[derive(Args)]
struct ProductArgs {
    #[arg(long)]
    name: String,
    /// Price in minor units (cents).
    #[arg(long)]
    price_minor: u32,
    /// ISO 4217 currency code, such as eur.
    #[arg(long)]
    currency: String,
    #[arg(long)]
    min_cpu_cores: u32,
    #[arg(long)]
    min_ram_mib: u32,
    #[arg(long)]
    min_disk_gb: u32,
    #[arg(long)]
    image: String,
    /// The install template its orders render (see `rackhand template`).
    #[arg(long)]
    template: Option<String>,
    /// A seed template (meta-data, network-config, openstack-meta-data or
    /// openstack-network-data) that replaces that built-in file of a
    /// cloud-config product; repeat for several files.
    #[arg(long = "seed-template", value_name = "NAME")]
    seed_templates: Vec<String>,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Upload a template from a file, replacing the one of the same name.
    /// The control plane checks it first and stores nothing when it fails.
    Put {
        name: String,
        /// kickstart, preseed, cloud-config, container, meta-data,
        /// network-config, openstack-meta-data or openstack-network-data.
        #[arg(long)]
        format: String,
        /// The Handlebars template file.
        #[arg(long)]
        file: PathBuf,
    },
    List,
    /// Print a template's body (with --json: its details and the products
    /// that use it).
    Show {
        name: String,
    },
    /// Delete a template that no product uses.
    Delete {
        name: String,
    },
    /// Print a template rendered with an order's values, or with the
    /// sample order's. The root password hash is a stand-in and the
    /// callback URL a placeholder.
    Render {
        name: String,
        /// The order whose values to use (its node and address must be
        /// chosen); without it the sample order the upload checks use.
        #[arg(long)]
        order: Option<i64>,
    },
}

#[derive(Subcommand)]
enum OrderCommand {
    Create {
        #[arg(long)]
        product: String,
        #[arg(long)]
        site: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        hostname: Option<String>,
        /// A file of OpenSSH public keys (one per line, such as
        /// ~/.ssh/id_ed25519.pub) for root on the installed system;
        /// repeat for several files.
        #[arg(long = "ssh-key-file", value_name = "FILE")]
        ssh_key_files: Vec<PathBuf>,
    },
    List {
        #[arg(long)]
        state: Option<String>,
    },
    /// Print an order's state and activity log.
    Show { id: i64 },
    /// Requeue a failed order at the phase that failed.
    Retry {
        id: i64,
        /// Allow the welcome e-mail to be sent again (it may have been delivered before).
        #[arg(long)]
        resend_email: bool,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    List,
}

struct Client {
    http: reqwest::Client,
    /// The same client without an overall time limit, for uploads.
    streams: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = match value.get("error").and_then(Value::as_str) {
                Some(message) => message.to_string(),
                // The control plane answers a 404 of a known route with a
                // JSON error, so a bare 404 comes from an unknown path.
                None if status == reqwest::StatusCode::NOT_FOUND => {
                    format!(
                        "{url} answered 404 without a control plane error, so it has no such API endpoint; check that --url is the control plane's api.listen"
                    )
                }
                None => value.to_string(),
            };
            bail!(
                "{} {}: {message}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(read_secret(path)?),
        (None, None) => None,
    };
    let client = Client {
        http: rackhand_control_plane::http_client::build(std::time::Duration::from_secs(150))?,
        streams: rackhand_control_plane::http_client::build_for_streams()?,
        base: cli.url.clone(),
        token,
    };
    let json = cli.json;

    let (value, columns): (Value, &[&str]) = match cli.command {
        Command::Site(SiteCommand::Create { name }) => (
            client.post("/v1/sites", json!({ "name": name })).await?,
            &[],
        ),
        Command::Site(SiteCommand::List) => (
            client.get("/v1/sites").await?,
            &["id", "name", "nodes", "agents"],
        ),
        Command::Site(SiteCommand::EnrollToken { site }) => (
            client
                .post(
                    &format!("/v1/sites/{}/enrollment-tokens", segment(&site)?),
                    json!({}),
                )
                .await?,
            &[],
        ),
        Command::Subnet(SubnetCommand::Create(a)) => {
            let body = json!({ "name": a.name, "site": a.site, "cidr": a.cidr, "gateway": a.gateway,
                "range_start": a.range_start, "range_end": a.range_end, "ptr_zone": a.ptr_zone });
            (client.post("/v1/subnets", body).await?, &[])
        }
        Command::Subnet(SubnetCommand::List) => (
            client.get("/v1/subnets").await?,
            &["id", "name", "site", "cidr", "gateway", "ptr_zone"],
        ),
        Command::Node(NodeCommand::Create(a)) => {
            let password = read_secret(&a.bmc_password_file)?;
            let ca_pem = a
                .bmc_ca_file
                .as_deref()
                .map(|path| {
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read --bmc-ca-file {}", path.display()))
                })
                .transpose()?;
            let body = json!({ "name": a.name, "site": a.site, "subnet": a.subnet, "boot_mac": a.boot_mac,
                "cpu_cores": a.cpu_cores, "ram_mib": a.ram_mib, "disk_gb": a.disk_gb, "inspect": a.inspect,
                "bmc": { "driver": a.bmc_driver, "url": a.bmc_url, "username": a.bmc_username, "password": password,
                         "ca_pem": ca_pem, "fingerprint": a.bmc_fingerprint } });
            (client.post("/v1/nodes", body).await?, &[])
        }
        Command::Node(NodeCommand::SetBoot {
            name,
            tftp_file,
            http_url,
            ipxe_script_url,
            clear,
        }) => {
            let boot = if clear {
                Value::Null
            } else {
                json!({ "tftp_file": tftp_file, "http_url": http_url, "ipxe_script_url": ipxe_script_url })
            };
            (
                client
                    .call(
                        reqwest::Method::PATCH,
                        &format!("/v1/nodes/{}", segment(&name)?),
                        Some(json!({ "boot": boot })),
                    )
                    .await?,
                &[],
            )
        }
        Command::Node(NodeCommand::Show { name }) => (
            client
                .get(&format!("/v1/nodes/{}", segment(&name)?))
                .await?,
            &[],
        ),
        Command::Node(NodeCommand::Inspect { name }) => (
            client
                .post(&format!("/v1/nodes/{}/inspect", segment(&name)?), json!({}))
                .await?,
            &[],
        ),
        Command::Node(NodeCommand::Power {
            name,
            action,
            force,
        }) => {
            let path = format!("/v1/nodes/{}/power", segment(&name)?);
            if action == "status" {
                (client.get(&path).await?, &[])
            } else {
                let body = json!({ "action": action, "force": force });
                (client.post(&path, body).await?, &[])
            }
        }
        Command::Node(NodeCommand::Boot {
            name,
            target,
            persistent,
            mode,
            force,
        }) => {
            let body =
                json!({ "target": target, "persistent": persistent, "mode": mode, "force": force });
            (
                client
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/nodes/{}/boot", segment(&name)?),
                        Some(body),
                    )
                    .await?,
                &[],
            )
        }
        Command::Node(NodeCommand::Media {
            name,
            iso,
            eject,
            force,
        }) => {
            let path = format!("/v1/nodes/{}/media", segment(&name)?);
            let value = match (iso, eject) {
                (Some(iso), false) => {
                    client
                        .post(&path, json!({ "url": iso, "force": force }))
                        .await?
                }
                (None, true) => {
                    client
                        .call(
                            reqwest::Method::DELETE,
                            &format!("{path}?force={force}"),
                            None,
                        )
                        .await?
                }
                _ => bail!("give the ISO's URL to insert, or --eject"),
            };
            (value, &[])
        }
        Command::Node(NodeCommand::Sensors { name }) => (
            client
                .get(&format!("/v1/nodes/{}/sensors", segment(&name)?))
                .await?,
            &[],
        ),
        Command::Node(NodeCommand::Console { name, attach: true }) => {
            return attach_console(&client, &name).await;
        }
        Command::Node(NodeCommand::Console {
            name,
            attach: false,
        }) => (
            client
                .get(&format!("/v1/nodes/{}/console", segment(&name)?))
                .await?,
            &[],
        ),
        Command::Node(NodeCommand::Operation { id }) => {
            (client.get(&format!("/v1/operations/{id}")).await?, &[])
        }
        Command::Node(NodeCommand::SetBmc {
            name,
            bmc_driver,
            bmc_url,
            bmc_username,
            bmc_password_file,
        }) => {
            let password = bmc_password_file.as_deref().map(read_secret).transpose()?;
            let body = json!({ "bmc": { "driver": bmc_driver, "url": bmc_url, "username": bmc_username, "password": password } });
            (
                client
                    .call(
                        reqwest::Method::PATCH,
                        &format!("/v1/nodes/{}", segment(&name)?),
                        Some(body),
                    )
                    .await?,
                &[],
            )
        }
        Command::Node(NodeCommand::List { site }) => {
            let path = match site {
                Some(site) => format!("/v1/nodes?site={site}"),
                None => "/v1/nodes".to_string(),
            };
            (
                client.get(&path).await?,
                &[
                    "id",
                    "name",
                    "site",
                    "boot_mac",
                    "cpu_cores",
                    "ram_mib",
                    "disk_gb",
                    "state",
                    "bmc_url",
                ],
            )
        }
        Command::Image(ImageCommand::Create(a)) => return create_image(&client, *a, json).await,
        Command::Image(ImageCommand::List) => (
            client.get("/v1/images").await?,
            &[
                "id",
                "name",
                "state",
                "os_family",
                "install_method",
                "kernel_sha256",
                "initrd_sha256",
                "uploaded_files",
                "signed_files",
            ],
        ),
        Command::Image(ImageCommand::Show { name }) => {
            let image = client
                .get(&format!("/v1/images/{}", segment(&name)?))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&image)?);
            } else {
                image_files::print_image(&image);
            }
            return Ok(());
        }
        Command::Image(ImageCommand::Upload {
            name,
            role,
            file,
            signature,
        }) => {
            let file = image_files::FileToUpload {
                role: &role,
                path: &file,
                signature: signature.as_deref(),
            };
            (image_files::upload(&client, &name, &file).await?, &[])
        }
        Command::Image(ImageCommand::Delete { name }) => {
            client
                .delete(&format!("/v1/images/{}", segment(&name)?))
                .await?;
            println!("image {name} deleted");
            return Ok(());
        }
        Command::Image(ImageCommand::Stage { name, site }) => (
            client
                .post(
                    &format!("/v1/images/{}/stage", segment(&name)?),
                    json!({ "site": site }),
                )
                .await?,
            &[],
        ),
        Command::Product(ProductCommand::Create(a)) => {
            let body = json!({ "name": a.name, "price_minor": a.price_minor, "currency": a.currency,
                "min_cpu_cores": a.min_cpu_cores, "min_ram_mib": a.min_ram_mib, "min_disk_gb": a.min_disk_gb, "image": a.image,
                "template": a.template, "seed_templates": a.seed_templates });
            (client.post("/v1/products", body).await?, &[])
        }
        Command::Product(ProductCommand::List) => (
            client.get("/v1/products").await?,
            &[
                "id",
                "name",
                "price_minor",
                "currency",
                "min_cpu_cores",
                "min_ram_mib",
                "min_disk_gb",
                "image",
                "template",
                "seed_templates",
            ],
        ),
        Command::Template(TemplateCommand::Put { name, format, file }) => {
            let body = read_template_file(&file)?;
            let path = format!("/v1/templates/{}", segment(&name)?);
            let body = json!({ "format": format, "body": body });
            (client.put(&path, body).await?, &[])
        }
        Command::Template(TemplateCommand::List) => (
            client.get("/v1/templates").await?,
            &["name", "format", "bytes", "sha256", "updated_at"],
        ),
        Command::Template(TemplateCommand::Show { name }) => {
            let template = client
                .get(&format!("/v1/templates/{}", segment(&name)?))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&template)?);
            } else {
                print!("{}", template["body"].as_str().unwrap_or_default());
            }
            return Ok(());
        }
        Command::Template(TemplateCommand::Delete { name }) => {
            client
                .delete(&format!("/v1/templates/{}", segment(&name)?))
                .await?;
            println!("template {name} deleted");
            return Ok(());
        }
        Command::Template(TemplateCommand::Render { name, order }) => {
            let rendered = client
                .post(
                    &format!("/v1/templates/{}/render", segment(&name)?),
                    json!({ "order": order }),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rendered)?);
                return Ok(());
            }
            let files = rendered["files"].as_array().cloned().unwrap_or_default();
            let several = files.len() > 1;
            for file in files {
                if several {
                    println!("==> {} <==", file["name"].as_str().unwrap_or_default());
                }
                print!("{}", file["content"].as_str().unwrap_or_default());
            }
            return Ok(());
        }
        Command::Order(OrderCommand::Create {
            product,
            site,
            email,
            hostname,
            ssh_key_files,
        }) => {
            let mut keys = Vec::new();
            for file in &ssh_key_files {
                keys.extend(read_ssh_key_file(file)?);
            }
            let body = json!({ "product": product, "site": site, "customer_email": email,
                "hostname": hostname, "ssh_authorized_keys": keys });
            (client.post("/v1/orders", body).await?, &[])
        }
        Command::Order(OrderCommand::List { state }) => {
            let path = match state {
                Some(state) => format!("/v1/orders?state={state}"),
                None => "/v1/orders".to_string(),
            };
            (
                client.get(&path).await?,
                &[
                    "id", "product", "site", "hostname", "state", "phase", "node", "ipv4",
                ],
            )
        }
        Command::Order(OrderCommand::Show { id }) => {
            let order = client.get(&format!("/v1/orders/{id}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&order)?);
            } else {
                print_order(&order);
            }
            return Ok(());
        }
        Command::Order(OrderCommand::Retry { id, resend_email }) => (
            client
                .post(
                    &format!("/v1/orders/{id}/retry"),
                    json!({ "resend_email": resend_email }),
                )
                .await?,
            &[],
        ),
        Command::Agent(AgentCommand::List) => (
            client.get("/v1/agents").await?,
            &[
                "id",
                "site",
                "agent_version",
                "enrolled_at",
                "last_seen_at",
                "revoked_at",
            ],
        ),
        Command::WebhookEvents => (
            client.get("/v1/webhook-events").await?,
            &[
                "id",
                "provider",
                "event_id",
                "event_type",
                "outcome",
                "invoice_id",
                "reason",
            ],
        ),
    };

    if json || columns.is_empty() {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_table(&value, columns);
    }
    Ok(())
}

/// Tells how to finish an image whose upload of `file` failed: the image
/// exists, incomplete, and keeps the files uploaded before.
fn unfinished_upload_hint(image: &str, file: &image_files::FileToUpload) -> String {
    let signature = file
        .signature
        .map(|path| format!(" --signature {}", path.display()))
        .unwrap_or_default();
    format!(
        "image {image} was created but stays incomplete; after fixing the cause, finish it with `rackhand image upload {image} {} {}{signature}` (and any later file), or remove it with `rackhand image delete {image}`",
        file.role,
        file.path.display()
    )
}

/// Registers an image, and with --upload creates it empty and uploads its
/// files one by one; the image turns ready after the last one.
async fn create_image(client: &Client, a: ImageArgs, json: bool) -> anyhow::Result<()> {
    let uploads: Vec<image_files::FileToUpload> = if a.upload {
        [
            ("kernel", a.kernel.as_deref(), a.kernel_signature.as_deref()),
            ("initrd", a.initrd.as_deref(), a.initrd_signature.as_deref()),
            ("disk", a.disk.as_deref(), a.disk_signature.as_deref()),
        ]
        .into_iter()
        .filter_map(|(role, path, signature)| {
            Some(image_files::FileToUpload {
                role,
                path: path?,
                signature,
            })
        })
        .collect()
    } else {
        Vec::new()
    };
    if a.upload && a.install_method == "image" && a.disk.is_none() {
        bail!("--install-method image writes a disk image; give it with --disk FILE");
    }
    // Check every local file before the image is created, so that a typo
    // leaves nothing behind.
    for file in &uploads {
        image_files::check_local(file)?;
    }
    let (kernel, initrd) = if a.upload {
        (None, None)
    } else {
        (
            Some(digest_arg(a.kernel.as_deref(), a.kernel_sha256)?),
            Some(digest_arg(a.initrd.as_deref(), a.initrd_sha256)?),
        )
    };
    let (disk_sha256, disk_size) = match &a.disk {
        Some(_) if a.upload => (None, None),
        Some(path) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            (Some(digest_arg(Some(path), None)?), Some(size))
        }
        None => (a.disk_sha256, a.disk_size),
    };
    let body = json!({ "name": a.name, "kernel_sha256": kernel, "initrd_sha256": initrd, "kernel_args": a.kernel_args,
        "kernel_url": a.kernel_url, "initrd_url": a.initrd_url, "os_family": a.os_family,
        "install_method": a.install_method, "disk_sha256": disk_sha256, "disk_size": disk_size,
        "disk_url": a.disk_url, "upload": a.upload });
    let mut created = client.post("/v1/images", body).await?;
    for file in &uploads {
        let uploaded = image_files::upload(client, &a.name, file)
            .await
            .with_context(|| unfinished_upload_hint(&a.name, file))?;
        if !json {
            println!(
                "uploaded {} {} sha256 {}",
                file.role,
                file.path.display(),
                cell(uploaded.get("sha256"))
            );
        }
        created["state"] = uploaded["image_state"].clone();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&created)?);
    } else {
        println!(
            "image {} {}",
            cell(created.get("name")),
            cell(created.get("state"))
        );
    }
    Ok(())
}

/// Ends the process without a panic message when standard output is a
/// pipe its reader closed (`rackhand order list | head`). Rust ignores
/// SIGPIPE, so `println!` panics on the broken pipe instead.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// The byte that ends a console session: Ctrl-], as in telnet.
const DETACH: u8 = 0x1d;

/// Joins the terminal to the node's serial console until the operator
/// presses Ctrl-] or the session ends.
async fn attach_console(client: &Client, name: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // Without an overall timeout: a session lasts as long as the operator.
    let http = rackhand_control_plane::http_client::build_for_streams()?;
    let url = format!(
        "{}/v1/nodes/{}/console/attach",
        client.base.trim_end_matches('/'),
        segment(name)?
    );
    let mut request = http
        .get(&url)
        .header(reqwest::header::CONNECTION, "upgrade")
        .header(
            reqwest::header::UPGRADE,
            rackhand_protocol::agent::CONSOLE_UPGRADE,
        );
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the control plane at {}", client.base))?;
    if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        bail!(
            "{} {}: {message}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
    }
    let upgraded = response
        .upgrade()
        .await
        .context("switching to the console")?;
    eprintln!("connected to the serial console of {name}; press Ctrl-] to detach\r");
    let _raw = RawTerminal::enter();
    let (mut from_node, mut to_node) = tokio::io::split(upgraded);
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let keys = async {
        let mut buffer = [0u8; 1024];
        loop {
            let n = stdin.read(&mut buffer).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            let chunk = &buffer[..n];
            if let Some(at) = chunk.iter().position(|b| *b == DETACH) {
                to_node.write_all(&chunk[..at]).await?;
                return anyhow::Ok(());
            }
            to_node.write_all(chunk).await?;
        }
    };
    let output = async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = from_node.read(&mut buffer).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            stdout.write_all(&buffer[..n]).await?;
            stdout.flush().await?;
        }
    };
    tokio::select! {
        result = keys => result?,
        result = output => result?,
    }
    drop(_raw);
    eprintln!("\ndetached from the serial console of {name}");
    Ok(())
}

/// Puts the terminal on standard input in raw mode until dropped, so keys
/// such as Ctrl-C reach the node instead of ending the CLI. Does nothing
/// when standard input is not a terminal.
struct RawTerminal {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    let text = text.trim().to_string();
    anyhow::ensure!(!text.is_empty(), "{} is empty", path.display());
    Ok(text)
}

/// Reads a template file for `template put`, rejecting one over the control
/// plane's size limit before it is sent. The server rejects a large body with
/// a JSON buffering error that names neither the size nor the limit.
fn read_template_file(file: &Path) -> anyhow::Result<String> {
    let metadata = std::fs::metadata(file)
        .with_context(|| format!("cannot read the template file {}", file.display()))?;
    if !metadata.is_file() {
        bail!("the template file {} is not a regular file", file.display());
    }
    let size = metadata.len();
    if size > MAX_TEMPLATE_BYTES as u64 {
        bail!(
            "the template file {} is {size} bytes, but templates may have at most {MAX_TEMPLATE_BYTES} bytes ({} KiB); shorten the template",
            file.display(),
            MAX_TEMPLATE_BYTES / 1024
        );
    }
    std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the template file {}", file.display()))
}

/// Reads the public key lines of an `--ssh-key-file`, skipping blank lines
/// and `#` comments. A file with a private key or without any key line is
/// rejected, because a private key must never leave this machine and a file
/// without keys is most likely the wrong file.
fn read_ssh_key_file(file: &Path) -> anyhow::Result<Vec<String>> {
    // 16 keys of 8 KiB, with room for comments.
    const MAX_KEY_FILE_BYTES: u64 = 256 * 1024;
    let metadata = std::fs::metadata(file)
        .with_context(|| format!("cannot read --ssh-key-file {}", file.display()))?;
    if !metadata.is_file() || metadata.len() > MAX_KEY_FILE_BYTES {
        bail!(
            "--ssh-key-file {} is not a regular file of at most {MAX_KEY_FILE_BYTES} bytes; pass a .pub file",
            file.display()
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --ssh-key-file {}", file.display()))?;
    if text.contains("PRIVATE KEY") || text.contains("PuTTY-User-Key-File") {
        let fix = if file.extension().is_some_and(|ext| ext == "pub") {
            "pass the matching public key file instead".to_string()
        } else {
            format!(
                "pass the public key file instead (such as {}.pub)",
                file.display()
            )
        };
        bail!(
            "--ssh-key-file {} contains a private key; {fix}",
            file.display()
        );
    }
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        bail!(
            "--ssh-key-file {} contains no key, only blank lines or # comments; pass a file with an OpenSSH public key line, such as ~/.ssh/id_ed25519.pub",
            file.display()
        );
    }
    Ok(keys)
}

/// Returns `name` as one percent-encoded URL path segment, so a `/`, `?`
/// or `#` in it cannot change the request's path. A name made only of dots
/// is rejected: URL parsers resolve it (even as `%2E%2E`) as a relative
/// path, and the control plane accepts no such name.
fn segment(name: &str) -> anyhow::Result<String> {
    if name.is_empty() || name.bytes().all(|b| b == b'.') {
        bail!(
            "{name:?} cannot be a name: names are 1 to 63 letters, digits, '-', '_' or '.' with at least one letter or digit"
        );
    }
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

fn digest_arg(file: Option<&Path>, given: Option<String>) -> anyhow::Result<String> {
    if let Some(given) = given {
        return Ok(given);
    }
    let path = file.context("give a file or its sha256")?;
    let mut reader =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
    }
    Ok(hex::encode(context.finish()))
}

/// Formats a table cell; columns ending in `_at` hold Unix milliseconds
/// and are shown as UTC date and time.
fn table_cell(column: &str, value: Option<&Value>) -> String {
    match value.and_then(Value::as_i64) {
        Some(ms) if column.ends_with("_at") => format_utc(ms),
        _ => cell(value),
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn format_utc(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let time = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

fn print_table(value: &Value, columns: &[&str]) {
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    columns
                        .iter()
                        .map(|c| table_cell(c, item.get(*c)))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for row in &rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

fn print_order(order: &Value) {
    let field = |key: &str| cell(order.get(key));
    println!("order {}  {}", field("id"), field("uid"));
    println!("  state:    {}", field("state"));
    println!("  product:  {} at site {}", field("product"), field("site"));
    println!("  customer: {}", field("customer_email"));
    let hostname = match order.get("fqdn").and_then(Value::as_str) {
        Some(fqdn) => fqdn.to_string(),
        None => format!("{} (domain added in the network phase)", field("hostname")),
    };
    println!("  hostname: {hostname}  address: {}", field("ipv4"));
    println!("  node:     {}", field("node"));
    println!(
        "  invoice:  {} ({} {} {})",
        field("invoice_id"),
        field("invoice_state"),
        field("amount_minor"),
        field("currency")
    );
    if order.get("failure_error").is_some_and(|v| !v.is_null()) {
        println!(
            "  failed in {}: {}",
            field("failed_phase"),
            field("failure_error")
        );
        println!("  upstream: {}", field("failure_upstream"));
    }
    println!("activity:");
    for row in order
        .get("activity")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let get = |key: &str| cell(row.get(key));
        println!(
            "  {}  {:<8} {:<9} #{:<2} {}",
            format_time(row.get("created_at").and_then(Value::as_i64)),
            get("phase"),
            get("event"),
            get("attempt"),
            get("message")
        );
    }
}

/// Formats Unix milliseconds as UTC `HH:MM:SS.mmm` (the date is in the JSON).
fn format_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".to_string() };
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn segment_encodes_path_characters() {
        let encoded = segment("a/b?c#d e").expect("a name with letters is accepted");

        assert_eq!(encoded, "a%2Fb%3Fc%23d%20e");
    }

    #[test]
    fn segment_keeps_plain_names() {
        assert_eq!(segment("rocky-9.4_x").expect("valid"), "rocky-9.4_x");
    }

    #[test]
    fn segment_rejects_dot_only_names() {
        for name in ["", ".", "..", "..."] {
            let error = segment(name).expect_err("dot-only names are rejected");

            assert!(error.to_string().contains("at least one letter"), "{error}");
        }
    }
}
