//! The control plane's TOML configuration: raw structs parsed with
//! `deny_unknown_fields`, then checked into [`Config`].
//!
//! Every error names the file, the key and what would fix it. Secrets may be
//! given inline or, better, as a `*_file` path that holds only the secret, so
//! that the configuration itself can be world-readable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rackhand_protocol::Secret;
use serde::Deserialize;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: PathBuf,
    database_url: Option<String>,
    log_format: Option<String>,
    api: RawApi,
    agents: Option<RawAgents>,
    stripe: Option<RawStripe>,
    worker: Option<RawWorker>,
    network: Option<RawNetwork>,
    dns: Option<RawDns>,
    smtp: Option<RawSmtp>,
    handoff: Option<RawHandoff>,
    secrets: Option<RawSecrets>,
    images: Option<RawImages>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    listen: Option<String>,
    server_names: Option<Vec<String>>,
    lease_seconds: Option<u32>,
    enrollment_token_ttl_seconds: Option<u32>,
    callback_timeout_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStripe {
    webhook_secret: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    tolerance_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    lease_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    domain: String,
    #[serde(default)]
    dns_servers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    driver: String,
    api_url: Option<String>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    server_id: Option<String>,
    create_zones: Option<bool>,
    ttl: Option<u32>,
    nameservers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    helo_name: Option<String>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandoff {
    from: Option<String>,
    subject: Option<String>,
    template_file: Option<PathBuf>,
    outbox_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    store_dir: Option<PathBuf>,
    max_file_bytes: Option<u64>,
    signature_keyring: Option<PathBuf>,
    require_signatures: Option<bool>,
    gpgv: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    sealing_key_file: Option<PathBuf>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub database_url: String,
    pub log_format: LogFormat,
    pub api: ApiConfig,
    pub agents: AgentsConfig,
    pub stripe: Option<StripeConfig>,
    pub worker: WorkerConfig,
    pub network: NetworkConfig,
    pub dns: DnsConfig,
    pub smtp: Option<SmtpConfig>,
    pub handoff: HandoffConfig,
    pub sealing_key_file: PathBuf,
    pub images: ImagesConfig,
}

/// The image library: uploaded files and their signatures.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Content-addressed store of uploaded files (default `<state_dir>/images`).
    pub store_dir: PathBuf,
    /// Largest file accepted by an upload, in bytes.
    pub max_file_bytes: u64,
    /// OpenPGP keyring (binary, as `gpg --export` writes it) that detached
    /// signatures are checked against; `None` accepts no signature.
    pub signature_keyring: Option<PathBuf>,
    /// Whether every uploaded file needs a good signature, and images can no
    /// longer be registered by digest alone.
    pub require_signatures: bool,
    /// The `gpgv` program that checks signatures.
    pub gpgv: PathBuf,
}

/// Default of `images.max_file_bytes`: 64 GiB, above the disk images of
/// common cloud distributions (a few GiB) with room for large ones.
pub const DEFAULT_MAX_IMAGE_FILE_BYTES: u64 = 64 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
}

/// An operator API token, stored only as its sha256.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// The permission of a token: `viewer` reads, `admin` also changes things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Admin,
}

