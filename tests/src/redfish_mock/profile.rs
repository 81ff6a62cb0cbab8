//! Vendor profiles: where each BMC family puts its resources and how it
//! behaves where the Redfish standard leaves room or where the firmware
//! departs from it.
//!
//! Sources are named by title where a fact came from one; facts without a
//! named source are the mock's own choice and are marked as such.

use std::time::Duration;

/// The BMC family that the mock imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// A plain service shaped like the DMTF public mockup public-rackmount1
    /// (`Systems/437XR1138R2`, `Managers/BMC`, `Chassis/1U`), with virtual
    /// media under the system as that mockup now has it (the VirtualMedia
    /// schema marks the `Managers/{id}/VirtualMedia` URIs deprecated). Its
    /// boot targets add `UefiShell` and `UefiHttp` to the mockup's list so
    /// that UEFI HTTP boot can be tested on a plain service.
    Generic,
    /// Dell iDRAC 9 (`System.Embedded.1`, `iDRAC.Embedded.1`).
    Dell,
    /// HPE iLO 5/6 (`Systems/1`, `Managers/1`), with virtual media slot `1`
    /// for floppy/USB and `2` for CD/DVD under `Managers/1/VirtualMedia`.
    /// NOTE: the slot numbering matches public client code (OpenShift's
    /// bare-metal tests read `Managers/1/VirtualMedia/2` on HPE) but was not
    /// found in an HPE document.
    Hpe,
    /// Lenovo XClarity Controller (`Systems/1`, `Managers/1`).
    Lenovo,
    /// Supermicro X12/H12-class BMC (`Systems/1`, `Managers/1`), with the CD
    /// slot at `Managers/1/VirtualMedia/CD1` (the InsertMedia URL quoted in
    /// ansible community.general pull request "redfish_command:
    /// VirtualMediaInsert does not work with Supermicro").
    Supermicro,
    /// OpenBMC's bmcweb (`Systems/system`, `Managers/bmc`), with slots
    /// `Slot_0`…`Slot_3` under `Managers/bmc/VirtualMedia`. Proxy-mode slots
    /// carry `TransferProtocolType` `OEM` and a WebSocket endpoint, and only
    /// legacy-mode slots list `InsertMedia` (bmcweb's
    /// `redfish-core/lib/virtual_media.hpp`). The virtual-media service's
    /// default configuration (openbmc/jsnbd `config/config.json`) makes slots
    /// 0–1 proxy slots with endpoints `/nbd/0` and `/nbd/1` and slots 2–3
    /// legacy slots. A platform can configure others.
    OpenBmc,
}

impl Vendor {
    /// All profiles, for tests that run the same check on each.
    pub const ALL: [Vendor; 6] = [
        Vendor::Generic,
        Vendor::Dell,
        Vendor::Hpe,
        Vendor::Lenovo,
        Vendor::Supermicro,
        Vendor::OpenBmc,
    ];

