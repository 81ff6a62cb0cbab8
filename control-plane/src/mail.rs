//! The welcome e-mail: rendered from Handlebars templates and sent over SMTP
//! (lettre), or written as an `.eml` file into the outbox folder when no
//! SMTP server is configured.
//!
//! Delivery must not happen twice, and SMTP cannot confirm "exactly once",
//! so the handoff phase records its intent before [`Mailer::send`] and
//! [`SendError::delivery_unknown`] reports when a failure may have happened
//! after the server accepted the message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use handlebars::Handlebars;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

use crate::config::{HandoffConfig, SmtpConfig, SmtpTls};

const DEFAULT_BODY: &str = "Hello,

your server {{hostname}} is ready.

  Hostname:  {{fqdn}}
  IPv4:      {{ipv4}}
  Username:  {{username}}
  Password:  {{password}}

Log in over SSH and change the password.
";

/// The values a template may use.
#[derive(Serialize)]
pub struct WelcomeEmail<'a> {
    pub hostname: &'a str,
    pub fqdn: &'a str,
    pub ipv4: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

impl std::fmt::Debug for WelcomeEmail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WelcomeEmail")
            .field("fqdn", &self.fqdn)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A failure to build or deliver the e-mail. Messages never include the
/// rendered body (which contains the password).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot render the welcome e-mail: {0}")]
    Render(String),
    #[error("invalid recipient address {0:?}")]
    Recipient(String),
    #[error("SMTP server {server} is unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("SMTP server {server} rejected the message: {reason}")]
    Rejected {
        server: String,
        reason: String,
        permanent: bool,
    },
    #[error(
        "SMTP delivery to {server} failed midway; the message may have been delivered: {reason}"
    )]
    Interrupted { server: String, reason: String },
    #[error("cannot write the e-mail into the outbox {path}: {reason}")]
    Outbox { path: PathBuf, reason: String },
}

impl SendError {
    /// Returns whether the message may have reached the server despite the error.
    pub fn delivery_unknown(&self) -> bool {
        matches!(self, SendError::Interrupted { .. })
    }

    /// Returns whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Unreachable { .. } | SendError::Outbox { .. } => true,
            SendError::Rejected { permanent, .. } => !permanent,
            SendError::Render(_) | SendError::Recipient(_) | SendError::Interrupted { .. } => false,
        }
    }
}

/// The destination a message was delivered to.
#[derive(Debug)]
pub enum Delivery {
    Smtp { server: String, response: String },
    Outbox { path: PathBuf },
}