#[derive(Debug, Clone)]
pub struct AgentsConfig {
    pub listen: SocketAddr,
    /// DNS names and IP addresses the agent listener's certificate names;
    /// agents must dial one of them.
    pub server_names: Vec<String>,
    pub lease_seconds: u32,
    pub enrollment_token_ttl_seconds: u32,
    pub callback_timeout_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub webhook_secret: Secret,
    pub tolerance_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub lease_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Domain appended to an order's hostname for its PTR record.
    pub domain: String,
    /// Resolvers written into the network settings of rendered install
    /// files; required only by products with an install template.
    pub dns_servers: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub enum DnsConfig {
    /// Reverse DNS is not managed; the network phase records that it skipped it.
    None,
    PowerDns(PowerDnsConfig),
}

#[derive(Debug, Clone)]
pub struct PowerDnsConfig {
    pub api_url: String,
    pub api_key: Secret,
    pub server_id: String,
    pub create_zones: bool,
    pub ttl: u32,
    pub nameservers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub helo_name: String,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct HandoffConfig {
    pub from: String,
    pub subject: String,
    pub template_file: Option<PathBuf>,
    pub outbox_dir: PathBuf,
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Checks configuration text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        Checker { path }.check(raw)
    }
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key,
            message: message.into(),
        }
    }

    /// Resolves a path relative to the config file's folder.
    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        self.path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }

    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = self.resolve(&raw.state_dir);
        let database_url = raw
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", state_dir.join("rackhand.db").display()));
        if database_url.contains(":memory:") || database_url.contains("mode=memory") {
            return Err(self.invalid(
                "database_url",
                "an in-memory database loses every order on restart; give a file such as sqlite:///var/lib/rackhand/rackhand.db",
            ));
        }
        if !database_url.starts_with("sqlite:") {
            // TODO: accept postgres:// URLs once the PostgreSQL backend exists.
            return Err(self.invalid(
                "database_url",
                format!("{database_url:?} is not supported; only sqlite: URLs are supported"),
            ));
        }

        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(self.invalid(
                    "log_format",
                    format!("{other:?} is not a log format; use \"text\" or \"json\""),
                ));
            }
        };

        let sealing_key_file = raw
            .secrets
            .and_then(|s| s.sealing_key_file)
            .map(|p| self.resolve(&p))
            .unwrap_or_else(|| state_dir.join("sealing.key"));

        let handoff = self.check_handoff(raw.handoff, &state_dir)?;
        let images = self.check_images(raw.images, &state_dir)?;
        let api = self.check_api(raw.api)?;
        let agents = self.check_agents(raw.agents)?;
        if api.listen.port() != 0 && api.listen == agents.listen {
            return Err(self.invalid(
                "agents.listen",
                format!(
                    "{} is also api.listen; the agent listener needs its own port",
                    agents.listen
                ),
            ));
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            database_url,
            log_format,
            api,
            agents,
            stripe: raw.stripe.map(|s| self.check_stripe(s)).transpose()?,
            worker: self.check_worker(raw.worker)?,
            network: self.check_network(raw.network)?,
            dns: self.check_dns(raw.dns)?,
            smtp: raw.smtp.map(|s| self.check_smtp(s)).transpose()?,
            handoff,
            sealing_key_file,
            images,
            state_dir,
        })
    }

    fn check_api(&self, raw: RawApi) -> Result<ApiConfig, ConfigError> {
        let listen = raw.listen.parse().map_err(|_| {
            self.invalid(
                "api.listen",
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:8080",
                    raw.listen
                ),
            )
        })?;

        let mut tokens = Vec::new();
        for token in raw.tokens {
            let role = match token.role.as_str() {
                "admin" => Role::Admin,
                "viewer" => Role::Viewer,
                other => {
                    return Err(self.invalid(
                        "api.tokens.role",
                        format!("{other:?} is not a role; use \"admin\" or \"viewer\""),
                    ));
                }
            };
            let sha256 = decode_sha256(&token.sha256).ok_or_else(|| {
                self.invalid(
                    "api.tokens.sha256",
                    format!(
                        "token {:?}: expected 64 hex digits (the sha256 of the token, as printed by `rackhand-control-plane hash-token`)",
                        token.name
                    ),
                )
            })?;
            if tokens.iter().any(|t: &ApiToken| t.sha256 == sha256) {
                return Err(self.invalid(
                    "api.tokens.sha256",
                    format!("token {:?} repeats the hash of another token; each token needs its own value", token.name),
                ));
            }
            if tokens.iter().any(|t: &ApiToken| t.name == token.name) {
                return Err(self.invalid(
                    "api.tokens.name",
                    format!(
                        "{:?} names two tokens; names appear in logs and must tell tokens apart",
                        token.name
                    ),
                ));
            }
            tokens.push(ApiToken {
                name: token.name,
                role,
                sha256,
            });
        }
        Ok(ApiConfig { listen, tokens })
    }

    fn check_agents(&self, raw: Option<RawAgents>) -> Result<AgentsConfig, ConfigError> {
        let raw = raw.unwrap_or(RawAgents {
            listen: None,
            server_names: None,
            lease_seconds: None,
            enrollment_token_ttl_seconds: None,
            callback_timeout_seconds: None,
        });
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8443".to_string());
        let listen = listen_text.parse().map_err(|_| {
            self.invalid(
                "agents.listen",
                format!("{listen_text:?} is not an address:port such as 0.0.0.0:8443"),
            )
        })?;
        let server_names = raw
            .server_names
            .unwrap_or_else(|| vec!["localhost".to_string(), "127.0.0.1".to_string()]);
        for name in &server_names {
            let valid =
                name.parse::<std::net::IpAddr>().is_ok() || crate::names::check_fqdn(name).is_ok();
            if !valid {
                return Err(self.invalid(
                    "agents.server_names",
                    format!("{name:?} is neither an IP address nor a DNS name"),
                ));
            }
        }
        if server_names.is_empty() {
            return Err(self.invalid(
                "agents.server_names",
                "list at least one DNS name or IP address that agents dial",
            ));
        }
        let lease_seconds = raw.lease_seconds.unwrap_or(30);
        if !(5..=3600).contains(&lease_seconds) {
            return Err(self.invalid("agents.lease_seconds", "must be between 5 and 3600"));
        }
        let enrollment_token_ttl_seconds = raw.enrollment_token_ttl_seconds.unwrap_or(3600);
        if enrollment_token_ttl_seconds < 60 {
            return Err(self.invalid("agents.enrollment_token_ttl_seconds", "must be at least 60"));
        }
        let callback_timeout_seconds = raw.callback_timeout_seconds.unwrap_or(900);
        if callback_timeout_seconds < 30 {
            return Err(self.invalid(
                "agents.callback_timeout_seconds",
                "must be at least 30; a netboot takes longer than that",
            ));
        }
        Ok(AgentsConfig {
            listen,
            server_names,
            lease_seconds,
            enrollment_token_ttl_seconds,
            callback_timeout_seconds,
        })
    }

    fn check_images(
        &self,
        raw: Option<RawImages>,
        state_dir: &Path,
    ) -> Result<ImagesConfig, ConfigError> {
        let raw = raw.unwrap_or(RawImages {
            store_dir: None,
            max_file_bytes: None,
            signature_keyring: None,
            require_signatures: None,
            gpgv: None,
        });
        let max_file_bytes = raw.max_file_bytes.unwrap_or(DEFAULT_MAX_IMAGE_FILE_BYTES);
        if max_file_bytes == 0 {
            return Err(self.invalid(
                "images.max_file_bytes",
                "must be at least 1; give the largest upload in bytes, such as 68719476736 for 64 GiB",
            ));
        }
        let signature_keyring = raw.signature_keyring.map(|path| self.resolve(&path));
        let require_signatures = raw.require_signatures.unwrap_or(false);
        if require_signatures && signature_keyring.is_none() {
            return Err(self.invalid(
                "images.require_signatures",
                "is true but images.signature_keyring is not set; give the keyring of the keys allowed to sign images",
            ));
        }
        Ok(ImagesConfig {
            store_dir: raw
                .store_dir
                .map(|path| self.resolve(&path))
                .unwrap_or_else(|| state_dir.join("images")),
            max_file_bytes,
            signature_keyring,
            require_signatures,
            gpgv: raw.gpgv.unwrap_or_else(|| PathBuf::from("gpgv")),
        })
    }

    fn check_stripe(&self, raw: RawStripe) -> Result<StripeConfig, ConfigError> {
        let webhook_secret = self.secret(
            "stripe.webhook_secret",
            raw.webhook_secret,
            raw.webhook_secret_file,
        )?;
        let Some(webhook_secret) = webhook_secret else {
            return Err(self.invalid(
                "stripe.webhook_secret",
                "missing; set webhook_secret or webhook_secret_file to the endpoint's signing secret (whsec_...)",
            ));
        };
        if !webhook_secret.expose().starts_with("whsec_") || webhook_secret.expose().len() < 16 {
            return Err(self.invalid(
                "stripe.webhook_secret",
                "is not a Stripe endpoint signing secret; copy the whole whsec_... value from the endpoint's settings",
            ));
        }
        Ok(StripeConfig {
            webhook_secret,
            tolerance_seconds: raw.tolerance_seconds.unwrap_or(300),
        })
    }

    fn check_worker(&self, raw: Option<RawWorker>) -> Result<WorkerConfig, ConfigError> {
        let raw = raw.unwrap_or(RawWorker {
            concurrency: None,
            max_attempts: None,
            backoff_base_ms: None,
            backoff_max_ms: None,
            lease_seconds: None,
        });
        let config = WorkerConfig {
            concurrency: raw.concurrency.unwrap_or(4),
            max_attempts: raw.max_attempts.unwrap_or(8),
            backoff_base_ms: raw.backoff_base_ms.unwrap_or(1000),
            backoff_max_ms: raw.backoff_max_ms.unwrap_or(300_000),
            lease_seconds: raw.lease_seconds.unwrap_or(20),
        };
        if config.concurrency == 0 {
            return Err(self.invalid("worker.concurrency", "must be at least 1"));
        }
        if config.max_attempts == 0 {
            return Err(self.invalid("worker.max_attempts", "must be at least 1"));
        }
        if config.backoff_base_ms > config.backoff_max_ms {
            return Err(self.invalid(
                "worker.backoff_base_ms",
                "must not exceed worker.backoff_max_ms",
            ));
        }
        if config.lease_seconds < 5 {
            return Err(self.invalid("worker.lease_seconds", "must be at least 5"));
        }
        Ok(config)
    }

    fn check_network(&self, raw: Option<RawNetwork>) -> Result<NetworkConfig, ConfigError> {
        let (domain, raw_dns_servers) = raw
            .map(|n| (n.domain, n.dns_servers))
            .unwrap_or_else(|| ("servers.invalid".to_string(), Vec::new()));
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if crate::names::check_fqdn(&domain).is_err() {
            return Err(self.invalid(
                "network.domain",
                format!("{domain:?} is not a DNS domain such as servers.example.net"),
            ));
        }
        let mut dns_servers = Vec::with_capacity(raw_dns_servers.len());
        for text in &raw_dns_servers {
            let address = text.parse().map_err(|_| {
                self.invalid(
                    "network.dns_servers",
                    format!("{text:?} is not an IPv4 or IPv6 address such as 192.0.2.53"),
                )
            })?;
            dns_servers.push(address);
        }
        Ok(NetworkConfig {
            domain,
            dns_servers,
        })
    }

    fn check_dns(&self, raw: Option<RawDns>) -> Result<DnsConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(DnsConfig::None);
        };
        match raw.driver.as_str() {
            "none" => Ok(DnsConfig::None),
            "powerdns" => {
                let api_url = raw.api_url.ok_or_else(|| {
                    self.invalid(
                        "dns.api_url",
                        "missing; set it to the PowerDNS API base such as http://127.0.0.1:8081",
                    )
                })?;
                let api_key = self
                    .secret("dns.api_key", raw.api_key, raw.api_key_file)?
                    .ok_or_else(|| {
                        self.invalid("dns.api_key", "missing; set api_key or api_key_file")
                    })?;
                if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
                    return Err(self.invalid(
                        "dns.api_url",
                        format!("{api_url:?} must start with http:// or https://"),
                    ));
                }
                let mut nameservers = Vec::new();
                for name in raw.nameservers.unwrap_or_default() {
                    let bare = name.trim_end_matches('.').to_ascii_lowercase();
                    if crate::names::check_fqdn(&bare).is_err() {
                        return Err(self.invalid(
                            "dns.nameservers",
                            format!("{name:?} is not a host name such as ns1.example.net"),
                        ));
                    }
                    nameservers.push(format!("{bare}."));
                }
                Ok(DnsConfig::PowerDns(PowerDnsConfig {
                    api_url: api_url.trim_end_matches('/').to_string(),
                    api_key,
                    server_id: raw.server_id.unwrap_or_else(|| "localhost".to_string()),
                    create_zones: raw.create_zones.unwrap_or(true),
                    ttl: raw.ttl.unwrap_or(3600),
                    nameservers,
                }))
            }
            other => Err(self.invalid(
                "dns.driver",
                format!("{other:?} is not a DNS driver; use \"powerdns\" or \"none\""),
            )),
        }
    }

    fn check_smtp(&self, raw: RawSmtp) -> Result<SmtpConfig, ConfigError> {
        let tls = match raw.tls.as_deref() {
            None | Some("starttls") => SmtpTls::StartTls,
            Some("none") => SmtpTls::None,
            Some("tls") => SmtpTls::Tls,
            Some(other) => {
                return Err(self.invalid(
                    "smtp.tls",
                    format!("{other:?} is not a TLS mode; use \"starttls\", \"tls\" or \"none\""),
                ));
            }
        };
        let password = self.secret("smtp.password", raw.password, raw.password_file)?;
        if password.is_some() != raw.username.is_some() {
            return Err(self.invalid(
                "smtp.username",
                "set both username and password (or password_file), or neither",
            ));
        }
        let default_port = match tls {
            SmtpTls::Tls => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        };
        Ok(SmtpConfig {
            host: raw.host,
            port: raw.port.unwrap_or(default_port),
            tls,
            username: raw.username,
            password,
            helo_name: raw
                .helo_name
                .unwrap_or_else(|| "rackhand.localhost".to_string()),
            timeout_seconds: raw.timeout_seconds.unwrap_or(30),
        })
    }

    fn check_handoff(
        &self,
        raw: Option<RawHandoff>,
        state_dir: &Path,
    ) -> Result<HandoffConfig, ConfigError> {
        let raw = raw.unwrap_or(RawHandoff {
            from: None,
            subject: None,
            template_file: None,
            outbox_dir: None,
        });
        let from = raw
            .from
            .unwrap_or_else(|| "Rackhand <rackhand@localhost>".to_string());
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(self.invalid(
                "handoff.from",
                format!("{from:?} is not a mailbox such as \"Hosting <noreply@example.net>\""),
            ));
        }
        Ok(HandoffConfig {
            from,
            subject: raw
                .subject
                .unwrap_or_else(|| "Your server {{hostname}} is ready".to_string()),
            template_file: raw.template_file.map(|p| self.resolve(&p)),
            outbox_dir: raw
                .outbox_dir
                .map(|p| self.resolve(&p))
                .unwrap_or_else(|| state_dir.join("outbox")),
        })
    }

    /// Reads a secret given inline or as a file (whose surrounding whitespace
    /// is dropped); both at once is an error.
    fn secret(
        &self,
        key: &'static str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.invalid(
                key,
                "set either the value or the matching *_file key, not both",
            )),
            (Some(value), None) => self.usable_secret(key, value).map(Some),
            (None, Some(file)) => {
                let file = self.resolve(&file);
                let text = std::fs::read_to_string(&file).map_err(|error| {
                    self.invalid(key, format!("cannot read {}: {error}", file.display()))
                })?;
                self.usable_secret(key, text.trim().to_string()).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// Rejects an empty secret and the examples' `REPLACE_ME` placeholder: a
    /// guessable secret would let anyone forge what it protects.
    fn usable_secret(&self, key: &'static str, value: String) -> Result<Secret, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.invalid(key, "is empty; set the real secret"));
        }
        if value.contains("REPLACE_ME") {
            return Err(self.invalid(
                key,
                "still holds the example placeholder REPLACE_ME; set the real secret",
            ));
        }
        Ok(Secret::new(value))
    }
}

