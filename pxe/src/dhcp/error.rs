//! Errors of the DHCP server and its lease store.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::config::DhcpConfigError;
use crate::MacAddr;

/// Errors from the DHCP server, its configuration and its lease file.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("invalid DHCP configuration")]
    InvalidConfig(#[from] DhcpConfigError),

    #[error("failed to read lease file {}", path.display())]
    LeaseFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to parse lease file {}; fix or remove it", path.display())]
    LeaseFileParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid lease file {}: {reason}; fix or remove it", path.display())]
    LeaseFileInvalid { path: PathBuf, reason: String },

    #[error("failed to write lease file {}", path.display())]
    LeaseFileWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot reserve {ip} for {mac}: {holder} holds it")]
    ReservationConflict {
        mac: MacAddr,
        ip: Ipv4Addr,
        holder: MacAddr,
    },

    #[error("failed to set up the DHCP socket")]
    Socket(#[source] io::Error),

    #[error("receiving on the DHCP socket failed {count} times in a row")]
    Receive {
        count: u32,
        #[source]
        source: io::Error,
    },
}
