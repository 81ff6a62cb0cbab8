//! Operator templates: accepted templates for each kind, rejected uploads
//! with the message an operator gets, and hostile order values.

use rackhand_install_templates::TemplateError;
use rackhand_install_templates::operator::{OperatorTemplate, TemplateKind, sample_contexts};

use crate::{HOSTILE_KEY, hostile_context, run_sh};

const CLOUD_CONFIG: &str = r#"#cloud-config
# Operator's cloud-config
hostname: {{hostname}}
fqdn: {{fqdn}}
users:
  - name: root
    hashed_passwd: {{root_password_hash}}
    lock_passwd: false
    ssh_authorized_keys:
{{#each ssh_authorized_keys}}
      - {{this}}
{{/each}}
runcmd:
  - [sh, -c, 'echo "installed"']
write_files:
  - path: /etc/motd
    content: |
      Welcome: this text is a block scalar.
        Indented lines stay inside it.
phone_home:
  url: {{callback_url}}
"#;

const META_DATA: &str = "instance-id: {{instance_id}}\nlocal-hostname: {{hostname}}\n";

const NETWORK_CONFIG: &str = r#"network:
  version: 2
  ethernets:
    {{network.interface_name}}:
      match:
        macaddress: {{network.mac}}
      addresses:
        - {{network.ipv4.cidr}}
{{#if network.ipv6}}
        - {{network.ipv6.cidr}}
{{/if}}
      gateway4: {{network.ipv4.gateway}}
"#;

const OPENSTACK_META_DATA: &str =
    r#"{"uuid": {{instance_id}}, "hostname": {{fqdn}}, "name": {{hostname}}}"#;

const OPENSTACK_NETWORK_DATA: &str = r#"{
  "links": [{"id": {{network.interface_name}}, "type": "phy", "ethernet_mac_address": {{network.mac}}}],
  "networks": [{"id": "network0", "type": "ipv4", "link": {{network.interface_name}},
                "ip_address": {{network.ipv4.address}}, "netmask": {{network.ipv4.netmask}}}],
  "services": []
}"#;

const KICKSTART: &str = r#"text
network --device={{network.mac}} --bootproto=static --ip={{network.ipv4.address}} --netmask={{network.ipv4.netmask}} --gateway={{network.ipv4.gateway}} --nameserver={{join network.dns_servers ","}} --hostname={{fqdn}}
rootpw --iscrypted {{root_password_hash}}
{{#each ssh_authorized_keys}}
sshkey --username=root {{this}}
{{/each}}
url --url={{image.repository_url}}
bootloader --location=mbr
clearpart --all --initlabel
autopart
%packages
@^minimal-environment
%end
%post
curl -fsS {{callback_url}}
%end
"#;

const PRESEED: &str = r#"# Operator's preseed
d-i netcfg/get_hostname string {{hostname}}
d-i netcfg/get_nameservers string {{join network.dns_servers " "}}
d-i mirror/http/hostname string {{image.mirror_host}}
d-i passwd/root-password-crypted password {{root_password_hash}}
d-i preseed/late_command string \
    wget -q -O /dev/null {{shell callback_url}}
"#;

const CONTAINER: &str = r#"{
  "name": "minecraft",
  "image": "docker.io/itzg/minecraft-server:2024.6.1",
  "env": {"EULA": "TRUE", "SERVER_NAME": {{fqdn}}},
  "ports": [{"host": 25565, "container": 25565, "protocol": "tcp"}],
  "volumes": [{"source": "world", "target": "/data"}],
  "limits": {"millicpus": 2000, "memory_mib": 4096}
}"#;

fn validate(kind: TemplateKind, source: &str) -> Result<OperatorTemplate, TemplateError> {
    OperatorTemplate::validate("operator-template", kind, source)
}

fn rejection(kind: TemplateKind, source: &str) -> String {
    validate(kind, source)
        .expect_err("the template is rejected")
        .to_string()
}

#[test]
fn template_of_each_kind_accepted() {
    let cases = [
        (TemplateKind::CloudConfig, CLOUD_CONFIG),
        (TemplateKind::MetaData, META_DATA),
        (TemplateKind::NetworkConfig, NETWORK_CONFIG),
        (TemplateKind::OpenStackMetaData, OPENSTACK_META_DATA),
        (TemplateKind::OpenStackNetworkData, OPENSTACK_NETWORK_DATA),
        (TemplateKind::Kickstart, KICKSTART),
        (TemplateKind::Preseed, PRESEED),
        (TemplateKind::Container, CONTAINER),
    ];
    for (kind, source) in cases {
        if let Err(error) = validate(kind, source) {
            panic!("{kind}: {error}");
        }
    }
}

#[test]
fn cloud_config_render_quotes_values() {
    let template = validate(TemplateKind::CloudConfig, CLOUD_CONFIG).expect("template is valid");
    let [context, _] = sample_contexts();
    let text = template.render(&context).expect("sample renders");
    assert!(text.contains("\nhostname: \"web1\"\n"), "{text}");
    assert!(
        text.contains("\n      - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0nT8Y1Mq0Sx7xAjvJNbBhhOZ7Ji6XmfQm6T8kQfVp customer@laptop\"\n"),
        "{text}"
    );
}

#[test]
fn container_template_yields_spec() {
    let template = validate(TemplateKind::Container, CONTAINER).expect("template is valid");
    let [context, _] = sample_contexts();
    let spec = template
        .render_container_spec(&context)
        .expect("sample renders");
    assert_eq!(spec.env["SERVER_NAME"], "web1.example.net");
}

#[test]
fn syntax_error_names_line() {
    let message = rejection(
        TemplateKind::MetaData,
        "instance-id: x\n{{#if hostname}}\nno close\n",
    );
    assert!(
        message.starts_with("template \"operator-template\" line "),
        "{message}"
    );
}

#[test]
fn unknown_variable_names_line_and_known_ones() {
    let message = rejection(
        TemplateKind::MetaData,
        "instance-id: {{instance_id}}\nlocal-hostname: {{hostnme}}\n",
    );
    assert!(message.contains("line 2"), "{message}");
    assert!(
        message.contains("unknown variable \"hostnme\""),
        "{message}"
    );
    assert!(message.contains("network.ipv4.cidr"), "{message}");
}

#[test]
fn unknown_variable_in_ipv6_branch_found() {
    let source =
        "instance-id: {{instance_id}}\n{{#if network.ipv6}}\nx: {{network.ipv6.adress}}\n{{/if}}\n";
    let message = rejection(TemplateKind::MetaData, source);
    assert!(message.contains("network.ipv6.adress"), "{message}");
}

#[test]
fn unknown_variable_in_ipv4_only_branch_found() {
    let source =
        "instance-id: {{instance_id}}\n{{#unless network.ipv6}}\nx: {{gateway}}\n{{/unless}}\n";
    let message = rejection(TemplateKind::MetaData, source);
    assert!(
        message.contains("unknown variable \"gateway\""),
        "{message}"
    );
}

#[test]
fn triple_stash_rejected() {
    let message = rejection(
        TemplateKind::MetaData,
        "instance-id: x\nhost: {{{hostname}}}\n",
    );
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("without escaping"), "{message}");
}

#[test]
fn ampersand_expression_rejected() {
    let message = rejection(TemplateKind::MetaData, "instance-id: {{&instance_id}}\n");
    assert!(message.contains("{{&…}}"), "{message}");
}

#[test]
fn unknown_helper_rejected() {
    let message = rejection(
        TemplateKind::Kickstart,
        &KICKSTART.replace("curl -fsS {{callback_url}}", "curl {{shell callback_url}}"),
    );
    assert!(message.contains("shell"), "{message}");
}

#[test]
fn cloud_config_without_header_rejected() {
    let message = rejection(TemplateKind::CloudConfig, "hostname: {{hostname}}\n");
    assert!(message.contains("rendered line 1"), "{message}");
    assert!(message.contains("#cloud-config"), "{message}");
}

#[test]
fn cloud_config_tab_indent_rejected() {
    let message = rejection(
        TemplateKind::CloudConfig,
        "#cloud-config\nusers:\n\t- name: root\n",
    );
    assert!(message.contains("rendered line 3"), "{message}");
    assert!(message.contains("tabs"), "{message}");
}

#[test]
fn cloud_config_bad_indent_rejected() {
    let source = "#cloud-config\nusers:\n    - name: root\n  - name: other\n";
    let message = rejection(TemplateKind::CloudConfig, source);
    assert!(message.contains("rendered line 4"), "{message}");
    assert!(message.contains("indentation"), "{message}");
}

#[test]
fn cloud_config_unclosed_quote_rejected() {
    let message = rejection(
        TemplateKind::CloudConfig,
        "#cloud-config\nbootcmd:\n  - \"echo\n",
    );
    assert!(message.contains("rendered line 3"), "{message}");
    assert!(message.contains("close the quoted text"), "{message}");
}

#[test]
fn cloud_config_duplicate_key_rejected() {
    let source = "#cloud-config\nhostname: {{hostname}}\nhostname: other\n";
    let message = rejection(TemplateKind::CloudConfig, source);
    assert!(
        message.contains("duplicate top-level key \"hostname\""),
        "{message}"
    );
}

#[test]
fn cloud_config_nested_mapping_value_rejected() {
    let message = rejection(TemplateKind::CloudConfig, "#cloud-config\nhostname: a: b\n");
    assert!(message.contains("': '"), "{message}");
}

#[test]
fn meta_data_without_instance_id_rejected() {
    let message = rejection(TemplateKind::MetaData, "local-hostname: {{hostname}}\n");
    assert!(message.contains("instance-id"), "{message}");
}

#[test]
fn network_config_without_version_rejected() {
    let source = NETWORK_CONFIG.replace("  version: 2\n", "");
    let message = rejection(TemplateKind::NetworkConfig, &source);
    assert!(message.contains("version: 2"), "{message}");
}

#[test]
fn network_config_version_1_rejected() {
    let source = NETWORK_CONFIG.replace("version: 2", "version: 1");
    let message = rejection(TemplateKind::NetworkConfig, &source);
    assert!(message.contains("version: 2"), "{message}");
}

#[test]
fn network_config_json_accepted() {
    let source = r#"{"version": 2, "ethernets": {"eth0": {"addresses": [{{network.ipv4.cidr}}]}}}"#;
    validate(TemplateKind::NetworkConfig, source).expect("JSON network-config is accepted");
}

#[test]
fn openstack_network_data_unknown_link_rejected() {
    let source = OPENSTACK_NETWORK_DATA
        .replace(r#""link": {{network.interface_name}}"#, r#""link": "tap0""#);
    let message = rejection(TemplateKind::OpenStackNetworkData, &source);
    assert!(message.contains("\"tap0\""), "{message}");
}

#[test]
fn openstack_meta_data_invalid_json_names_line() {
    let message = rejection(
        TemplateKind::OpenStackMetaData,
        "{\n\"uuid\": {{instance_id}},\n}\n",
    );
    assert!(message.contains("rendered line 3"), "{message}");
    assert!(message.contains("invalid JSON"), "{message}");
}

#[test]
fn kickstart_without_bootloader_rejected() {
    let source = KICKSTART.replace("bootloader --location=mbr\n", "");
    let message = rejection(TemplateKind::Kickstart, &source);
    assert!(message.contains("bootloader"), "{message}");
}

#[test]
fn kickstart_plaintext_rootpw_rejected() {
    let source = KICKSTART.replace(
        "rootpw --iscrypted {{root_password_hash}}",
        "rootpw --plaintext changeme",
    );
    let message = rejection(TemplateKind::Kickstart, &source);
    assert!(message.contains("rendered line 3"), "{message}");
    assert!(message.contains("--iscrypted"), "{message}");
    assert!(!message.contains("changeme"), "{message}");
}

#[test]
fn kickstart_unclosed_section_rejected() {
    let source = KICKSTART.replace("@^minimal-environment\n%end\n", "@^minimal-environment\n");
    let message = rejection(TemplateKind::Kickstart, &source);
    assert!(message.contains("add %end"), "{message}");
}

#[test]
fn kickstart_without_post_rejected() {
    let source = KICKSTART.replace("%post\ncurl -fsS {{callback_url}}\n%end\n", "");
    let message = rejection(TemplateKind::Kickstart, &source);
    assert!(message.contains("%post"), "{message}");
}

#[test]
fn preseed_malformed_line_rejected() {
    let source = format!("{PRESEED}d-i netcfg/get_domain example.net\n");
    let message = rejection(TemplateKind::Preseed, &source);
    assert!(message.contains("rendered line 8"), "{message}");
    assert!(message.contains("owner question type value"), "{message}");
}

#[test]
fn preseed_plain_root_password_rejected() {
    let source = format!("{PRESEED}d-i passwd/root-password password hunter2\n");
    let message = rejection(TemplateKind::Preseed, &source);
    assert!(message.contains("root-password-crypted"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn container_duplicate_port_rejected() {
    let source = CONTAINER.replace(
        r#"[{"host": 25565, "container": 25565, "protocol": "tcp"}]"#,
        r#"[{"host": 25565, "container": 25565}, {"host": 25565, "container": 25566}]"#,
    );
    let message = rejection(TemplateKind::Container, &source);
    assert!(message.contains("ports"), "{message}");
    assert!(message.contains("25565"), "{message}");
}

#[test]
fn container_unknown_field_rejected() {
    let source = CONTAINER.replace("\"name\"", "\"privileged\": true, \"name\"");
    let message = rejection(TemplateKind::Container, &source);
    assert!(message.contains("privileged"), "{message}");
}

#[test]
fn container_volume_escape_rejected() {
    let source = CONTAINER.replace("\"/data\"", "\"/data/../../etc\"");
    let message = rejection(TemplateKind::Container, &source);
    assert!(message.contains("volumes.target"), "{message}");
}

#[test]
fn hostile_key_stays_one_yaml_scalar() {
    let template = validate(TemplateKind::CloudConfig, CLOUD_CONFIG).expect("template is valid");
    let text = template
        .render(&hostile_context())
        .expect("hostile values render");
    let line = text
        .lines()
        .find(|line| line.contains("AAAAC3NzaC1lZDI1NTE5AAAAIGm0 "))
        .expect("the key is rendered");
    let scalar = line.trim_start().trim_start_matches("- ");
    let value: String = serde_json::from_str(scalar).expect("one quoted scalar");
    assert_eq!(value, HOSTILE_KEY);
}

#[test]
fn hostile_key_stays_one_kickstart_word() {
    let template = validate(TemplateKind::Kickstart, KICKSTART).expect("template is valid");
    let text = template
        .render(&hostile_context())
        .expect("hostile values render");
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("sshkey --username=root "))
        .expect("the key is rendered");

    let directory = tempfile::tempdir().expect("temporary folder");
    let words = run_sh(directory.path(), "", &format!("printf '%s\\n' {line}"));
    assert_eq!(words, format!("{HOSTILE_KEY}\n"));
    assert!(!directory.path().join("PWNED").exists());
}

#[test]
fn hostile_callback_stays_one_preseed_shell_word() {
    let template = validate(TemplateKind::Preseed, PRESEED).expect("template is valid");
    let context = hostile_context();
    let text = template.render(&context).expect("hostile values render");
    let command = text
        .split("d-i preseed/late_command string \\\n")
        .nth(1)
        .expect("late_command is rendered");

    let directory = tempfile::tempdir().expect("temporary folder");
    let prelude = "wget() { printf '%s\\n' \"$@\"; }";
    let arguments = run_sh(directory.path(), prelude, command);
    assert_eq!(
        arguments.lines().last(),
        Some(context.callback_url().as_str())
    );
    assert!(!directory.path().join("PWNED").exists());
}

#[test]
fn json_expression_cannot_add_keys() {
    let template =
        validate(TemplateKind::OpenStackMetaData, OPENSTACK_META_DATA).expect("template is valid");
    let mut input = rackhand_install_templates::operator::sample_input(true);
    input.instance_id = "id\",\"admin\":true,\"x\":\"".to_owned();
    // The context check already rejects quotes in the instance id, so the
    // JSON escaping is checked directly on an SSH key, which may contain
    // them.
    assert!(rackhand_install_templates::OrderContext::new(input).is_err());

    let source = r#"{"uuid": {{instance_id}}, "key": {{ssh_authorized_keys.[0]}}}"#;
    let template_with_key =
        validate(TemplateKind::OpenStackMetaData, source).expect("template is valid");
    let text = template_with_key
        .render(&hostile_context())
        .expect("hostile values render");
    let value: serde_json::Value = serde_json::from_str(&text).expect("output is JSON");
    assert_eq!(value["key"], HOSTILE_KEY);
    assert_eq!(value.as_object().map(|map| map.len()), Some(2));
    drop(template);
}

#[test]
fn format_error_hides_password_hash() {
    let source =
        format!("{PRESEED}d-i passwd/root-password-crypted secret {{{{root_password_hash}}}}\n");
    let message = rejection(TemplateKind::Preseed, &source);
    assert!(message.contains("[redacted hash]"), "{message}");
    assert!(!message.contains("$6$"), "{message}");
}

#[test]
fn runcmd_expression_in_command_rejected() {
    let source = "#cloud-config\nruncmd:\n  - echo {{ssh_authorized_keys.[0]}} >> /root/keys\n";
    let message = rejection(TemplateKind::CloudConfig, source);
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("whole YAML value"), "{message}");
}

#[test]
fn runcmd_argument_list_accepted() {
    let source = "#cloud-config\nruncmd:\n  - [logger, -t, rackhand, {{fqdn}}]\n";
    validate(TemplateKind::CloudConfig, source).expect("a whole flow item is accepted");
}

#[test]
fn preseed_command_without_shell_rejected() {
    let source = PRESEED.replace("{{shell callback_url}}", "{{callback_url}}");
    let message = rejection(TemplateKind::Preseed, &source);
    assert!(message.contains("line 7"), "{message}");
    assert!(message.contains("{{shell name}}"), "{message}");
}

#[test]
fn log_helper_is_rejected() {
    let message = rejection(
        TemplateKind::MetaData,
        "instance-id: {{instance_id}}\n{{log root_password_hash}}\n",
    );
    assert!(message.contains("log"), "{message}");
}

#[test]
fn recursive_inline_partial_is_rejected() {
    let source = "#cloud-config\n{{#*inline \"p\"}}x{{> p}}{{/inline}}\nhostname: {{hostname}}\n";

    let message = rejection(TemplateKind::CloudConfig, source);

    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("inline partials"), "{message}");
}

#[test]
fn partial_is_rejected() {
    let message = rejection(
        TemplateKind::CloudConfig,
        "#cloud-config\nhostname: {{hostname}}\n{{> p}}\n",
    );

    assert!(message.contains("partials"), "{message}");
}

#[test]
fn expression_across_lines_is_rejected() {
    let source = "d-i preseed/late_command string echo {{\nroot_password_hash}} > /target/x\n";

    let message = rejection(TemplateKind::Preseed, source);

    assert!(message.contains("line 1"), "{message}");
    assert!(message.contains("spans lines"), "{message}");
}

#[test]
fn comment_across_lines_is_accepted() {
    let source = "#cloud-config\n{{!-- about\nthis file }} --}}\nhostname: {{hostname}}\n";

    validate(TemplateKind::CloudConfig, source).expect("comments may span lines");
}
