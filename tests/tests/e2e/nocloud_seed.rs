//! An order whose product names a cloud-config template and operator seed
//! templates for the NoCloud `meta-data` and `network-config`, with the
//! control plane and the site agent as real processes, sushy-tools as the
//! BMC and no VM. The test plays the netbooted machine. It reads the seed
//! URL from the boot script and fetches the seed from the agent inside the
//! PXE namespace, with curl and with cloud-init 22.4's own NoCloud code.
//! It checks every file with cloud-init's parsers and calls the callback
//! URL that the user-data names.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rackhand_e2e::cloud_init;
use rackhand_e2e::peers::Peer;
use rackhand_e2e::stack::{Stack, StackOptions};
use rackhand_e2e::workspace;
use rackhand_install_templates::crypt;
use serde_json::{Value, json};

use crate::install_templates::{create_node_inventory, curl_in, emailed_password};

/// Time for the driver and image phases to reach the armed boot, and for
/// network and handoff after the callback, on a loaded 2-core machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

const HOSTNAME: &str = "db3";

/// The domain and resolver that the stack's control plane config sets.
const DOMAIN: &str = "e2e.test";
const DNS_SERVER: &str = "192.0.2.53";
/// The gateway of the subnet `create_node_inventory` makes.
const GATEWAY: &str = "192.0.2.1";

/// The product's main template. Every expression is a whole YAML scalar,
/// so the callback URL is an item of a flow sequence in `runcmd`, which
/// cloud-init runs without a shell.
const CLOUD_CONFIG: &str = r#"#cloud-config
hostname: {{hostname}}
fqdn: {{fqdn}}
ssh_pwauth: false
disable_root: false
users:
  - name: root
    lock_passwd: false
    hashed_passwd: {{root_password_hash}}
write_files:
  - path: /etc/rackhand/service-address
    permissions: "0644"
    content: {{network.ipv4.address}}
runcmd:
  - [curl, --fail, --silent, --show-error, --max-time, "30", {{callback_url}}]
"#;

/// Differs from the built-in meta-data by the FQDN as `local-hostname` and
/// an extra `placement` key.
const META_DATA: &str = "instance-id: {{instance_id}}
local-hostname: {{fqdn}}
placement: fra1-row4-rack12
";

const PLACEMENT: &str = "fra1-row4-rack12";

/// Differs from the built-in network-config by the `uplink` id, the search
/// domain and one resolver per line from `{{#each}}`.
const NETWORK_CONFIG: &str = "version: 2
ethernets:
  uplink:
    match:
      macaddress: {{network.mac}}
    set-name: {{network.interface_name}}
    dhcp4: false
    dhcp6: false
    addresses:
      - {{network.ipv4.cidr}}
    gateway4: {{network.ipv4.gateway}}
    nameservers:
      search: [{{domain}}]
      addresses:
{{#each network.dns_servers}}
        - {{this}}
{{/each}}
";

/// Prints a YAML file as JSON, read with the PyYAML that cloud-init uses.
const YAML_TO_JSON: &str = r#"
import json, sys, yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
"#;

/// Parses a network-config file with cloud-init and prints the interfaces
/// and resolvers that it would configure.
const PARSE_NETWORK_CONFIG: &str = r#"
import json, sys, yaml
from cloudinit.net import network_state
state = network_state.parse_net_config_data(yaml.safe_load(open(sys.argv[1])))
interfaces = [
    {"name": i["name"], "mac_address": i.get("mac_address"), "subnets": i["subnets"]}
    for i in state.iter_interfaces()
]
print(json.dumps({
    "interfaces": interfaces,
    "nameservers": state.dns_nameservers,
    "search": state.dns_searchdomains,
}, default=str))
"#;

/// Reads the NoCloud seed the way cloud-init 22.4's `DataSourceNoCloudNet`
/// does: the `ds=` argument from a kernel command line, then `meta-data`,
/// `user-data` and `vendor-data` from the seed URL, each with the default
/// 10 retries. That release does not fetch `network-config` from an HTTP
/// seed.
const READ_SEED: &str = r#"
import json, sys
from cloudinit import util
from cloudinit.sources import DataSourceNoCloud
found = {}
if not DataSourceNoCloud.load_cmdline_data(found, sys.argv[1]):
    sys.exit("the kernel command line names no NoCloud seed")
meta_data, user_data, vendor_data = util.read_seeded(found["seedfrom"], timeout=10)
print(json.dumps({
    "cmdline": found,
    "meta_data": meta_data,
    "user_data": user_data.decode() if user_data is not None else None,
    "vendor_data": vendor_data.decode() if vendor_data is not None else None,
}))
"#;

/// Reads the network configuration from a kernel command line the way
/// cloud-init's init stage does (`cloudinit.net.cmdline`), where 22.4 finds
/// it ahead of any data source, and prints it as JSON.
const READ_CMDLINE_NETWORK: &str = r#"
import json, sys
from cloudinit.net import cmdline
print(json.dumps(cmdline.read_kernel_cmdline_config(sys.argv[1])))
"#;

/// Polls the node's boot script until a line names a NoCloud seed, and
/// returns that line and the seed URL.
fn wait_for_seed_url(stack: &Stack, script_url: &str) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let (_, script) = curl_in(stack, script_url)?;
        for line in script.lines() {
            if let Some(url) = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("ds=nocloud-net;s="))
            {
                return Ok((line.to_string(), url.to_string()));
            }
        }
        last = script;
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("the boot script never named a NoCloud seed; last script:\n{last}")
}

