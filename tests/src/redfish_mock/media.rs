//! Virtual media: checking an insert, and XCC's and iLO's PATCH of a slot.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::errors::{ErrorMessage, Failure, license_required};
use super::operations::{apply, not_writable, patch_success};
use super::profile::Vendor;
use super::state::{Effect, State};
pub(super) fn check_media_licence(state: &State) -> Result<(), Failure> {
    if state.vendor() == Vendor::Supermicro && !state.settings.supermicro_licensed {
        return Err(license_required("virtual media"));
    }
    Ok(())
}

pub(super) fn check_insert(
    state: &State,
    path: &str,
    body: &Map<String, Value>,
    by_action: bool,
) -> Result<Effect, Failure> {
    check_media_licence(state)?;
    if by_action && state.vendor().rejects_insert_flags() {
        let rejected: Vec<ErrorMessage> = ["Inserted", "WriteProtected"]
            .into_iter()
            .filter(|name| body.contains_key(*name))
            .map(|name| {
                ErrorMessage::new(
                    "PropertyUnknown",
                    format!("The property {name} is not in the list of valid properties for the resource."),
                    &[name],
                )
                .related(name)
            })
            .collect();
        if !rejected.is_empty() {
            return Err(Failure {
                status: StatusCode::BAD_REQUEST,
                messages: rejected,
            });
        }
    }
    let Some(image) = body.get("Image").and_then(Value::as_str) else {
        return Err(Failure::bad_request(ErrorMessage::new(
            "ActionParameterMissing",
            "The action VirtualMedia.InsertMedia requires the parameter Image to be present in the request body.",
            &["VirtualMedia.InsertMedia", "Image"],
        )));
    };
    if !image.contains("://") {
        return Err(Failure::bad_request(ErrorMessage::new(
            "ActionParameterValueFormatError",
            format!("The value {image} for the parameter Image is not a URI."),
            &[image, "Image", "VirtualMedia.InsertMedia"],
        )));
    }
    check_image_scheme(state.vendor(), image)?;
    // The image share's password is not needed to apply the insert.
    let mut kept = Value::Object(body.clone());
    super::state::redact(&mut kept);
    Ok(Effect::InsertMedia {
        path: path.to_string(),
        body: kept,
    })
}

/// Rejects an image whose URI scheme the vendor does not mount, with the
/// vendor's message: bmcweb's `ResourceAtUriInUnknownFormat`, XCC's
/// `SourceDoesNotSupportProtocol`.
fn check_image_scheme(vendor: Vendor, image: &str) -> Result<(), Failure> {
    let Some(accepted) = vendor.accepted_image_schemes() else {
        return Ok(());
    };
    let scheme = image.split("://").next().unwrap_or_default();
    if accepted.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Ok(());
    }
    let message = match vendor {
        Vendor::OpenBmc => ErrorMessage::new(
            "ResourceAtUriInUnknownFormat",
            format!("The resource at the URI {image} was not in a format the service understands."),
            &[image],
        ),
        _ => ErrorMessage::new(
            "SourceDoesNotSupportProtocol",
            format!(
                "The other end of the connection at {image} does not support the protocol {scheme}."
            ),
            &[image, scheme],
        ),
    };
    Err(Failure::bad_request(message.resolution(format!(
        "Use an image URI with one of these schemes: {}.",
        accepted.join(", ")
    ))))
}

pub(super) fn patch_virtual_media(
    state: &mut State,
    path: &str,
    body: &Map<String, Value>,
) -> Result<Response, Failure> {
    if state.vendor() == Vendor::Hpe {
        // iLO keeps one-time boot from virtual media in the slot's Oem.Hpe.
        if body.keys().any(|key| key != "Oem")
            || body["Oem"]["Hpe"].get("BootOnNextServerReset").is_none()
        {
            return Err(not_writable(
                body.keys().next().map_or("Oem", String::as_str),
            ));
        }
        state.merge(path, &Value::Object(body.clone()));
        return Ok(patch_success(state, path));
    }
    if !state.vendor().mounts_by_patch() {
        return Err(Failure::method_not_allowed("PATCH", path));
    }

    let slot = path.rsplit('/').next().unwrap_or_default();
    if !slot.starts_with("EXT") {
        return Err(not_writable("Image"));
    }
    for key in body.keys() {
        let known = [
            "Image",
            "Inserted",
            "WriteProtected",
            "UserName",
            "Password",
            "VerifyCertificate",
        ];
        if !known.contains(&key.as_str()) {
            return Err(not_writable(key));
        }
    }
    let eject =
        body.get("Image") == Some(&Value::Null) || body.get("Inserted") == Some(&json!(false));
    let effect = if eject {
        Effect::EjectMedia {
            path: path.to_string(),
        }
    } else {
        check_insert(state, path, body, false)?
    };
    apply(state, effect)?;
    Ok(patch_success(state, path))
}
