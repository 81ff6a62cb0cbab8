//! End-to-end tests: a paid order becomes an active bare-metal server, with
//! the control plane and the site agent as real processes and real peers
//! (a libvirt VM behind sushy-tools' Redfish emulator, PowerDNS, an SMTP
//! sink, the official Stripe library).
//!
//! Tests in `vm` boot a VM and share the machine's one libvirt lab, so the
//! nextest profile runs them one at a time (test group `vm`). They need root.
//! Tests outside it boot no machine and may run beside them; they need root
//! too, for the namespace of the agent's PXE servers.

#[path = "e2e/image_library.rs"]
mod image_library;

mod vm {
    use std::time::Duration;

    use anyhow::Context as _;
    use rackhand_e2e::stack::{Stack, StackOptions, random_suffix, sha256_file};
    use serde_json::{Value, json};

    /// Time for a TCG VM to power on, netboot and call back, with slack for a
    /// loaded 2-core machine.
    const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

    fn activity_events(order: &Value) -> Vec<(String, String)> {
        order["activity"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            r["phase"].as_str().unwrap_or("").to_string(),
                            r["event"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn succeeded_phases(order: &Value) -> Vec<String> {
        activity_events(order)
            .into_iter()
            .filter(|(_, event)| event == "succeeded")
            .map(|(phase, _)| phase)
            .collect()
    }

    /// Reads every file under `dir` (recursively) as bytes.
    fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    found.push((path, bytes));
                }
            }
        }
        found
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paid_order_becomes_active_server() -> anyhow::Result<()> {
        let bmc_password = format!("Planted-Bmc-{}", random_suffix());
        let mut options = StackOptions::new("rhe-main", "10.98.11");
        options.bmc_password = bmc_password.clone();
        options.dns = true;
        options.smtp = true;
        options.log_filter = "trace".to_string();
        let mut stack = Stack::start(options, "", "").await?;
        stack.create_inventory().await?;

        // TFTP through the agent, with two real clients, inside the lab namespace.
        let ns = stack.lab.var("SERVER_NS").to_string();
        let server_ip = stack.lab.var("SERVER_IP").to_string();
        let reference = std::fs::read("/usr/lib/ipxe/undionly.kpxe")?;
        let hpa_copy = stack.dir.join("tftp-hpa.kpxe");
        let status = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "timeout",
                "30",
                "tftp",
                "-m",
                "binary",
                &server_ip,
                "-c",
                "get",
                "undionly.kpxe",
            ])
            .arg(&hpa_copy)
            .status()?;
        assert!(status.success(), "tftp-hpa get failed: {status}");
        assert_eq!(
            std::fs::read(&hpa_copy)?,
            reference,
            "tftp-hpa copy differs"
        );
        let atftp_copy = stack.dir.join("atftp.kpxe");
        let status = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "timeout",
                "30",
                "atftp",
                "--option",
                "blksize 1468",
                "-g",
                "-r",
                "undionly.kpxe",
                "-l",
            ])
            .arg(&atftp_copy)
            .arg(&server_ip)
            .status()?;
        assert!(status.success(), "atftp get failed: {status}");
        assert_eq!(std::fs::read(&atftp_copy)?, reference, "atftp copy differs");

        let order = stack.place_order("web1").await?;
        let (status, _) = stack.pay(order.invoice_id).await?;
        assert_eq!(status, 200);
        let active = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        assert_eq!(active["state"], "active", "order: {active:#}");
        assert_eq!(
            succeeded_phases(&active),
            [
                "billing", "allocate", "driver", "image", "network", "handoff"
            ],
            "each phase succeeds once, in order"
        );
        assert_eq!(stack.reset_posts()?, 1, "the BMC received one power-on");
        assert_eq!(stack.vm_starts()?, 1, "the VM started once");

        // PowerDNS answers the PTR.
        let ip = active["ipv4"].as_str().unwrap_or_default().to_string();
        let pdns = stack.pdns.as_ref().expect("dns is on");
        let dig = std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                pdns.var("PDNS_DNS_PORT"),
                "+short",
                "-x",
                &ip,
            ])
            .output()?;
        assert_eq!(
            String::from_utf8_lossy(&dig.stdout).trim(),
            "web1.e2e.test."
        );

        // Exactly one e-mail, whose password matches the sealed copy.
        let smtp = stack.smtp.as_ref().expect("smtp is on");
        let index = std::fs::read_to_string(smtp.var("SMTP_INDEX"))?;
        assert_eq!(index.lines().count(), 1, "one e-mail: {index}");
        let mail_files = files_under(std::path::Path::new(smtp.var("SMTP_MAILDIR")));
        let mail =
            String::from_utf8_lossy(&mail_files.first().expect("one maildir file").1).to_string();
        let password = mail
            .lines()
            .find_map(|l| l.trim().strip_prefix("Password:"))
            .map(|p| p.trim().to_string())
            .expect("the e-mail carries the password");
        assert_eq!(password.len(), 20);

        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            stack.cp_state.join("rackhand.db").display()
        ))
        .await?;
        let sealed: String =
            sqlx::query_scalar("SELECT root_password_sealed FROM services WHERE order_id = ?")
                .bind(order.id)
                .fetch_one(&pool)
                .await?;
        pool.close().await;
        let sealer =
            rackhand_control_plane::seal::Sealer::load(&stack.cp_state.join("sealing.key"))?;
        let opened = sealer.open(
            &rackhand_control_plane::seal::root_password_context(order.id),
            &sealed,
        )?;
        assert_eq!(opened.expose(), &password);

        // Neither secret appears in any log line, API response, activity row or
        // database file, with logging at trace.
        stack.agent.stop();
        stack.control_plane.stop();
        let nodes = serde_json::to_string(&active)?;
        let mut places = files_under(&stack.cp_state);
        places.extend(files_under(&stack.agent_state));
        places.push((
            stack.control_plane.log.clone(),
            std::fs::read(&stack.control_plane.log)?,
        ));
        places.push((stack.agent.log.clone(), std::fs::read(&stack.agent.log)?));
        places.push(("order API answer".into(), nodes.into_bytes()));
        assert!(
            places.iter().any(|(p, _)| p.ends_with("rackhand.db")),
            "the database was scanned"
        );
        for (path, bytes) in &places {
            assert!(
                !contains(bytes, &bmc_password),
                "BMC password found in {}",
                path.display()
            );
            assert!(
                !contains(bytes, &password),
                "root password found in {}",
                path.display()
            );
            assert!(
                !contains(bytes, "panicked"),
                "a panic is logged in {}",
                path.display()
            );
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agent_killed_after_power_on_resumes() -> anyhow::Result<()> {
        let options = StackOptions::new("rhe-kagent", "10.98.12");
        let mut stack = Stack::start(options, "", "agent.driver.after_power_on").await?;
        stack.create_inventory().await?;
        let order = stack.place_order("web2").await?;
        stack.pay(order.invoice_id).await?;

        stack.agent.wait_for_log(
            "FAILPOINT agent.driver.after_power_on",
            Duration::from_secs(120),
        )?;
        stack.agent.kill9();
        stack.start_agent("")?;

        let active = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        assert_eq!(active["state"], "active", "order: {active:#}");
        assert_eq!(stack.reset_posts()?, 1, "the BMC received one power-on");
        assert_eq!(stack.vm_starts()?, 1, "the VM started once");
        // Without SMTP the welcome e-mail is written to the outbox.
        let outbox = files_under(&stack.cp_state.join("outbox"));
        assert_eq!(outbox.len(), 1, "one .eml in the outbox");
        assert!(outbox[0].0.extension().is_some_and(|e| e == "eml"));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn control_plane_killed_before_driver_result_resumes() -> anyhow::Result<()> {
        let options = StackOptions::new("rhe-kcp", "10.98.13");
        let mut stack = Stack::start(options, "cp.driver_result.before_record", "").await?;
        stack.create_inventory().await?;
        let order = stack.place_order("web3").await?;
        stack.pay(order.invoice_id).await?;

        stack.control_plane.wait_for_log(
            "FAILPOINT cp.driver_result.before_record",
            Duration::from_secs(120),
        )?;
        stack.control_plane.kill9();
        stack.start_control_plane("").await?;

        let active = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        assert_eq!(active["state"], "active", "order: {active:#}");
        assert_eq!(stack.reset_posts()?, 1, "the BMC received one power-on");
        assert_eq!(stack.vm_starts()?, 1, "the VM started once");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tampered_image_is_never_served() -> anyhow::Result<()> {
        let options = StackOptions::new("rhe-tamper", "10.98.14");
        let mut stack = Stack::start(options, "", "").await?;
        stack.create_inventory().await?;

        // Change one byte of the stored kernel, keep its size, restore its mtime.
        let kernel_hex = sha256_file(&stack.vmlinuz)?;
        let blob = stack
            .agent_state
            .join("images")
            .join("blobs")
            .join(&kernel_hex);
        let modified = std::fs::metadata(&blob)?.modified()?;
        let mut bytes = std::fs::read(&blob)?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        let mut permissions = std::fs::metadata(&blob)?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&blob, permissions)?;
        std::fs::write(&blob, &bytes)?;
        std::fs::File::options()
            .write(true)
            .open(&blob)?
            .set_modified(modified)?;
        assert_eq!(std::fs::metadata(&blob)?.len(), bytes.len() as u64);

        // Record the lab network while the node boots.
        let capture = stack.dir.join("lab.pcap");
        let capture_log = stack.dir.join("tcpdump.log");
        let mut tcpdump = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                stack.lab.var("SERVER_NS"),
                "timeout",
                "600",
                "tcpdump",
                "-i",
            ])
            .arg(stack.lab.var("SERVER_IF"))
            .args(["-U", "-s", "0", "-w"])
            .arg(&capture)
            .arg("tcp port 8080")
            .stderr(std::fs::File::create(&capture_log)?)
            .spawn()?;
        // tcpdump prints "listening on" once it captures; only then may the
        // node boot.
        let listening = std::time::Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&capture_log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                std::time::Instant::now() < listening,
                "tcpdump did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let order = stack.place_order("web4").await?;
        stack.pay(order.invoice_id).await?;
        let failed = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        assert_eq!(failed["state"], "failed", "order: {failed:#}");
        assert_eq!(failed["failed_phase"], "image");
        let error = failed["failure_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&kernel_hex),
            "error names the expected hash: {error}"
        );
        assert!(
            error.contains("expected"),
            "error names both hashes: {error}"
        );

        // The node did netboot and ask for its script (so the check below
        // means something), and never fetched an image file.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !stack.access_log().contains("/boot/") && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let access = stack.access_log();
        assert!(
            access.contains("/boot/"),
            "the node asked for its boot script:\n{access}"
        );
        assert!(
            !access.contains("/images/"),
            "an image file was requested:\n{access}"
        );

        // Let tcpdump write the packets of the last request before it stops.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(tcpdump.id().to_string())
            .status();
        let _ = tcpdump.wait();
        let decoded = std::process::Command::new("tcpdump")
            .args(["-nn", "-A", "-r"])
            .arg(&capture)
            .output()?;
        let text = String::from_utf8_lossy(&decoded.stdout);
        assert!(
            text.contains("GET /boot/"),
            "the capture shows the script request"
        );
        assert!(
            !text.contains("GET /images/"),
            "the capture shows an image request"
        );
        assert!(
            !text.contains("application/octet-stream"),
            "the capture shows an image response"
        );

        // What the error message recommends: import the right file
        // and retry. The retry power-cycles the node and it becomes active.
        let import =
            std::process::Command::new(rackhand_e2e::workspace::binary("rackhand-site-agent"))
                .args(["image", "import", "--config"])
                .arg(&stack.agent_config)
                .arg(&stack.vmlinuz)
                .output()?;
        assert!(
            import.status.success(),
            "import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        stack
            .post(&format!("/v1/orders/{}/retry", order.id), json!({}))
            .await?;
        let retried = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        assert_eq!(retried["state"], "active", "order: {retried:#}");
        assert_eq!(stack.vm_starts()?, 2, "the retry powered the node on again");
        Ok(())
    }

    /// The operator surface against a real BMC: a node added by its BMC
    /// address alone gets its boot MAC and sizes from the inventory, and
    /// power and boot actions reach the machine through the site agent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operator_adds_node_by_bmc_and_drives_it() -> anyhow::Result<()> {
        let options = StackOptions::new("rhe-ops", "10.98.15");
        let stack = Stack::start(options, "", "").await?;
        stack
            .post(
                "/v1/subnets",
                json!({ "name": "public", "site": "dc1", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1" }),
            )
            .await?;
        let password = stack.lab.var("BMC_PASSWORD").to_string();
        let created = stack
            .post(
                "/v1/nodes",
                json!({
                    // The emulator reports no memory below 1 GiB and answers
                    // its Storage link with HTTP 500, so these two are given.
                    "name": "node0", "site": "dc1", "subnet": "public", "disk_gb": 1, "ram_mib": 512,
                    "bmc": {
                        "driver": "redfish",
                        "url": stack.lab.var("REDFISH_URL"),
                        "username": stack.lab.var("BMC_USER"),
                        "password": password,
                    },
                }),
            )
            .await?;
        assert_eq!(
            created["boot_mac"],
            stack.lab.var("NODE0_MAC"),
            "{created:#}"
        );
        assert_eq!(created["ram_mib"], 512, "{created:#}");
        assert!(
            created["cpu_cores"].as_u64().is_some_and(|c| c >= 1),
            "{created:#}"
        );
        let shown = stack.get("/v1/nodes/node0").await?;
        assert!(
            shown["inventory"]["nics"]
                .as_array()
                .is_some_and(|n| !n.is_empty()),
            "{shown:#}"
        );
        assert!(
            !shown.to_string().contains(&password),
            "the BMC password is write-only"
        );

        let boot = stack
            .call(
                reqwest::Method::PUT,
                "/v1/nodes/node0/boot",
                Some(json!({ "target": "disk", "persistent": true })),
            )
            .await?;
        assert_eq!(boot.0, 200, "{boot:?}");
        // The BMC itself must now hold the override.
        let system: Value = rackhand_e2e::stack::http_client()?
            .get(stack.lab.var("NODE0_REDFISH_URL"))
            .basic_auth(
                stack.lab.var("BMC_USER"),
                Some(stack.lab.var("BMC_PASSWORD")),
            )
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            system["Boot"]["BootSourceOverrideTarget"], "Hdd",
            "{system:#}"
        );

        stack
            .post("/v1/nodes/node0/power", json!({ "action": "on" }))
            .await?;
        let mut power = Value::Null;
        for _ in 0..60 {
            power = stack.get("/v1/nodes/node0/power").await?;
            if power["power"] == "on" {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(power["power"], "on", "{power:#}");
        // Powering on a node that is on sends nothing.
        stack
            .post("/v1/nodes/node0/power", json!({ "action": "on" }))
            .await?;
        assert_eq!(stack.reset_posts()?, 1, "one Reset reached the BMC");
        assert_eq!(stack.vm_starts()?, 1, "the VM started once");
        stack
            .post("/v1/nodes/node0/power", json!({ "action": "force_off" }))
            .await?;

        // What the BMC cannot do is reported by name, not as a failure.
        let (status, console) = stack
            .call(reqwest::Method::GET, "/v1/nodes/node0/console", None)
            .await?;
        if status != 200 {
            assert_eq!(status, 502, "{console:#}");
            assert!(
                console["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not supported")),
                "{console:#}"
            );
        }
        let logs = format!(
            "{}{}",
            stack.control_plane.log_text(),
            stack.agent.log_text()
        );
        assert!(!logs.contains(&password), "the BMC password reached a log");
        Ok(())
    }

    /// An IPMI node through the whole operator path: the site agent speaks
    /// RMCP+ to OpenIPMI's simulator for power and sensors, and the CLI
    /// attaches to its Serial-over-LAN console through the control plane.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn operator_drives_ipmi_node_and_its_console() -> anyhow::Result<()> {
        use std::io::{Read as _, Write as _};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let options = StackOptions::new("rhe-ipmi", "10.98.17");
        let stack = Stack::start(options, "", "").await?;
        let bmc = rackhand_e2e::peers::Peer::start(
            "ipmi-bmc",
            &stack.dir.join("peers"),
            &[("IPMI_PASSWORD", "ipmi-Pw-7731")],
        )?;
        stack
            .post(
                "/v1/subnets",
                json!({ "name": "public", "site": "dc1", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1" }),
            )
            .await?;
        stack
            .post(
                "/v1/nodes",
                json!({
                    "name": "ipmi0", "site": "dc1", "subnet": "public",
                    "boot_mac": "52:54:00:77:00:01", "cpu_cores": 2, "ram_mib": 2048, "disk_gb": 20,
                    "bmc": { "driver": "ipmi", "url": format!("ipmi://127.0.0.1:{}", bmc.var("IPMI_PORT")),
                             "username": bmc.var("IPMI_USER"), "password": bmc.var("IPMI_PASSWORD") },
                }),
            )
            .await?;

        stack
            .post("/v1/nodes/ipmi0/power", json!({ "action": "on" }))
            .await?;
        let power = stack.get("/v1/nodes/ipmi0/power").await?;
        assert_eq!(power["power"], "on", "{power:#}");
        assert_eq!(
            std::fs::read_to_string(bmc.var("IPMI_POWER_FILE"))?.trim(),
            "1"
        );
        let sensors = stack.get("/v1/nodes/ipmi0/sensors").await?;
        let readings = sensors["sensors"]["readings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(readings.len(), 3, "{sensors:#}");

        // Play the host's serial port, then attach the CLI.
        let serial_port: u16 = bmc.var("IPMI_SERIAL_PORT").parse()?;
        let mut host = tokio::net::TcpStream::connect(("127.0.0.1", serial_port)).await?;
        let mut cli = std::process::Command::new(rackhand_e2e::workspace::binary("rackhand"))
            .args(["node", "console", "ipmi0", "--attach"])
            .env("RACKHAND_URL", &stack.api_url)
            .env("RACKHAND_TOKEN", &stack.token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut cli_stdout = cli.stdout.take().context("stdout")?;
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while let Ok(n) = cli_stdout.read(&mut buffer) {
                if n == 0 || seen_tx.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        // The relay drops bytes while the SOL session is not up yet, so the
        // host repeats its prompt until the CLI shows it.
        let mut shown = Vec::new();
        for _ in 0..60 {
            host.write_all(b"login: ").await?;
            while let Ok(chunk) = seen_rx.recv_timeout(Duration::from_millis(500)) {
                shown.extend(chunk);
            }
            if String::from_utf8_lossy(&shown).contains("login: ") {
                break;
            }
        }
        assert!(
            String::from_utf8_lossy(&shown).contains("login: "),
            "the CLI showed {shown:?}"
        );

        let mut stdin = cli.stdin.take().context("stdin")?;
        stdin.write_all(b"root\r")?;
        stdin.flush()?;
        let mut typed = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&typed).contains("root") {
            assert!(
                std::time::Instant::now() < deadline,
                "the host got {typed:?}"
            );
            let mut buffer = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(30), host.read(&mut buffer)).await??;
            assert!(n > 0, "the serial relay closed; the host got {typed:?}");
            typed.extend_from_slice(&buffer[..n]);
        }

        // Ctrl-] detaches; the CLI ends on its own.
        stdin.write_all(&[0x1d])?;
        drop(stdin);
        let mut ended = false;
        for _ in 0..100 {
            if cli.try_wait()?.is_some() {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !ended {
            let _ = cli.kill();
        }
        assert!(ended, "the CLI did not end after Ctrl-]");
        let logs = format!(
            "{}{}",
            stack.control_plane.log_text(),
            stack.agent.log_text()
        );
        assert!(
            !logs.contains(bmc.var("IPMI_PASSWORD")),
            "the BMC password reached a log"
        );
        Ok(())
    }

    /// Serves `files` on a loopback port and counts the GET requests per
    /// path; returns the base URL and the counters.
    async fn upstream(
        files: Vec<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let files = std::sync::Arc::new(files);
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/{name}",
            axum::routing::get(
                move |axum::extract::Path(name): axum::extract::Path<String>,
                      headers: axum::http::HeaderMap| {
                    let files = files.clone();
                    let log = log.clone();
                    async move {
                        let range = headers
                            .get("range")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        log.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("{name} {range}"));
                        match files.iter().find(|(file, _)| *file == name) {
                            Some((_, bytes)) => (axum::http::StatusCode::OK, bytes.clone()),
                            None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((url, seen))
    }

    /// The edge cache end to end: an image registered only by upstream URL
    /// is downloaded by the agent on the first boot that needs it, once for
    /// two nodes booting it at the same time, and both become active.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn image_downloads_once_for_two_boots() -> anyhow::Result<()> {
        let mut options = StackOptions::new("rhe-cache", "10.98.18");
        options.lab_nodes = 2;
        options.import_image = false;
        let mut stack = Stack::start(options, "", "").await?;
        let (url, seen) = upstream(vec![
            ("vmlinuz", std::fs::read(&stack.vmlinuz)?),
            ("initrd.img", std::fs::read(&stack.initrd)?),
        ])
        .await?;
        stack
            .post(
                "/v1/images",
                json!({
                    "name": "test-initrd",
                    "kernel_sha256": sha256_file(&stack.vmlinuz)?,
                    "initrd_sha256": sha256_file(&stack.initrd)?,
                    "kernel_args": "console=ttyS0 panic=5",
                    "kernel_url": format!("{url}/vmlinuz"),
                    "initrd_url": format!("{url}/initrd.img"),
                }),
            )
            .await?;
        stack
            .post(
                "/v1/subnets",
                json!({ "name": "public", "site": "dc1", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1" }),
            )
            .await?;
        for index in 0..2 {
            stack
                .post(
                    "/v1/nodes",
                    json!({
                        "name": format!("node{index}"), "site": "dc1", "subnet": "public",
                        "boot_mac": stack.lab.var(&format!("NODE{index}_MAC")),
                        "cpu_cores": 1, "ram_mib": 512, "disk_gb": 1,
                        "bmc": { "driver": "redfish", "url": stack.lab.var(&format!("NODE{index}_REDFISH_URL")),
                                 "username": stack.lab.var("BMC_USER"), "password": stack.lab.var("BMC_PASSWORD") },
                    }),
                )
                .await?;
        }
        stack
            .post(
                "/v1/products",
                json!({
                    "name": "bm-small", "price_minor": 1999, "currency": "eur",
                    "min_cpu_cores": 1, "min_ram_mib": 512, "min_disk_gb": 1, "image": "test-initrd",
                }),
            )
            .await?;
        let first = stack.place_order("cache-a").await?;
        let second = stack.place_order("cache-b").await?;
        stack.pay(first.invoice_id).await?;
        stack.pay(second.invoice_id).await?;
        for order in [&first, &second] {
            let done = stack
                .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
                .await?;
            assert_eq!(done["state"], "active", "order: {done:#}");
        }
        let requests = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let kernel_gets = requests.iter().filter(|r| r.starts_with("vmlinuz")).count();
        let initrd_gets = requests
            .iter()
            .filter(|r| r.starts_with("initrd.img"))
            .count();
        assert_eq!(kernel_gets, 1, "{requests:?}");
        assert_eq!(initrd_gets, 1, "{requests:?}");
        Ok(())
    }

    /// A real image-write install: the netbooted installer downloads the
    /// verified disk image from the agent (which fetched it once from its
    /// upstream URL), writes it to the VM's disk, checks the written bytes'
    /// sha256, calls back and reboots. The agent then serves the node's
    /// next netboot a local-disk script, and the VM boots the installed
    /// image, whose boot sector prints a marker on the serial console.
    #[tokio::test(flavor = "multi_thread")]
    async fn image_write_install_boots_installed_disk() -> anyhow::Result<()> {
        let options = StackOptions::new("rhe-disk", "10.98.19");
        let mut stack = Stack::start(options, "", "").await?;
        let marker = random_suffix();
        let disk = rackhand_e2e::test_disk::bootable_image(&marker, 4 << 20);
        let disk_sha256 = hex_sha256(&disk);
        let (url, seen) = upstream(vec![("disk.img", disk.clone())]).await?;
        stack
            .post(
                "/v1/images",
                json!({
                    "name": "test-disk", "os_family": "test", "install_method": "image",
                    "kernel_sha256": sha256_file(&stack.vmlinuz)?,
                    "initrd_sha256": sha256_file(&stack.initrd)?,
                    "kernel_args": "console=ttyS0 panic=5",
                    "disk_sha256": disk_sha256, "disk_size": disk.len(),
                    "disk_url": format!("{url}/disk.img"),
                }),
            )
            .await?;
        stack
            .post(
                "/v1/subnets",
                json!({ "name": "public", "site": "dc1", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1" }),
            )
            .await?;
        stack
            .post(
                "/v1/nodes",
                json!({
                    "name": "node0", "site": "dc1", "subnet": "public",
                    "boot_mac": stack.lab.var("NODE0_MAC"),
                    "cpu_cores": 1, "ram_mib": 512, "disk_gb": 1,
                    "bmc": { "driver": "redfish", "url": stack.lab.var("NODE0_REDFISH_URL"),
                             "username": stack.lab.var("BMC_USER"), "password": stack.lab.var("BMC_PASSWORD") },
                }),
            )
            .await?;
        stack
            .post(
                "/v1/products",
                json!({
                    "name": "bm-small", "price_minor": 1999, "currency": "eur",
                    "min_cpu_cores": 1, "min_ram_mib": 512, "min_disk_gb": 1, "image": "test-disk",
                }),
            )
            .await?;

        let order = stack.place_order("disk-1").await?;
        stack.pay(order.invoice_id).await?;
        let done = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        assert_eq!(done["state"], "active", "order: {done:#}");

        let serial_log = std::path::PathBuf::from(stack.lab.var("NODE0_SERIAL_LOG"));
        let booted = rackhand_e2e::test_disk::boot_line(&marker);
        let mut serial = String::new();
        // The reboot, the second netboot and the disk boot take about a
        // minute under TCG.
        for _ in 0..120 {
            serial = String::from_utf8_lossy(&std::fs::read(&serial_log).unwrap_or_default())
                .into_owned();
            if serial.contains(&booted) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let written = serial
            .find(&format!(
                "RACKHAND-TEST-INITRD: image written sha256={disk_sha256}"
            ))
            .with_context(|| {
                format!(
                    "the installer did not write the image; serial log:\n{}",
                    rackhand_e2e::stack::tail(&serial, 40)
                )
            })?;
        let disk_boot = serial.find(&booted).with_context(|| {
            format!(
                "the VM did not boot the installed disk; serial log:\n{}",
                rackhand_e2e::stack::tail(&serial, 40)
            )
        })?;
        assert!(written < disk_boot, "the disk booted before it was written");
        assert!(
            stack
                .agent
                .log_text()
                .contains("telling it to boot its local disk"),
            "the agent never sent the local-disk script"
        );
        assert_eq!(stack.vm_starts()?, 1, "the VM was powered on once");
        let downloads = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(downloads.len(), 1, "upstream requests: {downloads:?}");
        Ok(())
    }

    /// Runs one paid order on a lab VM with `firmware` and returns the
    /// stack once the order is active, with the VM's serial log.
    async fn order_on_firmware(
        name: &str,
        lab_net: &str,
        firmware: &str,
    ) -> anyhow::Result<(Stack, String)> {
        let mut options = StackOptions::new(name, lab_net);
        options.firmware = firmware.to_string();
        options.log_filter = "info,rackhand_pxe=debug".to_string();
        let mut stack = Stack::start(options, "", "").await?;
        stack.create_inventory().await?;
        let order = stack.place_order(&format!("{name}-1")).await?;
        stack.pay(order.invoice_id).await?;
        let done = stack
            .wait_for_order(order.id, &["active", "failed"], ORDER_TIMEOUT)
            .await?;
        let serial = String::from_utf8_lossy(
            &std::fs::read(stack.lab.var("NODE0_SERIAL_LOG")).unwrap_or_default(),
        )
        .into_owned();
        assert_eq!(
            done["state"],
            "active",
            "order: {done:#}\nserial log:\n{}",
            rackhand_e2e::stack::tail(&serial, 40)
        );
        assert!(
            serial.contains("RACKHAND-TEST-INITRD: callback ok"),
            "the booted initrd did not call back; serial log:\n{}",
            rackhand_e2e::stack::tail(&serial, 40)
        );
        assert_eq!(stack.vm_starts()?, 1, "the VM was powered on once");
        Ok((stack, serial))
    }

    /// OVMF's own PXE client, as most UEFI servers boot: it fetches the
    /// iPXE binary over the agent's TFTP, and iPXE fetches the boot script.
    #[tokio::test(flavor = "multi_thread")]
    async fn uefi_pxe_netboot_reaches_callback() -> anyhow::Result<()> {
        let (stack, _) = order_on_firmware("rhe-upxe", "10.98.20", "uefi-pxe").await?;
        let agent_log = stack.agent.log_text();
        assert!(
            agent_log.contains("snponly.efi"),
            "the agent never served snponly.efi over TFTP:\n{}",
            rackhand_e2e::stack::tail(&agent_log, 60)
        );
        assert!(
            stack.access_log().contains("/boot/"),
            "iPXE never fetched its boot script"
        );
        Ok(())
    }

    /// OVMF's UEFI HTTP boot: the firmware requests as an `HTTPClient`, gets
    /// the iPXE binary's URL on the agent's `/firmware/` route, and iPXE
    /// then fetches the boot script.
    #[tokio::test(flavor = "multi_thread")]
    async fn uefi_http_boot_reaches_callback() -> anyhow::Result<()> {
        let (stack, _) = order_on_firmware("rhe-uhttp", "10.98.21", "uefi-http").await?;
        let access = stack.access_log();
        assert!(
            access.contains("/firmware/snponly.efi"),
            "the firmware never fetched iPXE over HTTP; access log:\n{}",
            rackhand_e2e::stack::tail(&access, 30)
        );
        Ok(())
    }

    /// OVMF with the iPXE driver of the NIC's option ROM: iPXE requests its
    /// script straight away.
    #[tokio::test(flavor = "multi_thread")]
    async fn uefi_ipxe_rom_netboot_reaches_callback() -> anyhow::Result<()> {
        let (stack, _) = order_on_firmware("rhe-uipxe", "10.98.22", "uefi").await?;
        assert!(stack.access_log().contains("/boot/"));
        Ok(())
    }

    fn hex_sha256(bytes: &[u8]) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
    }

    /// Enrolls lab VM `index` in the stack's Ironic as a node with the
    /// redfish hardware type, the iPXE boot and ramdisk deploy interfaces
    /// and the lab's firmware, and returns the node's name.
    async fn enroll_in_ironic(stack: &Stack, index: u32) -> anyhow::Result<String> {
        let ironic = stack.ironic.as_ref().context("the stack runs Ironic")?;
        let url = ironic.var("IRONIC_URL");
        let http = rackhand_e2e::stack::http_client()?;
        let name = format!("lab-node{index}");
        let body = json!({
            "name": name, "driver": "redfish",
            "driver_info": {
                "redfish_address": stack.lab.var("REDFISH_URL"),
                "redfish_system_id": format!("/redfish/v1/Systems/{}", stack.lab.var(&format!("NODE{index}_SYSTEM_ID"))),
                "redfish_username": stack.lab.var("BMC_USER"),
                "redfish_password": stack.lab.var("BMC_PASSWORD"),
                "redfish_verify_ca": false,
            },
            "boot_interface": "ipxe", "deploy_interface": "ramdisk", "network_interface": "noop",
            "automated_clean": false,
            "properties": { "cpu_arch": "x86_64", "capabilities": "boot_mode:bios" },
        });
        let created: Value = http
            .post(format!("{url}/v1/nodes"))
            .header("X-OpenStack-Ironic-API-Version", "latest")
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let uuid = created["uuid"].as_str().context("a node uuid")?;
        http.post(format!("{url}/v1/ports"))
            .header("X-OpenStack-Ironic-API-Version", "latest")
            .json(&json!({ "node_uuid": uuid, "address": stack.lab.var(&format!("NODE{index}_MAC")), "pxe_enabled": true }))
            .send()
            .await?
            .error_for_status()?;
        Ok(name)
    }

    /// The cloud-config of the Ironic node's product: the host name, the
    /// root password only as its hash, and the agent's callback.
    const CLOUD_CONFIG: &str = "#cloud-config
hostname: {{hostname}}
fqdn: {{fqdn}}
users:
  - name: root
    hashed_passwd: {{root_password_hash}}
    lock_passwd: false
phone_home:
  url: {{callback_url}}
";

    /// Returns the password of the welcome e-mail for `fqdn` in the outbox.
    fn emailed_password_of(outbox: &std::path::Path, fqdn: &str) -> anyhow::Result<String> {
        for entry in std::fs::read_dir(outbox)? {
            let text = std::fs::read_to_string(entry?.path())?;
            let field = |name: &str| {
                text.lines()
                    .find_map(|line| line.trim_start().strip_prefix(name))
                    .map(|value| value.trim().to_string())
            };
            if field("Hostname:").as_deref() == Some(fqdn)
                && let Some(password) = field("Password:")
            {
                return Ok(password);
            }
        }
        anyhow::bail!(
            "no welcome e-mail for {fqdn} with a Password line in {}",
            outbox.display()
        )
    }

    /// Two paid orders provisioned at once, one
    /// node driven through Redfish by the site agent and one through Ironic,
    /// where Ironic powers the VM on and the agent's DHCP and boot server
    /// send it to the script Ironic prepared. Both become active, and each
    /// VM started once. The Ironic node's product installs with a
    /// cloud-config template. Because the node boots through iPXE, Ironic
    /// gets no configdrive, so the user-data's hash stays out of Ironic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redfish_and_ironic_nodes_provision_at_once() -> anyhow::Result<()> {
        let mut options = StackOptions::new("rhe-two", "10.98.16");
        options.lab_nodes = 2;
        options.ironic = true;
        let mut stack = Stack::start(options, "", "").await?;
        stack
            .post(
                "/v1/images",
                json!({
                    "name": "test-initrd",
                    "kernel_sha256": sha256_file(&stack.vmlinuz)?,
                    "initrd_sha256": sha256_file(&stack.initrd)?,
                    "kernel_args": "console=ttyS0 panic=5",
                }),
            )
            .await?;
        // The same test initrd, registered as a cloud-init installer: it
        // ignores the seed and calls back on its own.
        stack
            .post(
                "/v1/images",
                json!({
                    "name": "test-cloud-init",
                    "kernel_sha256": sha256_file(&stack.vmlinuz)?,
                    "initrd_sha256": sha256_file(&stack.initrd)?,
                    "kernel_args": "console=ttyS0 panic=5",
                    "install_method": "cloud-init",
                }),
            )
            .await?;
        let (status, stored) = stack
            .call(
                reqwest::Method::PUT,
                "/v1/templates/web-cloud",
                Some(json!({ "format": "cloud-config", "body": CLOUD_CONFIG })),
            )
            .await?;
        assert_eq!(status, 201, "template upload: {stored}");
        stack
            .post(
                "/v1/subnets",
                json!({ "name": "public", "site": "dc1", "cidr": "192.0.2.0/24", "gateway": "192.0.2.1" }),
            )
            .await?;
        stack
            .post(
                "/v1/nodes",
                json!({
                    "name": "node0", "site": "dc1", "subnet": "public",
                    "boot_mac": stack.lab.var("NODE0_MAC"), "cpu_cores": 1, "ram_mib": 512, "disk_gb": 1,
                    "bmc": { "driver": "redfish", "url": stack.lab.var("NODE0_REDFISH_URL"),
                             "username": stack.lab.var("BMC_USER"), "password": stack.lab.var("BMC_PASSWORD") },
                }),
            )
            .await?;
        let ironic_node = enroll_in_ironic(&stack, 1).await?;
        let ironic_url = stack
            .ironic
            .as_ref()
            .context("ironic")?
            .var("IRONIC_URL")
            .to_string();
        // node1 declares more memory than its VM has, so that only it
        // fits bm-cloud, and the allocator's smallest-fit picks node0 for
        // bm-small.
        stack
            .post(
                "/v1/nodes",
                json!({
                    "name": "node1", "site": "dc1", "subnet": "public",
                    "boot_mac": stack.lab.var("NODE1_MAC"), "cpu_cores": 1, "ram_mib": 1024, "disk_gb": 1,
                    "bmc": { "driver": "ironic", "url": format!("{ironic_url}/v1/nodes/{ironic_node}"),
                             "username": "ironic", "password": "unused-with-noauth" },
                }),
            )
            .await?;
        stack
            .post(
                "/v1/products",
                json!({
                    "name": "bm-small", "price_minor": 1999, "currency": "eur",
                    "min_cpu_cores": 1, "min_ram_mib": 512, "min_disk_gb": 1, "image": "test-initrd",
                }),
            )
            .await?;
        // The same price as bm-small, because `Stack::pay` pays 1999 eur.
        stack
            .post(
                "/v1/products",
                json!({
                    "name": "bm-cloud", "price_minor": 1999, "currency": "eur",
                    "min_cpu_cores": 1, "min_ram_mib": 1024, "min_disk_gb": 1,
                    "image": "test-cloud-init", "template": "web-cloud",
                }),
            )
            .await?;

        let first = stack.place_order("web-a").await?;
        let created = stack
            .post(
                "/v1/orders",
                json!({ "product": "bm-cloud", "site": "dc1", "customer_email": "customer@example.test", "hostname": "web-b" }),
            )
            .await?;
        let second_id = created["order_id"].as_i64().context("order_id")?;
        let second_invoice = created["invoice_id"].as_i64().context("invoice_id")?;
        stack.pay(first.invoice_id).await?;
        stack.pay(second_invoice).await?;
        for order_id in [first.id, second_id] {
            let done = stack
                .wait_for_order(order_id, &["active", "failed"], ORDER_TIMEOUT)
                .await?;
            assert_eq!(done["state"], "active", "order: {done:#}");
        }
        let second = stack.get(&format!("/v1/orders/{second_id}")).await?;
        assert_eq!(
            second["node"], "node1",
            "bm-cloud went to the Ironic node: {second:#}"
        );
        assert_eq!(stack.vm_starts_of(0)?, 1, "the Redfish VM started once");
        assert_eq!(stack.vm_starts_of(1)?, 1, "the Ironic VM started once");
        // The agent sent one Reset for node0; Ironic sent its own for node1.
        assert_eq!(stack.reset_posts()?, 2, "one power-on per node");
        let access = stack.access_log();
        assert!(
            access.contains("/ironic/boot.ipxe"),
            "node1 fetched Ironic's script:\n{access}"
        );
        let mut nodes = Vec::new();
        for name in ["node0", "node1"] {
            nodes.push(stack.get(&format!("/v1/nodes/{name}")).await?);
        }
        assert!(nodes.iter().all(|n| n["state"] == "reserved"), "{nodes:#?}");

        // node1 boots through Ironic's ipxe interface, whose ramdisk deploy
        // ignores a configdrive and would log the whole node with it, so
        // the agent sends none: the user-data and its password hash reach
        // neither Ironic's database nor its log. The VM reads them from the
        // NoCloud seed on its kernel line.
        let ironic = stack.ironic.as_ref().context("ironic")?;
        let http = rackhand_e2e::stack::http_client()?;
        let node: Value = http
            .get(format!(
                "{}/v1/nodes/{ironic_node}",
                ironic.var("IRONIC_URL")
            ))
            .header("X-OpenStack-Ironic-API-Version", "latest")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let instance_info = &node["instance_info"];
        assert!(
            instance_info.get("configdrive").is_none(),
            "no configdrive was sent: {:?}",
            instance_info
                .as_object()
                .map(|info| info.keys().collect::<Vec<_>>())
        );
        let append = instance_info["kernel_append_params"]
            .as_str()
            .unwrap_or_default();
        assert!(
            append.contains("ds=nocloud-net;s="),
            "the NoCloud seed is on the kernel line"
        );
        let ironic_log = std::fs::read_to_string(ironic.var("IRONIC_LOG"))?;
        let password = emailed_password_of(&stack.cp_state.join("outbox"), "web-b.e2e.test")?;
        assert!(
            !ironic_log.contains("$6$"),
            "Ironic's log holds a password hash"
        );
        assert!(
            !ironic_log.contains(&password),
            "Ironic's log holds the password"
        );
        Ok(())
    }
}

#[path = "e2e/install_templates.rs"]
mod install_templates;

#[path = "e2e/nocloud_seed.rs"]
mod nocloud_seed;
