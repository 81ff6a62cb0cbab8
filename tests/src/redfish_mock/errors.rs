//! Error and success bodies in each vendor's shape.
//!
//! Every profile wraps messages in the DMTF `{"error": {"code", "message",
//! "@Message.ExtendedInfo": [...]}}` envelope, but the members differ, and a
//! client that parses only one shape loses the message on the others.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::profile::Vendor;

/// One `@Message.ExtendedInfo` entry before it is put in a vendor's shape.
#[derive(Debug, Clone)]
pub(crate) struct ErrorMessage {
    /// The message key in the DMTF Base registry (`PropertyUnknown`), or a
    /// full id containing a dot (`SMC.1.0.OemLicenseNotPassed`) used as is.
    pub key: String,
    pub message: String,
    pub args: Vec<String>,
    pub resolution: String,
    pub severity: &'static str,
    pub related: Vec<String>,
}

impl ErrorMessage {
    pub fn new(key: &str, message: impl Into<String>, args: &[&str]) -> Self {
        ErrorMessage {
            key: key.to_string(),
            message: message.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            resolution: "Correct the request and resubmit it.".to_string(),
            severity: "Warning",
            related: Vec::new(),
        }
    }

    pub fn resolution(mut self, resolution: impl Into<String>) -> Self {
        self.resolution = resolution.into();
        self
    }

    pub fn critical(mut self) -> Self {
        self.severity = "Critical";
        self
    }

    pub fn related(mut self, property: &str) -> Self {
        self.related.push(format!("#/{property}"));
        self
    }
}

/// A failed request: the status and the messages of its body.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub messages: Vec<ErrorMessage>,
}

impl Failure {
    pub fn new(status: StatusCode, message: ErrorMessage) -> Self {
        Failure {
            status,
            messages: vec![message],
        }
    }

    pub fn bad_request(message: ErrorMessage) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(path: &str) -> Self {
        Failure::new(
            StatusCode::NOT_FOUND,
            ErrorMessage::new(
                "ResourceNotFound",
                format!("The requested resource at {path} was not found."),
                &["Resource", path],
            )
            .resolution("Provide a valid resource identifier and resubmit the request."),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorMessage::new(
                "OperationNotAllowed",
                format!("The {method} method is not allowed on {path}."),
                &[method, path],
            ),
        )
    }

