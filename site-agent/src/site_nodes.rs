//! The site's nodes as the PXE services see them: the boot MACs the DHCP
//! server replies to and the node names the boot server uses.
//!
//! Two sources fill it: the node list fetched from the control plane every
//! few seconds, and the nodes of the tasks this agent receives. A task
//! names its node before the next fetch may have seen it, so adding the
//! task's node at once spares a new node's first DHCP request from being
//! ignored. A fetch replaces the listed nodes, but keeps the task nodes
//! added after the fetch was sent: its list may predate them.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use rackhand_protocol::MacAddr;
use rackhand_protocol::agent::SiteNode;
use rackhand_pxe::dhcp::{BootOverride, KnownMacs};

/// Names of the site's nodes by boot MAC, kept in step with the DHCP
/// server's [`KnownMacs`].
#[derive(Debug, Default)]
pub struct SiteNodes {
    known: KnownMacs,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// From the latest node list of the control plane.
    listed: HashMap<MacAddr, String>,
    /// From tasks, with the sequence number of their addition.
    from_tasks: HashMap<MacAddr, (String, u64)>,
    /// Incremented by each task node added.
    sequence: u64,
    /// Nodes whose netboot the Ironic conductor prepares: their iPXE script
    /// chains to the conductor's script instead of the agent's own.
    via_ironic: std::collections::HashSet<MacAddr>,
}

/// Marks when a fetch of the node list started; see [`SiteNodes::replace_listed`].
#[derive(Debug, Clone, Copy)]
pub struct FetchStarted(u64);

impl SiteNodes {
    /// Creates an empty node list that keeps `known` up to date.
    pub fn new(known: KnownMacs) -> SiteNodes {
        SiteNodes {
            known,
            inner: RwLock::new(Inner::default()),
        }
    }

    /// Returns the set of MACs the DHCP server replies to.
    pub fn known_macs(&self) -> &KnownMacs {
        &self.known
    }

