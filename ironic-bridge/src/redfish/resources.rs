//! The parts of Redfish resources that the driver reads (DMTF Redfish schema
//! names). Every field is optional, because BMCs omit what they do not
//! support; the driver decides what a missing field means.

use serde::Deserialize;

/// A reference to another resource.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Link {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
}

/// Any resource collection (`ComputerSystemCollection`,
/// `EthernetInterfaceCollection`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Collection {
    #[serde(default)]
    pub members: Vec<Link>,
}

/// `ComputerSystem`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ComputerSystem {
    pub power_state: Option<String>,
    pub actions: Option<SystemActions>,
    pub ethernet_interfaces: Option<Link>,
}

/// `ComputerSystem.Actions`.
#[derive(Debug, Deserialize)]
pub(crate) struct SystemActions {
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Option<ResetAction>,
}

/// The `#ComputerSystem.Reset` action.
#[derive(Debug, Deserialize)]
pub(crate) struct ResetAction {
    pub target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues")]
    pub allowed_reset_types: Option<Vec<String>>,
    /// A link to an `ActionInfo` resource listing the allowed values, used by
    /// BMCs that do not inline them.
    #[serde(rename = "@Redfish.ActionInfo")]
    pub action_info: Option<String>,
}

/// `ActionInfo`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ActionInfo {
    #[serde(default)]
    pub parameters: Vec<ActionParameter>,
}

/// One entry of `ActionInfo.Parameters`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ActionParameter {
    pub name: Option<String>,
    pub allowable_values: Option<Vec<String>>,
}

/// `EthernetInterface`.
#[derive(Debug, Deserialize)]
pub(crate) struct EthernetInterface {
    #[serde(rename = "MACAddress")]
    pub mac_address: Option<String>,
    #[serde(rename = "PermanentMACAddress")]
    pub permanent_mac_address: Option<String>,
}

/// Returns the `@odata.id` of the link at the JSON `pointer` in `json`
/// (`/Links/Sessions`, `/Systems`).
pub(crate) fn link_at<'a>(json: &'a serde_json::Value, pointer: &str) -> Option<&'a str> {
    json.pointer(pointer)?
        .get("@odata.id")?
        .as_str()
        .filter(|id| !id.is_empty())
}

/// Returns the string at the JSON `pointer`, if it is a non-empty string.
pub(crate) fn str_at<'a>(json: &'a serde_json::Value, pointer: &str) -> Option<&'a str> {
    json.pointer(pointer)?
        .as_str()
        .filter(|text| !text.is_empty())
}