    /// The folder under `tests/fixtures/redfish/` that contains this profile.
    pub fn fixture_dir(self) -> &'static str {
        match self {
            Vendor::Generic => "generic",
            Vendor::Dell => "dell",
            Vendor::Hpe => "hpe",
            Vendor::Lenovo => "lenovo",
            Vendor::Supermicro => "supermicro",
            Vendor::OpenBmc => "openbmc",
        }
    }

    /// Returns the paths of the ComputerSystem, Manager and Chassis in the fixtures.
    pub(crate) fn paths(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Vendor::Generic => (
                "/redfish/v1/Systems/437XR1138R2",
                "/redfish/v1/Managers/BMC",
                "/redfish/v1/Chassis/1U",
            ),
            Vendor::Dell => (
                "/redfish/v1/Systems/System.Embedded.1",
                "/redfish/v1/Managers/iDRAC.Embedded.1",
                "/redfish/v1/Chassis/System.Embedded.1",
            ),
            Vendor::Hpe | Vendor::Lenovo | Vendor::Supermicro => (
                "/redfish/v1/Systems/1",
                "/redfish/v1/Managers/1",
                "/redfish/v1/Chassis/1",
            ),
            Vendor::OpenBmc => (
                "/redfish/v1/Systems/system",
                "/redfish/v1/Managers/bmc",
                "/redfish/v1/Chassis/chassis",
            ),
        }
    }

    /// Returns the `If-Match` rule on PATCH when the test does not choose one.
    ///
    /// XCC requires `If-Match` on PATCH: a missing header gets 428 (ansible
    /// pull request "Add If-Match ETag header to PATCH requests") and a stale
    /// one 412 (ansible community.general issue "xcc_redfish_command falis
    /// on raw patch (missing eTag?)", fwupd issue "redfish: add ETAG
    /// machenism"). bmcweb checks a header when sent and accepts `*`
    /// (bmcweb's `redfish-core/include/query.hpp`, `handleIfMatch`).
    /// NOTE: requiring the header on iLO is the mock's choice, not found in
    /// an HPE document. iLO 4 was seen accepting a PATCH without `If-Match`
    /// (python-ilorest-library issue "BIOs settings not changed after
    /// successful response"). The Supermicro profile ignores the header.
    pub(crate) fn default_if_match(self) -> IfMatchPolicy {
        match self {
            Vendor::Hpe | Vendor::Lenovo => IfMatchPolicy::Required,
            Vendor::Supermicro => IfMatchPolicy::Ignored,
            Vendor::Generic | Vendor::Dell | Vendor::OpenBmc => IfMatchPolicy::CheckedWhenPresent,
        }
    }

    /// Returns whether a POST to an action that carries `If-Match` gets 412
    /// whatever the tag.
    ///
    /// iDRAC does this (ironcore-dev/metal-operator issue "Dell iDRAC:
    /// BIOSVersion (and BMCVersion) upgrade fails permanently with 412
    /// PreconditionFailed"), so a client must send `If-Match` only on PATCH.
    pub(crate) fn rejects_if_match_on_actions(self) -> bool {
        matches!(self, Vendor::Dell)
    }

    /// Operations that return 202 with a task monitor when the test does not
    /// choose them.
    ///
    /// Only Dell's BIOS settings are asynchronous by default: a PATCH of
    /// `Bios/Settings` with `@Redfish.SettingsApplyTime` creates a
    /// `BIOSConfiguration` job in the iDRAC job queue (Dell's
    /// iDRAC-Redfish-Scripting maintainers describe this flow in their
    /// GitHub issue "BIOS Configuration Changes not being applied after
    /// reboot").
    pub(crate) fn default_async_operations(self) -> Vec<AsyncOperation> {
        match self {
            Vendor::Dell => vec![AsyncOperation::BiosSettings],
            _ => Vec::new(),
        }
    }

    /// The format of the `ETag` header for generation `generation` of a
    /// resource whose path hashes to `hash`.
    ///
    /// iDRAC's weak tags count generations (`W/"gen-12"` in resources quoted
    /// in Dell's iDRAC-Redfish-Scripting issue "iDRAC10 - Virtual Media Boot
    /// problems?"); XCC uses a strong 32-digit hex tag (XCC REST API
    /// document, "PATCH – Insert/Eject a virtual media" example). The other
    /// profiles use a weak hex tag, which is the mock's choice, except
    /// bmcweb: a strong tag of upper-case hex digits from a hash of the body
    /// (bmcweb's `http/http_response.hpp`, `getCurrentEtag`).
    pub(crate) fn etag(self, hash: u64, generation: u64) -> String {
        match self {
            Vendor::Dell => format!("W/\"gen-{generation}\""),
            Vendor::Lenovo => format!("\"{hash:016x}{generation:016x}\""),
            Vendor::OpenBmc => format!(
                "\"{:016X}\"",
                hash ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ),
            _ => format!(
                "W/\"{:08x}\"",
                (hash ^ generation.wrapping_mul(0x9e37_79b9)) as u32
            ),
        }
    }

    /// Returns whether resources carry `@odata.etag` in their body as well as the
    /// `ETag` header. bmcweb sets only the header (its handlers never write
    /// `@odata.etag`); XCC has both (XCC REST API document, "PATCH –
    /// Insert/Eject a virtual media" example). NOTE: for Supermicro this is
    /// the mock's choice, not a documented fact.
    pub(crate) fn etag_in_body(self) -> bool {
        !matches!(self, Vendor::Supermicro | Vendor::OpenBmc)
    }

    /// Returns the URI schemes that `InsertMedia` (or XCC's PATCH) accepts for
    /// an image, or `None` when the mock accepts any scheme.
    ///
    /// bmcweb mounts only `https://` and `smb://` images and rejects others
    /// with 400 `ResourceAtUriInUnknownFormat` (bmcweb's
    /// `redfish-core/lib/virtual_media.hpp`, `validateParams`). First
    /// generation XCC, whose virtual media lives under `Managers/1` as in
    /// these fixtures, mounts `EXT` slots over HTTP or NFS only (XCC REST API
    /// document, "PATCH – Insert/Eject a virtual media"; XCC2 and XCC3 add
    /// HTTPS and CIFS).
    pub(crate) fn accepted_image_schemes(self) -> Option<&'static [&'static str]> {
        match self {
            Vendor::OpenBmc => Some(&["https", "smb"]),
            Vendor::Lenovo => Some(&["http", "nfs"]),
            _ => None,
        }
    }

    /// Returns whether `ResetType` `On` on a powered-on system (or `ForceOff` on a
    /// powered-off one) is rejected with 409 instead of being a no-op.
    ///
    /// iDRAC rejects `On` on a powered-on server with 409
    /// (dell/dellemc-openmanage-ansible-modules issue
    /// "dellemc_change_power_state fails if host is already on"), and Dell's
    /// iDRAC9 Redfish API Guide lists PSU502 for the powered-off case.
    pub(crate) fn rejects_redundant_reset(self) -> bool {
        matches!(self, Vendor::Dell)
    }

    /// Returns whether `InsertMedia` rejects the `Inserted` and `WriteProtected`
    /// parameters with 400 naming them.
    ///
    /// Supermicro does: the ansible community.general pull request
    /// "redfish_command: VirtualMediaInsert does not work with Supermicro"
    /// quotes the BMC's 400 response, "The property Inserted is not in the
    /// list of valid properties for the resource" (the DMTF Base registry's
    /// `PropertyUnknown` message).
    pub(crate) fn rejects_insert_flags(self) -> bool {
        matches!(self, Vendor::Supermicro)
    }

    /// Returns whether `EjectMedia` leaves `ImageName` behind.
    ///
    /// Supermicro does, and marks the slot empty only through `ConnectedVia`
    /// `NotConnected` (ansible community.general pull request "Added
    /// workaround for Supermicro in VirtualMediaInsert command to treat
    /// 'NotConnected' slots as empty").
    pub(crate) fn keeps_image_name_on_eject(self) -> bool {
        matches!(self, Vendor::Supermicro)
    }

    /// Returns whether virtual media is mounted by PATCH of the slot (`Image`,
    /// `Inserted`) instead of the `InsertMedia` action.
    ///
    /// XCC does, and only on its `EXT{N}` slots: `RDOC{N}` and `Remote{N}`
    /// cannot be inserted that way (Lenovo XCC REST API document, "PATCH –
    /// Insert/Eject a virtual media"; the response is the updated resource).
    pub(crate) fn mounts_by_patch(self) -> bool {
        matches!(self, Vendor::Lenovo)
    }

    /// Returns how long a powering-on system reports `PoweringOn` when the test
    /// sets no delay.
    pub(crate) fn default_power_on_delay(self) -> Duration {
        Duration::ZERO
    }
}

