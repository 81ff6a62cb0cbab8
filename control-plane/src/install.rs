//! Install templates: the operator's kickstart, preseed, cloud-config and
//! container templates with the seed templates that replace single NoCloud
//! or configdrive files, and their rendering per order into the install
//! files that the site agent serves to the installer (and, for Ironic
//! nodes, puts into the configdrive).
//!
//! # Design
//!
//! A template is stored only after [`check_template`] accepted it, so a
//! stored template renders for any valid order. A product, not an image,
//! names its template: the image is the installer's kernel and initrd,
//! which many products share, while the answer file carries what differs
//! between products built on that installer (disk layout, packages).
//!
//! The image phase first stores the values that the files contain and that
//! later phases reuse: the service address ([`network::ensure_address`])
//! and the sealed root password with its hash
//! ([`credentials::ensure_root_credentials`]). The files are then rendered
//! from stored values each time an agent claims the image task, so every
//! hand-out carries the same bytes and the customer's e-mail names the
//! same password and address. Only the password's hash reaches a file.
//!
//! The installer's callback URL contains the agent's one-time token, which
//! the control plane never sees, so files carry
//! [`CALLBACK_URL_PLACEHOLDER`] and the agent fills it in.

use std::fmt;
use std::str::FromStr;

use rackhand_install_templates::container::ContainerSpec;
use rackhand_install_templates::operator::{self, OperatorTemplate, TemplateKind};
use rackhand_install_templates::{
    ImageInfo, Ipv4Settings, NetworkSettings, OrderContext, OrderContextInput, OsFamily,
    TemplateError, configdrive, nocloud,
};
use rackhand_protocol::Secret;
use rackhand_protocol::agent::{
    CALLBACK_URL_PLACEHOLDER, CONFIGDRIVE_META_DATA_FILE, CONFIGDRIVE_NETWORK_DATA_FILE,
    InstallFile, InstallMethod, KICKSTART_FILE, MAX_CMDLINE_NETWORK_CONFIG_BYTES,
    NOCLOUD_META_DATA_FILE, NOCLOUD_NETWORK_CONFIG_FILE, NOCLOUD_USER_DATA_FILE, PRESEED_FILE,
};

use crate::app::App;
use crate::ipam::Ipv4Cidr;
use crate::phases::credentials::ensure_root_credentials;
use crate::phases::{self, PhaseError, network};

/// Largest template body accepted, in bytes. Kickstart and preseed files
/// with long `%post` scripts stay well below this.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// Name the machine's interface gets in the installed system; install files
/// match the interface by its MAC and rename it to this.
const INTERFACE_NAME: &str = "eth0";

/// Stands in for the image's repository URL, which the image catalogue does
/// not record yet. A rendered file that contains it used the value.
// TODO: record an install tree or mirror URL per image and pass it here, so
// templates can use image.repository_url instead of naming the mirror.
const REPOSITORY_PLACEHOLDER: &str = "http://repository-url-not-set.invalid/rackhand-no-mirror/";

/// Parts of [`REPOSITORY_PLACEHOLDER`] that `image.mirror_host` and
/// `image.mirror_directory` render on their own.
const PLACEHOLDER_MARKERS: [&str; 2] = ["repository-url-not-set.invalid", "rackhand-no-mirror"];

/// Largest file a template may render for one order, in bytes. Installers
/// read install files of a few kilobytes, so the limit only stops a
/// template that repeats the order's SSH keys from filling memory.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Most `ssh_authorized_keys` references a template may have. Each can
/// expand to the order's 16 keys of up to 8 KiB each.
const MAX_KEY_REFERENCES: usize = 8;

/// The formats an operator template can have.
///
/// A product names one main template ([`TemplateFormat::is_seed`] false),
/// whose format drives the image's install method, and, for cloud-config
/// products, seed templates that replace the built-in NoCloud and
/// configdrive files one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TemplateFormat {
    /// Anaconda kickstart, served as `ks.cfg`.
    Kickstart,
    /// debian-installer preseed, served as `preseed.cfg`.
    Preseed,
    /// cloud-init `#cloud-config` user-data, served with the NoCloud
    /// `meta-data` and `network-config`, and the configdrive's `user_data`
    /// for Ironic nodes.
    CloudConfig,
    /// A game-server container spec (JSON), rendered into a Compose file.
    /// Bare-metal orders do not run containers, so only previews render it.
    Container,
    /// NoCloud `meta-data` (YAML or JSON) in place of the built-in one.
    MetaData,
    /// NoCloud `network-config` version 2 in place of the built-in one.
    NetworkConfig,
    /// Configdrive `meta_data.json` for Ironic nodes.
    OpenStackMetaData,
    /// Configdrive `network_data.json` for Ironic nodes.
    OpenStackNetworkData,
}

