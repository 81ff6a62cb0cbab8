//! Vendor OEM extensions the driver uses: Dell's configuration job queue,
//! the BIOS boot mode attribute of Dell and HPE, and HPE's one-time boot
//! from virtual media.

use std::time::Duration;

use http::Method;
use reqwest::Url;
use serde_json::{Value, json};

use super::client::{Extra, RedfishClient};
use super::discovery::resolve;
use super::media::MediaSlot;
use super::profile::Vendor;
use super::resources::{link_at, str_at};
use super::update::{etag_of, patch, patch_settings};
use crate::driver::{BootMode, DriverError, DriverKind};

/// Returns the BIOS attribute and value that select `mode`, for vendors
/// whose ComputerSystem has no writable `BootSourceOverrideMode`.
///
/// Dell: attribute `BootMode` with `Uefi` or `Bios`. HPE: attribute
/// `BootMode` with `Uefi` or `LegacyBios`.
// NOTE: these names are vendor knowledge, checked against no BMC or vendor
// document here, and not read from the BMC's attribute registry. A BMC with
// other names rejects the PATCH with HTTP 400 and its own message.
pub(crate) fn bios_boot_mode(
    vendor: Vendor,
    mode: BootMode,
) -> Option<(&'static str, &'static str)> {
    match (vendor, mode) {
        (Vendor::Dell | Vendor::Hpe, BootMode::Uefi) => Some(("BootMode", "Uefi")),
        (Vendor::Dell, BootMode::Legacy) => Some(("BootMode", "Bios")),
        (Vendor::Hpe, BootMode::Legacy) => Some(("BootMode", "LegacyBios")),
        _ => None,
    }
}

/// Sets a BIOS attribute through the System's `Bios` resource and its
/// settings object. Returns `false` when the System has no `Bios` link.
///
/// On Dell, a pending BIOS change applies only through a configuration job.
/// Newer iDRAC 9 firmware creates the job itself when the PATCH carries
/// `@Redfish.SettingsApplyTime`. Older firmware lists no apply times, so the
/// driver creates the job in the Dell OEM `Jobs` collection of the Manager:
/// `POST …/Managers/iDRAC.Embedded.1/Jobs` with `TargetSettingsURI`. Ansible's
/// idrac_redfish_command module offers the same step as
/// "CreateBiosConfigJob". The job runs at the next reset.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn set_bios_attribute(
    client: &RedfishClient,
    kind: DriverKind,
    vendor: Vendor,
    system_url: &Url,
    system: &Value,
    manager: Option<&(Url, Value)>,
    (attribute, value): (&str, &str),
    task_deadline: Duration,
) -> Result<bool, DriverError> {
    let Some(bios_id) = link_at(system, "/Bios") else {
        return Ok(false);
    };
    let bios_url = resolve(client, system_url, bios_id)?;
    let (bios, header): (Value, Option<String>) = client.get_with_etag(&bios_url).await?;
    if str_at(&bios, &format!("/Attributes/{attribute}")) == Some(value) {
        tracing::debug!(
            node = client.node(),
            attribute,
            value,
            "BIOS attribute already set; nothing sent"
        );
        return Ok(true);
    }

    let changes = json!({ "Attributes": { attribute: value } });
    let change = patch_settings(client, &bios_url, &bios, &changes, task_deadline).await?;
    let Some(change) = change else {
        patch(
            client,
            &bios_url,
            etag_of(header, &bios),
            &changes,
            task_deadline,
        )
        .await?;
        return Ok(true);
    };
    if vendor == Vendor::Dell && change.sent && change.apply_time.is_none() {
        create_dell_config_job(client, kind, manager, &change.settings_url).await?;
    }
    Ok(true)
}

/// Queues a Dell configuration job for the pending settings at
/// `settings_url`.
async fn create_dell_config_job(
    client: &RedfishClient,
    kind: DriverKind,
    manager: Option<&(Url, Value)>,
    settings_url: &Url,
) -> Result<(), DriverError> {
    let Some((manager_url, manager)) = manager else {
        return Err(DriverError::Unsupported {
            node: client.node().to_string(),
            kind,
            operation: "applying BIOS settings (no Manager to queue the configuration job on)"
                .to_string(),
        });
    };
    let jobs = match link_at(manager, "/Links/Oem/Dell/Jobs") {
        Some(id) => resolve(client, manager_url, id)?,
        None => resolve(client, manager_url, &format!("{}/Jobs", manager_url.path()))?,
    };
    let body = json!({ "TargetSettingsURI": settings_url.path() });
    let reply = client
        .send(Method::POST, &jobs, Some(&body), Extra::default())
        .await?;
    tracing::info!(
        node = client.node(),
        job = reply.location.as_deref().unwrap_or("unknown"),
        "Dell configuration job queued; it runs at the next reset"
    );
    Ok(())
}

/// Sets HPE's `Oem.Hpe.BootOnNextServerReset` on the virtual CD, iLO's own
/// switch for booting once from the inserted image. The caller sends the
/// standard `BootSourceOverrideTarget: Cd` as well. Slots without the flag
/// are left alone.
pub(crate) async fn hpe_boot_from_virtual_cd(
    client: &RedfishClient,
    slot: &MediaSlot,
    task_deadline: Duration,
) -> Result<(), DriverError> {
    let current = slot.json.pointer("/Oem/Hpe/BootOnNextServerReset");
    if current.is_none() || current == Some(&Value::Bool(true)) {
        return Ok(());
    }
    let body = json!({ "Oem": { "Hpe": { "BootOnNextServerReset": true } } });
    patch(client, &slot.url, slot.etag.clone(), &body, task_deadline).await
}
