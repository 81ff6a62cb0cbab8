//! Vendor profiles: the known differences between Redfish services, and how
//! the driver tells the vendors apart.
//!
//! The `idrac` and `ilo` driver kinds fix the profile. Under the `redfish`
//! kind the profile is detected from the service root (`Vendor`, the keys of
//! `Oem`, `Product`) and, when the root says nothing, from the model and
//! manufacturer of the first Manager. Everything not listed here is plain
//! DMTF Redfish, so an unknown vendor gets [`Vendor::Generic`] and works as
//! far as it follows the standard.
//!
//! The vendor code lives where the difference matters: the Dell job queue
//! and the HPE BIOS and virtual media extensions in `oem.rs`, virtual media
//! parameters in `media.rs`, licence errors in `client.rs`.

use std::time::Duration;

use serde_json::Value;

use crate::driver::DriverKind;

/// The vendor of a Redfish service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Plain DMTF Redfish (also the sushy-tools emulator).
    Generic,
    /// Dell iDRAC 8/9.
    Dell,
    /// HPE iLO 5/6.
    Hpe,
    /// Lenovo XClarity Controller (XCC).
    Lenovo,
    /// Supermicro BMCs (X11 and later).
    Supermicro,
    /// OpenBMC's bmcweb.
    OpenBmc,
}

/// Time limit of one request to an iDRAC, when the endpoint keeps the
/// default. A choice, not measured here: an iDRAC answers slowly while its
/// Lifecycle Controller runs a job, and a step that times out in the middle
/// of a virtual media action is worse than one that waits longer.
const DELL_TIMEOUT: Duration = Duration::from_secs(90);

/// Time limit of one request to an iLO, when the endpoint keeps the
/// default. A choice, not measured here: between the generic default and
/// the iDRAC's, because an iLO mounts virtual media inside the request.
const HPE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a task monitor is polled before the driver gives up. A choice:
/// long enough for a virtual media mount or a reset on slow firmware.
const DEFAULT_TASK_DEADLINE: Duration = Duration::from_secs(300);

/// The same for iDRAC, whose jobs take longer than the other vendors' tasks.
const DELL_TASK_DEADLINE: Duration = Duration::from_secs(600);

impl Vendor {
    /// Returns the profile a driver kind fixes, or `None` for `redfish`,
    /// which detects it.
    pub fn from_kind(kind: DriverKind) -> Option<Vendor> {
        match kind {
            DriverKind::Idrac => Some(Vendor::Dell),
            DriverKind::Ilo => Some(Vendor::Hpe),
            _ => None,
        }
    }