impl TemplateFormat {
    pub const ALL: [TemplateFormat; 8] = [
        Self::Kickstart,
        Self::Preseed,
        Self::CloudConfig,
        Self::Container,
        Self::MetaData,
        Self::NetworkConfig,
        Self::OpenStackMetaData,
        Self::OpenStackNetworkData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kickstart => "kickstart",
            Self::Preseed => "preseed",
            Self::CloudConfig => "cloud-config",
            Self::Container => "container",
            Self::MetaData => "meta-data",
            Self::NetworkConfig => "network-config",
            Self::OpenStackMetaData => "openstack-meta-data",
            Self::OpenStackNetworkData => "openstack-network-data",
        }
    }

    fn kind(self) -> TemplateKind {
        match self {
            Self::Kickstart => TemplateKind::Kickstart,
            Self::Preseed => TemplateKind::Preseed,
            Self::CloudConfig => TemplateKind::CloudConfig,
            Self::Container => TemplateKind::Container,
            Self::MetaData => TemplateKind::MetaData,
            Self::NetworkConfig => TemplateKind::NetworkConfig,
            Self::OpenStackMetaData => TemplateKind::OpenStackMetaData,
            Self::OpenStackNetworkData => TemplateKind::OpenStackNetworkData,
        }
    }

    /// The family templates see as `image.os_family`. Seed templates belong
    /// to cloud-init images.
    fn os_family(self) -> OsFamily {
        match self {
            Self::Kickstart => OsFamily::Rhel,
            Self::Preseed => OsFamily::Debian,
            _ => OsFamily::Cloud,
        }
    }

    /// Whether the template replaces one file of a cloud-init seed instead
    /// of being a product's main template.
    pub fn is_seed(self) -> bool {
        self.seed_file().is_some()
    }

    /// Returns the install file a seed template replaces.
    pub fn seed_file(self) -> Option<&'static str> {
        match self {
            Self::MetaData => Some(NOCLOUD_META_DATA_FILE),
            Self::NetworkConfig => Some(NOCLOUD_NETWORK_CONFIG_FILE),
            Self::OpenStackMetaData => Some(CONFIGDRIVE_META_DATA_FILE),
            Self::OpenStackNetworkData => Some(CONFIGDRIVE_NETWORK_DATA_FILE),
            Self::Kickstart | Self::Preseed | Self::CloudConfig | Self::Container => None,
        }
    }

    /// The install method of the images a main template serves; `None` for
    /// seed templates.
    pub fn install_method(self) -> Option<InstallMethod> {
        match self {
            Self::Kickstart => Some(InstallMethod::Kickstart),
            Self::Preseed => Some(InstallMethod::Preseed),
            Self::CloudConfig => Some(InstallMethod::CloudInit),
            Self::Container => Some(InstallMethod::Container),
            Self::MetaData
            | Self::NetworkConfig
            | Self::OpenStackMetaData
            | Self::OpenStackNetworkData => None,
        }
    }

    /// Lists every format for error messages.
    pub fn choices() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|format| format.as_str()).collect();
        names.join(", ")
    }
}

impl fmt::Display for TemplateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TemplateFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a template format; use one of {}",
                    Self::choices()
                )
            })
    }
}

/// A failure to render an order's install files. Messages never contain
/// the root password or its hash.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Template(String),
    #[error("{0}")]
    NotReady(String),
    #[error("reading the order's install values failed")]
    Database(#[from] sqlx::Error),
}

/// Checks an uploaded template: the install-templates crate's operator
/// checks (escaping, placement, syntax, strict rendering against two sample
/// orders, the format's own checks), then a rendering that fails when the
/// template uses a value the catalogue cannot fill yet.
///
/// The checks render twice: with the sample order (and `dns_servers`, the
/// control plane's resolvers, when set), and with the largest order there
/// can be (16 SSH keys of 8 KiB), whose files must stay within
/// [`MAX_RENDERED_BYTES`]. Before that, the source may not nest `#each`
/// blocks or name `ssh_authorized_keys` more than [`MAX_KEY_REFERENCES`]
/// times, so the largest rendering stays small enough to try.
pub fn check_template(
    name: &str,
    format: TemplateFormat,
    body: &str,
    dns_servers: &[std::net::IpAddr],
) -> Result<(), TemplateError> {
    check_expansion(name, body)?;
    let template = OperatorTemplate::validate(name, format.kind(), body)?;
    let mut input = operator::sample_input(false);
    input.image.repository_url = REPOSITORY_PLACEHOLDER.to_string();
    if !dns_servers.is_empty() {
        input.network.dns_servers = dns_servers.to_vec();
    }
    let context =
        OrderContext::new(input.clone())?.with_root_password_hash(PREVIEW_PASSWORD_HASH)?;
    let text = template.render(&context)?;
    check_placeholders(name, &text)?;
    if format == TemplateFormat::NetworkConfig {
        check_network_config_size(name, &text)?;
    }
    // The welcome e-mail sends the root password; an installer file that
    // does not set it would leave the customer with a password that fails.
    if matches!(
        format,
        TemplateFormat::Kickstart | TemplateFormat::Preseed | TemplateFormat::CloudConfig
    ) && !text.contains(PREVIEW_PASSWORD_HASH)
    {
        return Err(TemplateError::Missing {
            template: name.to_string(),
            kind: "template",
            problem: "never writes {{root_password_hash}}, so the installed system would not have the root password the welcome e-mail sends; set it (kickstart: rootpw --iscrypted, preseed: passwd/root-password-crypted, cloud-config: hashed_passwd of root)".to_string(),
        });
    }

    // The largest order: the longest host name and 16 keys of the most
    // bytes an order may give.
    input.hostname = "h".repeat(63);
    input.ssh_authorized_keys = (0..crate::orders::MAX_SSH_KEYS)
        .map(|index| {
            let comment = format!(" k{index:02}");
            let blob =
                "A".repeat(crate::orders::MAX_SSH_KEY_BYTES - "ssh-rsa ".len() - comment.len());
            format!("ssh-rsa {blob}{comment}")
        })
        .collect();
    let largest = template.render(&OrderContext::new(input)?)?;
    check_rendered_size(name, largest.len())?;
    if format == TemplateFormat::NetworkConfig {
        check_network_config_size(name, &largest)?;
    }
    Ok(())
}

