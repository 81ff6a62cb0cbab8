//! Preseed for debian-installer (Debian, and Ubuntu releases that still
//! ship it): static network, package mirror, crypted root password, whole
//! disk automatic partitioning and a `late_command` that installs root's
//! SSH keys and calls back.
//!
//! Each preseed line is `owner question type value`, and the value runs to
//! the end of the line. Checked fields contain no spaces or line breaks, and
//! `late_command` quotes its words with [`shell::quote`].

use std::fmt::Write as _;

use crate::context::ipv4_netmask;
use crate::view::mirror_parts;
use crate::{OrderContext, shell};

/// Renders the preseed file for one order.
pub fn render(context: &OrderContext) -> String {
    let network = context.network();
    let ipv4 = &network.ipv4;
    let dns: Vec<String> = network
        .dns_servers
        .iter()
        .map(ToString::to_string)
        .collect();
    let (mirror_host, mirror_directory) = mirror_parts(&context.image().repository_url);
    let scheme = if context.image().repository_url.starts_with("https:") {
        "https"
    } else {
        "http"
    };

    let mut lines: Vec<String> = vec![
        format!("# Preseed for instance {}", context.instance_id()),
        "d-i debian-installer/locale string en_US.UTF-8".to_owned(),
        "d-i keyboard-configuration/xkb-keymap select us".to_owned(),
        "d-i netcfg/choose_interface select auto".to_owned(),
        "d-i netcfg/disable_autoconfig boolean true".to_owned(),
        format!("d-i netcfg/get_ipaddress string {}", ipv4.address),
        format!(
            "d-i netcfg/get_netmask string {}",
            ipv4_netmask(ipv4.prefix_len)
        ),
        format!("d-i netcfg/get_gateway string {}", ipv4.gateway),
        format!("d-i netcfg/get_nameservers string {}", dns.join(" ")),
        "d-i netcfg/confirm_static boolean true".to_owned(),
        format!("d-i netcfg/get_hostname string {}", context.hostname()),
        format!("d-i netcfg/get_domain string {}", context.domain),
        format!("d-i netcfg/hostname string {}", context.hostname()),
        "d-i mirror/country string manual".to_owned(),
        format!("d-i mirror/protocol string {scheme}"),
        format!("d-i mirror/{scheme}/hostname string {mirror_host}"),
        format!("d-i mirror/{scheme}/directory string {mirror_directory}"),
        format!("d-i mirror/{scheme}/proxy string"),
        "d-i passwd/root-login boolean true".to_owned(),
        "d-i passwd/make-user boolean false".to_owned(),
        format!(
            "d-i passwd/root-password-crypted password {}",
            context.root_password_hash()
        ),
        "d-i clock-setup/utc boolean true".to_owned(),
        "d-i time/zone string UTC".to_owned(),
        "d-i partman-auto/method string lvm".to_owned(),
        "d-i partman-auto/choose_recipe select atomic".to_owned(),
        "d-i partman-lvm/device_remove_lvm boolean true".to_owned(),
        "d-i partman-lvm/confirm boolean true".to_owned(),
        "d-i partman-lvm/confirm_nooverwrite boolean true".to_owned(),
        "d-i partman-partitioning/confirm_write_new_label boolean true".to_owned(),
        "d-i partman/choose_partition select finish".to_owned(),
        "d-i partman/confirm boolean true".to_owned(),
        "d-i partman/confirm_nooverwrite boolean true".to_owned(),
        "tasksel tasksel/first multiselect standard, ssh-server".to_owned(),
        "d-i pkgsel/include string openssh-server".to_owned(),
        "d-i grub-installer/only_debian boolean true".to_owned(),
        "d-i grub-installer/bootdev string default".to_owned(),
        "d-i finish-install/reboot_in_progress note".to_owned(),
    ];
    lines.push(format!(
        "d-i preseed/late_command string {}",
        late_command(context)
    ));

    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Shell commands run by debian-installer after the install, with the new
/// system mounted at `/target`.
///
/// NOTE: the callback relies on the installer's BusyBox `wget` accepting
/// `--post-data`; Debian's installer BusyBox enables long options, but this
/// has not been run in a real installer here.
fn late_command(context: &OrderContext) -> String {
    let mut command = String::from("mkdir -p /target/root/.ssh; chmod 700 /target/root/.ssh");
    if context.ssh_authorized_keys().is_empty() {
        command.push_str("; : > /target/root/.ssh/authorized_keys");
    } else {
        command.push_str("; printf '%s\\n'");
        for key in context.ssh_authorized_keys() {
            let _ = write!(command, " {}", shell::quote(key));
        }
        command.push_str(" > /target/root/.ssh/authorized_keys");
    }
    command.push_str("; chmod 600 /target/root/.ssh/authorized_keys");

    let post_data = format!(
        "instance_id={}&hostname={}",
        context.instance_id(),
        context.fqdn()
    );
    let _ = write!(
        command,
        "; wget -q -O /dev/null --post-data={} {} || true",
        shell::quote(&post_data),
        shell::quote(context.callback_url().as_str()),
    );
    command
}
