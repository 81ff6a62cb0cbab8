//! Feeds arbitrary bytes to the DHCP packet handler in full and proxyDHCP
//! mode; `check_packet` panics on a crash or a malformed reply.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    rackhand_pxe::dhcp::fuzzing::check_packet(bytes);
});