/// Refuses template sources whose rendering could grow past what
/// [`check_template`] can try: nested `#each` blocks multiply the output,
/// and every `ssh_authorized_keys` reference can add up to 128 KiB.
fn check_expansion(name: &str, body: &str) -> Result<(), TemplateError> {
    let reject = |problem: String| TemplateError::Missing {
        template: name.to_string(),
        kind: "template",
        problem,
    };
    let mut depth = 0usize;
    for (index, line) in body.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let tag = rest[start + 2..].trim_start_matches('~').trim_start();
            if tag.starts_with("#each") {
                depth += 1;
                if depth > 1 {
                    return Err(reject(format!(
                        "line {} opens an {{{{#each}}}} block inside another one, which repeats the inner list for every item of the outer; use one level of #each",
                        index + 1
                    )));
                }
            } else if tag.starts_with("/each") {
                depth = depth.saturating_sub(1);
            }
            rest = &rest[start + 2..];
        }
    }
    let references = body.matches("ssh_authorized_keys").count();
    if references > MAX_KEY_REFERENCES {
        return Err(reject(format!(
            "names ssh_authorized_keys {references} times; use it at most {MAX_KEY_REFERENCES} times, since each can add an order's 16 keys"
        )));
    }
    Ok(())
}

fn check_rendered_size(name: &str, bytes: usize) -> Result<(), TemplateError> {
    if bytes <= MAX_RENDERED_BYTES {
        return Ok(());
    }
    Err(TemplateError::Missing {
        template: name.to_string(),
        kind: "template",
        problem: format!(
            "renders {bytes} bytes for the largest order (a 63-character host name, 16 SSH keys of 8 KiB); a rendered file may have at most {MAX_RENDERED_BYTES} bytes, so repeat less of the template per key"
        ),
    })
}

fn check_placeholders(name: &str, text: &str) -> Result<(), TemplateError> {
    match text.lines().position(|line| {
        PLACEHOLDER_MARKERS
            .iter()
            .any(|marker| line.contains(marker))
    }) {
        Some(index) => Err(TemplateError::Missing {
            template: name.to_string(),
            kind: "template",
            problem: format!(
                "rendered line {} uses image.repository_url, image.mirror_host or image.mirror_directory, \
                 which the image catalogue does not record yet; write the mirror URL into the template",
                index + 1
            ),
        }),
        None => Ok(()),
    }
}

/// Refuses a NoCloud `network-config` that the agent could not put on the
/// kernel command line, where cloud-init 22.x reads it (see
/// [`MAX_CMDLINE_NETWORK_CONFIG_BYTES`]).
fn check_network_config_size(name: &str, text: &str) -> Result<(), TemplateError> {
    if text.len() <= MAX_CMDLINE_NETWORK_CONFIG_BYTES {
        return Ok(());
    }
    Err(TemplateError::Missing {
        template: name.to_string(),
        kind: "network-config",
        problem: format!(
            "renders to {} bytes, but cloud-init 22.x reads network-config only from the kernel command line, \
             which takes at most {MAX_CMDLINE_NETWORK_CONFIG_BYTES}; drop comments, defaults and indentation the format does not need",
            text.len()
        ),
    })
}

/// Stores what the order's install files contain before the image task
/// exists, and renders them once so a template that cannot render fails the
/// phase here with its reason. Does nothing for a product without a template.
pub async fn prepare(app: &App, order: &phases::OrderContext) -> Result<(), PhaseError> {
    let template: Option<i64> =
        sqlx::query_scalar("SELECT install_template_id FROM products WHERE id = ?")
            .bind(order.product_id)
            .fetch_one(&app.pool)
            .await?;
    if template.is_none() {
        return Ok(());
    }
    network::ensure_address(app, order).await?;
    ensure_root_credentials(app, order.id).await?;
    match render_for_order(app, order.id).await {
        Ok(_) => Ok(()),
        Err(InstallError::Database(error)) => Err(error.into()),
        Err(error) => Err(PhaseError::permanent(error.to_string())),
    }
}

