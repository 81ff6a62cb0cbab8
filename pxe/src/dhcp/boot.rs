//! Which boot file a client gets, from what it sends.
//!
//! The same machine sends DHCP three times during a provisioning boot: from
//! its PXE firmware, from the iPXE binary that firmware loaded, and from the
//! installed or test OS. Each needs a different reply. Handing iPXE the iPXE
//! binary again would loop, so iPXE is recognised first.

use dhcproto::v4::{DhcpOption, DhcpOptions, OptionCode};

use super::config::{BootFiles, DhcpConfigError, validate_boot_file, validate_http_url};
use crate::MacAddr;

/// Option 175, the iPXE encapsulated options, which only iPXE sends.
pub(crate) const IPXE_ENCAPSULATED: u8 = 175;

/// Sub-option 176 of option 175, iPXE's `no-pxedhcp` setting. Set to 1, it
/// makes iPXE accept the first offer instead of waiting for a ProxyDHCP offer
/// (about 3 s with iPXE 1.0.0+git-20190125, as Debian 12 ships it).
pub(crate) const IPXE_NO_PXEDHCP: u8 = 176;

/// Option 93 client architectures (RFC 4578 and the IANA "Processor
/// Architecture Types" registry) that have a boot file.
mod arch {
    pub(super) const BIOS: u16 = 0;
    pub(super) const X64_UEFI: u16 = 7;
    /// EFI byte code. Early x64 UEFI firmware sent 9 where it meant 7.
    pub(super) const EBC: u16 = 9;
    pub(super) const ARM64_UEFI: u16 = 11;
    pub(super) const X86_UEFI_HTTP: u16 = 15;
    pub(super) const X64_UEFI_HTTP: u16 = 16;
    pub(super) const ARM64_UEFI_HTTP: u16 = 19;
}

/// Vendor class (option 60) prefix of PXE firmware.
pub(crate) const PXE_CLIENT: &[u8] = b"PXEClient";
/// Vendor class (option 60) prefix of UEFI HTTP boot firmware. The reply must
/// carry the bare `HTTPClient` back, or EDK2 ignores it.
pub(crate) const HTTP_CLIENT: &[u8] = b"HTTPClient";

/// Kind of boot client, from its DHCP options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BootClient {
    /// iPXE is running: user class (option 77) contains `iPXE`, or option 175
    /// is present.
    Ipxe,
    /// PXE firmware: vendor class (option 60) starts with `PXEClient`.
    /// `arch` is option 93, `None` when absent.
    Pxe { arch: Option<u16> },
    /// UEFI HTTP boot firmware: vendor class starts with `HTTPClient`.
    Http { arch: Option<u16> },
    /// Anything else, such as the booted OS's DHCP client.
    Plain,
}

impl BootClient {
    /// Returns whether the client is netbooting firmware or iPXE, the clients
    /// a proxyDHCP server replies to.
    pub(crate) fn is_netboot(self) -> bool {
        !matches!(self, BootClient::Plain)
    }
}

/// The boot fields of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BootReply {
    /// Address only: no `siaddr`, no `file`.
    None,
    /// An iPXE binary fetched over TFTP from `siaddr`.
    Tftp { file: String },
    /// A boot file URL for UEFI HTTP boot, sent with option 60 `HTTPClient`.
    Http { url: String },
    /// The machine's iPXE script URL, plus option 175.176 = 1.
    IpxeScript { url: String },
}

/// Boot files for one machine that replace the site-wide choice.
///
/// Each field applies to one boot stage; a `None` field leaves that stage to
/// [`BootFiles`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootOverride {
    /// File fetched over TFTP by PXE firmware, whatever its architecture.
    pub tftp_file: Option<String>,
    /// `http://` URL for UEFI HTTP boot firmware, whatever its architecture.
    pub http_url: Option<String>,
    /// Script URL for iPXE, sent as is (no `{mac}` substitution).
    pub ipxe_script_url: Option<String>,
}

impl BootOverride {
    /// Checks that every set field fits the BOOTP `file` field.
    pub fn validate(&self) -> Result<(), DhcpConfigError> {
        if let Some(file) = &self.tftp_file {
            validate_boot_file("override.tftp_file", file)?;
        }
        if let Some(url) = &self.http_url {
            validate_http_url("override.http_url", url)?;
        }
        if let Some(url) = &self.ipxe_script_url {
            validate_boot_file("override.ipxe_script_url", url)?;
        }
        Ok(())
    }
}

/// A netbooting client whose architecture has no boot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoBootFile {
    pub(crate) client: BootClient,
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

    let arch = match options.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(arch)) => Some(arch.0),
        _ => None,
    };
    match options.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(PXE_CLIENT) => {
            BootClient::Pxe { arch }
        }
        Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(HTTP_CLIENT) => {
            BootClient::Http { arch }
        }
        _ => BootClient::Plain,
    }
}

