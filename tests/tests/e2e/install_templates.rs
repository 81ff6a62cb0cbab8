//! An order whose product names a kickstart template, with the control
//! plane and the site agent as real processes, sushy-tools as the BMC and
//! no VM: the test plays the installer. It fetches the boot script and the
//! rendered kickstart from the agent's boot HTTP server inside the PXE
//! namespace, calls back, and checks the file against the welcome e-mail.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rackhand_e2e::peers::Peer;
use rackhand_e2e::stack::{Stack, StackOptions, sha256_file};
use rackhand_install_templates::crypt;
use serde_json::{Value, json};

/// Time for the driver and image phases to reach the armed boot, and for
/// network and handoff after the callback, on a loaded 2-core machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

const HOSTNAME: &str = "web7";

const KICKSTART: &str = "text
url --url=https://mirror.example.net/rocky/9/BaseOS/x86_64/os/
network --bootproto=static --ip={{network.ipv4.address}} --netmask={{network.ipv4.netmask}} --gateway={{network.ipv4.gateway}} --hostname={{fqdn}}
rootpw --iscrypted {{root_password_hash}}
autopart
bootloader --location=mbr
%post
curl --fail {{callback_url}}
%end
";

/// Runs `curl` inside the PXE namespace and returns the HTTP status and body.
pub(crate) fn curl_in(stack: &Stack, url: &str) -> anyhow::Result<(u16, String)> {
    let output = Command::new("ip")
        .args(["netns", "exec", stack.lab.var("SERVER_NS")])
        .args([
            "curl",
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .arg(url)
        .output()
        .context("running curl in the PXE namespace")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text
        .rsplit_once('\n')
        .with_context(|| format!("curl printed no status: {text:?}"))?;
    Ok((status.trim().parse().unwrap_or(0), body.to_string()))
}

/// Polls the node's boot script until it names a kickstart URL.
fn wait_for_kickstart_url(stack: &Stack, script_url: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let (_, script) = curl_in(stack, script_url)?;
        if let Some(url) = script
            .split_whitespace()
            .find_map(|word| word.strip_prefix("inst.ks="))
        {
            return Ok(url.to_string());
        }
        last = script;
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("the boot script never named a kickstart; last script:\n{last}")
}

/// Returns the password from the welcome e-mail in the outbox.
pub(crate) fn emailed_password(outbox: &Path) -> anyhow::Result<String> {
    for entry in std::fs::read_dir(outbox)? {
        let text = std::fs::read_to_string(entry?.path())?;
        if let Some(line) = text
            .lines()
            .find(|l| l.trim_start().starts_with("Password:"))
        {
            let password = line.trim_start().trim_start_matches("Password:").trim();
            return Ok(password.to_string());
        }
    }
    bail!(
        "no welcome e-mail with a Password line in {}",
        outbox.display()
    )
}

/// Registers an image of `install_method` named `image` with the stack's
/// test kernel and initrd, the subnet `public` (gateway 192.0.2.1) and the
/// node `node0` behind the Redfish peer's first system. Returns the node's
/// MAC.
pub(crate) async fn create_node_inventory(
    stack: &Stack,
    redfish: &Peer,
    image: &str,
    install_method: &str,
) -> anyhow::Result<String> {
    let system = redfish
        .var("REDFISH_SYSTEM_IDS")
        .split(',')
        .next()
        .context("one Redfish system")?;
    let mac = redfish
        .var("REDFISH_SYSTEM_MACS")
        .split(',')
        .next()
        .context("one Redfish MAC")?
        .to_string();
    stack
        .post(
            "/v1/images",
            json!({
                "name": image,
                "kernel_sha256": sha256_file(&stack.vmlinuz)?,
                "initrd_sha256": sha256_file(&stack.initrd)?,
                "kernel_args": "console=ttyS0",
                "install_method": install_method,
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
                "name": "node0", "site": "dc1", "subnet": "public", "boot_mac": mac,
                "cpu_cores": 1, "ram_mib": 512, "disk_gb": 1,
                "bmc": {
                    "driver": "redfish",
                    "url": format!("{}/redfish/v1/Systems/{system}", redfish.var("REDFISH_URL")),
                    "username": redfish.var("REDFISH_USER"),
                    "password": redfish.var("REDFISH_PASSWORD"),
                },
            }),
        )
        .await?;
    Ok(mac)
}

async fn create_inventory(stack: &Stack, redfish: &Peer) -> anyhow::Result<String> {
    let mac = create_node_inventory(stack, redfish, "rocky-netinst", "kickstart").await?;
    let (status, stored) = stack
        .call(
            reqwest::Method::PUT,
            "/v1/templates/rocky-ks",
            Some(json!({ "format": "kickstart", "body": KICKSTART })),
        )
        .await?;
    assert_eq!(status, 201, "template upload: {stored}");
    stack
        .post(
            "/v1/products",
            json!({
                "name": "bm-ks", "price_minor": 1999, "currency": "eur",
                "min_cpu_cores": 1, "min_ram_mib": 512, "min_disk_gb": 1,
                "image": "rocky-netinst", "template": "rocky-ks",
            }),
        )
        .await?;
    Ok(mac)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_order_serves_kickstart_under_token() -> anyhow::Result<()> {
    let mut options = StackOptions::new("rhe-tmpl", "10.97.21");
    options.vm_lab = false;
    options.log_filter = "trace".to_string();
    let mut stack = Stack::start(options, "", "").await?;
    let redfish = Peer::start(
        "redfish-bmc",
        &stack.dir.join("peers"),
        &[("REDFISH_SYSTEMS", "1")],
    )?;
    let mac = create_inventory(&stack, &redfish).await?;

    let created = stack
        .post(
            "/v1/orders",
            json!({ "product": "bm-ks", "site": "dc1", "customer_email": "customer@example.test", "hostname": HOSTNAME }),
        )
        .await?;
    let order_id = created["order_id"].as_i64().context("order_id")?;
    let invoice_id = created["invoice_id"].as_i64().context("invoice_id")?;
    stack.pay(invoice_id).await?;

    // The installer's view: the boot script names the kickstart under the
    // boot's token.
    let base = format!("http://{}:8080", stack.lab.var("SERVER_IP"));
    let script_url = format!("{base}/boot/{}.ipxe", mac.replace(':', "-"));
    let kickstart_url = wait_for_kickstart_url(&stack, &script_url)?;
    let token = kickstart_url
        .trim_start_matches(&format!("{base}/install/"))
        .split('/')
        .next()
        .context("a token in the kickstart URL")?
        .to_string();
    let (status, kickstart) = curl_in(&stack, &kickstart_url)?;
    assert_eq!(status, 200, "fetching the kickstart");
    assert!(
        kickstart.contains("--hostname='web7.e2e.test'"),
        "the kickstart names the host"
    );
    // Failure messages leave out the kickstart, which contains the hash and
    // the token.
    assert!(
        kickstart.contains("--ip='192.0.2.2'"),
        "the kickstart has the address"
    );
    let callback = format!("'{base}/callback/{token}'");
    assert!(
        kickstart.contains(&callback),
        "the kickstart has the callback"
    );
    let hash = kickstart
        .lines()
        .find_map(|line| line.strip_prefix("rootpw --iscrypted "))
        .context("a rootpw line")?
        .trim_matches('\'')
        .to_string();
    assert!(hash.starts_with("$6$"), "the hash is SHA-512 crypt");

    // Anyone without the token gets nothing.
    let wrong = kickstart_url.replace(&token, &"0".repeat(token.len()));
    let (status, body) = curl_in(&stack, &wrong)?;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("$6$"), "{body}");

    // The %post callback completes the boot, then network and handoff run.
    let (status, body) = curl_in(&stack, callback.trim_matches('\''))?;
    assert_eq!(status, 200, "{body}");
    let order = stack
        .wait_for_order(order_id, &["active", "failed"], PHASE_TIMEOUT)
        .await?;
    assert_eq!(order["state"], "active", "order: {order:#}");
    let (status, body) = curl_in(&stack, &kickstart_url)?;
    assert_eq!(status, 410, "the ended boot serves nothing: {body}");

    // The hash in the kickstart is the hash of the e-mailed password.
    let password = emailed_password(&stack.cp_state.join("outbox"))?;
    let salt = hash.split('$').nth(2).context("a $6$salt$ hash")?;
    let recomputed = crypt::sha512_crypt(password.as_bytes(), salt.as_bytes(), None);
    assert!(
        recomputed == hash,
        "the kickstart's hash is not the e-mailed password's"
    );

    // Neither the password nor its hash reaches a log or an activity row,
    // and the access log masks the token.
    let order_text = order.to_string();
    let logs = [
        ("control plane log", stack.control_plane.log_text()),
        ("agent log", stack.agent.log_text()),
        ("access log", stack.access_log()),
        ("activity", order_text),
    ];
    for (name, text) in &logs {
        assert!(!text.contains(&password), "{name} contains the password");
        assert!(!text.contains(&hash), "{name} contains the hash");
        assert!(!text.contains(&token), "{name} contains the install token");
    }
    assert!(
        stack.access_log().contains("/install/[token]/ks.cfg"),
        "{}",
        stack.access_log()
    );
    let activity: &Value = &order["activity"];
    assert!(activity.is_array(), "{order:#}");
    Ok(())
}
