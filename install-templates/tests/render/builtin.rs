//! Golden outputs of the built-in renderers, secret handling, injection
//! attempts, and checks of the output by the real tools (`cloud-init`,
//! `sh`, `genisoimage`) where they are installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use rackhand_install_templates::container::{
    ContainerSpec, PortMapping, Protocol, ResourceLimits, VolumeMount,
};
use rackhand_install_templates::operator::{sample_contexts, sample_input};
use rackhand_install_templates::{
    OrderContext, RenderedFile, TemplateError, configdrive, kickstart, nocloud, preseed,
};

use crate::{HOSTILE_KEY, hostile_context, run_sh};

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("RACKHAND_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("golden folder is writable");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

fn sample() -> OrderContext {
    let [with_ipv6, _] = sample_contexts();
    with_ipv6
}

fn sample_without_ipv6() -> OrderContext {
    let [_, without_ipv6] = sample_contexts();
    without_ipv6
}

fn sample_container_spec() -> ContainerSpec {
    ContainerSpec {
        name: "minecraft".to_owned(),
        image: "docker.io/itzg/minecraft-server:2024.6.1".to_owned(),
        env: [
            ("EULA".to_owned(), "TRUE".to_owned()),
            ("MOTD".to_owned(), "Welcome: \"web1\" #1".to_owned()),
        ]
        .into_iter()
        .collect(),
        ports: vec![
            PortMapping {
                host: 25565,
                container: 25565,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host: 19132,
                container: 19132,
                protocol: Protocol::Udp,
            },
        ],
        volumes: vec![VolumeMount {
            source: "world".to_owned(),
            target: "/data".to_owned(),
            read_only: false,
        }],
        limits: ResourceLimits {
            millicpus: 2500,
            memory_mib: 4096,
        },
    }
}

#[test]
fn nocloud_golden() {
    let seed = nocloud::render(&sample());
    assert_golden("nocloud-user-data", &seed.user_data);
    assert_golden("nocloud-meta-data", &seed.meta_data);
    assert_golden("nocloud-network-config", &seed.network_config);
}

#[test]
fn nocloud_network_config_without_ipv6_golden() {
    let seed = nocloud::render(&sample_without_ipv6());
    assert_golden("nocloud-network-config-ipv4-only", &seed.network_config);
}

#[test]
fn configdrive_golden() {
    let files = configdrive::render(&sample());
    let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "openstack/latest/meta_data.json",
            "openstack/latest/network_data.json",
            "openstack/latest/user_data",
        ]
    );
    assert_golden("configdrive-meta_data.json", &files[0].contents);
    assert_golden("configdrive-network_data.json", &files[1].contents);
    assert_golden("configdrive-user_data", &files[2].contents);
}

#[test]
fn kickstart_golden() {
    assert_golden("kickstart.cfg", &kickstart::render(&sample()));
}

#[test]
fn kickstart_without_ipv6_golden() {
    assert_golden(
        "kickstart-ipv4-only.cfg",
        &kickstart::render(&sample_without_ipv6()),
    );
}

#[test]
fn preseed_golden() {
    assert_golden("preseed.cfg", &preseed::render(&sample()));
}

#[test]
fn container_compose_golden() {
    let spec = sample_container_spec();
    spec.check().expect("sample spec is valid");
    assert_golden("compose.yaml", &spec.to_compose());
}

/// Renders every file of every built-in renderer for one context.
fn render_everything(context: &OrderContext) -> Vec<RenderedFile> {
    let mut files = nocloud::render(context).files();
    files.extend(configdrive::render(context));
    files.push(RenderedFile {
        path: "ks.cfg".to_owned(),
        contents: kickstart::render(context),
    });
    files.push(RenderedFile {
        path: "preseed.cfg".to_owned(),
        contents: preseed::render(context),
    });
    files
}

#[test]
fn plain_password_never_rendered() {
    let mut input = sample_input(true);
    input.root_password = "Plain-Secret-4711".to_owned();
    let context = OrderContext::new(input).expect("sample input is valid");

    let files = render_everything(&context);
    for file in &files {
        assert!(
            !file.contents.contains("Plain-Secret-4711"),
            "{} contains the plain password",
            file.path
        );
    }
    let with_hash = [
        "user-data",
        "openstack/latest/user_data",
        "ks.cfg",
        "preseed.cfg",
    ];
    for file in files
        .iter()
        .filter(|file| with_hash.contains(&file.path.as_str()))
    {
        assert!(
            file.contents.contains(context.root_password_hash()),
            "{} lacks the password hash",
            file.path
        );
    }
}