/// The configured mail delivery.
pub struct Mailer {
    transport: Option<(AsyncSmtpTransport<Tokio1Executor>, String)>,
    outbox_dir: PathBuf,
    from: Mailbox,
    templates: Handlebars<'static>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.transport.as_ref().map(|(_, server)| server))
            .field("outbox_dir", &self.outbox_dir)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the mailer and compiles the templates, so a broken template
    /// stops the start instead of the first handoff.
    pub fn new(handoff: &HandoffConfig, smtp: Option<&SmtpConfig>) -> anyhow::Result<Mailer> {
        let mut templates = Handlebars::new();
        templates.set_strict_mode(true);
        templates.register_escape_fn(handlebars::no_escape);
        // `log` would write the customer's password into the service log.
        templates.unregister_helper("log");
        templates
            .register_template_string("subject", &handoff.subject)
            .map_err(|e| anyhow::anyhow!("invalid handoff.subject template: {e}"))?;
        let body = match &handoff.template_file {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read handoff.template_file {}: {e}", path.display())
            })?,
            None => DEFAULT_BODY.to_string(),
        };
        templates
            .register_template_string("body", body)
            .map_err(|e| anyhow::anyhow!("invalid welcome e-mail template: {e}"))?;
        check_variables(&templates)?;

        let transport = smtp.map(build_transport).transpose()?;
        Ok(Mailer {
            transport,
            outbox_dir: handoff.outbox_dir.clone(),
            from: handoff.from.parse()?,
            templates,
        })
    }

    /// Returns the outbox file a message id is written to.
    pub fn outbox_path(&self, message_id: &str) -> PathBuf {
        let name: String = message_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.outbox_dir.join(format!("{name}.eml"))
    }

    /// Returns whether a message id is already in the outbox.
    pub fn in_outbox(&self, message_id: &str) -> bool {
        self.transport.is_none() && self.outbox_path(message_id).exists()
    }

    /// Checks that the SMTP server accepts connections (no-op for the outbox).
    pub async fn check_server(&self) -> Result<(), SendError> {
        let Some((transport, server)) = &self.transport else {
            return Ok(());
        };
        match transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendError::Unreachable {
                server: server.clone(),
                reason: "the server did not answer NOOP".to_string(),
            }),
            Err(error) => Err(SendError::Unreachable {
                server: server.clone(),
                reason: error.to_string(),
            }),
        }
    }

    /// Renders and delivers the welcome e-mail with the given Message-ID.
    pub async fn send(
        &self,
        to: &str,
        message_id: &str,
        values: &WelcomeEmail<'_>,
    ) -> Result<Delivery, SendError> {
        let subject = self
            .templates
            .render("subject", values)
            .map_err(|e| SendError::Render(e.to_string()))?;
        let body = self
            .templates
            .render("body", values)
            .map_err(|e| SendError::Render(e.to_string()))?;
        let recipient: Mailbox = to
            .parse()
            .map_err(|_| SendError::Recipient(to.to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(subject)
            .message_id(Some(message_id.to_string()))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| SendError::Render(e.to_string()))?;

        match &self.transport {
            Some((transport, server)) => deliver_smtp(transport, server, message).await,
            None => {
                let path = self.outbox_path(message_id);
                write_outbox(&path, &message.formatted()).map_err(|e| SendError::Outbox {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Ok(Delivery::Outbox { path })
            }
        }
    }
}

/// Renders both templates once with sample values. Strict mode reports a
/// variable that [`WelcomeEmail`] lacks only when rendering, and a handoff
/// that fails there would fail every order after its server was installed.
fn check_variables(templates: &Handlebars<'static>) -> anyhow::Result<()> {
    let sample = WelcomeEmail {
        hostname: "srv-1",
        fqdn: "srv-1.servers.invalid",
        ipv4: "192.0.2.1",
        username: "root",
        password: "sample",
    };
    for (name, key) in [
        ("subject", "handoff.subject"),
        ("body", "handoff.template_file"),
    ] {
        templates.render(name, &sample).map_err(|e| {
            anyhow::anyhow!(
                "welcome e-mail template ({key}) failed to render with sample values (templates may use hostname, fqdn, ipv4, username and password): {e}"
            )
        })?;
    }
    Ok(())
}

async fn deliver_smtp(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    server: &str,
    message: Message,
) -> Result<Delivery, SendError> {
    match transport.send(message).await {
        Ok(response) => Ok(Delivery::Smtp {
            server: server.to_string(),
            response: response.message().collect::<Vec<_>>().join(" "),
        }),
        // A 4xx or 5xx reply means the server did not take the message.
        Err(error) if error.is_transient() || error.is_permanent() => Err(SendError::Rejected {
            server: server.to_string(),
            reason: error.to_string(),
            permanent: error.is_permanent(),
        }),
        Err(error) => Err(SendError::Interrupted {
            server: server.to_string(),
            reason: error.to_string(),
        }),
    }
}

fn build_transport(
    smtp: &SmtpConfig,
) -> anyhow::Result<(AsyncSmtpTransport<Tokio1Executor>, String)> {
    let tls = match smtp.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::StartTls => Tls::Required(TlsParameters::new(smtp.host.clone())?),
        SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(smtp.host.clone())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .hello_name(ClientId::Domain(smtp.helo_name.clone()))
        .timeout(Some(Duration::from_secs(smtp.timeout_seconds)));
    if let (Some(username), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.expose().clone(),
        ));
    }
    Ok((builder.build(), format!("{}:{}", smtp.host, smtp.port)))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
fn write_outbox(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    // The message contains a root password: only the owner may read the folder
    // and the file.
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let temporary = path.with_extension("eml.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}
