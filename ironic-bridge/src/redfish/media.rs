//! Virtual media: finding the virtual CD wherever the vendor puts it, and
//! inserting or ejecting an image.
//!
//! Where it lives: newer versions of DMTF's ComputerSystem schema link
//! `VirtualMedia`, and newer firmware puts it there. Current iDRAC 9
//! releases serve `Systems/System.Embedded.1/VirtualMedia/1`, as does the
//! sushy-tools emulator under its System. Older iDRAC firmware (3.x) keeps
//! `Managers/iDRAC.Embedded.1/VirtualMedia/CD`. iLO 5/6, Lenovo XCC,
//! Supermicro and OpenBMC keep it under the Manager as well (vendor
//! knowledge, checked only against test fixtures here). The driver looks under the System
//! first, then under each Manager that manages it, and takes the first slot
//! whose `MediaTypes` contain `CD` or `DVD`, preferring one with an
//! `InsertMedia` action (OpenBMC's proxy-mode slots have none).
//!
//! How to insert: the `VirtualMedia.InsertMedia` action when the slot has
//! one, else a PATCH of `Image` and `Inserted` (older XCC and iLO firmware).

use http::Method;
use reqwest::Url;
use serde_json::{Value, json};

use super::client::{Extra, RedfishClient};
use super::discovery::resolve;
use super::profile::Vendor;
use super::resources::{link_at, str_at};
use super::service::{members, optional};
use super::task::wait_for_task;
use super::update::{etag_of, patch, with_operation_apply_time};
use crate::driver::DriverError;

/// Maximum slots read from one VirtualMedia collection.
const MAX_SLOTS: usize = 16;

/// One virtual media slot as last read.
#[derive(Debug)]
pub(crate) struct MediaSlot {
    pub url: Url,
    pub json: Value,
    pub etag: Option<String>,
}

impl MediaSlot {
    fn image(&self) -> Option<&str> {
        str_at(&self.json, "/Image")
    }

    /// Returns whether an image is in the slot: `Inserted`, or a non-empty
    /// `Image` on BMCs that leave `Inserted` out.
    pub fn is_inserted(&self) -> bool {
        match self.json.get("Inserted").and_then(Value::as_bool) {
            Some(inserted) => inserted,
            None => self.image().is_some(),
        }
    }

    fn action_target(&self, action: &str) -> Option<&str> {
        self.json
            .pointer(&format!("/Actions/#VirtualMedia.{action}/target"))
            .and_then(Value::as_str)
    }

    fn is_cd(&self) -> bool {
        self.json
            .get("MediaTypes")
            .and_then(Value::as_array)
            .is_some_and(|types| types.iter().any(|t| t == "CD" || t == "DVD"))
    }
}

/// Finds the virtual CD of the system at `system_url`, looking under the
/// System and then under `managers`. Returns `None` when there is none.
pub(crate) async fn find_cd(
    client: &RedfishClient,
    vendor: Vendor,
    system_url: &Url,
    system: &Value,
    managers: &[(Url, Value)],
) -> Result<Option<MediaSlot>, DriverError> {
    let mut collections = Vec::new();
    if let Some(id) = link_at(system, "/VirtualMedia") {
        collections.push(resolve(client, system_url, id)?);
    }
    for (url, manager) in managers {
        if let Some(id) = link_at(manager, "/VirtualMedia") {
            collections.push(resolve(client, url, id)?);
        }
    }

    for collection in collections {
        // A collection that the BMC links but does not serve is skipped.
        let Some(slots) = optional(members(client, &collection, MAX_SLOTS).await)? else {
            continue;
        };
        let mut fallback = None;
        for url in slots {
            let (json, header): (Value, Option<String>) = client.get_with_etag(&url).await?;
            let slot = MediaSlot {
                etag: etag_of(header, &json),
                url,
                json,
            };
            let id = slot.url.path_segments().and_then(|mut s| s.next_back());
            if !slot.is_cd() || !vendor.prefers_media_slot(id.unwrap_or_default()) {
                continue;
            }
            if slot.action_target("InsertMedia").is_some() {
                return Ok(Some(slot));
            }
            fallback.get_or_insert(slot);
        }
        if fallback.is_some() {
            return Ok(fallback);
        }
    }
    Ok(None)
}

/// Inserts `image` into `slot`, ejecting another image first. Does nothing
/// when `image` is already inserted.
pub(crate) async fn insert(
    client: &RedfishClient,
    vendor: Vendor,
    mut slot: MediaSlot,
    image: &str,
    task_deadline: std::time::Duration,
) -> Result<(), DriverError> {
    if slot.is_inserted() && slot.image() == Some(image) {
        tracing::debug!(node = client.node(), slot = %slot.url, "image already inserted; nothing sent");
        return Ok(());
    }
    if slot.is_inserted() || slot.image().is_some() {
        eject(client, &slot, task_deadline).await?;
        let (json, header): (Value, Option<String>) = client.get_with_etag(&slot.url).await?;
        slot.etag = etag_of(header, &json);
        slot.json = json;
    }

    let flags = vendor.sends_insert_flags();
    let Some(target) = slot.action_target("InsertMedia") else {
        let mut body = json!({ "Image": image });
        if flags {
            body["Inserted"] = Value::Bool(true);
        }
        return patch(client, &slot.url, slot.etag.clone(), &body, task_deadline).await;
    };
    let target = resolve(client, &slot.url, target)?;
    let action = slot.json.pointer("/Actions/#VirtualMedia.InsertMedia");
    let body = |flags: bool| {
        let mut body = json!({ "Image": image });
        if flags {
            body["Inserted"] = Value::Bool(true);
            body["WriteProtected"] = Value::Bool(true);
        }
        with_operation_apply_time(action, body)
    };

    let reply = match post(client, &target, &body(flags)).await {
        // Some firmware rejects the two optional parameters although the
        // schema defines them; the image alone is what matters.
        Err(DriverError::Http {
            status: 400,
            message: Some(message),
            ..
        }) if flags && (message.contains("Inserted") || message.contains("WriteProtected")) => {
            tracing::debug!(node = client.node(), %message, "InsertMedia rejected Inserted/WriteProtected; sending the image alone");
            post(client, &target, &body(false)).await?
        }
        other => other?,
    };
    wait_for_task(client, &target, &reply, task_deadline).await
}

/// Ejects the image in `slot`. Does nothing when the slot is empty.
pub(crate) async fn eject(
    client: &RedfishClient,
    slot: &MediaSlot,
    task_deadline: std::time::Duration,
) -> Result<(), DriverError> {
    if !slot.is_inserted() && slot.image().is_none() {
        tracing::debug!(node = client.node(), slot = %slot.url, "no image inserted; nothing sent");
        return Ok(());
    }
    match slot.action_target("EjectMedia") {
        Some(target) => {
            let target = resolve(client, &slot.url, target)?;
            let action = slot.json.pointer("/Actions/#VirtualMedia.EjectMedia");
            let reply = post(
                client,
                &target,
                &with_operation_apply_time(action, json!({})),
            )
            .await?;
            wait_for_task(client, &target, &reply, task_deadline).await
        }
        None => {
            let body = json!({ "Image": Value::Null, "Inserted": false });
            patch(client, &slot.url, slot.etag.clone(), &body, task_deadline).await
        }
    }
}

async fn post(
    client: &RedfishClient,
    url: &Url,
    body: &Value,
) -> Result<super::client::Reply, DriverError> {
    client
        .send(Method::POST, url, Some(body), Extra::default())
        .await
}