#[test]
fn debug_hides_password_and_hash() {
    let mut input = sample_input(true);
    input.root_password = "Plain-Secret-4711".to_owned();
    let input_debug = format!("{input:?}");
    assert!(!input_debug.contains("Plain-Secret-4711"), "{input_debug}");

    let context = OrderContext::new(input).expect("sample input is valid");
    let context_debug = format!("{context:?}");
    assert!(
        !context_debug.contains("Plain-Secret-4711"),
        "{context_debug}"
    );
    assert!(
        !context_debug.contains(context.root_password_hash()),
        "{context_debug}"
    );
}

#[test]
fn hostname_with_newline_rejected() {
    for hostname in ["web1\nruncmd: [reboot]", "web1'", "$(reboot)", "web 1", ""] {
        let mut input = sample_input(true);
        input.hostname = hostname.to_owned();
        let error = OrderContext::new(input).expect_err("hostile hostname is rejected");
        assert!(
            matches!(
                error,
                TemplateError::InvalidContext {
                    field: "hostname",
                    ..
                }
            ),
            "{hostname:?}: {error}"
        );
    }
}

#[test]
fn ssh_key_with_newline_rejected() {
    let mut input = sample_input(true);
    input.ssh_authorized_keys = vec![format!("{HOSTILE_KEY}\nssh-rsa AAAA injected")];
    let error = OrderContext::new(input).expect_err("multi-line key is rejected");
    assert!(error.to_string().contains("ssh_authorized_keys"), "{error}");
}

#[test]
fn domain_and_mac_and_url_checked() {
    type Change = fn(&mut rackhand_install_templates::OrderContextInput);
    let cases: [(&str, Change); 4] = [
        ("domain", |input| input.domain = "example.net\n".to_owned()),
        ("network.mac", |input| {
            input.network.mac = "52:54:00:12:34".to_owned();
        }),
        ("callback_url", |input| {
            input.callback_url = "file:///etc/shadow".to_owned();
        }),
        ("instance_id", |input| input.instance_id = "a b".to_owned()),
    ];
    for (field, change) in cases {
        let mut input = sample_input(true);
        change(&mut input);
        let error = OrderContext::new(input).expect_err("invalid input is rejected");
        assert!(
            matches!(&error, TemplateError::InvalidContext { field: f, .. } if *f == field),
            "{field}: {error}"
        );
    }
}

#[test]
fn preseed_late_command_cannot_inject() {
    let context = hostile_context();
    let text = preseed::render(&context);
    let command = text
        .lines()
        .find_map(|line| line.strip_prefix("d-i preseed/late_command string "))
        .expect("preseed has a late_command");

    let directory = tempfile::tempdir().expect("temporary folder");
    let target = directory.path().join("target");
    let command = command.replace("/target/", &format!("{}/", target.display()));
    // `wget` is replaced by a function that records its arguments, so the
    // test sends nothing over the network.
    let prelude = "wget() { printf '%s\\n' \"$@\" > wget-args; }";
    run_sh(directory.path(), prelude, &command);

    let keys = std::fs::read_to_string(target.join("root/.ssh/authorized_keys"))
        .expect("late_command wrote authorized_keys");
    assert_eq!(keys, format!("{HOSTILE_KEY}\n"));
    assert!(!directory.path().join("PWNED").exists());
    let wget_args =
        std::fs::read_to_string(directory.path().join("wget-args")).expect("wget was called");
    assert!(
        wget_args.ends_with(&format!("{}\n", context.callback_url())),
        "{wget_args}"
    );
}

#[test]
fn kickstart_post_cannot_inject() {
    let context = hostile_context();
    let text = kickstart::render(&context);
    let post = text
        .split("%post --erroronfail\n")
        .nth(1)
        .and_then(|rest| rest.split("%end").next())
        .expect("kickstart has a %post section");

    let directory = tempfile::tempdir().expect("temporary folder");
    let prelude = "curl() { printf '%s\\n' \"$@\"; }";
    let arguments = run_sh(directory.path(), prelude, post);
    assert!(!directory.path().join("PWNED").exists());
    assert_eq!(
        arguments.lines().last(),
        Some(context.callback_url().as_str())
    );
}

