//! Changing resources: PATCH with `If-Match`, `@Redfish.Settings` objects
//! and apply times.
//!
//! - A PATCH carries the resource's `ETag` (from the header, else the body's
//!   `@odata.etag`) in `If-Match`. HTTP 412 (the resource changed since it
//!   was read) and 428 (the BMC requires `If-Match`) are retried once with a
//!   freshly read ETag.
//! - A resource with `@Redfish.Settings` (BIOS on most vendors) takes its
//!   changes through the settings object it names. They apply at the time
//!   that `@Redfish.SettingsApplyTime` requests, when the object lists
//!   `SupportedApplyTimes`. Without one, the vendor decides (a Dell iDRAC
//!   needs a configuration job, see `oem.rs`).
//! - An action that lists `@Redfish.OperationApplyTimeSupport` with
//!   `Immediate` is asked to run now, so a BMC whose default is `OnReset`
//!   does not queue a reset for the next reset.

use http::Method;
use reqwest::Url;
use serde_json::{Value, json};

use super::client::{Extra, RedfishClient, Reply};
use super::discovery::resolve;
use super::resources::link_at;
use super::task::wait_for_task;
use crate::driver::DriverError;

/// PATCHes `url` with `body`, sending `If-Match: etag` when an ETag is
/// known, and waits for a task the BMC starts for it.
pub(crate) async fn patch(
    client: &RedfishClient,
    url: &Url,
    etag: Option<String>,
    body: &Value,
    task_deadline: std::time::Duration,
) -> Result<(), DriverError> {
    let reply = patch_reply(client, url, etag, body).await?;
    wait_for_task(client, url, &reply, task_deadline).await
}

/// PATCHes like [`patch`] and returns the reply without waiting for a task.
async fn patch_reply(
    client: &RedfishClient,
    url: &Url,
    etag: Option<String>,
    body: &Value,
) -> Result<Reply, DriverError> {
    let extra = Extra {
        if_match: etag.as_deref(),
    };
    let first = client.send(Method::PATCH, url, Some(body), extra).await;
    let reply = match first {
        Err(DriverError::Http { status, .. }) if status == 412 || status == 428 => {
            let (fresh, header): (Value, Option<String>) = client.get_with_etag(url).await?;
            let etag = etag_of(header, &fresh);
            tracing::debug!(node = client.node(), %url, status, "PATCH precondition failed; retrying with a fresh ETag");
            let extra = Extra {
                if_match: etag.as_deref(),
            };
            client.send(Method::PATCH, url, Some(body), extra).await?
        }
        other => other?,
    };
    Ok(reply)
}

