//! Kickstart for RHEL, Rocky and Alma network installs: static network,
//! crypted root password, install tree URL, whole-disk automatic
//! partitioning and a `%post` callback.
//!
//! Anaconda splits command lines like a POSIX shell, so every value that is
//! not a checked hostname, address or MAC goes through [`shell::quote`].

use std::fmt::Write as _;

use crate::context::ipv4_netmask;
use crate::{OrderContext, shell};

/// Renders the kickstart file for one order.
pub fn render(context: &OrderContext) -> String {
    let network = context.network();
    let ipv4 = &network.ipv4;
    let dns: Vec<String> = network
        .dns_servers
        .iter()
        .map(ToString::to_string)
        .collect();

    let mut network_line = format!(
        "network --device={} --bootproto=static --ip={} --netmask={} --gateway={} --nameserver={} --hostname={} --activate --onboot=yes",
        network.mac,
        ipv4.address,
        ipv4_netmask(ipv4.prefix_len),
        ipv4.gateway,
        dns.join(","),
        context.fqdn(),
    );
    match &network.ipv6 {
        Some(ipv6) => {
            let _ = write!(
                network_line,
                " --ipv6={}/{} --ipv6gateway={}",
                ipv6.address, ipv6.prefix_len, ipv6.gateway
            );
        }
        None => network_line.push_str(" --noipv6"),
    }

    let mut text = String::new();
    let _ = writeln!(text, "# Kickstart for instance {}", context.instance_id());
    text.push_str("text\nlang en_US.UTF-8\nkeyboard us\ntimezone UTC --utc\n");
    text.push_str(&network_line);
    text.push('\n');
    let _ = writeln!(
        text,
        "url --url={}",
        shell::quote(&context.image().repository_url)
    );
    let _ = writeln!(
        text,
        "rootpw --iscrypted {}",
        shell::quote(context.root_password_hash())
    );
    for key in context.ssh_authorized_keys() {
        let _ = writeln!(text, "sshkey --username=root {}", shell::quote(key));
    }
    text.push_str(
        "firewall --enabled --ssh\n\
         selinux --enforcing\n\
         firstboot --disable\n\
         zerombr\n\
         clearpart --all --initlabel\n\
         autopart --type=lvm\n\
         bootloader --location=mbr\n\
         reboot\n\
         \n\
         %packages\n\
         @^minimal-environment\n\
         curl\n\
         %end\n\
         \n\
         %post --erroronfail\n",
    );
    let _ = writeln!(
        text,
        "curl --fail --silent --show-error --retry 5 --max-time 30 --data-urlencode instance_id={} --data-urlencode hostname={} {}",
        shell::quote(context.instance_id()),
        shell::quote(&context.fqdn()),
        shell::quote(context.callback_url().as_str()),
    );
    text.push_str("%end\n");
    text
}