#[test]
fn kickstart_sshkey_line_is_one_word() {
    let text = kickstart::render(&hostile_context());
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("sshkey --username=root "))
        .expect("kickstart has an sshkey line");

    let directory = tempfile::tempdir().expect("temporary folder");
    let words = run_sh(directory.path(), "", &format!("printf '%s\\n' {line}"));
    assert_eq!(words, format!("{HOSTILE_KEY}\n"));
}

#[test]
fn cloud_config_hostile_key_stays_one_scalar() {
    let user_data = nocloud::user_data(&hostile_context());
    let key_lines: Vec<&str> = user_data
        .lines()
        .filter(|line| line.contains("AAAAC3NzaC1lZDI1NTE5AAAAIGm0"))
        .collect();
    assert_eq!(key_lines.len(), 1, "{user_data}");
    let scalar = key_lines[0].trim_start().trim_start_matches("- ");
    let value: String = serde_json::from_str(scalar).expect("the key is one quoted scalar");
    assert_eq!(value, HOSTILE_KEY);
}

#[test]
fn built_in_outputs_pass_operator_checks() {
    use rackhand_install_templates::checks::check_output;
    use rackhand_install_templates::operator::TemplateKind;

    let context = hostile_context();
    let seed = nocloud::render(&context);
    let drive = configdrive::render(&context);
    let cases = [
        (TemplateKind::CloudConfig, seed.user_data.clone()),
        (TemplateKind::MetaData, seed.meta_data.clone()),
        (TemplateKind::NetworkConfig, seed.network_config.clone()),
        (TemplateKind::OpenStackMetaData, drive[0].contents.clone()),
        (
            TemplateKind::OpenStackNetworkData,
            drive[1].contents.clone(),
        ),
        (TemplateKind::Kickstart, kickstart::render(&context)),
        (TemplateKind::Preseed, preseed::render(&context)),
    ];
    for (kind, text) in cases {
        if let Err(error) = check_output("built-in", kind, &text) {
            panic!("{kind}: {error}\n{text}");
        }
    }
}

/// Writes `contents` to a file in `directory` and returns its path.
fn write_file(directory: &Path, name: &str, contents: &str) -> PathBuf {
    let path = directory.join(name);
    std::fs::write(&path, contents).expect("temporary folder is writable");
    path
}

