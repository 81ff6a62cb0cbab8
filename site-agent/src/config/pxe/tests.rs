//! The `[pxe]` checks, one rejected value per test, each naming its key.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::config::{Config, ConfigError};

const HEAD: &str = r#"
state_dir = "/var/lib/rackhand-agent"
[control_plane]
url = "https://127.0.0.1:8443"
ca_fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
"#;

/// Creates a TFTP root that contains the two default boot files.
fn tftp_root() -> TempDir {
    let root = tempfile::tempdir().expect("a temporary folder");
    for name in ["undionly.kpxe", "snponly.efi"] {
        std::fs::write(root.path().join(name), b"boot file").expect("the boot file is written");
    }
    root
}

/// Returns a config whose `[pxe]` section is valid except for `overrides`:
/// each `(key, value)` replaces the key's TOML value, and an empty value
/// leaves the key out.
fn config_text(root: &Path, overrides: &[(&str, &str)]) -> String {
    let root = format!("{:?}", root.display().to_string());
    let mut keys = vec![
        ("interface", "\"eth1\"".to_string()),
        ("server_ip", "\"10.98.0.1\"".to_string()),
        ("prefix_len", "24".to_string()),
        ("pool_start", "\"10.98.0.100\"".to_string()),
        ("pool_end", "\"10.98.0.199\"".to_string()),
        ("tftp_root", root),
    ];
    for (key, value) in overrides {
        keys.retain(|(existing, _)| existing != key);
        if !value.is_empty() {
            keys.push((key, value.to_string()));
        }
    }
    let mut text = format!("{HEAD}[pxe]\n");
    for (key, value) in keys {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text
}

fn parse(root: &Path, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::parse(
        Path::new("/etc/rackhand/agent.toml"),
        &config_text(root, overrides),
    )
}

/// Parses with `overrides`, expects an error and returns its message.
fn rejected(overrides: &[(&str, &str)]) -> String {
    let root = tftp_root();
    match parse(root.path(), overrides) {
        Ok(_) => panic!("{overrides:?} was accepted"),
        Err(error) => error.to_string(),
    }
}

fn assert_names_key(error: &str, key: &str) {
    assert!(error.contains(&format!("key `{key}`")), "{error}");
}

#[test]
fn valid_section_parses() {
    let root = tftp_root();
    let config = parse(root.path(), &[]).expect("valid");
    let pxe = config.pxe.expect("a [pxe] section");
    assert_eq!(pxe.tftp_root, root.path());
    assert_eq!(pxe.bios_boot_file, "undionly.kpxe");
}

#[test]
fn error_names_config_file() {
    let error = rejected(&[("http_port", "0")]);
    assert!(error.contains("/etc/rackhand/agent.toml"), "{error}");
}

#[test]
fn pool_start_outside_subnet_names_pool_start() {
    let error = rejected(&[("pool_start", "\"10.99.0.100\"")]);
    assert_names_key(&error, "pxe.pool_start");
    assert!(error.contains("10.98.0.0/24"), "{error}");
    assert!(!error.contains("pool_end"), "{error}");
}

#[test]
fn pool_end_outside_subnet_names_pool_end() {
    let error = rejected(&[("pool_end", "\"10.98.1.10\"")]);
    assert_names_key(&error, "pxe.pool_end");
}

#[test]
fn reversed_pool_names_pool_end() {
    let error = rejected(&[
        ("pool_start", "\"10.98.0.200\""),
        ("pool_end", "\"10.98.0.100\""),
    ]);
    assert_names_key(&error, "pxe.pool_end");
    assert!(error.contains("before pool_start"), "{error}");
}

#[test]
fn server_ip_inside_pool_is_rejected() {
    let error = rejected(&[("server_ip", "\"10.98.0.150\"")]);
    assert_names_key(&error, "pxe.server_ip");
    assert!(error.contains("inside the DHCP pool"), "{error}");
}

#[test]
fn server_ip_at_pool_edge_is_rejected() {
    let error = rejected(&[("server_ip", "\"10.98.0.199\"")]);
    assert_names_key(&error, "pxe.server_ip");
}

#[test]
fn server_ip_network_address_is_rejected() {
    let error = rejected(&[("server_ip", "\"10.98.0.0\"")]);
    assert_names_key(&error, "pxe.server_ip");
    assert!(error.contains("network address"), "{error}");
}

#[test]
fn pool_with_network_address_is_rejected() {
    let error = rejected(&[
        ("server_ip", "\"10.98.0.254\""),
        ("pool_start", "\"10.98.0.0\""),
    ]);
    assert_names_key(&error, "pxe.pool_start");
    assert!(error.contains("network address"), "{error}");
}

#[test]
fn pool_with_broadcast_address_is_rejected() {
    let error = rejected(&[("pool_end", "\"10.98.0.255\"")]);
    assert_names_key(&error, "pxe.pool_end");
    assert!(error.contains("broadcast address"), "{error}");
}

#[test]
fn pool_up_to_last_host_is_accepted() {
    let root = tftp_root();
    let config = parse(root.path(), &[("pool_end", "\"10.98.0.254\"")]).expect("valid");
    let pxe = config.pxe.expect("a [pxe] section");
    assert_eq!(
        pxe.pool.map(|pool| pool.end.to_string()).as_deref(),
        Some("10.98.0.254")
    );
}

#[test]
fn oversized_pool_is_rejected() {
    let error = rejected(&[
        ("server_ip", "\"10.0.0.1\""),
        ("prefix_len", "8"),
        ("pool_start", "\"10.0.1.0\""),
        ("pool_end", "\"10.2.0.0\""),
    ]);
    assert_names_key(&error, "pxe.pool_end");
    assert!(error.contains("at most 65536"), "{error}");
}

#[test]
fn router_outside_subnet_is_rejected() {
    let error = rejected(&[("router", "\"10.97.0.1\"")]);
    assert_names_key(&error, "pxe.router");
    assert!(error.contains("outside the subnet 10.98.0.0/24"), "{error}");
}

#[test]
fn router_inside_pool_is_rejected() {
    let error = rejected(&[("router", "\"10.98.0.120\"")]);
    assert_names_key(&error, "pxe.router");
}

#[test]
fn router_broadcast_address_is_rejected() {
    let error = rejected(&[("router", "\"10.98.0.255\"")]);
    assert_names_key(&error, "pxe.router");
}

#[test]
fn router_in_subnet_is_accepted() {
    let root = tftp_root();
    let config = parse(root.path(), &[("router", "\"10.98.0.254\"")]).expect("valid");
    assert!(config.pxe.is_some());
}

#[test]
fn missing_tftp_root_names_ipxe_package() {
    let error = rejected(&[("tftp_root", "\"/nonexistent/rackhand-tftp\"")]);
    assert_names_key(&error, "pxe.tftp_root");
    assert!(error.contains("/nonexistent/rackhand-tftp"), "{error}");
    assert!(error.contains("`ipxe`"), "{error}");
    assert!(error.contains("/usr/lib/ipxe"), "{error}");
}

#[test]
fn tftp_root_file_is_rejected() {
    let root = tftp_root();
    let file = root.path().join("undionly.kpxe");
    let value = format!("{:?}", file.display().to_string());
    let error = parse(root.path(), &[("tftp_root", &value)])
        .expect_err("a file as tftp_root")
        .to_string();
    assert_names_key(&error, "pxe.tftp_root");
    assert!(error.contains("not a directory"), "{error}");
}

#[test]
fn missing_tftp_root_accepted_without_tftp() {
    let root = tftp_root();
    let overrides = [
        ("tftp", "false"),
        ("tftp_root", "\"/nonexistent/rackhand-tftp\""),
    ];
    let config = parse(root.path(), &overrides).expect("valid without TFTP");
    assert!(!config.pxe.expect("a [pxe] section").tftp);
}

#[test]
fn absolute_boot_file_is_rejected() {
    let error = rejected(&[("bios_boot_file", "\"/usr/lib/ipxe/undionly.kpxe\"")]);
    assert_names_key(&error, "pxe.bios_boot_file");
    assert!(error.contains("absolute path"), "{error}");
}

#[test]
fn boot_file_with_parent_component_is_rejected() {
    let error = rejected(&[("uefi_boot_file", "\"efi/../../etc/passwd\"")]);
    assert_names_key(&error, "pxe.uefi_boot_file");
    assert!(error.contains("`..`"), "{error}");
}

#[test]
fn boot_file_with_nul_is_rejected() {
    let error = rejected(&[("uefi_boot_file", "\"snponly\\u0000.efi\"")]);
    assert_names_key(&error, "pxe.uefi_boot_file");
    assert!(error.contains("NUL"), "{error}");
}

#[test]
fn empty_boot_file_is_rejected() {
    let error = rejected(&[("bios_boot_file", "\"\"")]);
    assert_names_key(&error, "pxe.bios_boot_file");
}

#[test]
fn long_boot_file_is_rejected() {
    let long = format!("\"{}\"", "a".repeat(128));
    let error = rejected(&[("bios_boot_file", &long)]);
    assert_names_key(&error, "pxe.bios_boot_file");
    assert!(error.contains("128 bytes"), "{error}");
}

#[test]
fn boot_file_in_subfolder_is_accepted() {
    let root = tftp_root();
    std::fs::create_dir(root.path().join("efi")).expect("the folder is created");
    std::fs::write(root.path().join("efi").join("ipxe.efi"), b"boot file")
        .expect("the boot file is written");
    let config = parse(root.path(), &[("uefi_boot_file", "\"efi/ipxe.efi\"")]).expect("valid");
    assert_eq!(
        config.pxe.expect("a [pxe] section").uefi_boot_file,
        "efi/ipxe.efi"
    );
}

#[test]
fn missing_boot_file_names_path() {
    let root = tftp_root();
    let error = parse(root.path(), &[("uefi_boot_file", "\"ipxe.efi\"")])
        .expect_err("missing file")
        .to_string();
    assert_names_key(&error, "pxe.uefi_boot_file");
    let path = root.path().join("ipxe.efi");
    assert!(error.contains(&path.display().to_string()), "{error}");
}

#[test]
fn short_lease_is_rejected() {
    let error = rejected(&[("lease_seconds", "59")]);
    assert_names_key(&error, "pxe.lease_seconds");
}

#[test]
fn minimum_lease_is_accepted() {
    let root = tftp_root();
    let config = parse(root.path(), &[("lease_seconds", "60")]).expect("valid");
    let lease = config.pxe.expect("a [pxe] section").lease_time;
    assert_eq!(lease.as_secs(), 60);
}

#[test]
fn http_port_zero_is_rejected() {
    let error = rejected(&[("http_port", "0")]);
    assert_names_key(&error, "pxe.http_port");
}

#[test]
fn long_interface_is_rejected() {
    let error = rejected(&[("interface", "\"provisioning-br0\"")]);
    assert_names_key(&error, "pxe.interface");
    assert!(error.contains("16 bytes"), "{error}");
}

#[test]
fn interface_of_fifteen_bytes_is_accepted() {
    let root = tftp_root();
    let config = parse(root.path(), &[("interface", "\"provisioning-br\"")]).expect("valid");
    assert_eq!(
        config.pxe.expect("a [pxe] section").interface,
        "provisioning-br"
    );
}

#[test]
fn interface_with_slash_is_rejected() {
    let error = rejected(&[("interface", "\"eth1/0\"")]);
    assert_names_key(&error, "pxe.interface");
}

#[test]
fn interface_with_whitespace_is_rejected() {
    let error = rejected(&[("interface", "\"eth 1\"")]);
    assert_names_key(&error, "pxe.interface");
}

#[test]
fn empty_interface_is_rejected() {
    let error = rejected(&[("interface", "\"\"")]);
    assert_names_key(&error, "pxe.interface");
}

#[test]
fn netns_with_slash_is_rejected() {
    let error = rejected(&[("netns", "\"/run/netns/provisioning\"")]);
    assert_names_key(&error, "pxe.netns");
}

#[test]
fn empty_netns_is_rejected() {
    let error = rejected(&[("netns", "\"\"")]);
    assert_names_key(&error, "pxe.netns");
}

#[test]
fn netns_name_is_accepted() {
    let root = tftp_root();
    let config = parse(root.path(), &[("netns", "\"provisioning\"")]).expect("valid");
    assert_eq!(
        config.pxe.expect("a [pxe] section").netns.as_deref(),
        Some("provisioning")
    );
}

#[test]
fn new_dhcp_keys_default_to_off() {
    let root = tftp_root();
    let pxe = parse(root.path(), &[])
        .expect("valid")
        .pxe
        .expect("a [pxe] section");

    assert_eq!(pxe.dhcp_mode, rackhand_pxe::dhcp::DhcpMode::Full);
    assert_eq!(pxe.discovery_pool, None);
    assert!(pxe.relay_subnets.is_empty());
    assert_eq!(pxe.ping_check, None);
    assert_eq!(pxe.decline_quarantine.as_secs(), 3600);
    assert_eq!(pxe.arm64_boot_file, None);
    assert_eq!(pxe.http_boot_arm64_url, None);
}

#[test]
fn http_boot_defaults_to_served_uefi_file() {
    let root = tftp_root();
    let pxe = parse(root.path(), &[])
        .expect("valid")
        .pxe
        .expect("a [pxe] section");
    let url = pxe.http_boot_x64_url.expect("a default x64 URL");
    assert!(url.starts_with("http://"), "{url}");
    assert!(url.ends_with("/firmware/snponly.efi"), "{url}");
    assert_eq!(pxe.http_boot_ia32_url, None);
}

#[test]
fn proxy_mode_needs_no_pool() {
    let root = tftp_root();
    let config = parse(
        root.path(),
        &[
            ("dhcp_mode", "\"proxy\""),
            ("pool_start", ""),
            ("pool_end", ""),
        ],
    )
    .expect("proxy mode without a pool");

    let pxe = config.pxe.expect("a [pxe] section");
    assert_eq!(pxe.dhcp_mode, rackhand_pxe::dhcp::DhcpMode::Proxy);
    assert_eq!(pxe.pool, None);
}

#[test]
fn full_mode_without_pool_names_pool_start() {
    let error = rejected(&[("pool_start", ""), ("pool_end", "")]);
    assert_names_key(&error, "pxe.pool_start");
}

#[test]
fn unknown_dhcp_mode_is_rejected() {
    let error = rejected(&[("dhcp_mode", "\"relay\"")]);
    assert!(error.contains("dhcp_mode"), "{error}");
}

#[test]
fn discovery_pool_overlapping_pool_is_rejected() {
    let error = rejected(&[
        ("discovery_pool_start", "\"10.98.0.150\""),
        ("discovery_pool_end", "\"10.98.0.220\""),
    ]);
    assert_names_key(&error, "pxe.discovery_pool_end");
    assert!(error.contains("overlaps"), "{error}");
}

#[test]
fn discovery_pool_needs_both_ends() {
    let error = rejected(&[("discovery_pool_start", "\"10.98.0.210\"")]);
    assert_names_key(&error, "pxe.discovery_pool_start");
}

#[test]
fn discovery_pool_is_accepted() {
    let root = tftp_root();
    let config = parse(
        root.path(),
        &[
            ("discovery_pool_start", "\"10.98.0.210\""),
            ("discovery_pool_end", "\"10.98.0.219\""),
        ],
    )
    .expect("disjoint discovery pool");

    let pool = config.pxe.expect("a [pxe] section").discovery_pool;
    assert_eq!(pool.map(|pool| pool.size()), Some(10));
}

#[test]
fn ping_check_out_of_range_is_rejected() {
    for value in ["0", "10", "60000"] {
        let error = rejected(&[("ping_check_ms", value)]);
        assert_names_key(&error, "pxe.ping_check_ms");
    }
}

#[test]
fn zero_decline_quarantine_is_rejected() {
    let error = rejected(&[("decline_quarantine_seconds", "0")]);
    assert_names_key(&error, "pxe.decline_quarantine_seconds");
}

#[test]
fn http_boot_url_without_scheme_is_rejected() {
    let error = rejected(&[("http_boot_x64_url", "\"10.98.0.1/ipxe.efi\"")]);
    assert_names_key(&error, "pxe.http_boot_x64_url");
}

#[test]
fn missing_arm64_boot_file_names_path() {
    let error = rejected(&[("arm64_boot_file", "\"arm64.efi\"")]);
    assert_names_key(&error, "pxe.arm64_boot_file");
}

/// Parses the valid section plus one `[[pxe.relay_subnets]]` table.
fn parse_with_relay(relay: &str) -> Result<Config, ConfigError> {
    let root = tftp_root();
    let text = format!(
        "{}\n[[pxe.relay_subnets]]\n{relay}",
        config_text(root.path(), &[])
    );
    Config::parse(Path::new("/etc/rackhand/agent.toml"), &text)
}

#[test]
fn relay_subnet_is_parsed() {
    let config = parse_with_relay(
        "subnet = \"10.97.5.0/24\"\npool_start = \"10.97.5.100\"\npool_end = \"10.97.5.199\"\nrouter = \"10.97.5.1\"\n",
    )
    .expect("valid relay subnet");

    let relays = config.pxe.expect("a [pxe] section").relay_subnets;
    assert_eq!(relays.len(), 1);
    assert_eq!(relays[0].subnet_mask.to_string(), "255.255.255.0");
}

#[test]
fn relay_subnet_overlapping_local_is_rejected() {
    let error = parse_with_relay(
        "subnet = \"10.98.0.0/16\"\npool_start = \"10.98.5.100\"\npool_end = \"10.98.5.199\"\n",
    )
    .expect_err("overlaps the local subnet")
    .to_string();

    assert_names_key(&error, "pxe.relay_subnets.subnet");
}

#[test]
fn relay_subnet_pool_outside_subnet_is_rejected() {
    let error = parse_with_relay(
        "subnet = \"10.97.5.0/24\"\npool_start = \"10.97.6.100\"\npool_end = \"10.97.6.199\"\n",
    )
    .expect_err("pool outside")
    .to_string();

    assert_names_key(&error, "pxe.relay_subnets.pool_start");
}

#[test]
fn relay_subnet_without_prefix_is_rejected() {
    let error = parse_with_relay(
        "subnet = \"10.97.5.0\"\npool_start = \"10.97.5.100\"\npool_end = \"10.97.5.199\"\n",
    )
    .expect_err("no prefix")
    .to_string();

    assert_names_key(&error, "pxe.relay_subnets.subnet");
}

#[test]
fn boot_script_template_with_unknown_variable_is_rejected() {
    let root = tftp_root();
    let template = root.path().join("boot.ipxe.hbs");
    std::fs::write(&template, "#!ipxe\nkernel {{kernl_url}}\nboot\n").expect("template written");

    let error = parse(
        root.path(),
        &[(
            "boot_script_template",
            &format!("{:?}", template.display().to_string()),
        )],
    )
    .expect_err("unknown variable")
    .to_string();

    assert!(error.contains("pxe.boot_script_template"), "{error}");
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains("kernl_url"), "{error}");
}