/// An order's rendered answer files and the method they drive.
#[derive(Debug)]
pub struct RenderedInstall {
    pub method: InstallMethod,
    pub files: Vec<InstallFile>,
}

#[derive(Clone, sqlx::FromRow)]
struct TemplateRow {
    name: String,
    format: String,
    body: String,
}

impl TemplateRow {
    fn format(&self) -> Result<TemplateFormat, InstallError> {
        self.format.parse().map_err(InstallError::Template)
    }
}

#[derive(sqlx::FromRow)]
struct OrderValues {
    uid: String,
    hostname: String,
    boot_mac: String,
    bmc_driver: String,
    /// JSON list of checked key lines.
    ssh_authorized_keys: String,
    image_name: String,
    ipv4: String,
    subnet: String,
    cidr: String,
    gateway: Option<String>,
}

impl OrderValues {
    /// Ironic builds a configdrive for its nodes, so their orders also get
    /// the configdrive's JSON files.
    fn via_ironic(&self) -> bool {
        self.bmc_driver == "ironic"
    }
}

async fn order_values(app: &App, order_id: i64) -> Result<OrderValues, InstallError> {
    let values: Option<OrderValues> = sqlx::query_as(
        "SELECT o.uid, o.hostname, n.boot_mac, n.bmc_driver, o.ssh_authorized_keys,
                i.name AS image_name, s.ipv4,
                sn.name AS subnet, sn.cidr, sn.gateway
         FROM orders o
         JOIN nodes n ON n.id = o.node_id
         JOIN products p ON p.id = o.product_id
         JOIN images i ON i.id = p.image_id
         JOIN services s ON s.order_id = o.id
         JOIN subnets sn ON sn.id = s.subnet_id
         WHERE o.id = ?",
    )
    .bind(order_id)
    .fetch_optional(&app.pool)
    .await?;
    values.ok_or_else(|| {
        InstallError::NotReady(
            "the order has no node or service address yet, which its install files need"
                .to_string(),
        )
    })
}

/// Renders the order's install files, or returns `None` when its product
/// names no template. The service row and credentials must exist, which
/// [`prepare`] ensures before the image task is created.
pub async fn render_for_order(
    app: &App,
    order_id: i64,
) -> Result<Option<RenderedInstall>, InstallError> {
    let template: Option<TemplateRow> = sqlx::query_as(
        "SELECT t.name, t.format, t.body FROM orders o
         JOIN products p ON p.id = o.product_id
         JOIN install_templates t ON t.id = p.install_template_id
         WHERE o.id = ?",
    )
    .bind(order_id)
    .fetch_optional(&app.pool)
    .await?;
    let Some(template) = template else {
        return Ok(None);
    };
    let format = template.format()?;
    let method = format.install_method().ok_or_else(|| {
        InstallError::Template(format!(
            "template {:?} is a {format} template, which cannot be a product's main template",
            template.name
        ))
    })?;
    let seeds: Vec<TemplateRow> = sqlx::query_as(
        "SELECT t.name, t.format, t.body FROM orders o
         JOIN product_seed_templates ps ON ps.product_id = o.product_id
         JOIN install_templates t ON t.id = ps.template_id
         WHERE o.id = ? ORDER BY ps.format",
    )
    .bind(order_id)
    .fetch_all(&app.pool)
    .await?;

    let values = order_values(app, order_id).await?;
    let credentials = ensure_root_credentials(app, order_id)
        .await
        .map_err(|error| InstallError::NotReady(error.message))?;

    let input = context_input(app, &values, &credentials.password, format)?;
    let files = render_files(
        &template,
        &seeds,
        input,
        &credentials.hash,
        values.via_ironic(),
    )?;
    Ok(Some(RenderedInstall { method, files }))
}

