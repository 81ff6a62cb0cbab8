//! The boot override: `Boot.BootSourceOverrideTarget`, `…Enabled` and
//! `…Mode` of the ComputerSystem, with the vendor ways to change the boot
//! mode where the System has no `BootSourceOverrideMode`.

use serde_json::{Map, Value};

use super::profile::Vendor;
use super::{RedfishDriver, boot_target_name, oem, update};
use crate::driver::{BmcDriver, BootMode, BootOverride, BootPersistence, BootTarget, DriverError};

/// Sets the boot override of `driver`'s system. Sends nothing when the
/// System already contains every requested value.
pub(super) async fn set_next_boot(
    driver: &RedfishDriver,
    boot: BootOverride,
) -> Result<(), DriverError> {
    let system = driver.read_system().await?;
    let service = driver.service().await?;
    let deadline = driver.task_deadline(service);
    let current = system.json.get("Boot").cloned().unwrap_or(Value::Null);

    let target_name = boot_target_name(boot.target);
    if let Some(allowed) = allowed(&current, "BootSourceOverrideTarget")
        && !allowed.iter().any(|value| value == target_name)
    {
        return Err(driver.unsupported(&format!(
            "BootSourceOverrideTarget {target_name} (the BMC allows {})",
            allowed.join(", ")
        )));
    }
    let enabled = match boot.persistence {
        BootPersistence::Once => "Once",
        BootPersistence::Continuous => "Continuous",
    };
    let mut changes = Map::new();
    changes.insert("BootSourceOverrideTarget".into(), target_name.into());
    changes.insert("BootSourceOverrideEnabled".into(), enabled.into());

    if let Some(mode) = boot.mode {
        let mode_name = match mode {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        };
        let has_mode = current
            .get("BootSourceOverrideMode")
            .is_some_and(|mode| !mode.is_null());
        if has_mode {
            if let Some(allowed) = allowed(&current, "BootSourceOverrideMode")
                && !allowed.iter().any(|value| value == mode_name)
            {
                return Err(driver.unsupported(&format!(
                    "BootSourceOverrideMode {mode_name} (the BMC allows {})",
                    allowed.join(", ")
                )));
            }
            changes.insert("BootSourceOverrideMode".into(), mode_name.into());
        } else {
            set_mode_through_bios(driver, &system, service.vendor, mode, deadline).await?;
        }
    }

    // A Cd override without a virtual CD (a physical drive) needs no flag.
    if service.vendor == Vendor::Hpe
        && boot.target == BootTarget::Cd
        && let Some(slot) = driver.find_virtual_cd(&system).await?
    {
        oem::hpe_boot_from_virtual_cd(&driver.client, &slot, deadline).await?;
    }

    let changes = Value::Object(changes);
    if update::contains(&current, &changes) {
        tracing::debug!(
            node = driver.node(),
            target = target_name,
            enabled,
            "boot override already set; nothing sent"
        );
        return Ok(());
    }
    tracing::debug!(
        node = driver.node(),
        target = target_name,
        enabled,
        "setting boot override"
    );
    let body = serde_json::json!({ "Boot": changes });
    update::patch(
        &driver.client,
        &system.url,
        system.etag.clone(),
        &body,
        deadline,
    )
    .await
}

/// Changes the boot mode through the vendor's BIOS attribute, for Systems
/// without `BootSourceOverrideMode` (older iDRAC and iLO firmware).
async fn set_mode_through_bios(
    driver: &RedfishDriver,
    system: &super::System,
    vendor: Vendor,
    mode: BootMode,
    deadline: std::time::Duration,
) -> Result<(), DriverError> {
    let unsupported = || {
        driver
            .unsupported("setting the boot mode (the ComputerSystem has no BootSourceOverrideMode)")
    };
    let Some(attribute) = oem::bios_boot_mode(vendor, mode) else {
        return Err(unsupported());
    };
    let managers = driver.managers(system).await?;
    let done = oem::set_bios_attribute(
        &driver.client,
        driver.kind,
        vendor,
        &system.url,
        &system.json,
        managers.first(),
        attribute,
        deadline,
    )
    .await?;
    if done { Ok(()) } else { Err(unsupported()) }
}

/// Reads `<property>@Redfish.AllowableValues` of the `Boot` object.
fn allowed(boot: &Value, property: &str) -> Option<Vec<String>> {
    let values = boot
        .get(format!("{property}@Redfish.AllowableValues"))?
        .as_array()?;
    Some(
        values
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}
