//! What POST, PATCH and DELETE do: dispatch, sessions, `ComputerSystem.Reset`
//! and boot override. Virtual media is in `media.rs`; BIOS settings, Dell
//! jobs and task monitors in `jobs.rs`.
//!
//! Each operation is checked first and turned into an [`Effect`]; the
//! effect is applied at once, or when its task or job completes when the
//! operation is asynchronous for this mock.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::errors::{ErrorMessage, Failure, media_action_success, success, unauthorized};
use super::jobs::{
    create_dell_config_job, create_task, delete_job_queue, patch_bios_settings, remove_job,
};
use super::media::{check_insert, check_media_licence, patch_virtual_media};
use super::profile::{AsyncOperation, AuthMode, IfMatchPolicy, Vendor};
use super::server::{Incoming, invalid_body, json_response};
use super::state::{Effect, Session, State};

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

pub(crate) fn post(
    state: &mut State,
    base_url: &str,
    request: &Incoming,
) -> Result<Response, Failure> {
    if request.path == SESSIONS {
        return create_session(state, base_url, request);
    }
    if state.vendor() == Vendor::Dell && request.path == format!("{}/Jobs", state.settings.manager)
    {
        return create_dell_config_job(state, request);
    }
    let Some((owner, action)) = request.path.split_once("/Actions/") else {
        return Err(Failure::method_not_allowed("POST", &request.path));
    };
    let owner = owner.to_string();
    let resource = state
        .resources
        .get(&owner)
        .ok_or_else(|| Failure::not_found(&request.path))?;
    if !has_action_target(resource, &request.path) {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            ErrorMessage::new(
                "ActionNotSupported",
                format!("The action {action} is not supported by the resource {owner}."),
                &[action],
            ),
        ));
    }
    if state.vendor().rejects_if_match_on_actions()
        && request.headers.contains_key(header::IF_MATCH)
    {
        return Err(Failure::new(
            StatusCode::PRECONDITION_FAILED,
            ErrorMessage::new(
                "PreconditionFailed",
                "The ETag supplied did not match the ETag required to change this resource.",
                &[],
            )
            .resolution("Send actions without If-Match."),
        ));
    }
    let body = match (&request.body, request.body_is_empty) {
        (Some(Value::Object(map)), _) => map.clone(),
        (None, true) => Map::new(),
        _ => return Err(invalid_body(request)),
    };

    let name = action.rsplit('/').next().unwrap_or(action);
    match name {
        "ComputerSystem.Reset" => {
            let effect = check_reset(state, &body)?;
            Ok(run(state, AsyncOperation::Reset, effect))
        }
        "VirtualMedia.InsertMedia" | "HpeiLOVirtualMedia.InsertVirtualMedia" => {
            let effect = check_insert(state, &owner, &body, true)?;
            Ok(run(state, AsyncOperation::InsertMedia, effect))
        }
        "VirtualMedia.EjectMedia" | "HpeiLOVirtualMedia.EjectVirtualMedia" => {
            check_media_licence(state)?;
            let effect = Effect::EjectMedia { path: owner };
            Ok(run(state, AsyncOperation::EjectMedia, effect))
        }
        "DellJobService.DeleteJobQueue" => delete_job_queue(state, &body),
        _ => Ok(success(state.vendor())),
    }
}

fn has_action_target(resource: &Value, target: &str) -> bool {
    match resource {
        Value::Object(map) => map.iter().any(|(key, value)| {
            (key == "target" && value == target) || has_action_target(value, target)
        }),
        Value::Array(items) => items.iter().any(|item| has_action_target(item, target)),
        _ => false,
    }
}

/// Applies `effect` now, or starts a task when `operation` is asynchronous.
fn run(state: &mut State, operation: AsyncOperation, effect: Effect) -> Response {
    if state.settings.async_operations.contains(&operation) {
        return create_task(state, effect);
    }
    let vendor = state.vendor();
    match (apply(state, effect), operation) {
        (Ok(()), AsyncOperation::InsertMedia | AsyncOperation::EjectMedia) => {
            media_action_success(vendor)
        }
        (Ok(()), _) => success(vendor),
        (Err(failure), _) => failure.render(vendor),
    }
}