fn context_input(
    app: &App,
    values: &OrderValues,
    password: &Secret,
    format: TemplateFormat,
) -> Result<OrderContextInput, InstallError> {
    let cidr: Ipv4Cidr = values
        .cidr
        .parse()
        .map_err(|e: crate::ipam::CidrError| InstallError::NotReady(e.to_string()))?;
    let gateway = values
        .gateway
        .as_deref()
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| {
            InstallError::NotReady(format!(
                "subnet {} has no gateway, which install files need; subnets cannot be changed yet, so put nodes for templated products in a subnet created with --gateway",
                values.subnet
            ))
        })?;
    let address = values.ipv4.parse().map_err(|_| {
        InstallError::NotReady(format!("stored address {:?} is invalid", values.ipv4))
    })?;
    let ssh_authorized_keys: Vec<String> = serde_json::from_str(&values.ssh_authorized_keys)
        .map_err(|error| {
            InstallError::NotReady(format!(
                "the order's stored SSH keys are unreadable: {error}"
            ))
        })?;
    if app.config.network.dns_servers.is_empty() {
        return Err(InstallError::NotReady(
            "network.dns_servers is empty in the control plane's config; install files need at \
             least one resolver, so add it and restart the control plane"
                .to_string(),
        ));
    }

    Ok(OrderContextInput {
        hostname: values.hostname.clone(),
        domain: app.config.network.domain.clone(),
        instance_id: values.uid.clone(),
        root_password: password.expose().clone(),
        ssh_authorized_keys,
        network: NetworkSettings {
            mac: values.boot_mac.clone(),
            interface_name: INTERFACE_NAME.to_string(),
            ipv4: Ipv4Settings {
                address,
                prefix_len: cidr.prefix_len,
                gateway,
            },
            ipv6: None,
            dns_servers: app.config.network.dns_servers.clone(),
        },
        image: ImageInfo {
            name: values.image_name.clone(),
            os_family: format.os_family(),
            version: values.image_name.clone(),
            repository_url: REPOSITORY_PLACEHOLDER.to_string(),
        },
        callback_url: CALLBACK_URL_PLACEHOLDER.to_string(),
    })
}

/// Turns a rendering error into an [`InstallError`] without the hash, which
/// a format check may quote from the rendered line it rejects.
fn redact_error(error: &TemplateError, hash: &Secret) -> InstallError {
    InstallError::Template(error.to_string().replace(hash.expose(), "[redacted]"))
}

/// Renders one stored template and checks that it left no placeholder.
fn render_one(
    template: &TemplateRow,
    context: &OrderContext,
    hash: &Secret,
) -> Result<String, InstallError> {
    let redact = |error: TemplateError| redact_error(&error, hash);
    let format = template.format()?;
    let operator_template =
        OperatorTemplate::validate(&template.name, format.kind(), &template.body)
            .map_err(redact)?;
    let text = operator_template.render(context).map_err(redact)?;
    check_placeholders(&template.name, &text).map_err(redact)?;
    if text.len() > MAX_RENDERED_BYTES {
        return Err(InstallError::Template(format!(
            "template {:?} renders {} bytes for this order; a rendered file may have at most {MAX_RENDERED_BYTES} bytes",
            template.name,
            text.len()
        )));
    }
    Ok(text)
}

/// Renders the main template with the stored hash. A cloud-config also gets
/// the NoCloud `meta-data` and `network-config`, and for an Ironic node the
/// configdrive's `meta_data.json` and `network_data.json`. Each of these
/// comes from the product's seed template of that file, or is built in.
fn render_files(
    template: &TemplateRow,
    seeds: &[TemplateRow],
    input: OrderContextInput,
    hash: &Secret,
    via_ironic: bool,
) -> Result<Vec<InstallFile>, InstallError> {
    let context = OrderContext::new(input)
        .and_then(|context| context.with_root_password_hash(hash.expose()))
        .map_err(|error| redact_error(&error, hash))?;
    let text = render_one(template, &context, hash)?;

    let file = |name: &str, content: String| InstallFile {
        name: name.to_string(),
        content: Secret::new(content),
    };
    let format = template.format()?;
    let mut files = match format {
        TemplateFormat::Kickstart => vec![file(KICKSTART_FILE, text)],
        TemplateFormat::Preseed => vec![file(PRESEED_FILE, text)],
        TemplateFormat::CloudConfig => {
            let seed = nocloud::render(&context);
            let mut files = vec![
                file(NOCLOUD_USER_DATA_FILE, text),
                file(NOCLOUD_META_DATA_FILE, seed.meta_data),
                file(NOCLOUD_NETWORK_CONFIG_FILE, seed.network_config),
            ];
            if via_ironic {
                for built_in in configdrive::render(&context) {
                    let name = built_in.path.rsplit('/').next().unwrap_or_default();
                    if [CONFIGDRIVE_META_DATA_FILE, CONFIGDRIVE_NETWORK_DATA_FILE].contains(&name) {
                        files.push(file(name, built_in.contents));
                    }
                }
            }
            files
        }
        TemplateFormat::Container
        | TemplateFormat::MetaData
        | TemplateFormat::NetworkConfig
        | TemplateFormat::OpenStackMetaData
        | TemplateFormat::OpenStackNetworkData => {
            return Err(InstallError::Template(format!(
                "template {:?} is a {format} template, which bare-metal orders do not render as their main template",
                template.name
            )));
        }
    };

    for seed in seeds {
        let seed_format = seed.format()?;
        let Some(name) = seed_format.seed_file() else {
            return Err(InstallError::Template(format!(
                "template {:?} is a {seed_format} template, which is not a seed template",
                seed.name
            )));
        };
        // A configdrive seed has no file to replace on a node without
        // Ironic, which gets no configdrive files at all.
        if let Some(slot) = files.iter_mut().find(|file| file.name == name) {
            slot.content = Secret::new(render_one(seed, &context, hash)?);
        }
    }
    if let Some(config) = files
        .iter()
        .find(|file| file.name == NOCLOUD_NETWORK_CONFIG_FILE)
    {
        let template = seeds
            .iter()
            .find(|seed| seed.format == TemplateFormat::NetworkConfig.as_str())
            .map_or("built-in network-config", |seed| seed.name.as_str());
        check_network_config_size(template, config.content.expose())
            .map_err(|error| redact_error(&error, hash))?;
    }
    Ok(files)
}

