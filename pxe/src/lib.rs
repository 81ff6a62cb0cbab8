//! Netboot services of a Rackhand site: a DHCPv4 server that replies only to
//! the site's known machines, a read-only TFTP server for the first-stage boot
//! loaders, and the iPXE scripts the site agent serves over HTTP.
//!
//! The crate has no opinion on where the services run. The site agent creates
//! their sockets through [`netns::SocketFactory`], which can open them inside
//! the provisioning interface's network namespace while the agent itself stays
//! in the host's namespace.
//!
//! The boot chain these pieces build, for a machine whose MAC the agent listed
//! in [`dhcp::KnownMacs`]:
//!
//! 1. The firmware's PXE client sends DHCPDISCOVER. The DHCP server offers an
//!    address plus `next-server` and the iPXE binary for the client's option 93
//!    architecture (`undionly.kpxe` for BIOS, `snponly.efi` for x64 UEFI).
//! 2. The firmware fetches that binary over TFTP and runs it.
//! 3. iPXE sends its own DHCPDISCOVER (user class `iPXE`). This time the boot
//!    file is the machine's script URL, which the agent serves over HTTP with
//!    [`ipxe::boot_script`], [`ipxe::retry_script`] or [`ipxe::exit_script`].

pub mod dhcp;
pub mod ipxe;
pub mod netns;
pub mod tftp;

pub use rackhand_protocol::MacAddr;

/// Formats `error` with its `source()` chain as "error: cause: cause", for
/// the one log line where an error is handled.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Error chains are a few links long; the bound only guards against a
    // cycle.
    for _ in 0..16 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
