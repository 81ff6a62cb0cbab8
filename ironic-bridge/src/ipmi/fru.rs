//! A small inventory from Get Device ID and FRU device 0 (the board and
//! product areas of the Platform Management FRU Information Storage
//! Definition 1.0).
//!
//! IPMI has no standard command for the host's CPUs, memory, disks or NIC
//! MACs; those fields stay empty.

use rackhand_protocol::hardware::{Firmware, Inventory};

use super::session::{Session, net_fn};
use crate::driver::DriverError;

/// Bytes per Read FRU Data call; small enough for every BMC's buffer.
const READ_CHUNK: u16 = 16;
/// Largest FRU image read (the field is 16 bits, real ones are < 2 KiB).
const MAX_FRU_BYTES: u16 = 4096;

/// Fields of the board and product areas.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FruInfo {
    pub board_manufacturer: Option<String>,
    pub board_product: Option<String>,
    pub board_serial: Option<String>,
    pub product_manufacturer: Option<String>,
    pub product_name: Option<String>,
    pub product_model: Option<String>,
    pub product_serial: Option<String>,
}

/// Decodes one type/length field at `at`; returns the text and the offset
/// after it, or `None` at the end marker 0xC1 or past the data.
fn field(data: &[u8], at: usize) -> Option<(Option<String>, usize)> {
    let type_length = *data.get(at)?;
    if type_length == 0xC1 {
        return None;
    }
    let length = usize::from(type_length & 0x3F);
    let bytes = data.get(at + 1..at + 1 + length)?;
    let text = match type_length >> 6 {
        // 8-bit ASCII + Latin-1.
        0b11 => Some(bytes.iter().map(|b| char::from(*b)).collect::<String>()),
        // 6-bit packed ASCII: four characters in three bytes, LSB first.
        0b10 => {
            let mut text = String::new();
            for chunk in bytes.chunks(3) {
                let mut bits = 0u32;
                for (i, byte) in chunk.iter().enumerate() {
                    bits |= u32::from(*byte) << (8 * i);
                }
                for i in 0..(chunk.len() * 8 / 6) {
                    text.push(char::from(0x20 + ((bits >> (6 * i)) & 0x3F) as u8));
                }
            }
            Some(text)
        }
        // Binary and BCD plus are not names.
        _ => None,
    };
    let text = text
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty());
    Some((text, at + 1 + length))
}

/// Reads `count` fields starting at `at`.
fn fields(data: &[u8], mut at: usize, count: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for _ in 0..count {
        match field(data, at) {
            Some((text, next)) => {
                out.push(text);
                at = next;
            }
            None => break,
        }
    }
    out.resize(count, None);
    out
}

impl FruInfo {
    /// Parses a FRU image. Areas whose offset points past the data are
    /// left empty.
    pub fn parse(data: &[u8]) -> Result<FruInfo, String> {
        if data.len() < 8 {
            return Err(format!(
                "FRU image of {} bytes has no common header",
                data.len()
            ));
        }
        if data[0] & 0x0F != 0x01 {
            return Err(format!("FRU format version {:#04x} is not 1", data[0]));
        }
        if data[..8].iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) != 0 {
            return Err("FRU common header checksum is wrong".to_string());
        }

        let mut info = FruInfo::default();
        let board = usize::from(data[3]) * 8;
        if board != 0 && board < data.len() {
            // Version, length, language, 3 bytes of manufacturing date.
            let values = fields(data, board + 6, 3);
            info.board_manufacturer = values[0].clone();
            info.board_product = values[1].clone();
            info.board_serial = values[2].clone();
        }
        let product = usize::from(data[4]) * 8;
        if product != 0 && product < data.len() {
            // Version, length, language.
            let values = fields(data, product + 3, 5);
            info.product_manufacturer = values[0].clone();
            info.product_name = values[1].clone();
            info.product_model = values[2].clone();
            info.product_serial = values[4].clone();
        }
        Ok(info)
    }
}

/// Reads Get Device ID and FRU device 0 into an inventory.
pub async fn read_inventory(session: &mut Session) -> Result<Inventory, DriverError> {
    const DEVICE_ID: &str = "Get Device ID";
    let device = session.request(net_fn::APP, 0x01, &[], DEVICE_ID).await?;
    if device.len() < 11 {
        let problem = format!("response data of {} bytes, expected 11", device.len());
        return Err(session.target.invalid(DEVICE_ID, problem));
    }
    // Major revision in binary, minor in BCD.
    let firmware = Firmware {
        name: "BMC".to_string(),
        version: format!("{}.{:02x}", device[2] & 0x7F, device[3]),
    };

    let fru = match read_fru(session).await {
        Ok(fru) => fru,
        // No FRU device 0: the inventory has only the firmware.
        Err(DriverError::IpmiCommand {
            code: 0xCB | 0xC1 | 0xC9,
            ..
        }) => FruInfo::default(),
        Err(error) => return Err(error),
    };

    Ok(Inventory {
        manufacturer: fru.product_manufacturer.or(fru.board_manufacturer),
        model: fru.product_name.or(fru.board_product),
        serial_number: fru.product_serial.or(fru.board_serial),
        // NOTE: Get System GUID's byte order differs between BMCs, so the
        // SMBIOS UUID is not derived from it.
        uuid: None,
        firmware: vec![firmware],
        ..Inventory::default()
    })
}

async fn read_fru(session: &mut Session) -> Result<FruInfo, DriverError> {
    const INFO: &str = "Get FRU Inventory Area Info";
    const READ: &str = "Read FRU Data";
    let info = session.request(net_fn::STORAGE, 0x10, &[0], INFO).await?;
    if info.len() < 3 {
        return Err(session
            .target
            .invalid(INFO, "response shorter than 3 bytes"));
    }
    let size = u16::from_le_bytes([info[0], info[1]]).min(MAX_FRU_BYTES);

    let mut data = Vec::with_capacity(usize::from(size));
    while (data.len() as u16) < size {
        let offset = (data.len() as u16).to_le_bytes();
        let count = READ_CHUNK.min(size - data.len() as u16) as u8;
        let piece = session
            .request(
                net_fn::STORAGE,
                0x11,
                &[0, offset[0], offset[1], count],
                READ,
            )
            .await?;
        let returned = usize::from(*piece.first().unwrap_or(&0));
        if returned == 0 || piece.len() < 1 + returned {
            let problem = format!("no data at offset {}", data.len());
            return Err(session.target.invalid(READ, problem));
        }
        data.extend_from_slice(&piece[1..1 + returned]);
    }
    FruInfo::parse(&data).map_err(|problem| session.target.invalid(READ, problem))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{FruInfo, field};

    #[test]
    fn six_bit_ascii_decodes() {
        // "IPMI" packed: I=0x29, P=0x30, M=0x2D, I=0x29.
        let bits: u32 = 0x29 | (0x30 << 6) | (0x2D << 12) | (0x29 << 18);
        let data = [0x83, bits as u8, (bits >> 8) as u8, (bits >> 16) as u8];
        assert_eq!(field(&data, 0), Some((Some("IPMI".to_string()), 4)));
    }

    #[test]
    fn bad_header_checksum_is_rejected() {
        assert!(FruInfo::parse(&[1, 0, 0, 1, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FruInfo::parse(&data);
        }
    }
}