#[test]
fn valid_boot_script_template_is_loaded() {
    let root = tftp_root();
    let template = root.path().join("boot.ipxe.hbs");
    std::fs::write(
        &template,
        "#!ipxe\nkernel {{kernel_url}} {{cmdline}}\nboot\n",
    )
    .expect("template written");

    let config = parse(
        root.path(),
        &[(
            "boot_script_template",
            &format!("{:?}", template.display().to_string()),
        )],
    )
    .expect("valid template");

    assert!(config.pxe.expect("pxe").boot_script_template.is_some());
}

#[test]
fn address_check_defaults_to_arp() {
    let root = tftp_root();
    let pxe = parse(root.path(), &[])
        .expect("valid")
        .pxe
        .expect("a [pxe] section");

    assert_eq!(pxe.arp_check, Some(Duration::from_millis(200)));
    assert_eq!(pxe.ping_check, None);
}

#[test]
fn address_check_both_sets_both_waits() {
    let root = tftp_root();
    let overrides = [("address_check", "\"both\""), ("address_check_ms", "500")];
    let pxe = parse(root.path(), &overrides)
        .expect("valid")
        .pxe
        .expect("a [pxe] section");

    assert_eq!(pxe.arp_check, Some(Duration::from_millis(500)));
    assert_eq!(pxe.ping_check, Some(Duration::from_millis(500)));
}

