//! The Ironic driver: drives a node through an OpenStack Ironic conductor
//! over the Ironic REST API.

use crate::driver::{BmcDriver, BmcEndpoint, BootOverride, DriverError, DriverKind, PowerState};
use rackhand_protocol::MacAddr;

/// A driver for a node enrolled in an OpenStack Ironic conductor.
#[derive(Debug)]
pub struct IronicDriver {
    node: String,
}

impl IronicDriver {
    /// Checks the endpoint. Sends nothing.
    pub fn new(endpoint: BmcEndpoint) -> Result<Self, DriverError> {
        Ok(IronicDriver {
            node: endpoint.node,
        })
    }
}

// TODO: implement the Ironic REST client (power, boot device, provisioning).
impl BmcDriver for IronicDriver {
    fn node(&self) -> &str {
        &self.node
    }

    fn kind(&self) -> DriverKind {
        DriverKind::Ironic
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
