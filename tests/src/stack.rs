//! A whole Rackhand installation for end-to-end tests: the control plane and
//! a site agent as real processes, wired to real peers (the libvirt lab,
//! PowerDNS, the SMTP sink), with helpers to place and pay orders.
//!
//! Each stack lives in `target/e2e/<name>/`, which is wiped when the stack
//! starts and kept afterwards, so the logs of a failed test stay readable.
//! Processes are ended by PID when the stack is dropped, and the lab and the
//! other peers are stopped through their scripts.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::peers::Peer;
use crate::workspace;

/// A process of ours (control plane or agent) with its output in a log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    /// Starts `binary args…` with `env`, appending stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Process> {
        let file = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM, waits up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Returns whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Returns the log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "{} exited before logging {needle:?}; log:\n{}",
                    self.name,
                    tail(&self.log_text(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "{} did not log {needle:?} within {timeout:?}; log:\n{}",
            self.name,
            tail(&self.log_text(), 30)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the HTTP client the tests use towards the API (plain HTTP on
/// loopback; rustls with the ring provider, like the product).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // The workspace's reqwest has no built-in crypto provider; install the
    // same one the product uses. A second install in the same process fails
    // harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Returns the last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Returns a free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// How a stack is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Unique per test: names the work folder, and the lab's namespace (≤ 10 characters).
    pub name: String,
    /// First three octets of the lab network, unique per test.
    pub lab_net: String,
    /// The BMC password the lab's Redfish emulator requires.
    pub bmc_password: String,
    /// Start PowerDNS and configure the PowerDNS driver.
    pub dns: bool,
    /// Start the SMTP sink; without it e-mail goes to the outbox folder.
    pub smtp: bool,
    /// `RUST_LOG` for both processes.
    pub log_filter: String,
    /// VMs in the lab.
    pub lab_nodes: u32,
    /// Start an Ironic conductor whose `http_url` is the agent's boot HTTP
    /// server, and give the agent an `[ironic]` section.
    pub ironic: bool,
    /// Import the test image into the agent's store before it starts;
    /// without it the agent must download the image from an upstream URL.
    pub import_image: bool,
    /// The lab VMs' firmware: `bios` or `uefi` (OVMF).
    pub firmware: String,
    /// Start the libvirt lab (`bm-lab`, one per machine) with VMs and their
    /// Redfish BMC. When false, only a namespace for the agent's PXE servers
    /// (`pxe-netns`) is started, and `lab` has only the `SERVER_*` and
    /// `PREFIX_LEN` keys: for tests that boot no machine.
    pub vm_lab: bool,
}

impl StackOptions {
    pub fn new(name: &str, lab_net: &str) -> StackOptions {
        StackOptions {
            name: name.to_string(),
            lab_net: lab_net.to_string(),
            bmc_password: "password".to_string(),
            dns: false,
            smtp: false,
            log_filter: "info".to_string(),
            lab_nodes: 1,
            ironic: false,
            import_image: true,
            firmware: "bios".to_string(),
            vm_lab: true,
        }
    }
}

/// An order as placed.
#[derive(Debug, Clone)]
pub struct PlacedOrder {
    pub id: i64,
    pub invoice_id: i64,
}

/// A running installation. Fields are public so tests can look at anything.
#[derive(Debug)]
pub struct Stack {
    pub options: StackOptions,
    pub dir: PathBuf,
    /// Declared before `lab` so it stops first: an Ironic whose BMC went
    /// away stalls in its power sync.
    pub ironic: Option<Peer>,
    /// The agent's listener for the Ironic conductor, when `ironic`.
    pub conductor_url: Option<String>,
    pub lab: Peer,
    pub pdns: Option<Peer>,
    pub smtp: Option<Peer>,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub control_plane: Process,
    pub agent: Process,
    pub api_url: String,
    pub token: String,
    pub stripe_secret: String,
    pub cp_config: PathBuf,
    pub cp_state: PathBuf,
    pub agent_config: PathBuf,
    pub agent_state: PathBuf,
    http: reqwest::Client,
}

impl Stack {
    /// Starts the peers, the control plane and the agent (the agent with
    /// `agent_failpoints` and the control plane with `cp_failpoints` armed),
    /// enrolls the agent and imports the test image.
    pub async fn start(
        options: StackOptions,
        cp_failpoints: &str,
        agent_failpoints: &str,
    ) -> anyhow::Result<Stack> {
        let dir = workspace::root()
            .join("target")
            .join("e2e")
            .join(&options.name);
        let peers = dir.join("peers");
        // Clean up after an earlier run that died: stop its peers, then wipe.
        if peers.exists() {
            for script in [
                "ironic",
                "ipmi-bmc",
                "bm-lab",
                "pxe-netns",
                "powerdns",
                "smtp-sink",
            ] {
                let _ = Command::new(workspace::peer_script(script))
                    .arg("stop")
                    .env("RACKHAND_PEER_STATE", &peers)
                    .output();
            }
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&peers)?;

        let lab = if options.vm_lab {
            Peer::start(
                "bm-lab",
                &peers,
                &[
                    ("LAB_NAME", options.name.as_str()),
                    ("LAB_NET", options.lab_net.as_str()),
                    ("LAB_BMC_PASSWORD", options.bmc_password.as_str()),
                    ("LAB_TTL_S", "1800"),
                    ("LAB_NODES", &options.lab_nodes.to_string()),
                    ("LAB_FIRMWARE", options.firmware.as_str()),
                ],
            )?
        } else {
            Peer::start(
                "pxe-netns",
                &peers,
                &[
                    ("LAB_NAME", options.name.as_str()),
                    ("LAB_NET", options.lab_net.as_str()),
                ],
            )?
        };
        let pdns = if options.dns {
            Some(Peer::start("powerdns", &peers, &[])?)
        } else {
            None
        };
        let smtp = if options.smtp {
            Some(Peer::start("smtp-sink", &peers, &[])?)
        } else {
            None
        };
        // The VMs reach the conductor's http_root through the agent's boot
        // HTTP server (port 8080 in the lab, see agent_config).
        let ironic = if options.ironic {
            let http_url = format!("http://{}:8080/ironic", lab.var("SERVER_IP"));
            Some(Peer::start(
                "ironic",
                &peers,
                &[
                    ("IRONIC_HTTP_PORT", "0"),
                    ("IRONIC_HTTP_URL", http_url.as_str()),
                    ("IRONIC_AUTOMATED_CLEAN", "false"),
                    ("IRONIC_FORCE_POWER_SYNC", "false"),
                    // Tests read the configdrive the agent sent back
                    // through the API, which masks it by default.
                    ("IRONIC_SHOW_INSTANCE_SECRETS", "1"),
                ],
            )?)
        } else {
            None
        };
        let conductor_url = match &ironic {
            Some(_) => Some(format!("http://127.0.0.1:{}", free_port()?)),
            None => None,
        };

        let image_dir = dir.join("image");
        let output = Command::new(workspace::peer_script("make-test-initrd"))
            .arg(&image_dir)
            .output()?;
        if !output.status.success() {
            bail!(
                "make-test-initrd failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let image = crate::peers::parse_key_values(&String::from_utf8_lossy(&output.stdout));
        let vmlinuz = PathBuf::from(
            image
                .get("VMLINUZ")
                .context("make-test-initrd printed no VMLINUZ")?,
        );
        let initrd = PathBuf::from(
            image
                .get("INITRD")
                .context("make-test-initrd printed no INITRD")?,
        );

        let api_port = free_port()?;
        let agent_port = free_port()?;
        let token = format!("e2e-token-{}", random_suffix());
        let stripe_secret = format!("whsec_e2e_{}", random_suffix());
        let cp_dir = dir.join("control-plane");
        fs::create_dir_all(&cp_dir)?;
        let cp_config = cp_dir.join("config.toml");
        fs::write(
            &cp_config,
            control_plane_config(
                &cp_dir,
                api_port,
                agent_port,
                &token,
                &stripe_secret,
                pdns.as_ref(),
                smtp.as_ref(),
            ),
        )?;

        let log_filter = options.log_filter.clone();
        let control_plane = Process::spawn(
            "control plane",
            &workspace::binary("rackhand-control-plane"),
            &["serve", "--config", &cp_config.display().to_string()],
            &[
                ("RUST_LOG", &log_filter),
                ("RACKHAND_FAILPOINTS", cp_failpoints),
                ("NO_COLOR", "1"),
            ],
            &dir.join("control-plane.log"),
        )?;

        let mut stack = Stack {
            options,
            dir: dir.clone(),
            lab,
            pdns,
            smtp,
            ironic,
            conductor_url,
            vmlinuz,
            initrd,
            control_plane,
            agent: Process {
                name: "agent".into(),
                child: None,
                log: dir.join("agent.log"),
            },
            api_url: format!("http://127.0.0.1:{api_port}"),
            token,
            stripe_secret,
            cp_config,
            cp_state: cp_dir.join("state"),
            agent_config: dir.join("agent").join("config.toml"),
            agent_state: dir.join("agent").join("state"),
            http: http_client()?,
        };
        stack.wait_for_api().await?;

        stack.post("/v1/sites", json!({ "name": "dc1" })).await?;
        let enrollment = stack
            .post("/v1/sites/dc1/enrollment-tokens", json!({}))
            .await?;
        let agent_dir = dir.join("agent");
        fs::create_dir_all(&agent_dir)?;
        fs::write(
            &stack.agent_config,
            agent_config(&stack, agent_port, &enrollment, &agent_dir)?,
        )?;

        if stack.options.import_image {
            let import = Command::new(workspace::binary("rackhand-site-agent"))
                .args(["image", "import", "--config"])
                .arg(&stack.agent_config)
                .arg(&stack.vmlinuz)
                .arg(&stack.initrd)
                .output()?;
            if !import.status.success() {
                bail!(
                    "image import failed: {}",
                    String::from_utf8_lossy(&import.stderr)
                );
            }
        }
        stack.start_agent(agent_failpoints)?;
        Ok(stack)
    }

    /// Starts (or restarts) the agent process.
    pub fn start_agent(&mut self, failpoints: &str) -> anyhow::Result<()> {
        self.agent.stop();
        self.agent = Process::spawn(
            "agent",
            &workspace::binary("rackhand-site-agent"),
            &["run", "--config", &self.agent_config.display().to_string()],
            &[
                ("RUST_LOG", &self.options.log_filter),
                ("RACKHAND_FAILPOINTS", failpoints),
                ("NO_COLOR", "1"),
            ],
            &self.dir.join("agent.log"),
        )?;
        self.agent
            .wait_for_log("PXE services started", Duration::from_secs(60))
    }

    /// Starts (or restarts) the control plane process.
    pub async fn start_control_plane(&mut self, failpoints: &str) -> anyhow::Result<()> {
        self.control_plane.stop();
        self.control_plane = Process::spawn(
            "control plane",
            &workspace::binary("rackhand-control-plane"),
            &["serve", "--config", &self.cp_config.display().to_string()],
            &[
                ("RUST_LOG", &self.options.log_filter),
                ("RACKHAND_FAILPOINTS", failpoints),
                ("NO_COLOR", "1"),
            ],
            &self.dir.join("control-plane.log"),
        )?;
        self.wait_for_api().await
    }

    async fn wait_for_api(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = self
                .http
                .get(format!("{}/healthz", self.api_url))
                .send()
                .await
                && response.status().is_success()
            {
                return Ok(());
            }
            if !self.control_plane.is_running() {
                bail!(
                    "control plane exited; log:\n{}",
                    tail(&self.control_plane.log_text(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "control plane API did not answer; log:\n{}",
            tail(&self.control_plane.log_text(), 30)
        )
    }

    /// Sends an authenticated API request and returns (status, JSON body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Sends a POST and requires a 2xx response.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, value) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&status) {
            bail!("POST {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// Sends a GET and requires a 2xx response.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, value) = self.call(reqwest::Method::GET, path, None).await?;
        if !(200..300).contains(&status) {
            bail!("GET {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// Registers the image, a subnet, lab node 0 and a product.
    pub async fn create_inventory(&self) -> anyhow::Result<()> {
        self.post(
            "/v1/images",
            json!({
                "name": "test-initrd",
                "kernel_sha256": sha256_file(&self.vmlinuz)?,
                "initrd_sha256": sha256_file(&self.initrd)?,
                "kernel_args": "console=ttyS0 panic=5",
            }),
        )
        .await?;
        self.post(
            "/v1/subnets",
            json!({ "name": "public", "site": "dc1", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1" }),
        )
        .await?;
        self.post(
            "/v1/nodes",
            json!({
                "name": "node0", "site": "dc1", "subnet": "public",
                "boot_mac": self.lab.var("NODE0_MAC"),
                "cpu_cores": 1, "ram_mib": 512, "disk_gb": 1,
                "bmc": {
                    "driver": "redfish",
                    "url": self.lab.var("NODE0_REDFISH_URL"),
                    "username": self.lab.var("BMC_USER"),
                    "password": self.lab.var("BMC_PASSWORD"),
                },
            }),
        )
        .await?;
        self.post(
            "/v1/products",
            json!({
                "name": "bm-small", "price_minor": 1999, "currency": "eur",
                "min_cpu_cores": 1, "min_ram_mib": 512, "min_disk_gb": 1, "image": "test-initrd",
            }),
        )
        .await?;
        Ok(())
    }

    /// Places an order for `bm-small` with host name `hostname`.
    pub async fn place_order(&self, hostname: &str) -> anyhow::Result<PlacedOrder> {
        let created = self
            .post(
                "/v1/orders",
                json!({ "product": "bm-small", "site": "dc1", "customer_email": "customer@example.test", "hostname": hostname }),
            )
            .await?;
        Ok(PlacedOrder {
            id: created["order_id"].as_i64().context("order_id")?,
            invoice_id: created["invoice_id"].as_i64().context("invoice_id")?,
        })
    }

    /// Posts an `invoice.paid` event for `invoice_id`, signed by the official
    /// Stripe library, and returns the HTTP status and body.
    pub async fn pay(&self, invoice_id: i64) -> anyhow::Result<(u16, Value)> {
        let event = json!({
            "id": format!("evt_e2e_{}", random_suffix()),
            "object": "event",
            "type": "invoice.paid",
            "data": { "object": {
                "id": "in_e2e", "object": "invoice", "status": "paid",
                "amount_paid": 1999, "currency": "eur",
                "metadata": { "invoice_id": invoice_id.to_string() },
            }},
        });
        let body = event.to_string();
        let signature = stripe_signature(&self.stripe_secret, &body, &self.dir, None)?;
        let response = self
            .http
            .post(format!("{}/webhooks/stripe", self.api_url))
            .header("Content-Type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Waits until the order reaches one of `states` and returns it.
    pub async fn wait_for_order(
        &mut self,
        id: i64,
        states: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(order) = self.get(&format!("/v1/orders/{id}")).await {
                if states.iter().any(|s| order["state"] == *s) {
                    return Ok(order);
                }
                last = order;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bail!(
            "order {id} did not reach {states:?} within {timeout:?}; last seen: {}\ncontrol plane log:\n{}\nagent log:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            tail(&self.control_plane.log_text(), 25),
            tail(&self.agent.log_text(), 25)
        )
    }

    /// Counts the Redfish `ComputerSystem.Reset` POSTs the lab's BMC accepted.
    pub fn reset_posts(&self) -> anyhow::Result<usize> {
        let log = fs::read_to_string(self.lab.var("REDFISH_LOG"))?;
        Ok(log
            .lines()
            .filter(|l| {
                l.contains("POST ") && l.contains("ComputerSystem.Reset") && l.contains("\" 204")
            })
            .count())
    }

    /// Returns how many times the lab started VM 0.
    pub fn vm_starts(&self) -> anyhow::Result<usize> {
        self.vm_starts_of(0)
    }

    /// Returns how many times the lab started VM `index`.
    pub fn vm_starts_of(&self, index: u32) -> anyhow::Result<usize> {
        Ok(self
            .lab
            .run(&["starts", &index.to_string()])?
            .trim()
            .parse()?)
    }

    /// Returns the agent's boot HTTP access log.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.agent_state.join("access.log")).unwrap_or_default()
    }
}

fn control_plane_config(
    dir: &Path,
    api_port: u16,
    agent_port: u16,
    token: &str,
    stripe_secret: &str,
    pdns: Option<&Peer>,
    smtp: Option<&Peer>,
) -> String {
    let mut config = format!(
        r#"state_dir = "{state}"

[api]
listen = "127.0.0.1:{api_port}"
[[api.tokens]]
name = "e2e"
role = "admin"
sha256 = "{token_sha}"

[agents]
listen = "127.0.0.1:{agent_port}"
lease_seconds = 15
callback_timeout_seconds = 300

[worker]
backoff_base_ms = 500
backoff_max_ms = 5000

[stripe]
webhook_secret = "{stripe_secret}"

[network]
domain = "e2e.test"
dns_servers = ["192.0.2.53"]
"#,
        state = dir.join("state").display(),
        token_sha = sha256_hex(token.as_bytes()),
    );
    if let Some(pdns) = pdns {
        config.push_str(&format!(
            "\n[dns]\ndriver = \"powerdns\"\napi_url = \"{}\"\napi_key = \"{}\"\nserver_id = \"{}\"\n",
            pdns.var("PDNS_API_URL"),
            pdns.var("PDNS_API_KEY"),
            pdns.var("PDNS_SERVER_ID")
        ));
    }
    if let Some(smtp) = smtp {
        config.push_str(&format!(
            "\n[smtp]\nhost = \"{}\"\nport = {}\ntls = \"none\"\nhelo_name = \"rackhand.e2e.test\"\n",
            smtp.var("SMTP_HOST"),
            smtp.var("SMTP_PORT")
        ));
    }
    config
}

fn agent_config(
    stack: &Stack,
    agent_port: u16,
    enrollment: &Value,
    agent_dir: &Path,
) -> anyhow::Result<String> {
    let net = &stack.options.lab_net;
    Ok(format!(
        r#"state_dir = "{state}"

[control_plane]
url = "https://127.0.0.1:{agent_port}"
ca_fingerprint = "{fingerprint}"
enrollment_token = "{token}"

[pxe]
netns = "{ns}"
interface = "{interface}"
server_ip = "{server_ip}"
prefix_len = {prefix}
pool_start = "{net}.100"
pool_end = "{net}.199"
http_port = 8080

[bmc]
power_on_grace_seconds = 60
{ironic}"#,
        state = agent_dir.join("state").display(),
        fingerprint = enrollment["ca_fingerprint"]
            .as_str()
            .context("ca_fingerprint")?,
        token = enrollment["token"].as_str().context("token")?,
        ns = stack.lab.var("SERVER_NS"),
        interface = stack.lab.var("SERVER_IF"),
        server_ip = stack.lab.var("SERVER_IP"),
        prefix = stack.lab.var("PREFIX_LEN"),
        ironic = match (&stack.ironic, &stack.conductor_url) {
            (Some(ironic), Some(url)) => format!(
                "\n[ironic]\nhttp_root = \"{}\"\nconductor_listen = \"{}\"\n",
                ironic.var("IRONIC_HTTP_ROOT"),
                url.trim_start_matches("http://")
            ),
            _ => String::new(),
        },
    ))
}

/// Signs `body` with the official Stripe library (through `tests/peers/stripe-sign`).
pub fn stripe_signature(
    secret: &str,
    body: &str,
    scratch: &Path,
    timestamp: Option<i64>,
) -> anyhow::Result<String> {
    let payload = scratch.join(format!("stripe-payload-{}.json", random_suffix()));
    fs::write(&payload, body)?;
    let mut command = Command::new(workspace::peer_script("stripe-sign"));
    command
        .args(["sign", "--secret", secret, "--payload"])
        .arg(&payload);
    if let Some(timestamp) = timestamp {
        command.args(["--timestamp", &timestamp.to_string()]);
    }
    let output = command.output()?;
    let _ = fs::remove_file(&payload);
    if !output.status.success() {
        bail!(
            "stripe-sign failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// Returns the lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.read_to_end(&mut bytes)?;
    Ok(sha256_hex(&bytes))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Returns 12 random lowercase alphanumeric characters.
pub fn random_suffix() -> String {
    (0..12)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect()
}