#[test]
fn address_check_none_turns_checks_off() {
    let root = tftp_root();
    let pxe = parse(root.path(), &[("address_check", "\"none\"")])
        .expect("valid")
        .pxe
        .expect("a [pxe] section");

    assert_eq!(pxe.arp_check, None);
    assert_eq!(pxe.ping_check, None);
}

#[test]
fn ping_check_ms_alone_means_ping_only() {
    let root = tftp_root();
    let pxe = parse(root.path(), &[("ping_check_ms", "300")])
        .expect("valid")
        .pxe
        .expect("a [pxe] section");

    assert_eq!(pxe.ping_check, Some(Duration::from_millis(300)));
    assert_eq!(pxe.arp_check, None);
}

#[test]
fn ping_check_ms_with_address_check_is_rejected() {
    let error = rejected(&[("ping_check_ms", "300"), ("address_check", "\"arp\"")]);
    assert_names_key(&error, "pxe.ping_check_ms");
}

#[test]
fn address_check_ms_out_of_range_is_rejected() {
    let error = rejected(&[("address_check_ms", "10")]);
    assert_names_key(&error, "pxe.address_check_ms");
}

#[test]
fn unknown_address_check_is_rejected() {
    let root = tftp_root();
    let error = parse(root.path(), &[("address_check", "\"icmp\"")])
        .expect_err("unknown method")
        .to_string();
    assert!(error.contains("address_check"), "{error}");
}
