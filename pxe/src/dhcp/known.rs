//! The set of MACs the DHCP server replies to: the site's machines.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use super::boot::BootOverride;
use super::config::DhcpConfigError;
use crate::MacAddr;

/// MACs of the site's machines, shared between the DHCP server and the site
/// agent, which refreshes it from the control plane.
///
/// Cheap to clone. All clones share one set, so a [`KnownMacs::replace`] on
/// one clone is seen by the server at its next packet.
#[derive(Clone, Debug, Default)]
pub struct KnownMacs {
    inner: Arc<RwLock<HashSet<MacAddr>>>,
    /// Per-machine boot files. Kept apart from the set, so
    /// [`KnownMacs::replace`] leaves them in place.
    overrides: Arc<RwLock<HashMap<MacAddr, BootOverride>>>,
}

impl KnownMacs {
    /// Creates an empty set. The DHCP server sends no replies until it is
    /// filled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole set under one write lock, so the server never reads
    /// a half-updated set.
    pub fn replace(&self, macs: impl IntoIterator<Item = MacAddr>) {
        let fresh: HashSet<MacAddr> = macs.into_iter().collect();
        // A panic while the lock was held cannot leave a HashSet half
        // written, so a poisoned lock is still safe to use.
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// Adds one MAC. Returns whether it was new.
    pub fn insert(&self, mac: MacAddr) -> bool {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mac)
    }

    /// Removes one MAC. Returns whether it was present.
    pub fn remove(&self, mac: &MacAddr) -> bool {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(mac)
    }

    /// Returns whether the server replies to `mac`.
    pub fn contains(&self, mac: &MacAddr) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(mac)
    }

    /// Returns the number of MACs in the set.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Returns whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the boot files of `mac` that win over the site-wide ones, or
    /// clears them with `None`. Fails, changing nothing, when a file name or
    /// URL does not fit the BOOTP `file` field.
    pub fn set_boot_override(
        &self,
        mac: MacAddr,
        boot: Option<BootOverride>,
    ) -> Result<(), DhcpConfigError> {
        let mut overrides = self
            .overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match boot {
            Some(boot) => {
                boot.validate()?;
                overrides.insert(mac, boot);
            }
            None => {
                overrides.remove(&mac);
            }
        }
        Ok(())
    }

    /// Returns the boot override of `mac`, if one is set.
    pub fn boot_override(&self, mac: &MacAddr) -> Option<BootOverride> {
        self.overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(mac)
            .cloned()
    }
}

impl FromIterator<MacAddr> for KnownMacs {
    fn from_iter<I: IntoIterator<Item = MacAddr>>(macs: I) -> Self {
        let known = Self::new();
        known.replace(macs);
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, last])
    }

    #[test]
    fn replace_is_seen_by_clones() {
        let known = KnownMacs::new();
        let clone = known.clone();

        known.replace([mac(1), mac(2)]);

        assert!(clone.contains(&mac(1)));
        assert!(clone.contains(&mac(2)));
        assert_eq!(clone.len(), 2);
    }

    #[test]
    fn replace_drops_missing_macs() {
        let known: KnownMacs = [mac(1), mac(2)].into_iter().collect();

        known.replace([mac(2)]);

        assert!(!known.contains(&mac(1)));
        assert!(known.contains(&mac(2)));
    }

    #[test]
    fn boot_override_survives_replace() {
        let known = KnownMacs::new();
        let boot = BootOverride {
            tftp_file: Some("custom.kpxe".to_string()),
            ..BootOverride::default()
        };
        known
            .set_boot_override(mac(1), Some(boot.clone()))
            .expect("valid override");

        known.replace([mac(1)]);

        assert_eq!(known.boot_override(&mac(1)), Some(boot));
    }

    #[test]
    fn invalid_boot_override_is_rejected() {
        let known = KnownMacs::new();
        let boot = BootOverride {
            http_url: Some("tftp://10.0.0.1/x.efi".to_string()),
            ..BootOverride::default()
        };

        let result = known.set_boot_override(mac(1), Some(boot));

        assert!(result.is_err());
        assert_eq!(known.boot_override(&mac(1)), None);
    }

    #[test]
    fn insert_and_remove_report_change() {
        let known = KnownMacs::new();

        assert!(known.insert(mac(1)));
        assert!(!known.insert(mac(1)));
        assert!(known.remove(&mac(1)));
        assert!(!known.remove(&mac(1)));
        assert!(known.is_empty());
    }
}
