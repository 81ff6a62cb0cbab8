//! Install templates: the operator's kickstart, preseed and cloud-config
//! templates, and their rendering per order into the answer files that the
//! site agent serves to the installer.
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

use rackhand_install_templates::operator::{self, OperatorTemplate, TemplateKind};
use rackhand_install_templates::{
    ImageInfo, Ipv4Settings, NetworkSettings, OrderContext, OrderContextInput, OsFamily,
    TemplateError, nocloud,
};
use rackhand_protocol::Secret;
use rackhand_protocol::agent::{
    CALLBACK_URL_PLACEHOLDER, InstallFile, InstallMethod, KICKSTART_FILE, NOCLOUD_USER_DATA_FILE,
    PRESEED_FILE,
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
const REPOSITORY_PLACEHOLDER: &str = "http://repository-url-not-set.invalid/";

/// The formats an operator template can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateFormat {
    /// Anaconda kickstart, served as `ks.cfg`.
    Kickstart,
    /// debian-installer preseed, served as `preseed.cfg`.
    Preseed,
    /// cloud-init `#cloud-config` user-data, served with the built-in
    /// NoCloud `meta-data` and `network-config`.
    CloudConfig,
}

impl TemplateFormat {
    pub const ALL: [TemplateFormat; 3] = [Self::Kickstart, Self::Preseed, Self::CloudConfig];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kickstart => "kickstart",
            Self::Preseed => "preseed",
            Self::CloudConfig => "cloud-config",
        }
    }

    fn kind(self) -> TemplateKind {
        match self {
            Self::Kickstart => TemplateKind::Kickstart,
            Self::Preseed => TemplateKind::Preseed,
            Self::CloudConfig => TemplateKind::CloudConfig,
        }
    }

    fn os_family(self) -> OsFamily {
        match self {
            Self::Kickstart => OsFamily::Rhel,
            Self::Preseed => OsFamily::Debian,
            Self::CloudConfig => OsFamily::Cloud,
        }
    }

    /// The install method the image step announces to the agent.
    pub fn install_method(self) -> InstallMethod {
        match self {
            Self::Kickstart => InstallMethod::Kickstart,
            Self::Preseed => InstallMethod::Preseed,
            Self::CloudConfig => InstallMethod::CloudInit,
        }
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
                format!("{text:?} is not a template format; use kickstart, preseed or cloud-config")
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
pub fn check_template(name: &str, format: TemplateFormat, body: &str) -> Result<(), TemplateError> {
    let template = OperatorTemplate::validate(name, format.kind(), body)?;
    let mut input = operator::sample_input(false);
    input.image.repository_url = REPOSITORY_PLACEHOLDER.to_string();
    let context = OrderContext::new(input)?;
    let text = template.render(&context)?;
    check_placeholders(name, &text)
}

fn check_placeholders(name: &str, text: &str) -> Result<(), TemplateError> {
    match text
        .lines()
        .position(|line| line.contains(REPOSITORY_PLACEHOLDER))
    {
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

#[derive(sqlx::FromRow)]
struct TemplateRow {
    name: String,
    format: String,
    body: String,
}

#[derive(sqlx::FromRow)]
struct OrderValues {
    uid: String,
    hostname: String,
    boot_mac: String,
    image_name: String,
    ipv4: String,
    subnet: String,
    cidr: String,
    gateway: Option<String>,
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
    let format: TemplateFormat = template.format.parse().map_err(InstallError::Template)?;

    let values: Option<OrderValues> = sqlx::query_as(
        "SELECT o.uid, o.hostname, n.boot_mac, i.name AS image_name, s.ipv4,
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
    let values = values.ok_or_else(|| {
        InstallError::NotReady(
            "the order has no node or service address yet, which its install files need"
                .to_string(),
        )
    })?;
    let credentials = ensure_root_credentials(app, order_id)
        .await
        .map_err(|error| InstallError::NotReady(error.message))?;

    let input = context_input(app, &values, &credentials.password, format)?;
    let files = render_files(&template, format, input, &credentials.hash)?;
    Ok(Some(RenderedInstall {
        method: format.install_method(),
        files,
    }))
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
                "subnet {} has no gateway, which install files need; create the subnet with --gateway",
                values.subnet
            ))
        })?;
    let address = values.ipv4.parse().map_err(|_| {
        InstallError::NotReady(format!("stored address {:?} is invalid", values.ipv4))
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
        // TODO: orders carry no SSH keys yet; accept them when an order is
        // placed and pass them here.
        ssh_authorized_keys: Vec::new(),
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

/// Renders the template (and for cloud-config the built-in NoCloud
/// `meta-data` and `network-config`) with the stored hash.
fn render_files(
    template: &TemplateRow,
    format: TemplateFormat,
    input: OrderContextInput,
    hash: &Secret,
) -> Result<Vec<InstallFile>, InstallError> {
    let redact = |error: TemplateError| redact_error(&error, hash);
    let context = OrderContext::new(input)
        .and_then(|context| context.with_root_password_hash(hash.expose()))
        .map_err(redact)?;
    let operator_template =
        OperatorTemplate::validate(&template.name, format.kind(), &template.body)
            .map_err(redact)?;
    let text = operator_template.render(&context).map_err(redact)?;
    check_placeholders(&template.name, &text).map_err(redact)?;

    let file = |name: &str, content: String| InstallFile {
        name: name.to_string(),
        content: Secret::new(content),
    };
    Ok(match format {
        TemplateFormat::Kickstart => vec![file(KICKSTART_FILE, text)],
        TemplateFormat::Preseed => vec![file(PRESEED_FILE, text)],
        TemplateFormat::CloudConfig => {
            let seed = nocloud::render(&context);
            vec![
                file(NOCLOUD_USER_DATA_FILE, text),
                file("meta-data", seed.meta_data),
                file("network-config", seed.network_config),
            ]
        }
    })
}

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
            error.contains("kickstart, preseed or cloud-config"),
            "{error}"
        );
    }

    #[test]
    fn kickstart_renders_stored_hash() {
        let hash = sample_hash();
        let files = render_files(
            &row(TemplateFormat::Kickstart, KICKSTART),
            TemplateFormat::Kickstart,
            operator::sample_input(false),
            &hash,
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
                TemplateFormat::Kickstart,
                operator::sample_input(false),
                &hash,
            )
            .expect("renders")
        };
        assert_eq!(render(), render());
    }

    #[test]
    fn rendered_file_omits_plain_password() {
        let files = render_files(
            &row(TemplateFormat::Kickstart, KICKSTART),
            TemplateFormat::Kickstart,
            operator::sample_input(false),
            &sample_hash(),
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
            TemplateFormat::CloudConfig,
            operator::sample_input(false),
            &sample_hash(),
        )
        .expect("renders");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["user-data", "meta-data", "network-config"]);
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
        let error = check_template("t1", TemplateFormat::Kickstart, &body).expect_err("rejected");
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn upload_accepts_kickstart() {
        check_template("t1", TemplateFormat::Kickstart, KICKSTART).expect("accepted");
    }
}
