//! The IPMI 2.0 driver: power, boot device, sensors and Serial-over-LAN over
//! RMCP+ (`lanplus`).

mod crypto;
mod packet;

use crate::driver::{BmcDriver, BmcEndpoint, BootOverride, DriverError, DriverKind, PowerState};
use rackhand_protocol::MacAddr;

/// A driver for one node's IPMI 2.0 BMC.
#[derive(Debug)]
pub struct IpmiDriver {
    node: String,
}

impl IpmiDriver {
    /// Checks the endpoint. Sends nothing.
    pub fn new(endpoint: BmcEndpoint) -> Result<Self, DriverError> {
        Ok(IpmiDriver {
            node: endpoint.node,
        })
    }
}

// TODO: implement RMCP+ sessions and the chassis, boot and sensor commands.
impl BmcDriver for IpmiDriver {
    fn node(&self) -> &str {
        &self.node
    }

    fn kind(&self) -> DriverKind {
        DriverKind::Ipmi
    }

    async fn power_state(&self) -> Result<PowerState, DriverError> {
        Err(crate::driver::unsupported(self, "power state"))
    }

    async fn power_on(&self) -> Result<(), DriverError> {
        Err(crate::driver::unsupported(self, "power on"))
    }

    async fn power_off(&self, _force: bool) -> Result<(), DriverError> {
        Err(crate::driver::unsupported(self, "power off"))
    }

    async fn set_next_boot(&self, _boot: BootOverride) -> Result<(), DriverError> {
        Err(crate::driver::unsupported(self, "boot device"))
    }

    async fn boot_macs(&self) -> Result<Vec<MacAddr>, DriverError> {
        Err(crate::driver::unsupported(self, "listing MAC addresses"))
    }
}