/// Returns the resource's ETag: the `ETag` header, else `@odata.etag`.
pub(crate) fn etag_of(header: Option<String>, resource: &Value) -> Option<String> {
    header.or_else(|| {
        resource
            .get("@odata.etag")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

/// Where a change to a resource with `@Redfish.Settings` went.
#[derive(Debug)]
pub(crate) struct SettingsChange {
    /// The settings object that was PATCHed.
    pub settings_url: Url,
    /// The `ApplyTime` requested, or `None` when the object lists no
    /// supported apply times and the vendor's own way applies the change.
    pub apply_time: Option<&'static str>,
    /// Whether anything was sent; `false` when the pending settings already
    /// held the change.
    pub sent: bool,
}

/// PATCHes `changes` into the settings object of `resource` (at
/// `resource_url`). Returns `None` when the resource has no
/// `@Redfish.Settings`; the caller then PATCHes the resource itself.
///
/// Idempotent: when the settings object already holds every changed value
/// as a pending setting, nothing is sent.
pub(crate) async fn patch_settings(
    client: &RedfishClient,
    resource_url: &Url,
    resource: &Value,
    changes: &Value,
    task_deadline: std::time::Duration,
) -> Result<Option<SettingsChange>, DriverError> {
    let Some(settings_id) = link_at(resource, "/@Redfish.Settings/SettingsObject") else {
        return Ok(None);
    };
    let settings_url = resolve(client, resource_url, settings_id)?;
    let (pending, header): (Value, Option<String>) = client.get_with_etag(&settings_url).await?;
    if contains(&pending, changes) {
        tracing::debug!(node = client.node(), url = %settings_url, "settings already pending; nothing sent");
        return Ok(Some(SettingsChange {
            settings_url,
            apply_time: None,
            sent: false,
        }));
    }

    let supported = supported_apply_times(resource, &pending);
    let apply_time = ["OnReset", "Immediate"]
        .into_iter()
        .find(|wanted| supported.iter().any(|value| value == wanted));
    let mut body = changes.clone();
    if let (Some(apply_time), Some(object)) = (apply_time, body.as_object_mut()) {
        object.insert(
            "@Redfish.SettingsApplyTime".to_string(),
            json!({ "ApplyTime": apply_time }),
        );
    }
    // A change applied at the next reset starts a task or job that waits
    // for that reset (an iDRAC job stays Scheduled), so only an immediate
    // change is waited for.
    let etag = etag_of(header, &pending);
    let reply = patch_reply(client, &settings_url, etag, &body).await?;
    if apply_time != Some("OnReset") {
        wait_for_task(client, &settings_url, &reply, task_deadline).await?;
    }
    Ok(Some(SettingsChange {
        settings_url,
        apply_time,
        sent: true,
    }))
}

/// Reads `SupportedApplyTimes` from the resource's `@Redfish.Settings` or
/// from the settings object's `@Redfish.SettingsApplyTime` annotation.
fn supported_apply_times(resource: &Value, settings: &Value) -> Vec<String> {
    let lists = [
        resource.pointer("/@Redfish.Settings/SupportedApplyTimes"),
        settings.pointer("/@Redfish.SettingsApplyTime/ApplyTime@Redfish.AllowableValues"),
    ];
    lists
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Adds `@Redfish.OperationApplyTime: Immediate` to an action's body when
/// the action (`action` is its object under `Actions`) supports it.
pub(crate) fn with_operation_apply_time(action: Option<&Value>, mut body: Value) -> Value {
    let supported = action
        .and_then(|action| action.pointer("/@Redfish.OperationApplyTimeSupport/SupportedValues"))
        .and_then(Value::as_array)
        .is_some_and(|values| values.iter().any(|value| value == "Immediate"));
    if supported && let Some(object) = body.as_object_mut() {
        object.insert(
            "@Redfish.OperationApplyTime".to_string(),
            Value::from("Immediate"),
        );
    }
    body
}

/// Returns whether every value in `wanted` appears in `current` at the same
/// place (objects compared key by key, other values for equality).
pub(crate) fn contains(current: &Value, wanted: &Value) -> bool {
    match (current, wanted) {
        (Value::Object(current), Value::Object(wanted)) => wanted.iter().all(|(key, value)| {
            current
                .get(key)
                .is_some_and(|present| contains(present, value))
        }),
        _ => current == wanted,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{contains, with_operation_apply_time};

    #[test]
    fn contains_compares_nested_objects() {
        let current = json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "Other": 1}});
        assert!(contains(
            &current,
            &json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}})
        ));
        assert!(!contains(
            &current,
            &json!({"Boot": {"BootSourceOverrideTarget": "Hdd"}})
        ));
        assert!(!contains(&current, &json!({"Missing": true})));
    }

    #[test]
    fn operation_apply_time_added_only_when_supported() {
        let action = json!({"@Redfish.OperationApplyTimeSupport": {"SupportedValues": ["Immediate", "OnReset"]}});
        let body = with_operation_apply_time(Some(&action), json!({"ResetType": "On"}));
        assert_eq!(body["@Redfish.OperationApplyTime"], "Immediate");
        let body = with_operation_apply_time(Some(&json!({})), json!({"ResetType": "On"}));
        assert!(body.get("@Redfish.OperationApplyTime").is_none());
    }
}