pub(super) fn apply(state: &mut State, effect: Effect) -> Result<(), Failure> {
    match effect {
        Effect::Reset { reset_type } => {
            apply_reset(state, &reset_type);
            Ok(())
        }
        Effect::InsertMedia { path, body } => {
            if state.resources[&path]["Inserted"] == true {
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    ErrorMessage::new(
                        "ResourceInUse",
                        format!("The virtual media at {path} already has an image inserted."),
                        &[],
                    )
                    .resolution("Eject the inserted image first."),
                ));
            }
            let image = body["Image"].as_str().unwrap_or_default().to_string();
            let image_name = image.rsplit('/').next().unwrap_or_default().to_string();
            let protocol = transfer_protocol_type(&image);
            // bmcweb mounts read-write unless the request sets WriteProtected
            // (`doMountVmLegacy` gets `rw = !WriteProtected.value_or(false)`).
            // The DMTF schema's default, and the other profiles', is true.
            let write_protected_default = state.vendor() != Vendor::OpenBmc;
            let mut patch = json!({
                "Image": image,
                "ImageName": image_name,
                "Inserted": body.get("Inserted").cloned().unwrap_or(json!(true)),
                "WriteProtected": body
                    .get("WriteProtected")
                    .cloned()
                    .unwrap_or(json!(write_protected_default)),
                "ConnectedVia": "URI",
            });
            // bmcweb derives the property from the image URI even when the
            // empty slot left it out.
            if state.resources[&path].get("TransferProtocolType").is_some()
                || state.vendor() == Vendor::OpenBmc
            {
                patch["TransferProtocolType"] = json!(protocol);
            }
            state.merge(&path, &patch);
            Ok(())
        }
        Effect::EjectMedia { path } => {
            if state.vendor() == Vendor::OpenBmc {
                eject_openbmc(state, &path);
                return Ok(());
            }
            let mut patch =
                json!({"Image": null, "Inserted": false, "ConnectedVia": "NotConnected"});
            if !state.vendor().keeps_image_name_on_eject() {
                patch["ImageName"] = Value::Null;
            }
            if state.vendor() == Vendor::Hpe {
                patch["Oem"] = json!({"Hpe": {"BootOnNextServerReset": false}});
            }
            state.merge(&path, &patch);
            Ok(())
        }
        Effect::ApplyBios { attributes } => {
            let bios = format!("{}/Bios", state.settings.system);
            state.merge(&bios, &json!({"Attributes": attributes}));
            state.put(
                &format!("{bios}/Settings"),
                json!({
                    "@odata.id": format!("{bios}/Settings"),
                    "@odata.type": "#Bios.v1_2_0.Bios",
                    "Id": "Settings",
                    "Name": "BIOS Configuration Pending Settings",
                    "Attributes": {},
                }),
            );
            Ok(())
        }
    }
}