/// Runs `rackhand ARGS…` against the stack's control plane and returns
/// stdout.
fn rackhand(stack: &Stack, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(workspace::binary("rackhand"))
        .args(args)
        .env("RACKHAND_URL", &stack.api_url)
        .env("RACKHAND_TOKEN", &stack.token)
        .output()
        .context("running rackhand")?;
    if !output.status.success() {
        bail!(
            "rackhand {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn put_template(stack: &Stack, name: &str, format: &str, body: &str) -> anyhow::Result<()> {
    let (status, stored) = stack
        .call(
            reqwest::Method::PUT,
            &format!("/v1/templates/{name}"),
            Some(json!({ "format": format, "body": body })),
        )
        .await?;
    assert_eq!(status, 201, "{name} upload: {stored}");
    Ok(())
}

/// Registers a cloud-init image, a subnet, a node behind the Redfish peer,
/// the three templates and a product naming them. Returns the node's MAC.
async fn create_inventory(stack: &Stack, redfish: &Peer) -> anyhow::Result<String> {
    let mac = create_node_inventory(stack, redfish, "debian-cloud", "cloud-init").await?;
    put_template(stack, "debian-cc", "cloud-config", CLOUD_CONFIG).await?;
    put_template(stack, "rack-md", "meta-data", META_DATA).await?;
    put_template(stack, "uplink-nc", "network-config", NETWORK_CONFIG).await?;
    stack
        .post(
            "/v1/products",
            json!({
                "name": "bm-cloud", "price_minor": 1999, "currency": "eur",
                "min_cpu_cores": 1, "min_ram_mib": 512, "min_disk_gb": 1,
                "image": "debian-cloud", "template": "debian-cc",
                "seed_templates": ["rack-md", "uplink-nc"],
            }),
        )
        .await?;
    Ok(mac)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_config_order_serves_seed_templates() -> anyhow::Result<()> {
    cloud_init::ensure_installed()?;
    let mut options = StackOptions::new("rhe-seed", "10.97.22");
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
            json!({ "product": "bm-cloud", "site": "dc1", "customer_email": "customer@example.test", "hostname": HOSTNAME }),
        )
        .await?;
    let order_id = created["order_id"].as_i64().context("order_id")?;
    let invoice_id = created["invoice_id"].as_i64().context("invoice_id")?;
    stack.pay(invoice_id).await?;

    // The machine's view: the boot script names the seed folder under the
    // boot's token.
    let base = format!("http://{}:8080", stack.lab.var("SERVER_IP"));
    let script_url = format!("{base}/boot/{}.ipxe", mac.replace(':', "-"));
    let (kernel_line, seed_url) = wait_for_seed_url(&stack, &script_url)?;
    assert!(seed_url.ends_with('/'), "the seed URL has no trailing /");
    let token = seed_url
        .strip_prefix(&format!("{base}/install/"))
        .and_then(|rest| rest.strip_suffix('/'))
        .with_context(|| format!("the seed URL is not {base}/install/<token>/"))?
        .to_string();
    let order = stack.get(&format!("/v1/orders/{order_id}")).await?;
    let uid = order["uid"]
        .as_str()
        .context("the order's uid")?
        .to_string();
    let address = order["ipv4"]
        .as_str()
        .context("the order's service address")?
        .to_string();

    let files = tempfile::tempdir()?;
    let mut fetched = Vec::new();
    for name in ["user-data", "meta-data", "network-config"] {
        let (status, body) = curl_in(&stack, &format!("{seed_url}{name}"))?;
        assert_eq!(status, 200, "{name}: {body}");
        let path = files.path().join(name);
        fs::write(&path, &body)?;
        fetched.push((path, body));
    }
    let [
        (user_data_path, user_data),
        (meta_data_path, meta_data),
        (network_config_path, network_config),
    ] = <[_; 3]>::try_from(fetched).expect("three files fetched");

    // meta-data is the seed template's rendering, read as cloud-init reads
    // it.
    let path = meta_data_path.display().to_string();
    let meta: Value = serde_json::from_str(&cloud_init::run_python(None, YAML_TO_JSON, &[&path])?)?;
    assert_eq!(meta["instance-id"], uid.as_str(), "{meta_data}");
    assert_eq!(meta["placement"], PLACEMENT, "{meta_data}");
    assert_eq!(
        meta["local-hostname"],
        format!("{HOSTNAME}.{DOMAIN}"),
        "{meta_data}"
    );

    // network-config is the seed template's rendering, and cloud-init's
    // parser reads the order's address for the node's NIC from it.
    assert!(network_config.contains("uplink:"), "{network_config}");
    let path = network_config_path.display().to_string();
    let network: Value = serde_json::from_str(&cloud_init::run_python(
        None,
        PARSE_NETWORK_CONFIG,
        &[&path],
    )?)?;
    let interfaces = network["interfaces"].as_array().context("interfaces")?;
    assert_eq!(interfaces.len(), 1, "{network:#}");
    let interface = &interfaces[0];
    assert_eq!(interface["name"], "eth0", "{network:#}");
    assert_eq!(interface["mac_address"], mac.to_lowercase(), "{network:#}");
    let subnet = &interface["subnets"][0];
    assert_eq!(subnet["type"], "static", "{network:#}");
    assert_eq!(subnet["address"], address.as_str(), "{network:#}");
    assert_eq!(subnet["prefix"], 24, "{network:#}");
    assert_eq!(subnet["gateway"], GATEWAY, "{network:#}");
    assert_eq!(network["nameservers"], json!([DNS_SERVER]), "{network:#}");
    assert_eq!(network["search"], json!([DOMAIN]), "{network:#}");

    // user-data passes cloud-init's schema and names the callback. Failure
    // messages leave out the parsed user-data, which contains the hash and
    // the token.
    cloud_init::check_schema(&user_data_path)?;
    let path = user_data_path.display().to_string();
    let user: Value = serde_json::from_str(&cloud_init::run_python(None, YAML_TO_JSON, &[&path])?)?;
    assert_eq!(user["hostname"], HOSTNAME, "user-data hostname");
    assert_eq!(
        user["write_files"][0]["content"],
        address.as_str(),
        "user-data write_files content"
    );
    let hash = user["users"][0]["hashed_passwd"]
        .as_str()
        .context("a hashed_passwd for root")?
        .to_string();
    assert!(hash.starts_with("$6$"), "root's hash is SHA-512 crypt");
    let callback_url = format!("{base}/callback/{token}");
    let runcmd = user["runcmd"][0].as_array().context("a runcmd list")?;
    assert!(
        runcmd.last() == Some(&Value::from(callback_url.as_str())),
        "the last runcmd word is not the boot's callback URL"
    );

    // cloud-init's NoCloud code finds the seed on the kernel line and
    // reads the same files from the agent.
    let seed: Value = serde_json::from_str(&cloud_init::run_python(
        Some(stack.lab.var("SERVER_NS")),
        READ_SEED,
        &[&kernel_line],
    )?)?;
    assert!(
        seed["cmdline"]["seedfrom"] == seed_url.as_str(),
        "cloud-init's seedfrom is not the boot script's seed URL"
    );
    assert_eq!(seed["cmdline"]["dsmode"], "net");
    assert_eq!(seed["meta_data"], meta);
    assert!(
        seed["user_data"] == user_data.as_str(),
        "cloud-init read other user-data than curl"
    );
    assert_eq!(seed["vendor_data"], "", "vendor-data is served empty");

    // cloud-init 22.4 does not fetch network-config from the seed, so the
    // same file rides on the kernel line, where its init stage reads it.
    let from_cmdline: Value = serde_json::from_str(&cloud_init::run_python(
        None,
        READ_CMDLINE_NETWORK,
        &[&kernel_line],
    )?)?;
    let served: Value = serde_json::from_str(&cloud_init::run_python(
        None,
        YAML_TO_JSON,
        &[&network_config_path.display().to_string()],
    )?)?;
    assert_eq!(from_cmdline, served, "network-config on the kernel line");

    // The operator's preview through the CLI uses the order's address and a
    // stand-in hash, never the order's own.
    let preview = rackhand(
        &stack,
        &[
            "template",
            "render",
            "debian-cc",
            "--order",
            &order_id.to_string(),
        ],
    )?;
    assert!(
        preview.contains(&format!("content: \"{address}\"")),
        "{preview}"
    );
    assert!(
        !preview.contains(&hash),
        "the preview contains the order's hash"
    );
    assert!(
        preview.contains("hashed_passwd: \"$6$saltstring$"),
        "{preview}"
    );
    assert!(!preview.contains(&token), "the preview contains the token");
    let preview = rackhand(
        &stack,
        &[
            "template",
            "render",
            "uplink-nc",
            "--order",
            &order_id.to_string(),
        ],
    )?;
    assert!(
        preview.contains(&format!("- \"{address}/24\"")),
        "{preview}"
    );

    // Anyone without the token gets nothing.
    let wrong = format!("{base}/install/{}/user-data", "0".repeat(token.len()));
    let (status, body) = curl_in(&stack, &wrong)?;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("$6$"), "{body}");

    // The runcmd callback completes the boot, then network and handoff run.
    let (status, body) = curl_in(&stack, &callback_url)?;
    assert_eq!(status, 200, "{body}");
    let order = stack
        .wait_for_order(order_id, &["active", "failed"], PHASE_TIMEOUT)
        .await?;
    assert_eq!(order["state"], "active", "order: {order:#}");
    let (status, body) = curl_in(&stack, &format!("{seed_url}meta-data"))?;
    assert_eq!(status, 410, "the ended boot serves nothing: {body}");

    // The hash in user-data is the hash of the e-mailed password.
    let password = emailed_password(&stack.cp_state.join("outbox"))?;
    let salt = hash.split('$').nth(2).context("a $6$salt$ hash")?;
    let recomputed = crypt::sha512_crypt(password.as_bytes(), salt.as_bytes(), None);
    assert!(
        recomputed == hash,
        "user-data's hash is not the e-mailed password's"
    );

    // Neither the password, its hash nor the token reaches a log or an
    // activity row, and the access log masks the token.
    let logs = [
        ("control plane log", stack.control_plane.log_text()),
        ("agent log", stack.agent.log_text()),
        ("access log", stack.access_log()),
        ("activity", order.to_string()),
    ];
    for (name, text) in &logs {
        assert!(!text.contains(&password), "{name} contains the password");
        assert!(!text.contains(&hash), "{name} contains the hash");
        assert!(!text.contains(&token), "{name} contains the install token");
    }
    for name in ["user-data", "meta-data", "network-config", "vendor-data"] {
        assert!(
            stack
                .access_log()
                .contains(&format!("/install/[token]/{name} 200")),
            "{name} missing from the access log:\n{}",
            stack.access_log()
        );
    }
    Ok(())
}