/// Decodes 64 hex digits into a sha256 value.
pub fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
state_dir = "/var/lib/rackhand"
[api]
listen = "127.0.0.1:8080"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/rackhand/control-plane.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).expect("minimal config is valid");
        assert_eq!(
            config.database_url,
            "sqlite:///var/lib/rackhand/rackhand.db"
        );
        assert_eq!(config.agents.lease_seconds, 30);
        assert!(matches!(config.dns, DnsConfig::None));
        assert!(config.smtp.is_none());
        assert_eq!(
            config.handoff.outbox_dir,
            Path::new("/var/lib/rackhand/outbox")
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let error = parse(&format!("{MINIMAL}\nbogus = 1\n")).expect_err("unknown key");
        assert!(error.to_string().contains("bogus"), "{error}");
    }

    #[test]
    fn bad_role_names_key_and_value() {
        let text = format!(
            "{MINIMAL}[[api.tokens]]\nname = \"ops\"\nrole = \"root\"\nsha256 = \"{}\"\n",
            "0".repeat(64)
        );
        let error = parse(&text).expect_err("bad role").to_string();
        assert!(error.contains("api.tokens.role"), "{error}");
        assert!(error.contains("\"root\""), "{error}");
    }

    #[test]
    fn powerdns_without_key_is_rejected() {
        let text = format!("{MINIMAL}[dns]\ndriver = \"powerdns\"\napi_url = \"http://x\"\n");
        let error = parse(&text).expect_err("missing key").to_string();
        assert!(error.contains("dns.api_key"), "{error}");
    }

    #[test]
    fn shared_listen_address_is_rejected() {
        let text = "state_dir = \"/s\"\n[api]\nlisten = \"127.0.0.1:8443\"\n";
        let error = parse(text).expect_err("collision").to_string();
        assert!(error.contains("agents.listen"), "{error}");
    }

    #[test]
    fn repeated_token_hash_is_rejected() {
        let hash = "0".repeat(64);
        let text = format!(
            "{MINIMAL}[[api.tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{hash}\"\n[[api.tokens]]\nname = \"b\"\nrole = \"viewer\"\nsha256 = \"{hash}\"\n"
        );
        let error = parse(&text).expect_err("repeated hash").to_string();
        assert!(error.contains("api.tokens.sha256"), "{error}");
    }

    #[test]
    fn powerdns_url_without_scheme_is_rejected() {
        let text = format!(
            "{MINIMAL}[dns]\ndriver = \"powerdns\"\napi_url = \"127.0.0.1:8081\"\napi_key = \"k\"\n"
        );
        let error = parse(&text).expect_err("no scheme").to_string();
        assert!(error.contains("dns.api_url"), "{error}");
    }

    #[test]
    fn relative_paths_resolve_against_config_folder() {
        let text = "state_dir = \"state\"\n[api]\nlisten = \"127.0.0.1:1\"\n";
        let config = parse(text).expect("valid");
        assert_eq!(config.state_dir, Path::new("/etc/rackhand/state"));
    }
}