/// Returns the `TransferProtocolType` value for an image URI: the
/// VirtualMedia schema's `CIFS` for `smb://`, the upper-cased scheme
/// otherwise (`HTTP`, `HTTPS`, `NFS`).
fn transfer_protocol_type(image: &str) -> String {
    let scheme = image.split("://").next().unwrap_or_default();
    match scheme.to_ascii_lowercase().as_str() {
        "smb" | "cifs" => "CIFS".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

/// Ejects on bmcweb, which leaves `Image`, `ImageName` and
/// `TransferProtocolType` out of a slot that has no image instead of
/// setting them to null (bmcweb's `vmParseInterfaceObject` only writes them
/// from a non-empty image URL).
fn eject_openbmc(state: &mut State, path: &str) {
    if let Some(slot) = state.resources.get_mut(path).and_then(Value::as_object_mut) {
        for key in ["Image", "ImageName", "TransferProtocolType"] {
            slot.remove(key);
        }
    }
    state.merge(
        path,
        &json!({"Inserted": false, "ConnectedVia": "NotConnected"}),
    );
}

// ---- sessions ----

fn create_session(
    state: &mut State,
    base_url: &str,
    request: &Incoming,
) -> Result<Response, Failure> {
    if state.settings.auth == AuthMode::BasicOnly {
        return Err(Failure::method_not_allowed("POST", SESSIONS));
    }
    let body = request.body.as_ref().ok_or_else(|| invalid_body(request))?;
    let (Some(user), Some(password)) = (body["UserName"].as_str(), body["Password"].as_str())
    else {
        return Err(Failure::bad_request(ErrorMessage::new(
            "PropertyMissing",
            "The property UserName or Password is a required property and must be included in the request.",
            &["UserName"],
        )));
    };
    if user != state.settings.username || password != state.settings.password {
        return Err(unauthorized(state.vendor(), SESSIONS));
    }

    let id = state.next_id();
    let path = format!("{SESSIONS}/{id}");
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let session = json!({
        "@odata.id": path,
        "@odata.type": "#Session.v1_3_0.Session",
        "Id": id.to_string(),
        "Name": "User Session",
        "UserName": user,
    });
    state.put(&path, session.clone());
    state.add_member(SESSIONS, &path);
    state
        .sessions
        .insert(token.clone(), Session { path: path.clone() });

    // iLO 5 writes its URIs with a trailing slash (HPE's "Adapting from iLO
    // 4": /redfish/v1/x redirects to /redfish/v1/x/). NOTE: no HPE document
    // shows the session Location as an absolute URL. The mock sends one so
    // that a client must resolve Location instead of assuming a path.
    let location = match state.vendor() {
        Vendor::Hpe => format!("{base_url}{path}/"),
        _ => path.clone(),
    };
    let mut response = json_response(StatusCode::CREATED, Some(state.etag(&path)), &session);
    let headers = response.headers_mut();
    headers.insert("X-Auth-Token", header_value(&token));
    headers.insert(header::LOCATION, header_value(&location));
    Ok(response)
}

pub(super) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub(crate) fn delete(state: &mut State, request: &Incoming) -> Result<Response, Failure> {
    let path = &request.path;
    if path.starts_with(&format!("{SESSIONS}/")) {
        let token = state
            .sessions
            .iter()
            .find(|(_, session)| &session.path == path)
            .map(|(token, _)| token.clone())
            .ok_or_else(|| Failure::not_found(path))?;
        state.sessions.remove(&token);
        state.resources.remove(path);
        state.remove_member(SESSIONS, path);
        return Ok(success(state.vendor()));
    }
    if state.jobs.contains_key(path) {
        remove_job(state, path);
        return Ok(success(state.vendor()));
    }
    Err(Failure::method_not_allowed("DELETE", path))
}

// ---- reset and boot ----

fn check_reset(state: &mut State, body: &Map<String, Value>) -> Result<Effect, Failure> {
    let Some(reset_type) = body.get("ResetType").and_then(Value::as_str) else {
        return Err(Failure::bad_request(ErrorMessage::new(
            "ActionParameterMissing",
            "The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.",
            &["ComputerSystem.Reset", "ResetType"],
        )));
    };
    let system = state.settings.system.clone();
    let allowed = &state.resources[&system]["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"];
    let listed = allowed
        .as_array()
        .is_some_and(|values| values.iter().any(|v| v == reset_type));
    if !listed {
        return Err(Failure::bad_request(
            ErrorMessage::new(
                "PropertyValueNotInList",
                format!("The value {reset_type} for the property ResetType is not in the list of acceptable values."),
                &[reset_type, "ResetType"],
            )
            .related("ResetType"),
        ));
    }

    let power = state.power_state();
    let redundant = (power == "On" && matches!(reset_type, "On" | "ForceOn"))
        || (power == "Off" && matches!(reset_type, "ForceOff" | "GracefulShutdown"));
    if redundant && state.vendor().rejects_redundant_reset() {
        return Err(redundant_reset(&power));
    }
    Ok(Effect::Reset {
        reset_type: reset_type.to_string(),
    })
}

/// Builds iDRAC's 409 for a reset that would not change the power state.
///
/// Dell's "iDRAC9 Redfish API Guide" (firmware 4.20.20.20, "Supported
/// Action — Reset") lists PSU501 and PSU502 as the 409 codes of this
/// action. For a powered-on server iDRAC sends `IDRAC.x.y.PSU501` with
/// Severity `Informational`, as quoted in dell/dellemc-openmanage-ansible-
/// modules issue "dellemc_change_power_state fails if host is already on".
/// The registry version in the id varies with firmware.
fn redundant_reset(power: &str) -> Failure {
    let message = if power == "Off" {
        // NOTE: no capture of PSU502 was found, so its text and severity
        // are assumed to mirror PSU501.
        ErrorMessage::new(
            "IDRAC.2.8.PSU502",
            "The server is already powered off.",
            &[],
        )
    } else {
        ErrorMessage::new("IDRAC.2.8.PSU501", "The server is already powered on.", &[])
    };
    let mut message = message.resolution("No response action is required.");
    message.severity = "Informational";
    Failure::new(StatusCode::CONFLICT, message)
}

/// Changes the power state for `reset_type`. Restart types power an off
/// system on, which is the mock's choice where DMTF leaves it open.
fn apply_reset(state: &mut State, reset_type: &str) {
    let power = state.power_state();
    let is_on = power != "Off";
    match reset_type {
        "On" | "ForceOn" if !is_on => state.boot(),
        "ForceOff" | "GracefulShutdown" => {
            state.powering_on_until = None;
            state.write_power_state("Off");
        }
        "PushPowerButton" if is_on => {
            state.powering_on_until = None;
            state.write_power_state("Off");
        }
        "PushPowerButton" | "ForceRestart" | "GracefulRestart" | "PowerCycle" => state.boot(),
        _ => {}
    }
}

pub(crate) fn patch(state: &mut State, request: &Incoming) -> Result<Response, Failure> {
    let path = request.path.clone();
    if !state.resources.contains_key(&path) {
        return Err(Failure::not_found(&path));
    }
    check_if_match(state, request)?;
    let Some(Value::Object(body)) = &request.body else {
        return Err(invalid_body(request));
    };

    if path == state.settings.system {
        return patch_system(state, &path, body);
    }
    if path.ends_with("/Bios/Settings") {
        return patch_bios_settings(state, &path, body);
    }
    if path.contains("/VirtualMedia/") {
        return patch_virtual_media(state, &path, body);
    }
    Err(Failure::method_not_allowed("PATCH", &path))
}

/// Checks `If-Match` against the resource's current ETag.
///
/// A missing header under [`IfMatchPolicy::Required`] gets 428 Precondition
/// Required (RFC 6585), and a stale one 412. XCC sends 428 for a missing
/// header, as the ansible pull request "Add If-Match ETag header to PATCH
/// requests" reports for Lenovo systems.
fn check_if_match(state: &State, request: &Incoming) -> Result<(), Failure> {
    let sent = request
        .headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok());
    let current = state.etag(&request.path);
    let failure = |key: &str, text: String| {
        Failure::new(
            StatusCode::PRECONDITION_FAILED,
            ErrorMessage::new(key, text, &[])
                .resolution("Read the resource again for its current ETag and resend the request with If-Match."),
        )
    };
    match (state.settings.if_match, sent) {
        (IfMatchPolicy::Ignored, _) | (IfMatchPolicy::CheckedWhenPresent, None) => Ok(()),
        (IfMatchPolicy::Required, None) => {
            let mut missing = failure(
                "PreconditionRequired",
                format!("A PATCH of {} requires the If-Match header.", request.path),
            );
            missing.status = StatusCode::PRECONDITION_REQUIRED;
            Err(missing)
        }
        (_, Some(tag)) if tag == "*" || tag == current => Ok(()),
        (_, Some(tag)) => Err(failure(
            "PreconditionFailed",
            format!(
                "The ETag {tag} does not match the current ETag of {}.",
                request.path
            ),
        )),
    }
}

pub(super) fn not_writable(property: &str) -> Failure {
    Failure::bad_request(
        ErrorMessage::new(
            "PropertyNotWritable",
            format!(
                "The property {property} is a read only property and cannot be assigned a value."
            ),
            &[property],
        )
        .related(property),
    )
}

pub(super) fn not_in_list(value: &str, property: &str) -> Failure {
    Failure::bad_request(
        ErrorMessage::new(
            "PropertyValueNotInList",
            format!("The value {value} for the property {property} is not in the list of acceptable values."),
            &[value, property],
        )
        .related(property),
    )
}

fn patch_system(
    state: &mut State,
    path: &str,
    body: &Map<String, Value>,
) -> Result<Response, Failure> {
    for key in body.keys() {
        let allowed = key == "Boot" || (key == "Oem" && state.vendor() == Vendor::Hpe);
        if !allowed {
            return Err(not_writable(key));
        }
    }
    if let Some(boot) = body.get("Boot") {
        check_boot(state, path, boot)?;
    }
    let patch = Value::Object(body.clone());
    state.merge(path, &patch);
    Ok(patch_success(state, path))
}

fn check_boot(state: &State, path: &str, boot: &Value) -> Result<(), Failure> {
    let Some(boot) = boot.as_object() else {
        return Err(not_in_list(&boot.to_string(), "Boot"));
    };
    let current = &state.resources[path]["Boot"];
    for (key, value) in boot {
        let text = value.as_str().unwrap_or_default();
        let listed = |list: &Value| list.as_array().is_some_and(|l| l.iter().any(|v| v == text));
        let ok = match key.as_str() {
            "BootSourceOverrideTarget" => {
                listed(&current["BootSourceOverrideTarget@Redfish.AllowableValues"])
            }
            "BootSourceOverrideEnabled" => matches!(text, "Once" | "Continuous" | "Disabled"),
            "BootSourceOverrideMode" => {
                match current.get("BootSourceOverrideMode@Redfish.AllowableValues") {
                    Some(list) => listed(list),
                    None => matches!(text, "UEFI" | "Legacy"),
                }
            }
            "UefiTargetBootSourceOverride" if current.get(key).is_some() => value.is_string(),
            _ => return Err(not_writable(&format!("Boot/{key}"))),
        };
        if !ok {
            return Err(not_in_list(text, key));
        }
    }
    Ok(())
}

/// Builds the response to a successful PATCH: XCC returns the updated
/// resource (its REST API document shows this for virtual media); the others respond as for
/// an action.
pub(super) fn patch_success(state: &State, path: &str) -> Response {
    if state.vendor() == Vendor::Lenovo {
        let body = state.get(path).unwrap_or(Value::Null);
        return json_response(StatusCode::OK, Some(state.etag(path)), &body);
    }
    success(state.vendor())
}