fn tool_present(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn cloud_init_accepts_user_data() {
    if !tool_present("cloud-init") {
        eprintln!(
            "SKIPPED: cloud-init is not installed; run tests/peers/install templates to check rendered user-data with `cloud-init schema`"
        );
        return;
    }
    let directory = tempfile::tempdir().expect("temporary folder");
    for (name, context) in [("sample", sample()), ("hostile", hostile_context())] {
        let path = write_file(directory.path(), name, &nocloud::user_data(&context));
        let output = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .expect("cloud-init runs");
        assert!(
            output.status.success(),
            "{name}: cloud-init schema failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Parses network configuration with cloud-init's own Python code, since
/// `cloud-init schema` in Debian 12 (22.4) validates only cloud-config.
/// The interpreter is the one in the `cloud-init` script's `#!` line,
/// because a `python3` earlier on `PATH` (pyenv, a venv) may lack the
/// `cloudinit` module.
fn cloud_init_python(script: &str, input: &Path) -> std::process::Output {
    let launcher = Command::new("sh")
        .args(["-c", "command -v cloud-init"])
        .output()
        .expect("sh runs");
    let launcher = String::from_utf8_lossy(&launcher.stdout).trim().to_owned();
    let first_line = std::fs::read_to_string(&launcher)
        .ok()
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let interpreter = first_line
        .strip_prefix("#!")
        .map_or("/usr/bin/python3", str::trim)
        .to_owned();
    Command::new(interpreter)
        .arg("-c")
        .arg(script)
        .arg(input)
        .output()
        .expect("python3 runs")
}

#[test]
fn cloud_init_parses_network_config() {
    if !tool_present("cloud-init") {
        eprintln!(
            "SKIPPED: cloud-init is not installed; run tests/peers/install templates to parse rendered network-config"
        );
        return;
    }
    let script = r#"
import sys, yaml
from cloudinit.net import network_state
config = yaml.safe_load(open(sys.argv[1]))
assert config["version"] == 2, config
state = network_state.parse_net_config_data(config)
subnets = [s for i in state.iter_interfaces() for s in i["subnets"]]
print(" ".join(f'{s["address"]}/{s["prefix"]}/{s["gateway"]}' for s in subnets))
"#;
    let directory = tempfile::tempdir().expect("temporary folder");
    let seed = nocloud::render(&sample());
    let path = write_file(directory.path(), "network-config", &seed.network_config);
    let output = cloud_init_python(script, &path);
    assert!(
        output.status.success(),
        "cloud-init failed to parse network-config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "192.0.2.10/24/192.0.2.1 2001:db8::10/64/2001:db8::1"
    );
}

#[test]
fn cloud_init_converts_network_data_json() {
    if !tool_present("cloud-init") {
        eprintln!(
            "SKIPPED: cloud-init is not installed; run tests/peers/install templates to convert network_data.json"
        );
        return;
    }
    let script = r#"
import json, sys
from cloudinit.sources.helpers import openstack
data = json.load(open(sys.argv[1]))
config = openstack.convert_net_json(data, known_macs={"52:54:00:12:34:56": "eth0"})
physical = [c for c in config["config"] if c["type"] == "physical"][0]
nameservers = [c for c in config["config"] if c["type"] == "nameserver"]
print(physical["name"], physical["mac_address"], len(physical["subnets"]), len(nameservers))
"#;
    let directory = tempfile::tempdir().expect("temporary folder");
    let files = configdrive::render(&sample());
    let path = write_file(directory.path(), "network_data.json", &files[1].contents);
    let output = cloud_init_python(script, &path);
    assert!(
        output.status.success(),
        "cloud-init failed to convert network_data.json: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "eth0 52:54:00:12:34:56 2 2"
    );
}

#[test]
fn pyyaml_reads_yaml_writer_output() {
    if !tool_present("cloud-init") {
        eprintln!(
            "SKIPPED: cloud-init (and with it PyYAML) is not installed; run tests/peers/install templates"
        );
        return;
    }
    let script = r#"
import json, sys, yaml
print(json.dumps(yaml.safe_load(open(sys.argv[1])), sort_keys=True))
"#;
    let context = hostile_context();
    let seed = nocloud::render(&context);
    let user_data_body = seed
        .user_data
        .strip_prefix("#cloud-config\n")
        .expect("user-data starts with its header");
    let documents = [
        ("user-data", user_data_body.to_owned()),
        ("meta-data", seed.meta_data),
        ("network-config", seed.network_config),
        ("compose", sample_container_spec().to_compose()),
    ];

    let directory = tempfile::tempdir().expect("temporary folder");
    for (name, text) in documents {
        let path = write_file(directory.path(), name, &text);
        let output = cloud_init_python(script, &path);
        assert!(
            output.status.success(),
            "{name}: PyYAML failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let loaded: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("python prints JSON");
        assert!(loaded.is_object(), "{name}: {loaded}");
        if name == "user-data" {
            let key = &loaded["users"][0]["ssh_authorized_keys"][0];
            assert_eq!(key, HOSTILE_KEY, "{name}");
        }
        if name == "compose" {
            let motd = &loaded["services"]["minecraft"]["environment"]["MOTD"];
            assert_eq!(motd, "Welcome: \"web1\" #1");
        }
    }
}

#[test]
fn configdrive_iso_has_config_2_label() {
    if !tool_present("genisoimage") || !tool_present("isoinfo") {
        eprintln!(
            "SKIPPED: genisoimage is not installed; run tests/peers/install templates to build the configdrive ISO"
        );
        return;
    }
    let directory = tempfile::tempdir().expect("temporary folder");
    let tree = directory.path().join("tree");
    let iso = directory.path().join("configdrive.iso");
    configdrive::write_tree(&tree, &configdrive::render(&sample())).expect("tree is written");
    configdrive::build_iso(&tree, &iso).expect("genisoimage builds the ISO");

    let info = Command::new("isoinfo")
        .args(["-d", "-i"])
        .arg(&iso)
        .output()
        .expect("isoinfo runs");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("Volume id: config-2"), "{text}");

    let listing = Command::new("isoinfo")
        .args(["-R", "-f", "-i"])
        .arg(&iso)
        .output()
        .expect("isoinfo runs");
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        names
            .lines()
            .any(|name| name == "/openstack/latest/network_data.json"),
        "{names}"
    );
}