/// One template rendered for an operator's preview.
#[derive(Debug, serde::Serialize)]
pub struct PreviewFile {
    pub name: String,
    pub content: String,
}

/// A stand-in for the root password hash in previews, which are API
/// responses and must not carry an order's real hash: `Hello world!`
/// hashed with salt `saltstring`.
const PREVIEW_PASSWORD_HASH: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

/// Renders a stored template for an operator to read: with the values of
/// order `order_id` when given (its node and service address must exist),
/// otherwise with the sample order that uploads are checked against. The
/// root password hash is always [`PREVIEW_PASSWORD_HASH`], and the callback
/// URL stays [`CALLBACK_URL_PLACEHOLDER`]. A container template also
/// yields the Compose file its spec becomes.
pub async fn preview(
    app: &App,
    name: &str,
    format: TemplateFormat,
    body: &str,
    order_id: Option<i64>,
) -> Result<Vec<PreviewFile>, InstallError> {
    let input = match order_id {
        Some(order_id) => {
            let values = order_values(app, order_id).await?;
            let stand_in = Secret::new("preview-only".to_string());
            context_input(app, &values, &stand_in, format)?
        }
        None => {
            let mut input = operator::sample_input(false);
            input.image.repository_url = REPOSITORY_PLACEHOLDER.to_string();
            input.callback_url = CALLBACK_URL_PLACEHOLDER.to_string();
            input
        }
    };
    let hash = Secret::new(PREVIEW_PASSWORD_HASH.to_string());
    let context = OrderContext::new(input)
        .and_then(|context| context.with_root_password_hash(hash.expose()))
        .map_err(|error| InstallError::Template(error.to_string()))?;
    let row = TemplateRow {
        name: name.to_string(),
        format: format.as_str().to_string(),
        body: body.to_string(),
    };
    let text = render_one(&row, &context, &hash)?;
    let file_name = match format {
        TemplateFormat::Kickstart => KICKSTART_FILE,
        TemplateFormat::Preseed => PRESEED_FILE,
        TemplateFormat::CloudConfig => NOCLOUD_USER_DATA_FILE,
        TemplateFormat::Container => CONTAINER_SPEC_FILE,
        seed => seed.seed_file().unwrap_or(NOCLOUD_USER_DATA_FILE),
    };
    let mut files = vec![PreviewFile {
        name: file_name.to_string(),
        content: text.clone(),
    }];
    if format == TemplateFormat::Container {
        let spec = ContainerSpec::from_json(&text)
            .map_err(|error| InstallError::Template(error.to_string()))?;
        files.push(PreviewFile {
            name: COMPOSE_FILE.to_string(),
            content: spec.to_compose(),
        });
    }
    Ok(files)
}

/// File names of a container template's preview.
const CONTAINER_SPEC_FILE: &str = "container.json";
const COMPOSE_FILE: &str = "compose.yaml";

#[cfg(test)]
mod tests {
    use super::*;

    const KICKSTART: &str = "text\n\
        url --url=https://mirror.example.net/rocky/9/BaseOS/x86_64/os/\n\
        network --hostname={{fqdn}} --ip={{network.ipv4.address}}\n\
        rootpw --iscrypted {{root_password_hash}}\n\
        autopart\n\
        bootloader --location=mbr\n\
        %post\n\
        curl --fail {{callback_url}}\n\
        %end\n";

    fn row(format: TemplateFormat, body: &str) -> TemplateRow {
        TemplateRow {
            name: "t1".to_string(),
            format: format.as_str().to_string(),
            body: body.to_string(),
        }
    }

    fn sample_hash() -> Secret {
        let hash = rackhand_install_templates::crypt::hash_password("pw-for-tests")
            .expect("hashing works");
        Secret::new(hash)
    }

    #[test]
    fn formats_round_trip() {
        for format in TemplateFormat::ALL {
            assert_eq!(format.as_str().parse::<TemplateFormat>(), Ok(format));
        }
    }

    #[test]
    fn unknown_format_names_choices() {
        let error = "autoyast".parse::<TemplateFormat>().expect_err("rejected");
        assert!(
            error.contains("kickstart, preseed, cloud-config, container"),
            "{error}"
        );
    }