/// Which authentication schemes the mock accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `X-Auth-Token` from `SessionService/Sessions`, or HTTP basic auth.
    /// This is what iDRAC 9, iLO 5, XCC, Supermicro and bmcweb accept out of
    /// the box, and the default for every profile.
    SessionOrBasic,
    /// Only `X-Auth-Token`: basic auth gets 401, as on a BMC
    /// whose operator turned basic auth off (bmcweb's
    /// `AccountService.Oem.OpenBMC.AuthMethods.BasicAuth`, for example).
    SessionOnly,
    /// Only basic auth: `SessionService/Sessions` returns 405.
    BasicOnly,
}

/// When PATCH must carry `If-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatchPolicy {
    /// The header is not looked at.
    Ignored,
    /// A header that does not match the resource's current ETag gets 412; no
    /// header is accepted.
    CheckedWhenPresent,
    /// A missing header gets 428 and a stale one 412.
    Required,
}

/// Where a Dell profile serves virtual media.
///
/// iDRAC 9 firmware before 6.x lists `CD` and `RemovableDisk` under
/// `Managers/iDRAC.Embedded.1/VirtualMedia`; 6.x and later (and iDRAC 10)
/// list slots `1` and `2` under `Systems/System.Embedded.1/VirtualMedia`.
/// Sources: Dell's GitHub issues "How to map virtual media?" and "iDRAC10 -
/// Virtual Media Boot problems?" in dell/iDRAC-Redfish-Scripting, and the
/// dell/terraform-provider-redfish pull request "Updated virtual media
/// resource" (support for firmware 6.x and 7.x next to 5.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DellVirtualMedia {
    /// Newer firmware: `Systems/System.Embedded.1/VirtualMedia/{1,2}`.
    #[default]
    UnderSystem,
    /// Older firmware: `Managers/iDRAC.Embedded.1/VirtualMedia/{CD,RemovableDisk}`.
    UnderManager,
}

/// An operation that can be made asynchronous (202 + task monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsyncOperation {
    /// `VirtualMedia.InsertMedia` (and HPE's `InsertVirtualMedia`).
    InsertMedia,
    /// `VirtualMedia.EjectMedia` (and HPE's `EjectVirtualMedia`).
    EjectMedia,
    /// `ComputerSystem.Reset`.
    Reset,
    /// PATCH of `Bios/Settings` with `@Redfish.SettingsApplyTime`. On Dell
    /// this creates a job under `Managers/iDRAC.Embedded.1/Jobs`; elsewhere a
    /// DMTF task.
    BiosSettings,
}
