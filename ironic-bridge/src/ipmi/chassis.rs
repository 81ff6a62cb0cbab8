//! Chassis commands: Get Chassis Status, Chassis Control, and the boot flags
//! (System Boot Options parameter 5).

use super::session::{Session, net_fn};
use crate::driver::{BootMode, BootOverride, BootPersistence, BootTarget, DriverError};

/// Chassis Control actions (table 28-4 of the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    PowerDown = 0x00,
    PowerUp = 0x01,
    PowerCycle = 0x02,
    HardReset = 0x03,
    /// Emulates a fatal overtemperature, so the OS shuts down (ACPI).
    SoftShutdown = 0x05,
}

/// Reads the power state bit of Get Chassis Status.
pub async fn power_is_on(session: &mut Session) -> Result<bool, DriverError> {
    const COMMAND: &str = "Get Chassis Status";
    let data = session.request(net_fn::CHASSIS, 0x01, &[], COMMAND).await?;
    match data.first() {
        Some(state) => Ok(state & 0x01 != 0),
        None => Err(session.target.invalid(COMMAND, "empty response data")),
    }
}

/// Sends Chassis Control.
pub async fn control(session: &mut Session, action: ChassisControl) -> Result<(), DriverError> {
    let name = format!("Chassis Control {action:?}");
    session
        .request(net_fn::CHASSIS, 0x02, &[action as u8], &name)
        .await
        .map(|_| ())
}

/// The five data bytes of boot flags parameter 5, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    pub valid: bool,
    pub persistent: bool,
    pub efi: bool,
    /// The boot device selector (bits 5:2 of byte 2).
    pub device: u8,
}

impl BootFlags {
    /// Decodes the response data of Get System Boot Options for parameter 5:
    /// version, parameter byte, then five data bytes.
    pub fn decode(data: &[u8]) -> Result<BootFlags, String> {
        if data.len() < 7 {
            return Err(format!("boot flags of {} bytes, expected 7", data.len()));
        }
        if data[1] & 0x7F != 5 {
            return Err(format!("parameter {} instead of 5", data[1] & 0x7F));
        }
        Ok(BootFlags {
            valid: data[2] & 0x80 != 0,
            persistent: data[2] & 0x40 != 0,
            efi: data[2] & 0x20 != 0,
            device: (data[3] >> 2) & 0x0F,
        })
    }

    /// Encodes the five data bytes for Set System Boot Options.
    pub fn encode(self) -> [u8; 5] {
        let mut byte1 = 0u8;
        if self.valid {
            byte1 |= 0x80;
        }
        if self.persistent {
            byte1 |= 0x40;
        }
        if self.efi {
            byte1 |= 0x20;
        }
        [byte1, self.device << 2, 0, 0, 0]
    }

    /// Returns the flags that make `boot` the override, keeping the current
    /// EFI bit when `boot.mode` is `None`. `None` for targets IPMI cannot
    /// select.
    pub fn for_override(boot: BootOverride, current: BootFlags) -> Option<BootFlags> {
        let device = match boot.target {
            BootTarget::Pxe => 0x1,
            BootTarget::Disk => 0x2,
            BootTarget::Cd => 0x5,
            BootTarget::BiosSetup => 0x6,
            BootTarget::UefiHttp => return None,
        };
        let efi = match boot.mode {
            Some(BootMode::Uefi) => true,
            Some(BootMode::Legacy) => false,
            None => current.efi,
        };
        Some(BootFlags {
            valid: true,
            persistent: boot.persistence == BootPersistence::Continuous,
            efi,
            device,
        })
    }
}

/// Reads boot flags parameter 5.
pub async fn boot_flags(session: &mut Session) -> Result<BootFlags, DriverError> {
    const COMMAND: &str = "Get System Boot Options (boot flags)";
    let data = session
        .request(net_fn::CHASSIS, 0x09, &[0x05, 0x00, 0x00], COMMAND)
        .await?;
    BootFlags::decode(&data).map_err(|problem| session.target.invalid(COMMAND, problem))
}

/// Writes boot flags parameter 5.
pub async fn set_boot_flags(session: &mut Session, flags: BootFlags) -> Result<(), DriverError> {
    let mut data = vec![0x05];
    data.extend_from_slice(&flags.encode());
    session
        .request(
            net_fn::CHASSIS,
            0x08,
            &data,
            "Set System Boot Options (boot flags)",
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::BootFlags;
    use crate::driver::{BootMode, BootOverride, BootPersistence, BootTarget};

    #[test]
    fn boot_flags_round_trip() {
        let flags = BootFlags {
            valid: true,
            persistent: true,
            efi: true,
            device: 0x5,
        };
        let mut data = vec![0x01, 0x05];
        data.extend_from_slice(&flags.encode());
        assert_eq!(BootFlags::decode(&data), Ok(flags));
    }

    #[test]
    fn short_boot_flags_are_rejected() {
        assert!(BootFlags::decode(&[0x01, 0x05, 0x80]).is_err());
    }

    #[test]
    fn pxe_once_in_uefi_sets_bits() {
        let current = BootFlags {
            valid: false,
            persistent: false,
            efi: false,
            device: 0,
        };
        let boot = BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: Some(BootMode::Uefi),
        };
        let flags = BootFlags::for_override(boot, current).expect("PXE is selectable");
        assert_eq!(flags.encode(), [0xA0, 0x04, 0, 0, 0]);
    }

    #[test]
    fn no_mode_keeps_current_efi_bit() {
        let current = BootFlags {
            valid: true,
            persistent: false,
            efi: true,
            device: 0x2,
        };
        let flags = BootFlags::for_override(BootOverride::once(BootTarget::Disk), current)
            .expect("disk is selectable");
        assert!(flags.efi);
        assert_eq!(flags, current);
    }

    #[test]
    fn uefi_http_has_no_ipmi_device() {
        let current = BootFlags {
            valid: false,
            persistent: false,
            efi: false,
            device: 0,
        };
        assert_eq!(
            BootFlags::for_override(BootOverride::once(BootTarget::UefiHttp), current),
            None
        );
    }
}
