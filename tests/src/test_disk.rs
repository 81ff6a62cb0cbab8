//! A small bootable disk image for image-write installs. Its BIOS boot
//! sector prints a marker line on the first serial port and halts, and
//! filler bytes follow. A test then sees in the serial log that a machine
//! booted this very image from its disk.

/// The boot sector's code, loaded by the BIOS at 0x7C00 (16-bit real mode):
///
/// ```text
/// cli; cld; xor ax,ax; mov ds,ax; mov si,0x7C17; mov dx,0x3F8
/// next: lodsb; test al,al; jz done; out dx,al; jmp next
/// done: hlt; jmp done
/// ```
///
/// The marker text follows at offset 23 (0x7C17), ended by a zero byte.
/// Writing straight to the UART's data register is enough for QEMU's
/// emulated 16550, which needs no setup to print.
const BOOT_CODE: [u8; 23] = [
    0xFA, 0xFC, 0x31, 0xC0, 0x8E, 0xD8, 0xBE, 0x17, 0x7C, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74,
    0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD,
];

/// Where the partition table would start; the code and text end before it.
const PARTITION_TABLE_OFFSET: usize = 446;

/// Returns the line the boot sector prints for `marker`.
pub fn boot_line(marker: &str) -> String {
    format!("RACKHAND-TEST-DISK: booted {marker}")
}

/// Builds a disk image of `size` bytes (at least 512) whose boot sector
/// prints [`boot_line`] of `marker` on COM1. The rest is pseudo-random, so
/// a write that drops or repeats a block changes the image's sha256.
///
/// # Panics
///
/// When `size` is below 512 or the marker does not fit the boot sector.
pub fn bootable_image(marker: &str, size: usize) -> Vec<u8> {
    assert!(size >= 512, "a disk image holds at least its boot sector");
    let text = format!("\r\n{}\r\n", boot_line(marker));
    assert!(
        BOOT_CODE.len() + text.len() < PARTITION_TABLE_OFFSET,
        "marker {marker:?} is too long for the boot sector"
    );
    let mut image = Vec::with_capacity(size);
    image.extend_from_slice(&BOOT_CODE);
    image.extend_from_slice(text.as_bytes());
    image.push(0);
    image.resize(510, 0);
    image.extend_from_slice(&[0x55, 0xAA]);
    let mut state: u32 = 0x9E37_79B9;
    while image.len() < size {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image.push(state as u8);
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_has_signature_and_marker() {
        let image = bootable_image("abc123", 4096);

        assert_eq!(image.len(), 4096);
        assert_eq!(&image[510..512], &[0x55, 0xAA]);
        let text = String::from_utf8_lossy(&image[23..PARTITION_TABLE_OFFSET]);
        assert!(
            text.starts_with("\r\nRACKHAND-TEST-DISK: booted abc123\r\n\0"),
            "{text:?}"
        );
    }

    #[test]
    fn message_address_matches_code() {
        // `mov si, imm16` is encoded as BE lo hi at offset 6, and the text
        // starts at offset 23.
        let address = u16::from_le_bytes([BOOT_CODE[7], BOOT_CODE[8]]);
        assert_eq!(usize::from(address), 0x7C00 + BOOT_CODE.len());
    }

    #[test]
    #[should_panic(expected = "too long")]
    fn marker_too_long_panics() {
        bootable_image(&"x".repeat(500), 4096);
    }
}