    /// Detects the vendor from a service root. Returns `None` when the root
    /// names none, so that the caller can look at a Manager.
    pub fn from_service_root(root: &Value) -> Option<Vendor> {
        let vendor = root.get("Vendor").and_then(Value::as_str);
        let product = root.get("Product").and_then(Value::as_str);
        let oem_keys = root
            .get("Oem")
            .and_then(Value::as_object)
            .map(|oem| oem.keys().map(String::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        let names = vendor.into_iter().chain(product).chain(oem_keys);
        names.into_iter().find_map(vendor_from_name)
    }

    /// Detects the vendor from a Manager's `Model`, `Manufacturer` and OEM
    /// keys (`iDRAC`, `iLO 5`, `XClarity Controller`, `OpenBmc`).
    pub fn from_manager(manager: &Value) -> Option<Vendor> {
        let fields = ["Model", "Manufacturer", "Name"]
            .into_iter()
            .filter_map(|key| manager.get(key).and_then(Value::as_str));
        let oem_keys = manager
            .get("Oem")
            .and_then(Value::as_object)
            .map(|oem| oem.keys().map(String::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        fields.chain(oem_keys).find_map(vendor_from_name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Vendor::Generic => "generic",
            Vendor::Dell => "dell",
            Vendor::Hpe => "hpe",
            Vendor::Lenovo => "lenovo",
            Vendor::Supermicro => "supermicro",
            Vendor::OpenBmc => "openbmc",
        }
    }

    /// Returns the request time limit for this vendor when the endpoint
    /// keeps [`crate::driver::DEFAULT_TIMEOUT`].
    pub fn default_timeout(self) -> Option<Duration> {
        match self {
            Vendor::Dell => Some(DELL_TIMEOUT),
            Vendor::Hpe => Some(HPE_TIMEOUT),
            _ => None,
        }
    }

    /// Returns how long a task monitor is polled.
    pub fn task_deadline(self) -> Duration {
        match self {
            Vendor::Dell => DELL_TASK_DEADLINE,
            _ => DEFAULT_TASK_DEADLINE,
        }
    }

    /// Returns whether `VirtualMedia.InsertMedia` may carry `Inserted` and
    /// `WriteProtected`.
    ///
    /// Supermicro rejects both with HTTP 400 "The property Inserted is not
    /// in the list of valid properties for the resource" (quoted in the
    /// community.general pull request "redfish_command: VirtualMediaInsert
    /// does not work with Supermicro"), although DMTF's VirtualMedia schema
    /// defines them. Other vendors that reject them are caught by the retry
    /// in `media.rs`.
    pub fn sends_insert_flags(self) -> bool {
        !matches!(self, Vendor::Supermicro)
    }

    /// Returns whether the virtual media slot with `id` is the one to use
    /// for an image URL, when the vendor offers several kinds of CD slots.
    ///
    /// Lenovo XCC lists `RDOC*` slots (images uploaded to the XCC), `EXT*`
    /// slots (images mounted from a URL) and `Remote*` slots (the remote
    /// console's media). Only `EXT*` takes a URL.
    // NOTE: the slot roles are vendor knowledge, checked only against the
    // Lenovo test fixture.
    pub fn prefers_media_slot(self, id: &str) -> bool {
        match self {
            Vendor::Lenovo => id.starts_with("EXT"),
            _ => true,
        }
    }
}

/// Maps one vendor-identifying word to a vendor.
fn vendor_from_name(name: &str) -> Option<Vendor> {
    let name = name.to_ascii_lowercase();
    if name.contains("dell") || name.contains("idrac") {
        Some(Vendor::Dell)
    } else if name == "hpe" || name == "hp" || name.contains("ilo") {
        Some(Vendor::Hpe)
    } else if name.contains("lenovo") || name.contains("xclarity") {
        Some(Vendor::Lenovo)
    } else if name.contains("supermicro") {
        Some(Vendor::Supermicro)
    } else if name.contains("openbmc") {
        Some(Vendor::OpenBmc)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Vendor;

    #[test]
    fn root_vendor_field_detects_each_vendor() {
        let cases = [
            ("Dell", Vendor::Dell),
            ("HPE", Vendor::Hpe),
            ("Lenovo", Vendor::Lenovo),
            ("Supermicro", Vendor::Supermicro),
            ("OpenBMC", Vendor::OpenBmc),
        ];
        for (name, vendor) in cases {
            let root = json!({ "Vendor": name });
            assert_eq!(Vendor::from_service_root(&root), Some(vendor), "{name}");
        }
    }

    #[test]
    fn root_oem_key_detects_vendor() {
        let root = json!({ "Oem": { "Hpe": { "Manager": [] } } });
        assert_eq!(Vendor::from_service_root(&root), Some(Vendor::Hpe));
    }

    #[test]
    fn emulator_root_is_undetected() {
        let root = json!({ "Name": "Sushy Emulator", "Oem": {} });
        assert_eq!(Vendor::from_service_root(&root), None);
    }

    #[test]
    fn manager_model_detects_vendor() {
        let manager = json!({ "Model": "OpenBmc", "Id": "bmc" });
        assert_eq!(Vendor::from_manager(&manager), Some(Vendor::OpenBmc));
        let manager = json!({ "Model": "Lenovo XClarity Controller" });
        assert_eq!(Vendor::from_manager(&manager), Some(Vendor::Lenovo));
    }

    #[test]
    fn word_containing_ilo_only_as_substring_is_not_hpe() {
        // "ilo" must not match inside unrelated words by accident.
        let manager = json!({ "Model": "Joo Janta 200" });
        assert_eq!(Vendor::from_manager(&manager), None);
    }
}