/// Picks the boot file for `client`. A field of `node` wins over `files`.
///
/// PXE firmware without option 93 is treated as BIOS: the option became
/// mandatory with UEFI (RFC 4578), and old BIOS PXE ROMs omit it. HTTP boot
/// firmware always sends it.
pub(crate) fn decide(
    client: BootClient,
    files: &BootFiles,
    node: Option<&BootOverride>,
    mac: &MacAddr,
) -> Result<BootReply, NoBootFile> {
    let node = node.cloned().unwrap_or_default();
    let reply = match client {
        BootClient::Plain => Some(BootReply::None),
        BootClient::Ipxe => Some(BootReply::IpxeScript {
            url: node
                .ipxe_script_url
                .unwrap_or_else(|| files.script_url(mac)),
        }),
        BootClient::Pxe { arch } => node
            .tftp_file
            .or_else(|| pxe_file(files, arch))
            .map(|file| BootReply::Tftp { file }),
        BootClient::Http { arch } => node
            .http_url
            .or_else(|| http_url(files, arch))
            .map(|url| BootReply::Http { url }),
    };
    reply.ok_or(NoBootFile { client })
}

fn pxe_file(files: &BootFiles, arch: Option<u16>) -> Option<String> {
    match arch {
        None | Some(arch::BIOS) => Some(files.bios.clone()),
        Some(arch::X64_UEFI | arch::EBC) => Some(files.uefi_x64.clone()),
        Some(arch::ARM64_UEFI) => files.uefi_arm64.clone(),
        Some(_) => None,
    }
}

fn http_url(files: &BootFiles, arch: Option<u16>) -> Option<String> {
    match arch? {
        arch::X86_UEFI_HTTP => files.http_ia32.clone(),
        arch::X64_UEFI_HTTP => files.http_x64.clone(),
        arch::ARM64_UEFI_HTTP => files.http_arm64.clone(),
        _ => None,
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
    fn http_client_vendor_class_is_http() {
        let options = options(vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003000".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture(16)),
        ]);

        assert_eq!(classify(&options), BootClient::Http { arch: Some(16) });
    }

    #[test]
    fn http_arch_picks_url() {
        let files = sample_config().boot;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let cases = [
            (Some(16), Ok("http://10.98.0.1:8080/ipxe.efi")),
            (Some(19), Ok("http://10.98.0.1:8080/ipxe-arm64.efi")),
            (Some(15), Err(())),
            (Some(7), Err(())),
            (None, Err(())),
        ];

        for (arch, expected) in cases {
            let decided = decide(BootClient::Http { arch }, &files, None, &mac);
            let url = match decided {
                Ok(BootReply::Http { url }) => Ok(url),
                _ => Err(()),
            };
            assert_eq!(url.as_deref().map_err(|_| ()), expected, "arch {arch:?}");
        }
    }

    #[test]
    fn node_override_wins_for_each_stage() {
        let files = sample_config().boot;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let node = BootOverride {
            tftp_file: Some("custom.kpxe".to_string()),
            http_url: Some("http://10.98.0.1/custom.efi".to_string()),
            ipxe_script_url: Some("http://10.98.0.1/custom.ipxe".to_string()),
        };

        let pxe = decide(BootClient::Pxe { arch: Some(0) }, &files, Some(&node), &mac);
        let unknown_arch = decide(
            BootClient::Pxe { arch: Some(99) },
            &files,
            Some(&node),
            &mac,
        );
        let http = decide(
            BootClient::Http { arch: Some(16) },
            &files,
            Some(&node),
            &mac,
        );
        let ipxe = decide(BootClient::Ipxe, &files, Some(&node), &mac);

        let custom_tftp = BootReply::Tftp {
            file: "custom.kpxe".to_string(),
        };
        assert_eq!(pxe, Ok(custom_tftp.clone()));
        assert_eq!(unknown_arch, Ok(custom_tftp));
        assert_eq!(
            http,
            Ok(BootReply::Http {
                url: "http://10.98.0.1/custom.efi".to_string()
            })
        );
        assert_eq!(
            ipxe,
            Ok(BootReply::IpxeScript {
                url: "http://10.98.0.1/custom.ipxe".to_string()
            })
        );
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
            (
                Some(11),
                BootReply::Tftp {
                    file: "snponly-arm64.efi".to_string(),
                },
            ),
        ];

        for (arch, expected) in cases {
            assert_eq!(
                decide(BootClient::Pxe { arch }, &files, None, &mac),
                Ok(expected),
                "arch {arch:?}"
            );
        }
        for arch in [6, 10, 16, 0x1234] {
            let client = BootClient::Pxe { arch: Some(arch) };
            assert_eq!(
                decide(client, &files, None, &mac),
                Err(NoBootFile { client }),
                "arch {arch}"
            );
        }
    }
}
