//! Which boot file a client gets, from what it sends.
//!
//! The same machine sends DHCP three times during a provisioning boot: from
//! its PXE firmware, from the iPXE binary that firmware loaded, and from the
//! installed or test OS. Each needs a different reply. Handing iPXE the iPXE
//! binary again would loop, so iPXE is recognised first.

use dhcproto::v4::{DhcpOption, DhcpOptions, OptionCode};

use super::config::BootFiles;
use crate::MacAddr;

/// Option 175, the iPXE encapsulated options, which only iPXE sends.
pub(crate) const IPXE_ENCAPSULATED: u8 = 175;

/// Sub-option 176 of option 175, iPXE's `no-pxedhcp` setting. Set to 1, it
/// makes iPXE accept the first offer instead of waiting for a ProxyDHCP offer
/// (about 3 s with iPXE 1.0.0+git-20190125, as Debian 12 ships it).
pub(crate) const IPXE_NO_PXEDHCP: u8 = 176;

/// Kind of boot client, from its DHCP options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BootClient {
    /// iPXE is running: user class (option 77) contains `iPXE`, or option 175
    /// is present.
    Ipxe,
    /// PXE firmware: vendor class (option 60) starts with `PXEClient`.
    /// `arch` is option 93, `None` when absent.
    Pxe { arch: Option<u16> },
    /// Anything else, such as the booted OS's DHCP client.
    Plain,
}

/// The boot fields of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BootReply {
    /// Address only: no `siaddr`, no `file`.
    None,
    /// An iPXE binary fetched over TFTP from `siaddr`.
    Tftp { file: String },
    /// The machine's iPXE script URL, plus option 175.176 = 1.
    IpxeScript { url: String },
}

/// Classifies the client from its options.
pub(crate) fn classify(options: &DhcpOptions) -> BootClient {
    // iPXE does not encode option 77 as RFC 3004 length-prefixed classes; it
    // sends the bare string, so a substring match covers both encodings.
    let ipxe_user_class = matches!(
        options.get(OptionCode::UserClass),
        Some(DhcpOption::UserClass(class)) if class.windows(4).any(|window| window == b"iPXE")
    );
    if ipxe_user_class || options.contains(OptionCode::Unknown(IPXE_ENCAPSULATED)) {
        return BootClient::Ipxe;
    }

    let pxe_firmware = matches!(
        options.get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(b"PXEClient")
    );
    if !pxe_firmware {
        return BootClient::Plain;
    }

    let arch = match options.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(arch)) => Some(arch.0),
        _ => None,
    };
    BootClient::Pxe { arch }
}

/// Picks the boot file for `client`.
///
/// PXE firmware without option 93 is treated as BIOS: the option became
/// mandatory with UEFI (RFC 4578), and old BIOS PXE ROMs omit it.
pub(crate) fn decide(client: BootClient, files: &BootFiles, mac: &MacAddr) -> BootReply {
    match client {
        BootClient::Ipxe => BootReply::IpxeScript {
            url: files.script_url(mac),
        },
        BootClient::Pxe {
            arch: None | Some(0),
        } => BootReply::Tftp {
            file: files.bios.clone(),
        },
        BootClient::Pxe { arch: Some(7 | 9) } => BootReply::Tftp {
            file: files.uefi_x64.clone(),
        },
        BootClient::Pxe { arch: Some(arch) } => {
            tracing::warn!(
                %mac,
                arch,
                "no boot file for this client architecture; sending an address only"
            );
            BootReply::None
        }
        BootClient::Plain => BootReply::None,
    }
}

#[cfg(test)]
mod tests {
    use dhcproto::v4::{Architecture, UnknownOption};

    use super::*;
    use crate::dhcp::config::tests::sample_config;

    fn options(list: Vec<DhcpOption>) -> DhcpOptions {
        list.into_iter().collect()
    }

    fn pxe(arch: u16) -> DhcpOptions {
        options(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003000".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(arch)),
        ])
    }

    #[test]
    fn ipxe_user_class_is_ipxe() {
        let options = options(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ]);

        assert_eq!(classify(&options), BootClient::Ipxe);
    }

    #[test]
    fn rfc3004_encoded_user_class_is_ipxe() {
        let options = options(vec![DhcpOption::UserClass(b"\x04iPXE".to_vec())]);

        assert_eq!(classify(&options), BootClient::Ipxe);
    }

    #[test]
    fn option_175_alone_is_ipxe() {
        let encapsulated = UnknownOption::new(OptionCode::Unknown(175), vec![177, 1, 1]);
        let options = options(vec![DhcpOption::Unknown(encapsulated)]);

        assert_eq!(classify(&options), BootClient::Ipxe);
    }

    #[test]
    fn pxe_vendor_class_is_pxe_with_arch() {
        assert_eq!(classify(&pxe(7)), BootClient::Pxe { arch: Some(7) });
    }

    #[test]
    fn udhcpc_is_plain() {
        let options = options(vec![DhcpOption::ClassIdentifier(b"udhcp 1.35.0".to_vec())]);

        assert_eq!(classify(&options), BootClient::Plain);
    }

    #[test]
    fn http_client_vendor_class_is_plain() {
        let options = options(vec![DhcpOption::ClassIdentifier(
            b"HTTPClient:Arch:00016:UNDI:003000".to_vec(),
        )]);

        assert_eq!(classify(&options), BootClient::Plain);
    }

    #[test]
    fn arch_picks_boot_file() {
        let files = sample_config().boot;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let cases = [
            (
                None,
                BootReply::Tftp {
                    file: "undionly.kpxe".to_string(),
                },
            ),
            (
                Some(0),
                BootReply::Tftp {
                    file: "undionly.kpxe".to_string(),
                },
            ),
            (
                Some(7),
                BootReply::Tftp {
                    file: "snponly.efi".to_string(),
                },
            ),
            (
                Some(9),
                BootReply::Tftp {
                    file: "snponly.efi".to_string(),
                },
            ),
            (Some(11), BootReply::None),
            (Some(16), BootReply::None),
        ];

        for (arch, expected) in cases {
            assert_eq!(
                decide(BootClient::Pxe { arch }, &files, &mac),
                expected,
                "arch {arch:?}"
            );
        }
    }
}