    pub fn render(&self, vendor: Vendor) -> Response {
        let body = error_body(vendor, &self.messages);
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The full MessageId for `key` in this vendor's registry naming.
///
/// Dell, Lenovo, HPE and bmcweb name their Base registry with a dotted
/// version (`Base.1.12.`, `Base.1.8.`, `Base.1.17.`, `Base.1.19.`);
/// Supermicro writes `Base.v1_4_0.`. The versions differ between firmware
/// releases. Sources: penmasters/zabbix-book issue "Redfish API" for
/// Supermicro, lenovo/python-redfish-lenovo issue "redfish issue with
/// ThinkEdge SE450 and SR650" for Lenovo, HPE's "Response message
/// definitions of iLO 5 v3.00" for iLO 5 (iLO 6 examples in HPE's "Redfish
/// authentication and sessions" show `Base.1.12.`), and bmcweb's
/// `redfish-core/include/registries.hpp`, which builds the id from the
/// registry's major and minor version only.
pub(crate) fn message_id(vendor: Vendor, key: &str) -> String {
    if key.contains('.') {
        return key.to_string();
    }
    let prefix = match vendor {
        Vendor::Generic => "Base.1.16",
        Vendor::OpenBmc => "Base.1.19",
        Vendor::Dell => "Base.1.12",
        Vendor::Hpe => "Base.1.17",
        Vendor::Lenovo => "Base.1.8",
        Vendor::Supermicro => "Base.v1_4_0",
    };
    format!("{prefix}.{key}")
}

const GENERAL: &str = "A general error has occurred. See ExtendedInfo for more information.";

/// Builds the error body for `messages` in this vendor's shape.
///
/// - iLO names the envelope code `iLO.0.10.ExtendedInfo` and gives only
///   `MessageId` per entry, plus `MessageArgs` when there are any. HPE's
///   "Redfish authentication and sessions" shows an iLO 6 401 body, and
///   ansible community.general issue "redfish_command VirtualMediaInsert
///   does not work with HPE iLO4" shows one with arguments.
/// - Supermicro spells the envelope's text member `Message`, capitalised,
///   and uses `Severity` (penmasters/zabbix-book issue "Redfish API").
/// - iDRAC adds `@odata.count` companions and `RelatedProperties` (gofish
///   issue "Setting write_protected to unsupported value does not throw an
///   error").
/// - XCC puts `@odata.type` in each entry and uses `MessageSeverity`
///   (python-redfish-lenovo issue "redfish issue with ThinkEdge SE450").
/// - bmcweb puts the message's id in `code` and its text in `message` when
///   there is one message, and `Base.1.19.0.GeneralError` (a four-part id)
///   when there are more (bmcweb's `redfish-core/src/error_message_utils.cpp`,
///   `addMessageToErrorJson`).
pub(crate) fn error_body(vendor: Vendor, messages: &[ErrorMessage]) -> Value {
    let first_id = messages
        .first()
        .map(|m| message_id(vendor, &m.key))
        .unwrap_or_else(|| message_id(vendor, "GeneralError"));
    let first_text = messages
        .first()
        .map(|m| m.message.clone())
        .unwrap_or_else(|| GENERAL.to_string());
    let entries: Vec<Value> = messages.iter().map(|m| entry(vendor, m)).collect();
    match vendor {
        Vendor::Hpe => json!({"error": {
            "code": "iLO.0.10.ExtendedInfo",
            "message": "See @Message.ExtendedInfo for more information.",
            "@Message.ExtendedInfo": entries,
        }}),
        Vendor::Supermicro => json!({"error": {
            "code": message_id(vendor, "GeneralError"),
            "Message": GENERAL,
            "@Message.ExtendedInfo": entries,
        }}),
        Vendor::OpenBmc if messages.len() > 1 => json!({"error": {
            "code": "Base.1.19.0.GeneralError",
            "message": "Several errors occurred. See @Message.ExtendedInfo for each one.",
            "@Message.ExtendedInfo": entries,
        }}),
        Vendor::OpenBmc => json!({"error": {
            "code": first_id,
            "message": first_text,
            "@Message.ExtendedInfo": entries,
        }}),
        Vendor::Generic | Vendor::Dell | Vendor::Lenovo => json!({"error": {
            "code": message_id(vendor, "GeneralError"),
            "message": GENERAL,
            "@Message.ExtendedInfo": entries,
        }}),
    }
}

fn entry(vendor: Vendor, m: &ErrorMessage) -> Value {
    let id = message_id(vendor, &m.key);
    match vendor {
        Vendor::Hpe if m.args.is_empty() => json!({"MessageId": id}),
        Vendor::Hpe => json!({"MessageId": id, "MessageArgs": m.args}),
        Vendor::Dell => json!({
            "Message": m.message,
            "MessageArgs": m.args,
            "MessageArgs@odata.count": m.args.len(),
            "MessageId": id,
            "RelatedProperties": m.related,
            "RelatedProperties@odata.count": m.related.len(),
            "Resolution": m.resolution,
            "Severity": m.severity,
        }),
        Vendor::Supermicro => json!({
            "MessageId": id,
            "Severity": m.severity,
            "Resolution": m.resolution,
            "Message": m.message,
            "MessageArgs": m.args,
            "RelatedProperties": m.related,
        }),
        Vendor::Lenovo => json!({
            "@odata.type": "#Message.v1_1_0.Message",
            "MessageId": id,
            "Message": m.message,
            "MessageArgs": m.args,
            "MessageSeverity": m.severity,
            "Resolution": m.resolution,
        }),
        Vendor::Generic | Vendor::OpenBmc => json!({
            "@odata.type": "#Message.v1_1_1.Message",
            "MessageId": id,
            "Message": m.message,
            "MessageArgs": m.args,
            "MessageSeverity": m.severity,
            "Resolution": m.resolution,
        }),
    }
}

/// Builds the response to a successful action or PATCH that has no
/// resource to return.
///
/// iLO returns 200 with a `Success` message inside an `error` envelope
/// (output quoted in HewlettPackard/python-ilorest-library pull request
/// "Update set_ESKM_PrimaryKeyServer.py"), so a client must decide success
/// by status code, not by the presence of `error`. bmcweb returns 200 with a
/// bare `@Message.ExtendedInfo` success list after a reset or a property
/// write (bmcweb's `redfish-core/src/utils/dbus_utils.cpp` and
/// `redfish-core/lib/systems.hpp` call `messages::success`), but its virtual
/// media actions return an empty body (see [`media_action_success`]). The
/// others return 204.
pub(crate) fn success(vendor: Vendor) -> Response {
    let mut ok = ErrorMessage::new("Success", "The request completed successfully.", &[])
        .resolution("None.");
    ok.severity = "OK";
    let json_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
    match vendor {
        Vendor::Hpe => (
            StatusCode::OK,
            json_type,
            error_body(vendor, &[ok]).to_string(),
        )
            .into_response(),
        Vendor::OpenBmc => {
            let body = json!({"@Message.ExtendedInfo": [entry(vendor, &ok)]});
            (StatusCode::OK, json_type, body.to_string()).into_response()
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Builds the response to a successful `InsertMedia` or `EjectMedia`.
///
/// bmcweb's handlers in `redfish-core/lib/virtual_media.hpp` set no message
/// on success, so the client gets 200 with an empty body and must not
/// expect JSON there. The other profiles respond as for any action.
pub(crate) fn media_action_success(vendor: Vendor) -> Response {
    match vendor {
        Vendor::OpenBmc => StatusCode::OK.into_response(),
        _ => success(vendor),
    }
}

/// Builds the 401 failure for a request without valid credentials.
pub(crate) fn unauthorized(vendor: Vendor, path: &str) -> Failure {
    let message = match vendor {
        // Supermicro names the URI (penmasters/zabbix-book issue "Redfish API").
        Vendor::Supermicro => ErrorMessage::new(
            "ResourceAtUriUnauthorized",
            format!(
                "While accessing the resource at {path}, the service received an authorization error unauthorized."
            ),
            &[path, "unauthorized"],
        ),
        // XCC returns AccessDenied (python-redfish-lenovo issue "redfish issue
        // with ThinkEdge SE450 and SR650").
        Vendor::Lenovo => ErrorMessage::new(
            "AccessDenied",
            format!(
                "While attempting to establish a connection to {path}, the service denied access."
            ),
            &[path],
        ),
        _ => ErrorMessage::new(
            "NoValidSession",
            "There is no valid session established with the implementation.",
            &[],
        ),
    };
    Failure::new(
        StatusCode::UNAUTHORIZED,
        message.critical().resolution(
            "Establish a session or send valid credentials, then resubmit the request.",
        ),
    )
}

/// Builds Supermicro's failure for a feature whose licence is not activated.
///
/// Supermicro gates Redfish features (virtual media, storage, firmware
/// update) behind the SFT-DCMS-SINGLE or SFT-OOB-LIC keys and responds with
/// MessageId `SMC.1.0.OemLicenseNotPassed` (fwupd's "Supermicro BMC
/// License" page for the keys; the MessageId appears in public Redfish
/// tools' source). The 403 status is the mock's choice.
pub(crate) fn license_required(feature: &str) -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        ErrorMessage::new(
            "SMC.1.0.OemLicenseNotPassed",
            format!(
                "The {feature} feature requires a licence that is not activated: SFT-DCMS-SINGLE."
            ),
            &["SFT-DCMS-SINGLE"],
        )
        .resolution(
            "Activate the licence through Managers/1/LicenseManager and resubmit the request.",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_messages() -> Vec<ErrorMessage> {
        vec![
            ErrorMessage::new("PropertyUnknown", "first", &["Inserted"]),
            ErrorMessage::new("PropertyUnknown", "second", &["WriteProtected"]),
        ]
    }

    #[test]
    fn openbmc_single_message_fills_code() {
        let body = error_body(Vendor::OpenBmc, &two_messages()[..1]);
        assert_eq!(body["error"]["code"], "Base.1.19.PropertyUnknown");
        assert_eq!(body["error"]["message"], "first");
    }

    #[test]
    fn openbmc_several_messages_use_general_error() {
        let body = error_body(Vendor::OpenBmc, &two_messages());
        assert_eq!(body["error"]["code"], "Base.1.19.0.GeneralError");
        assert_eq!(
            body["error"]["@Message.ExtendedInfo"][1]["Message"],
            "second"
        );
    }
}