    #[test]
    fn kickstart_renders_stored_hash() {
        let hash = sample_hash();
        let files = render_files(
            &row(TemplateFormat::Kickstart, KICKSTART),
            &[],
            operator::sample_input(false),
            &hash,
            false,
        )
        .expect("renders");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, KICKSTART_FILE);
        assert!(files[0].content.expose().contains(hash.expose()));
    }

    #[test]
    fn rendering_twice_gives_same_bytes() {
        let hash = sample_hash();
        let render = || {
            render_files(
                &row(TemplateFormat::Kickstart, KICKSTART),
                &[],
                operator::sample_input(false),
                &hash,
                false,
            )
            .expect("renders")
        };
        assert_eq!(render(), render());
    }

    #[test]
    fn rendered_file_omits_plain_password() {
        let files = render_files(
            &row(TemplateFormat::Kickstart, KICKSTART),
            &[],
            operator::sample_input(false),
            &sample_hash(),
            false,
        )
        .expect("renders");
        let password = operator::sample_input(false).root_password;
        assert!(!files[0].content.expose().contains(&password));
    }

    #[test]
    fn cloud_config_adds_nocloud_seed() {
        let body = "#cloud-config\nhostname: {{hostname}}\n";
        let files = render_files(
            &row(TemplateFormat::CloudConfig, body),
            &[],
            operator::sample_input(false),
            &sample_hash(),
            false,
        )
        .expect("renders");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["user-data", "meta-data", "network-config"]);
    }

    const CLOUD_CONFIG: &str = "#cloud-config\nhostname: {{hostname}}\n";

    fn named(name: &str, format: TemplateFormat, body: &str) -> TemplateRow {
        TemplateRow {
            name: name.to_string(),
            format: format.as_str().to_string(),
            body: body.to_string(),
        }
    }

    fn content<'a>(files: &'a [InstallFile], name: &str) -> &'a str {
        files
            .iter()
            .find(|file| file.name == name)
            .unwrap_or_else(|| panic!("no {name} in {files:?}"))
            .content
            .expose()
    }

    #[test]
    fn ironic_node_gets_configdrive_files() {
        let files = render_files(
            &row(TemplateFormat::CloudConfig, CLOUD_CONFIG),
            &[],
            operator::sample_input(false),
            &sample_hash(),
            true,
        )
        .expect("renders");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "user-data",
                "meta-data",
                "network-config",
                "meta_data.json",
                "network_data.json"
            ]
        );
        let meta: serde_json::Value =
            serde_json::from_str(content(&files, "meta_data.json")).expect("JSON");
        assert_eq!(meta["hostname"], "web1.example.net");
        let network: serde_json::Value =
            serde_json::from_str(content(&files, "network_data.json")).expect("JSON");
        assert_eq!(network["networks"][0]["ip_address"], "192.0.2.10");
    }

    #[test]
    fn seed_templates_replace_built_in_files() {
        let seeds = [
            named(
                "md",
                TemplateFormat::MetaData,
                "instance-id: {{instance_id}}\nlocal-hostname: {{fqdn}}\nregion: fra1\n",
            ),
            named(
                "osmd",
                TemplateFormat::OpenStackMetaData,
                "{\"uuid\": {{instance_id}}, \"hostname\": {{fqdn}}, \"meta\": {\"rack\": \"r12\"}}\n",
            ),
        ];
        let files = render_files(
            &row(TemplateFormat::CloudConfig, CLOUD_CONFIG),
            &seeds,
            operator::sample_input(false),
            &sample_hash(),
            true,
        )
        .expect("renders");
        assert!(content(&files, "meta-data").contains("region: fra1"));
        assert!(content(&files, "meta_data.json").contains("r12"));
        // Files without a seed template stay built in.
        assert!(content(&files, "network-config").contains("192.0.2.10/24"));
        assert!(content(&files, "network_data.json").contains("192.0.2.10"));
    }

    #[test]
    fn configdrive_seed_is_unused_without_ironic() {
        let seeds = [named(
            "osmd",
            TemplateFormat::OpenStackMetaData,
            "{\"uuid\": {{instance_id}}}\n",
        )];
        let files = render_files(
            &row(TemplateFormat::CloudConfig, CLOUD_CONFIG),
            &seeds,
            operator::sample_input(false),
            &sample_hash(),
            false,
        )
        .expect("renders");
        assert!(files.iter().all(|file| file.name != "meta_data.json"));
    }

    #[test]
    fn long_network_config_is_refused_on_upload() {
        let mut body = String::from("version: 2\nethernets:\n");
        for index in 0..40 {
            body.push_str(&format!("  # padding line {index} to pass the limit\n"));
        }
        body.push_str("  eth0:\n    dhcp4: true\n");

        let error = check_template("nc", TemplateFormat::NetworkConfig, &body, &[])
            .expect_err("too long for the kernel command line");

        assert!(error.to_string().contains("at most 768"), "{error}");
    }

    #[test]
    fn nested_each_is_refused() {
        let body = "#cloud-config\nruncmd:\n{{#each ssh_authorized_keys}}\n{{#each network.dns_servers}}\n  - {{this}}\n{{/each}}\n{{/each}}\n";

        let error = check_template("cc", TemplateFormat::CloudConfig, body, &[])
            .expect_err("nested blocks multiply the output");

        assert!(error.to_string().contains("line 4"), "{error}");
    }

    #[test]
    fn many_key_references_are_refused() {
        let mut body = String::from("#cloud-config\nruncmd:\n");
        for _ in 0..9 {
            body.push_str("{{#each ssh_authorized_keys}}\n  - {{this}}\n{{/each}}\n");
        }

        let error = check_template("cc", TemplateFormat::CloudConfig, &body, &[])
            .expect_err("each reference can add 128 KiB");

        assert!(error.to_string().contains("at most 8 times"), "{error}");
    }

    #[test]
    fn large_rendering_for_many_keys_is_refused() {
        // 70 KiB of text per key makes 1.1 MiB for 16 keys.
        let padding = format!("  # {}\n", "x".repeat(1000)).repeat(70);
        let body = format!(
            "#cloud-config\nusers:\n  - name: root\n    hashed_passwd: {{{{root_password_hash}}}}\nruncmd:\n{{{{#each ssh_authorized_keys}}}}\n{padding}  - {{{{this}}}}\n{{{{/each}}}}\n"
        );

        let error = check_template("cc", TemplateFormat::CloudConfig, &body, &[])
            .expect_err("too large for the largest order");

        assert!(error.to_string().contains("largest order"), "{error}");
    }

    #[test]
    fn mirror_host_is_refused() {
        let body = "#cloud-config\napt:\n  primary:\n    - arches: [default]\n      uri: {{image.mirror_host}}\n";

        let error = check_template("cc", TemplateFormat::CloudConfig, body, &[])
            .expect_err("the catalogue has no mirror");

        assert!(error.to_string().contains("mirror"), "{error}");
    }

    #[test]
    fn upload_check_uses_configured_resolvers() {
        let body = "version: 2\nethernets:\n  eth0:\n    nameservers:\n      addresses:\n{{#each network.dns_servers}}\n        - {{this}}\n{{/each}}\n";
        let one: Vec<std::net::IpAddr> = vec!["192.0.2.53".parse().expect("address")];
        let many: Vec<std::net::IpAddr> = (1..=60)
            .map(|n| format!("2001:db8::{n:x}").parse().expect("address"))
            .collect();

        check_template("nc", TemplateFormat::NetworkConfig, body, &one).expect("short");
        let error = check_template("nc", TemplateFormat::NetworkConfig, body, &many)
            .expect_err("too long with 60 resolvers");

        assert!(error.to_string().contains("at most 768"), "{error}");
    }

    #[test]
    fn template_without_root_hash_is_refused() {
        let error = check_template(
            "cc",
            TemplateFormat::CloudConfig,
            "#cloud-config\nhostname: {{hostname}}\n",
            &[],
        )
        .expect_err("the e-mailed password would not work");

        assert!(error.to_string().contains("root_password_hash"), "{error}");
    }

    #[test]
    fn seed_formats_name_their_files() {
        let seeds: Vec<(TemplateFormat, &str)> = TemplateFormat::ALL
            .into_iter()
            .filter_map(|format| format.seed_file().map(|file| (format, file)))
            .collect();
        assert_eq!(
            seeds,
            [
                (TemplateFormat::MetaData, "meta-data"),
                (TemplateFormat::NetworkConfig, "network-config"),
                (TemplateFormat::OpenStackMetaData, "meta_data.json"),
                (TemplateFormat::OpenStackNetworkData, "network_data.json"),
            ]
        );
        for format in TemplateFormat::ALL {
            assert_eq!(
                format.is_seed(),
                format.install_method().is_none(),
                "{format}"
            );
        }
    }

    #[test]
    fn render_error_redacts_hash() {
        let hash = sample_hash();
        let error = TemplateError::Format {
            template: "t1".to_string(),
            kind: "kickstart",
            line: 3,
            text: format!("rootpw --iscrypted {} --bad", hash.expose()),
            problem: "unknown option".to_string(),
        };

        let message = redact_error(&error, &hash).to_string();

        assert!(!message.contains(hash.expose().as_str()), "{message}");
        assert!(message.contains("[redacted]"), "{message}");
    }

    #[test]
    fn upload_rejects_repository_url() {
        let body = KICKSTART.replace(
            "https://mirror.example.net/rocky/9/BaseOS/x86_64/os/",
            "{{image.repository_url}}",
        );
        let error =
            check_template("t1", TemplateFormat::Kickstart, &body, &[]).expect_err("rejected");
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn upload_accepts_kickstart() {
        check_template("t1", TemplateFormat::Kickstart, KICKSTART, &[]).expect("accepted");
    }
}