    /// Returns the name of the node with boot MAC `mac`, if it belongs to
    /// the site.
    pub fn name_of(&self, mac: &MacAddr) -> Option<String> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .listed
            .get(mac)
            .or_else(|| inner.from_tasks.get(mac).map(|(name, _)| name))
            .cloned()
    }

    /// Adds the node of a task this agent received. Returns whether the MAC
    /// is new to the DHCP server.
    pub fn add_task_node(&self, mac: MacAddr, name: &str) -> bool {
        // Writing the known MACs under the same lock keeps them equal to
        // `listed` plus `from_tasks` when a fetch result is applied at once.
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.sequence += 1;
        let sequence = inner.sequence;
        inner.from_tasks.insert(mac, (name.to_string(), sequence));
        self.known.insert(mac)
    }

    /// Marks whether the node with boot MAC `mac` netboots what the Ironic
    /// conductor prepared. Set by the image step of such a node; the step
    /// sets it again when it resumes after a restart.
    pub fn set_via_ironic(&self, mac: MacAddr, via_ironic: bool) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if via_ironic {
            inner.via_ironic.insert(mac);
        } else {
            inner.via_ironic.remove(&mac);
        }
    }

    /// Returns whether the node with boot MAC `mac` netboots what the Ironic
    /// conductor prepared.
    pub fn via_ironic(&self, mac: &MacAddr) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.via_ironic.contains(mac)
    }

    /// Records that a fetch of the node list is about to be sent.
    pub fn fetch_started(&self) -> FetchStarted {
        FetchStarted(
            self.inner
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .sequence,
        )
    }

    /// Replaces the listed nodes with a fetched list. Task nodes added
    /// before the fetch started are dropped: the list is newer than them,
    /// so a node it leaves out was deleted.
    /// Each listed node's own boot files replace what the DHCP server held
    /// for its MAC; a node without them gets the site-wide files.
    pub fn replace_listed(&self, started: FetchStarted, nodes: Vec<SiteNode>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        for node in &nodes {
            let boot = node.boot.as_ref().map(|boot| BootOverride {
                tftp_file: boot.tftp_file.clone(),
                http_url: boot.http_url.clone(),
                ipxe_script_url: boot.ipxe_script_url.clone(),
            });
            if let Err(error) = self.known.set_boot_override(node.boot_mac, boot) {
                tracing::warn!(node = %node.name, mac = %node.boot_mac, error = %error, "the node's boot files are unusable; it gets the site's");
                let _ = self.known.set_boot_override(node.boot_mac, None);
            }
        }
        for mac in inner.listed.keys() {
            if !nodes.iter().any(|node| node.boot_mac == *mac) {
                let _ = self.known.set_boot_override(*mac, None);
            }
        }
        inner.listed = nodes
            .into_iter()
            .map(|node| (node.boot_mac, node.name))
            .collect();
        inner
            .from_tasks
            .retain(|_, (_, sequence)| *sequence > started.0);
        self.known
            .replace(inner.listed.keys().chain(inner.from_tasks.keys()).copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> MacAddr {
        text.parse().expect("a valid MAC")
    }

    fn node(name: &str, boot_mac: &str) -> SiteNode {
        SiteNode {
            node_id: 1,
            name: name.to_string(),
            boot_mac: mac(boot_mac),
            boot: None,
        }
    }

    #[test]
    fn task_node_is_known_at_once() {
        let nodes = SiteNodes::new(KnownMacs::new());
        let added = nodes.add_task_node(mac("52:54:00:00:30:01"), "n1");

        assert!(added);
        assert!(nodes.known_macs().contains(&mac("52:54:00:00:30:01")));
        assert_eq!(
            nodes.name_of(&mac("52:54:00:00:30:01")).as_deref(),
            Some("n1")
        );
    }

    #[test]
    fn fetch_sent_before_task_keeps_task_node() {
        let nodes = SiteNodes::new(KnownMacs::new());
        let started = nodes.fetch_started();
        nodes.add_task_node(mac("52:54:00:00:30:02"), "new");
        nodes.replace_listed(started, vec![node("old", "52:54:00:00:30:01")]);

        assert!(nodes.known_macs().contains(&mac("52:54:00:00:30:01")));
        assert!(nodes.known_macs().contains(&mac("52:54:00:00:30:02")));
        assert_eq!(
            nodes.name_of(&mac("52:54:00:00:30:02")).as_deref(),
            Some("new")
        );
    }

    #[test]
    fn fetch_sent_after_task_drops_deleted_node() {
        let nodes = SiteNodes::new(KnownMacs::new());
        nodes.add_task_node(mac("52:54:00:00:30:02"), "deleted");
        let started = nodes.fetch_started();
        nodes.replace_listed(started, vec![node("old", "52:54:00:00:30:01")]);

        assert!(!nodes.known_macs().contains(&mac("52:54:00:00:30:02")));
        assert_eq!(nodes.name_of(&mac("52:54:00:00:30:02")), None);
        assert_eq!(nodes.known_macs().len(), 1);
    }

    #[test]
    fn listed_boot_files_reach_dhcp_and_clear() {
        let nodes = SiteNodes::new(KnownMacs::new());
        let mut custom = node("n1", "52:54:00:00:30:09");
        custom.boot = Some(rackhand_protocol::agent::NodeBoot {
            tftp_file: Some("custom/ipxe.efi".into()),
            ..Default::default()
        });
        let started = nodes.fetch_started();
        nodes.replace_listed(started, vec![custom]);
        let boot = nodes.known_macs().boot_override(&mac("52:54:00:00:30:09"));
        assert_eq!(
            boot.and_then(|b| b.tftp_file).as_deref(),
            Some("custom/ipxe.efi")
        );

        let started = nodes.fetch_started();
        nodes.replace_listed(started, vec![node("n1", "52:54:00:00:30:09")]);
        assert!(
            nodes
                .known_macs()
                .boot_override(&mac("52:54:00:00:30:09"))
                .is_none()
        );
    }
}
