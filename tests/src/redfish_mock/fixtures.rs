//! Loading the fixtures under `tests/fixtures/redfish/<vendor>/`.
//!
//! Each file is one JSON object mapping a resource path to the resource's
//! body, grouped by subsystem (`service.json`, `system.json`,
//! `manager.json`, `chassis.json`, `virtual-media.json`). The files are
//! compiled in, so tests need no working directory.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::Value;

use super::profile::{DellVirtualMedia, Vendor};

macro_rules! vendor_files {
    ($dir:literal) => {
        [
            (
                "service.json",
                include_str!(concat!("../../fixtures/redfish/", $dir, "/service.json")),
            ),
            (
                "system.json",
                include_str!(concat!("../../fixtures/redfish/", $dir, "/system.json")),
            ),
            (
                "manager.json",
                include_str!(concat!("../../fixtures/redfish/", $dir, "/manager.json")),
            ),
            (
                "chassis.json",
                include_str!(concat!("../../fixtures/redfish/", $dir, "/chassis.json")),
            ),
            (
                "virtual-media.json",
                include_str!(concat!(
                    "../../fixtures/redfish/",
                    $dir,
                    "/virtual-media.json"
                )),
            ),
        ]
    };
}

fn files(vendor: Vendor) -> [(&'static str, &'static str); 5] {
    match vendor {
        Vendor::Generic => vendor_files!("generic"),
        Vendor::Dell => vendor_files!("dell"),
        Vendor::Hpe => vendor_files!("hpe"),
        Vendor::Lenovo => vendor_files!("lenovo"),
        Vendor::Supermicro => vendor_files!("supermicro"),
        Vendor::OpenBmc => vendor_files!("openbmc"),
    }
}

/// Loads the resource tree of `vendor`, keyed by path.
///
/// The Dell fixtures describe virtual media in both places iDRAC has used;
/// `dell_virtual_media` keeps one and removes the other with its link.
pub(crate) fn load(
    vendor: Vendor,
    dell_virtual_media: DellVirtualMedia,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut resources = BTreeMap::new();
    for (name, text) in files(vendor) {
        let file = format!("tests/fixtures/redfish/{}/{name}", vendor.fixture_dir());
        let parsed: BTreeMap<String, Value> =
            serde_json::from_str(text).with_context(|| format!("invalid JSON in {file}"))?;
        for (path, body) in parsed {
            if body["@odata.id"] != path.as_str() {
                bail!("{file}: resource {path} has a different @odata.id");
            }
            resources.insert(path, body);
        }
    }

    if vendor == Vendor::Dell {
        let (system, manager, _) = vendor.paths();
        let unused = match dell_virtual_media {
            DellVirtualMedia::UnderSystem => manager,
            DellVirtualMedia::UnderManager => system,
        };
        let prefix = format!("{unused}/VirtualMedia");
        resources.retain(|path, _| path != &prefix && !path.starts_with(&format!("{prefix}/")));
        if let Some(parent) = resources.get_mut(unused).and_then(Value::as_object_mut) {
            parent.remove("VirtualMedia");
        }
    }
    Ok(resources)
}
