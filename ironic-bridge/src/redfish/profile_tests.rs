//! Tests of sessions, ETags, task monitors, virtual media, inventory,
//! sensors, console and the vendor profiles against canned responses in
//! each vendor's shape (resource ids, where virtual media lives, OEM
//! sections). The responses are small and written for these tests.

use std::time::Duration;

use rackhand_protocol::Secret;
use rackhand_protocol::hardware::{Health, SensorKind};
use serde_json::{Value, json};

use super::test_server::{Canned, Recorded, TestServer};
use super::{RedfishDriver, Vendor};
use crate::driver::{
    BmcDriver, BmcEndpoint, BootMode, BootOverride, BootPersistence, BootTarget, Console,
    DriverError, DriverKind,
};

const PASSWORD: &str = "s3cret-pw";
const TOKEN: &str = "token-one-7f3a";
const NODE: &str = "rack2-node05";
const ROOT: &str = "/redfish/v1/";
const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
const IMAGE: &str = "http://127.0.0.1:9/boot.iso";

fn endpoint(url: String, kind: DriverKind) -> BmcEndpoint {
    BmcEndpoint {
        timeout: Duration::from_secs(3),
        ..BmcEndpoint::new(kind, url, "admin", Secret::new(PASSWORD.into()), NODE)
    }
}

fn driver(server: &TestServer, path: &str, kind: DriverKind) -> RedfishDriver {
    RedfishDriver::new(endpoint(server.at(path), kind))
        .expect("valid endpoint")
        .with_task_deadline(Duration::from_secs(10))
}

fn json_with(status: u16, body: Value, headers: Vec<(&'static str, String)>) -> Canned {
    Canned::Full {
        status,
        content_type: "application/json",
        body: body.to_string(),
        headers,
    }
}

fn root(vendor: &str, system: &str, manager: &str) -> Canned {
    Canned::json(
        200,
        json!({
            "@odata.id": ROOT,
            "Vendor": vendor,
            "Systems": { "@odata.id": "/redfish/v1/Systems" },
            "Managers": { "@odata.id": "/redfish/v1/Managers" },
            "Chassis": { "@odata.id": "/redfish/v1/Chassis" },
            "UpdateService": { "@odata.id": "/redfish/v1/UpdateService" },
            "Links": { "Sessions": { "@odata.id": SESSIONS } },
            "Oem": {},
            "_system": system,
            "_manager": manager,
        })
        .to_string(),
    )
}

fn login(token: &str) -> Canned {
    json_with(
        201,
        json!({ "Id": "1" }),
        vec![
            ("X-Auth-Token", token.to_string()),
            ("Location", format!("{SESSIONS}/1")),
        ],
    )
}

fn system(path: &str, manager: &str, power: &str) -> Value {
    json!({
        "@odata.id": path,
        "Id": path.rsplit('/').next(),
        "PowerState": power,
        "Manufacturer": "Vendor Inc.",
        "Model": "Model 7",
        "SerialNumber": "SN123",
        "UUID": "4c4c4544-0000-0000-0000-000000000001",
        "BiosVersion": "2.19.1",
        "Status": { "Health": "OK", "HealthRollup": "Warning" },
        "Boot": {
            "BootSourceOverrideTarget": "None",
            "BootSourceOverrideEnabled": "Disabled",
            "BootSourceOverrideMode": "UEFI",
        },
        "ProcessorSummary": { "Count": 2, "Model": "Xeon Gold 6338" },
        "MemorySummary": { "TotalSystemMemoryGiB": 256 },
        "Links": {
            "ManagedBy": [{ "@odata.id": manager }],
            "Chassis": [{ "@odata.id": "/redfish/v1/Chassis/1" }],
        },
        "Actions": { "#ComputerSystem.Reset": {
            "target": format!("{path}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"],
        }},
    })
}

fn token_requests(server: &TestServer) -> Vec<Recorded> {
    server
        .requests()
        .into_iter()
        .filter(|request| request.method != "POST" || request.path != SESSIONS)
        .collect()
}

fn body_of(request: &Recorded) -> Value {
    serde_json::from_str(&request.body).expect("request body is JSON")
}

const DELL_SYSTEM: &str = "/redfish/v1/Systems/System.Embedded.1";
const DELL_MANAGER: &str = "/redfish/v1/Managers/iDRAC.Embedded.1";

#[tokio::test]
async fn session_token_replaces_basic_auth() {
    let system_json = system(DELL_SYSTEM, DELL_MANAGER, "On");
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system_json.to_string()),
        ),
        (
            "DELETE",
            "/redfish/v1/SessionService/Sessions/1",
            Canned::json(204, ""),
        ),
    ])
    .await;
    let driver = driver(&server, DELL_SYSTEM, DriverKind::Idrac);

    driver.power_state().await.expect("power state");
    driver.close().await.expect("logout");

    let logins = server.requests_with("POST");
    assert_eq!(logins.len(), 1);
    assert_eq!(body_of(&logins[0])["UserName"], "admin");
    let gets: Vec<_> = server.requests_with("GET");
    let system_get = gets
        .iter()
        .find(|r| r.path == DELL_SYSTEM)
        .expect("system read");
    assert_eq!(system_get.header("x-auth-token"), Some(TOKEN));
    assert_eq!(system_get.header("authorization"), None);
    let logout = server.requests_with("DELETE");
    assert_eq!(logout.len(), 1);
    assert_eq!(logout[0].header("x-auth-token"), Some(TOKEN));
}

#[tokio::test]
async fn expired_token_logs_in_again_once() {
    let system_json = system(DELL_SYSTEM, DELL_MANAGER, "Off");
    let expired = Canned::json(401, r#"{"error":{"message":"session expired"}}"#);
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login("old-token")),
        ("POST", SESSIONS, login("new-token")),
        ("GET", DELL_SYSTEM, expired),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system_json.to_string()),
        ),
    ])
    .await;

    let state = driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .power_state()
        .await
        .expect("power state after a new login");

    assert_eq!(state, crate::driver::PowerState::Off);
    assert_eq!(server.requests_with("POST").len(), 2);
    let reads: Vec<_> = token_requests(&server)
        .into_iter()
        .filter(|r| r.path == DELL_SYSTEM)
        .collect();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[1].header("x-auth-token"), Some("new-token"));
}

#[tokio::test]
async fn rejected_login_hides_password() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        (
            "POST",
            SESSIONS,
            Canned::json(
                401,
                format!(r#"{{"error":{{"message":"bad password {PASSWORD}"}}}}"#),
            ),
        ),
    ])
    .await;

    let error = driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .power_state()
        .await
        .expect_err("login rejected");

    assert!(
        matches!(error, DriverError::Authentication { .. }),
        "{error:?}"
    );
    assert!(
        !format!("{error} {error:?}").contains(PASSWORD),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains(TOKEN));
}

#[tokio::test]
async fn patch_retries_once_on_412_with_fresh_etag() {
    let mut first = system(DELL_SYSTEM, DELL_MANAGER, "On");
    first["Boot"]["BootSourceOverrideTarget"] = json!("Hdd");
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            json_with(200, first.clone(), vec![("ETag", "W/\"1\"".into())]),
        ),
        (
            "GET",
            DELL_SYSTEM,
            json_with(200, first, vec![("ETag", "W/\"2\"".into())]),
        ),
        (
            "PATCH",
            DELL_SYSTEM,
            Canned::json(412, r#"{"error":{"message":"stale"}}"#),
        ),
        ("PATCH", DELL_SYSTEM, Canned::json(204, "")),
    ])
    .await;

    driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .set_next_boot(BootOverride::once(BootTarget::Pxe))
        .await
        .expect("boot override after one retry");

    let patches = server.requests_with("PATCH");
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].header("if-match"), Some("W/\"1\""));
    assert_eq!(patches[1].header("if-match"), Some("W/\"2\""));
    assert_eq!(
        body_of(&patches[1])["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );
}

#[tokio::test]
async fn second_412_is_an_error() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system(DELL_SYSTEM, DELL_MANAGER, "On").to_string()),
        ),
        (
            "PATCH",
            DELL_SYSTEM,
            Canned::json(412, r#"{"error":{"message":"stale"}}"#),
        ),
    ])
    .await;

    let error = driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .set_next_boot(BootOverride::once(BootTarget::Pxe))
        .await
        .expect_err("412 twice");

    assert!(
        matches!(error, DriverError::Http { status: 412, .. }),
        "{error:?}"
    );
    assert_eq!(server.requests_with("PATCH").len(), 2);
}

#[tokio::test]
async fn same_boot_override_sends_no_patch() {
    let mut current = system(DELL_SYSTEM, DELL_MANAGER, "On");
    current["Boot"]["BootSourceOverrideTarget"] = json!("Pxe");
    current["Boot"]["BootSourceOverrideEnabled"] = json!("Once");
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        ("GET", DELL_SYSTEM, Canned::json(200, current.to_string())),
    ])
    .await;
    let boot = BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Uefi),
    };

    driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .set_next_boot(boot)
        .await
        .expect("nothing to change");

    assert!(server.requests_with("PATCH").is_empty());
}

#[tokio::test]
async fn boot_mode_goes_into_the_patch() {
    let server = TestServer::start(vec![
        (
            "GET",
            ROOT,
            root("Lenovo", "/redfish/v1/Systems/1", "/redfish/v1/Managers/1"),
        ),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            "/redfish/v1/Systems/1",
            Canned::json(
                200,
                system("/redfish/v1/Systems/1", "/redfish/v1/Managers/1", "On").to_string(),
            ),
        ),
        ("PATCH", "/redfish/v1/Systems/1", Canned::json(204, "")),
    ])
    .await;
    let boot = BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Continuous,
        mode: Some(BootMode::Legacy),
    };

    driver(&server, "/redfish/v1/Systems/1", DriverKind::Redfish)
        .set_next_boot(boot)
        .await
        .expect("boot override");

    let patches = server.requests_with("PATCH");
    assert_eq!(patches.len(), 1);
    let body = body_of(&patches[0]);
    assert_eq!(body["Boot"]["BootSourceOverrideMode"], "Legacy");
    assert_eq!(body["Boot"]["BootSourceOverrideEnabled"], "Continuous");
}

#[tokio::test]
async fn dell_boot_mode_queues_bios_job() {
    let mut current = system(DELL_SYSTEM, DELL_MANAGER, "On");
    current["Boot"]
        .as_object_mut()
        .expect("Boot object")
        .remove("BootSourceOverrideMode");
    current["Bios"] = json!({ "@odata.id": format!("{DELL_SYSTEM}/Bios") });
    let bios = json!({
        "Attributes": { "BootMode": "Uefi" },
        "@Redfish.Settings": { "SettingsObject": { "@odata.id": format!("{DELL_SYSTEM}/Bios/Settings") } },
    });
    let manager = json!({ "@odata.id": DELL_MANAGER, "Model": "14G Monolithic" });
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        ("GET", DELL_SYSTEM, Canned::json(200, current.to_string())),
        (
            "GET",
            "/redfish/v1/Systems/System.Embedded.1/Bios",
            Canned::json(200, bios.to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Systems/System.Embedded.1/Bios/Settings",
            Canned::json(200, r#"{"Attributes":{}}"#),
        ),
        (
            "PATCH",
            "/redfish/v1/Systems/System.Embedded.1/Bios/Settings",
            Canned::json(200, "{}"),
        ),
        ("GET", DELL_MANAGER, Canned::json(200, manager.to_string())),
        (
            "POST",
            "/redfish/v1/Managers/iDRAC.Embedded.1/Jobs",
            json_with(
                200,
                json!({}),
                vec![(
                    "Location",
                    "/redfish/v1/Managers/iDRAC.Embedded.1/Jobs/JID_1".into(),
                )],
            ),
        ),
        ("PATCH", DELL_SYSTEM, Canned::json(204, "")),
    ])
    .await;
    let boot = BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Legacy),
    };

    driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .set_next_boot(boot)
        .await
        .expect("boot mode through BIOS");

    let patches = server.requests_with("PATCH");
    let bios_patch = patches
        .iter()
        .find(|r| r.path.ends_with("/Bios/Settings"))
        .expect("BIOS PATCH");
    assert_eq!(body_of(bios_patch)["Attributes"]["BootMode"], "Bios");
    let jobs: Vec<_> = server
        .requests_with("POST")
        .into_iter()
        .filter(|r| r.path.ends_with("/Jobs"))
        .collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        body_of(&jobs[0])["TargetSettingsURI"],
        "/redfish/v1/Systems/System.Embedded.1/Bios/Settings"
    );
}

const ILO_SYSTEM: &str = "/redfish/v1/Systems/1";
const ILO_MANAGER: &str = "/redfish/v1/Managers/1";

fn ilo_routes(
    cd: Value,
    extra: Vec<(&'static str, &'static str, Canned)>,
) -> Vec<(&'static str, &'static str, Canned)> {
    let manager = json!({
        "@odata.id": ILO_MANAGER,
        "Model": "iLO 5",
        "FirmwareVersion": "iLO 5 v2.72",
        "VirtualMedia": { "@odata.id": "/redfish/v1/Managers/1/VirtualMedia" },
    });
    let mut routes = vec![
        ("GET", ROOT, root("HPE", ILO_SYSTEM, ILO_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            ILO_SYSTEM,
            Canned::json(200, system(ILO_SYSTEM, ILO_MANAGER, "On").to_string()),
        ),
        ("GET", ILO_MANAGER, Canned::json(200, manager.to_string())),
        (
            "GET",
            "/redfish/v1/Managers/1/VirtualMedia",
            Canned::json(
                200,
                json!({"Members": [
                    {"@odata.id": "/redfish/v1/Managers/1/VirtualMedia/1"},
                    {"@odata.id": "/redfish/v1/Managers/1/VirtualMedia/2"},
                ]})
                .to_string(),
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1/VirtualMedia/1",
            Canned::json(
                200,
                json!({"MediaTypes": ["Floppy", "USBStick"], "Inserted": false}).to_string(),
            ),
        ),
    ];
    routes.extend(extra);
    routes.push((
        "GET",
        "/redfish/v1/Managers/1/VirtualMedia/2",
        Canned::json(200, cd.to_string()),
    ));
    routes
}

fn ilo_cd(inserted: bool, image: Option<&str>) -> Value {
    json!({
        "@odata.id": "/redfish/v1/Managers/1/VirtualMedia/2",
        "MediaTypes": ["CD", "DVD"],
        "Inserted": inserted,
        "Image": image,
        "Oem": { "Hpe": { "BootOnNextServerReset": false } },
        "Actions": {
            "#VirtualMedia.InsertMedia": { "target": "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia" },
            "#VirtualMedia.EjectMedia": { "target": "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.EjectMedia" },
        },
    })
}

#[tokio::test]
async fn virtual_cd_under_managers_is_found_and_inserted() {
    let routes = ilo_routes(
        ilo_cd(false, None),
        vec![(
            "POST",
            "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
            Canned::json(204, ""),
        )],
    );
    let server = TestServer::start(routes).await;

    driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect("insert");

    let inserts: Vec<_> = server
        .requests_with("POST")
        .into_iter()
        .filter(|r| r.path.ends_with("InsertMedia"))
        .collect();
    assert_eq!(inserts.len(), 1);
    let body = body_of(&inserts[0]);
    assert_eq!(body["Image"], IMAGE);
    assert_eq!(body["Inserted"], true);
}

#[tokio::test]
async fn same_image_inserted_sends_nothing() {
    let server = TestServer::start(ilo_routes(ilo_cd(true, Some(IMAGE)), vec![])).await;

    driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect("already inserted");

    assert_eq!(
        token_requests(&server)
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        0
    );
}

#[tokio::test]
async fn other_image_is_ejected_first() {
    let routes = ilo_routes(
        ilo_cd(true, Some("http://127.0.0.1:9/old.iso")),
        vec![
            (
                "POST",
                "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.EjectMedia",
                Canned::json(204, ""),
            ),
            (
                "POST",
                "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
                Canned::json(204, ""),
            ),
        ],
    );
    let server = TestServer::start(routes).await;

    driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect("eject then insert");

    let actions: Vec<String> = token_requests(&server)
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert_eq!(actions.len(), 2);
    assert!(actions[0].ends_with("EjectMedia"), "{actions:?}");
    assert!(actions[1].ends_with("InsertMedia"), "{actions:?}");
}

#[tokio::test]
async fn ilo_cd_boot_sets_oem_flag() {
    let routes = ilo_routes(
        ilo_cd(true, Some(IMAGE)),
        vec![
            (
                "PATCH",
                "/redfish/v1/Managers/1/VirtualMedia/2",
                Canned::json(200, "{}"),
            ),
            ("PATCH", ILO_SYSTEM, Canned::json(200, "{}")),
        ],
    );
    let server = TestServer::start(routes).await;

    driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .set_next_boot(BootOverride::once(BootTarget::Cd))
        .await
        .expect("boot from virtual CD");

    let patches = server.requests_with("PATCH");
    assert_eq!(patches.len(), 2);
    assert_eq!(
        body_of(&patches[0])["Oem"]["Hpe"]["BootOnNextServerReset"],
        true
    );
    assert_eq!(
        body_of(&patches[1])["Boot"]["BootSourceOverrideTarget"],
        "Cd"
    );
}

#[tokio::test]
async fn task_monitor_is_polled_until_completed() {
    let accepted = json_with(
        202,
        json!({}),
        vec![
            ("Location", "/redfish/v1/TaskService/TaskMonitors/7".into()),
            ("Retry-After", "0".into()),
        ],
    );
    let routes = ilo_routes(
        ilo_cd(false, None),
        vec![
            (
                "POST",
                "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
                accepted,
            ),
            (
                "GET",
                "/redfish/v1/TaskService/TaskMonitors/7",
                json_with(
                    202,
                    json!({"TaskState": "Running"}),
                    vec![("Retry-After", "1".into())],
                ),
            ),
            (
                "GET",
                "/redfish/v1/TaskService/TaskMonitors/7",
                Canned::json(
                    200,
                    json!({"TaskState": "Completed", "TaskStatus": "OK"}).to_string(),
                ),
            ),
        ],
    );
    let server = TestServer::start(routes).await;

    driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect("task completes");

    let polls = server
        .requests_with("GET")
        .into_iter()
        .filter(|r| r.path.contains("TaskMonitors"))
        .count();
    assert_eq!(polls, 2);
}

#[tokio::test]
async fn failed_task_carries_its_messages() {
    let accepted = json_with(
        202,
        json!({}),
        vec![
            ("Location", "/redfish/v1/TaskService/Tasks/9".into()),
            ("Retry-After", "0".into()),
        ],
    );
    let failed = json!({
        "TaskState": "Exception",
        "TaskStatus": "Critical",
        "Messages": [{ "MessageId": "Base.1.8.ResourceCannotBeCreated", "Message": "The image server could not be reached." }],
    });
    let routes = ilo_routes(
        ilo_cd(false, None),
        vec![
            (
                "POST",
                "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
                accepted,
            ),
            (
                "GET",
                "/redfish/v1/TaskService/Tasks/9",
                Canned::json(200, failed.to_string()),
            ),
        ],
    );
    let server = TestServer::start(routes).await;

    let error = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect_err("task failed");

    assert!(matches!(error, DriverError::TaskFailed { .. }), "{error:?}");
    assert!(
        error.to_string().contains("could not be reached"),
        "{error}"
    );
    assert!(error.to_string().contains(NODE), "{error}");
}

#[tokio::test]
async fn task_that_never_ends_times_out() {
    let accepted = json_with(
        202,
        json!({}),
        vec![
            ("Location", "/redfish/v1/TaskService/Tasks/3".into()),
            ("Retry-After", "0".into()),
        ],
    );
    let routes = ilo_routes(
        ilo_cd(false, None),
        vec![
            (
                "POST",
                "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
                accepted,
            ),
            (
                "GET",
                "/redfish/v1/TaskService/Tasks/3",
                json_with(
                    202,
                    json!({"TaskState": "Running"}),
                    vec![("Retry-After", "1".into())],
                ),
            ),
        ],
    );
    let server = TestServer::start(routes).await;
    let driver = RedfishDriver::new(endpoint(server.at(ILO_SYSTEM), DriverKind::Ilo))
        .expect("valid endpoint")
        .with_task_deadline(Duration::from_secs(2));

    let error = driver.insert_media(IMAGE).await.expect_err("deadline");

    assert!(matches!(error, DriverError::Timeout { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("/redfish/v1/TaskService/Tasks/3"),
        "{error}"
    );
}

#[tokio::test]
async fn short_retry_after_is_waited_out() {
    let busy = json_with(
        503,
        json!({"error": {"message": "busy"}}),
        vec![("Retry-After", "1".into())],
    );
    let server = TestServer::start(vec![
        ("GET", ROOT, root("HPE", ILO_SYSTEM, ILO_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        ("GET", ILO_SYSTEM, busy),
        (
            "GET",
            ILO_SYSTEM,
            Canned::json(200, system(ILO_SYSTEM, ILO_MANAGER, "On").to_string()),
        ),
    ])
    .await;
    let started = std::time::Instant::now();

    let state = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .power_state()
        .await
        .expect("second try succeeds");

    assert_eq!(state, crate::driver::PowerState::On);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

const SMC_SYSTEM: &str = "/redfish/v1/Systems/1";

fn supermicro_routes(insert: Canned) -> Vec<(&'static str, &'static str, Canned)> {
    let manager = json!({ "Model": "X12", "VirtualMedia": { "@odata.id": "/redfish/v1/Managers/1/VirtualMedia" } });
    let cd = json!({
        "MediaTypes": ["CD", "DVD"],
        "Inserted": false,
        "Actions": { "#VirtualMedia.InsertMedia": { "target": "/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia" } },
    });
    vec![
        (
            "GET",
            ROOT,
            root("Supermicro", SMC_SYSTEM, "/redfish/v1/Managers/1"),
        ),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            SMC_SYSTEM,
            Canned::json(
                200,
                system(SMC_SYSTEM, "/redfish/v1/Managers/1", "On").to_string(),
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1",
            Canned::json(200, manager.to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1/VirtualMedia",
            Canned::json(
                200,
                r#"{"Members":[{"@odata.id":"/redfish/v1/Managers/1/VirtualMedia/CD1"}]}"#,
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1/VirtualMedia/CD1",
            Canned::json(200, cd.to_string()),
        ),
        (
            "POST",
            "/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia",
            insert,
        ),
    ]
}

#[tokio::test]
async fn supermicro_insert_sends_image_only() {
    let server = TestServer::start(supermicro_routes(Canned::json(202, ""))).await;
    let driver = driver(&server, SMC_SYSTEM, DriverKind::Redfish);

    driver.insert_media(IMAGE).await.expect("insert");

    assert_eq!(driver.vendor().await.expect("vendor"), Vendor::Supermicro);
    let insert = server
        .requests_with("POST")
        .into_iter()
        .find(|r| r.path.ends_with("InsertMedia"))
        .expect("InsertMedia sent");
    assert_eq!(body_of(&insert), json!({ "Image": IMAGE }));
}

#[tokio::test]
async fn supermicro_missing_licence_is_reported() {
    let refused = json!({"error": {
        "code": "Base.v1_10_3.GeneralError",
        "message": "A general error has occurred. See ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [{
            "MessageId": "SMC.1.0.OemLicenseNotPassed",
            "Message": "Not licensed to perform this request. The following licenses DCMS were needed",
            "Severity": "Warning",
        }],
    }});
    let server = TestServer::start(supermicro_routes(Canned::json(403, refused.to_string()))).await;

    let error = driver(&server, SMC_SYSTEM, DriverKind::Redfish)
        .insert_media(IMAGE)
        .await
        .expect_err("no licence");

    assert!(
        matches!(error, DriverError::LicenceRequired { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("licence required"), "{message}");
    assert!(message.contains("DCMS"), "{message}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn rejected_insert_flags_are_dropped_on_retry() {
    let rejected = Canned::json(400, json!({"error": {"@Message.ExtendedInfo": [{
        "MessageId": "Base.1.8.PropertyUnknown",
        "Message": "The property Inserted is not in the list of valid properties for the resource.",
    }]}}).to_string());
    let mut routes = supermicro_routes(rejected);
    routes[0] = (
        "GET",
        ROOT,
        root("Example", SMC_SYSTEM, "/redfish/v1/Managers/1"),
    );
    routes.push((
        "POST",
        "/redfish/v1/Managers/1/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia",
        Canned::json(204, ""),
    ));
    let server = TestServer::start(routes).await;

    driver(&server, SMC_SYSTEM, DriverKind::Redfish)
        .insert_media(IMAGE)
        .await
        .expect("second insert without the flags");

    let inserts: Vec<Value> = server
        .requests_with("POST")
        .iter()
        .filter(|r| r.path.ends_with("InsertMedia"))
        .map(body_of)
        .collect();
    assert_eq!(inserts.len(), 2);
    assert_eq!(inserts[0]["Inserted"], true);
    assert_eq!(inserts[1], json!({ "Image": IMAGE }));
}

#[tokio::test]
async fn slot_without_actions_is_patched_with_etag() {
    let cd = json!({ "MediaTypes": ["DVD"], "Inserted": false, "Image": null });
    let manager = json!({ "Model": "Lenovo XClarity Controller", "VirtualMedia": { "@odata.id": "/redfish/v1/Managers/1/VirtualMedia" } });
    let server = TestServer::start(vec![
        (
            "GET",
            ROOT,
            root("Lenovo", SMC_SYSTEM, "/redfish/v1/Managers/1"),
        ),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            SMC_SYSTEM,
            Canned::json(
                200,
                system(SMC_SYSTEM, "/redfish/v1/Managers/1", "On").to_string(),
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1",
            Canned::json(200, manager.to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1/VirtualMedia",
            Canned::json(
                200,
                r#"{"Members":[{"@odata.id":"/redfish/v1/Managers/1/VirtualMedia/EXT1"}]}"#,
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/1/VirtualMedia/EXT1",
            json_with(200, cd, vec![("ETag", "\"abc\"".into())]),
        ),
        (
            "PATCH",
            "/redfish/v1/Managers/1/VirtualMedia/EXT1",
            Canned::json(204, ""),
        ),
    ])
    .await;

    driver(&server, SMC_SYSTEM, DriverKind::Redfish)
        .insert_media(IMAGE)
        .await
        .expect("PATCH insert");

    let patches = server.requests_with("PATCH");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].header("if-match"), Some("\"abc\""));
    assert_eq!(
        body_of(&patches[0]),
        json!({ "Image": IMAGE, "Inserted": true })
    );
}

#[tokio::test]
async fn inventory_reads_every_part() {
    let mut sys = system(ILO_SYSTEM, ILO_MANAGER, "On");
    sys["Processors"] = json!({ "@odata.id": "/redfish/v1/Systems/1/Processors" });
    sys["Storage"] = json!({ "@odata.id": "/redfish/v1/Systems/1/Storage" });
    sys["EthernetInterfaces"] = json!({ "@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces" });
    let server = TestServer::start(vec![
        ("GET", ROOT, root("HPE", ILO_SYSTEM, ILO_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        ("GET", ILO_SYSTEM, Canned::json(200, sys.to_string())),
        ("GET", ILO_MANAGER, Canned::json(200, r#"{"FirmwareVersion":"iLO 5 v2.72"}"#)),
        ("GET", "/redfish/v1/Systems/1/Processors", Canned::json(200, r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1/Processors/1"},{"@odata.id":"/redfish/v1/Systems/1/Processors/2"}]}"#)),
        ("GET", "/redfish/v1/Systems/1/Processors/1", Canned::json(200, r#"{"Name":"Proc 1","ProcessorType":"CPU","Model":"Xeon","InstructionSet":"x86-64","TotalCores":28,"TotalThreads":56}"#)),
        ("GET", "/redfish/v1/Systems/1/Processors/2", Canned::json(200, r#"{"Name":"GPU 1","ProcessorType":"GPU"}"#)),
        ("GET", "/redfish/v1/Systems/1/Storage", Canned::json(200, r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1/Storage/DA000000"}]}"#)),
        ("GET", "/redfish/v1/Systems/1/Storage/DA000000", Canned::json(200, r#"{"Drives":[{"@odata.id":"/redfish/v1/Systems/1/Storage/DA000000/Drives/0"}]}"#)),
        ("GET", "/redfish/v1/Systems/1/Storage/DA000000/Drives/0", Canned::json(200, r#"{"Name":"Drive 0","CapacityBytes":960197124096,"MediaType":"SSD","Protocol":"NVMe","Model":"MZ","SerialNumber":"S1"}"#)),
        ("GET", "/redfish/v1/Systems/1/EthernetInterfaces", Canned::json(200, r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1/EthernetInterfaces/1"}]}"#)),
        ("GET", "/redfish/v1/Systems/1/EthernetInterfaces/1", Canned::json(200, r#"{"Name":"NIC 1","MACAddress":"94:40:c9:00:00:01","SpeedMbps":25000,"LinkStatus":"LinkUp"}"#)),
        ("GET", "/redfish/v1/UpdateService", Canned::json(200, r#"{"FirmwareInventory":{"@odata.id":"/redfish/v1/UpdateService/FirmwareInventory"}}"#)),
        ("GET", "/redfish/v1/UpdateService/FirmwareInventory", Canned::json(200, r#"{"Members":[{"@odata.id":"/redfish/v1/UpdateService/FirmwareInventory/1"}]}"#)),
        ("GET", "/redfish/v1/UpdateService/FirmwareInventory/1", Canned::json(200, r#"{"Name":"System ROM","Version":"U46 v2.80"}"#)),
    ])
    .await;

    let inventory = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .inventory()
        .await
        .expect("inventory");

    assert_eq!(inventory.cpus.len(), 1);
    assert_eq!(inventory.cpus[0].architecture.as_deref(), Some("x86_64"));
    assert_eq!(inventory.cpus[0].cores, Some(28));
    assert_eq!(inventory.memory_mib, Some(256 * 1024));
    assert_eq!(inventory.disks.len(), 1);
    assert_eq!(inventory.disks[0].media_type.as_deref(), Some("NVMe"));
    assert_eq!(inventory.disks[0].size_bytes, Some(960197124096));
    assert_eq!(inventory.nics.len(), 1);
    assert_eq!(inventory.nics[0].link_up, Some(true));
    assert_eq!(inventory.firmware.len(), 1);
    assert_eq!(inventory.firmware[0].version, "U46 v2.80");
    assert_eq!(inventory.serial_number.as_deref(), Some("SN123"));
}

#[tokio::test]
async fn sensors_read_thermal_power_and_rollup() {
    let chassis = json!({
        "Status": { "Health": "OK" },
        "Thermal": { "@odata.id": "/redfish/v1/Chassis/1/Thermal" },
        "Power": { "@odata.id": "/redfish/v1/Chassis/1/Power" },
    });
    let thermal = json!({
        "Temperatures": [{ "Name": "Inlet", "ReadingCelsius": 23.0, "Status": { "Health": "OK" } }],
        "Fans": [{ "Name": "Fan 1", "Reading": 34, "ReadingUnits": "Percent", "Status": { "Health": "Warning" } }],
    });
    let power = json!({ "PowerControl": [{ "Name": "Server Power", "PowerConsumedWatts": 212 }] });
    let server = TestServer::start(vec![
        ("GET", ROOT, root("HPE", ILO_SYSTEM, ILO_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            ILO_SYSTEM,
            Canned::json(200, system(ILO_SYSTEM, ILO_MANAGER, "On").to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Chassis/1",
            Canned::json(200, chassis.to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Chassis/1/Thermal",
            Canned::json(200, thermal.to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Chassis/1/Power",
            Canned::json(200, power.to_string()),
        ),
    ])
    .await;

    let sensors = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .sensors()
        .await
        .expect("sensors");

    assert_eq!(sensors.health, Health::Warning);
    assert_eq!(sensors.readings.len(), 3);
    assert_eq!(sensors.readings[0].kind, SensorKind::Temperature);
    assert_eq!(sensors.readings[1].unit.as_deref(), Some("%"));
    assert_eq!(sensors.readings[2].value, Some(212.0));
}

#[tokio::test]
async fn console_is_the_advertised_ssh_port() {
    let manager = json!({
        "Model": "OpenBmc",
        "SerialConsole": {
            "ServiceEnabled": true,
            "ConnectTypesSupported": ["SSH", "IPMI"],
            "SSH": { "ServiceEnabled": true, "Port": 2200 },
        },
    });
    let server = TestServer::start(vec![
        (
            "GET",
            ROOT,
            root(
                "OpenBMC",
                "/redfish/v1/Systems/system",
                "/redfish/v1/Managers/bmc",
            ),
        ),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            "/redfish/v1/Systems/system",
            Canned::json(
                200,
                system(
                    "/redfish/v1/Systems/system",
                    "/redfish/v1/Managers/bmc",
                    "On",
                )
                .to_string(),
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/bmc",
            Canned::json(200, manager.to_string()),
        ),
    ])
    .await;

    let console = driver(&server, "/redfish/v1/Systems/system", DriverKind::Redfish)
        .open_console()
        .await
        .expect("console");

    let Console::Remote {
        protocol,
        host,
        port,
    } = console
    else {
        panic!("expected a remote console, got {console:?}");
    };
    assert_eq!(protocol, "ssh");
    assert_eq!(host, "127.0.0.1");
    assert_eq!(port, 2200);
}

#[tokio::test]
async fn manager_without_serial_console_is_unsupported() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system(DELL_SYSTEM, DELL_MANAGER, "On").to_string()),
        ),
        (
            "GET",
            DELL_MANAGER,
            Canned::json(200, r#"{"Model":"iDRAC"}"#),
        ),
    ])
    .await;

    let error = driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .open_console()
        .await
        .expect_err("no console");

    assert!(
        matches!(
            error,
            DriverError::Unsupported {
                kind: DriverKind::Idrac,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn reset_of_running_node_is_force_restart() {
    let target = format!("{DELL_SYSTEM}/Actions/ComputerSystem.Reset");
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system(DELL_SYSTEM, DELL_MANAGER, "On").to_string()),
        ),
        (
            "POST",
            "/redfish/v1/Systems/System.Embedded.1/Actions/ComputerSystem.Reset",
            Canned::json(204, ""),
        ),
    ])
    .await;

    driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .reset()
        .await
        .expect("reset");

    let reset = server
        .requests_with("POST")
        .into_iter()
        .find(|r| r.path == target)
        .expect("reset sent");
    assert_eq!(body_of(&reset)["ResetType"], "ForceRestart");
}

#[tokio::test]
async fn reset_of_powered_off_node_powers_on() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system(DELL_SYSTEM, DELL_MANAGER, "Off").to_string()),
        ),
        (
            "POST",
            "/redfish/v1/Systems/System.Embedded.1/Actions/ComputerSystem.Reset",
            Canned::json(204, ""),
        ),
    ])
    .await;

    driver(&server, DELL_SYSTEM, DriverKind::Idrac)
        .reset()
        .await
        .expect("reset");

    let reset = server
        .requests_with("POST")
        .into_iter()
        .find(|r| r.path.ends_with("ComputerSystem.Reset"))
        .expect("reset sent");
    assert_eq!(body_of(&reset)["ResetType"], "On");
}

#[tokio::test]
async fn service_root_without_sessions_keeps_basic_auth() {
    let root = json!({ "Systems": { "@odata.id": "/redfish/v1/Systems" } });
    let server = TestServer::start(vec![
        ("GET", ROOT, Canned::json(200, root.to_string())),
        (
            "GET",
            "/redfish/v1/Systems/1",
            Canned::json(
                200,
                system("/redfish/v1/Systems/1", "/redfish/v1/Managers/1", "On").to_string(),
            ),
        ),
    ])
    .await;

    driver(&server, "/redfish/v1/Systems/1", DriverKind::Redfish)
        .power_state()
        .await
        .expect("power state");

    assert!(server.requests_with("POST").is_empty());
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_some())
    );
}

#[tokio::test]
async fn dropped_driver_logs_out() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system(DELL_SYSTEM, DELL_MANAGER, "On").to_string()),
        ),
        (
            "DELETE",
            "/redfish/v1/SessionService/Sessions/1",
            Canned::json(204, ""),
        ),
    ])
    .await;
    let driver = driver(&server, DELL_SYSTEM, DriverKind::Idrac);
    driver.power_state().await.expect("power state");

    drop(driver);

    // The logout runs on a spawned task; give it a bounded time.
    for _ in 0..50 {
        if !server.requests_with("DELETE").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logout = server.requests_with("DELETE");
    assert_eq!(logout.len(), 1);
    assert_eq!(logout[0].header("x-auth-token"), Some(TOKEN));
}

#[tokio::test]
async fn debug_output_hides_token_and_password() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            DELL_SYSTEM,
            Canned::json(200, system(DELL_SYSTEM, DELL_MANAGER, "On").to_string()),
        ),
    ])
    .await;
    let driver = driver(&server, DELL_SYSTEM, DriverKind::Idrac);
    driver.power_state().await.expect("power state");

    let debug = format!("{driver:?}");

    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!debug.contains(PASSWORD), "{debug}");
}

#[tokio::test]
async fn missing_session_service_falls_back_to_basic_auth() {
    let server = TestServer::start(vec![
        (
            "GET",
            ROOT,
            root(
                "OpenBMC",
                "/redfish/v1/Systems/system",
                "/redfish/v1/Managers/bmc",
            ),
        ),
        (
            "POST",
            SESSIONS,
            Canned::json(404, r#"{"error":{"message":"not found"}}"#),
        ),
        (
            "GET",
            "/redfish/v1/Systems/system",
            Canned::json(
                200,
                system(
                    "/redfish/v1/Systems/system",
                    "/redfish/v1/Managers/bmc",
                    "On",
                )
                .to_string(),
            ),
        ),
    ])
    .await;

    driver(&server, "/redfish/v1/Systems/system", DriverKind::Redfish)
        .power_state()
        .await
        .expect("power state with basic auth");

    let read = server
        .requests_with("GET")
        .into_iter()
        .find(|r| r.path == "/redfish/v1/Systems/system")
        .expect("system read");
    assert!(read.header("authorization").is_some());
    assert_eq!(read.header("x-auth-token"), None);
}

#[tokio::test]
async fn login_without_token_is_invalid_response() {
    let server = TestServer::start(vec![
        (
            "GET",
            ROOT,
            root("Lenovo", "/redfish/v1/Systems/1", "/redfish/v1/Managers/1"),
        ),
        (
            "POST",
            SESSIONS,
            Canned::html(200, "<html><body>Login</body></html>"),
        ),
    ])
    .await;

    let error = driver(&server, "/redfish/v1/Systems/1", DriverKind::Redfish)
        .power_state()
        .await
        .expect_err("no token");

    assert!(
        matches!(error, DriverError::InvalidResponse { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(NODE), "{message}");
    assert!(message.contains(SESSIONS), "{message}");
    assert!(message.contains("X-Auth-Token"), "{message}");
}

#[tokio::test]
async fn silent_session_login_times_out() {
    let server = TestServer::start(vec![
        ("GET", ROOT, root("Dell", DELL_SYSTEM, DELL_MANAGER)),
        ("POST", SESSIONS, Canned::Silent),
    ])
    .await;
    let endpoint = BmcEndpoint {
        timeout: Duration::from_millis(300),
        ..endpoint(server.at(DELL_SYSTEM), DriverKind::Idrac)
    };

    let error = RedfishDriver::new(endpoint)
        .expect("valid endpoint")
        .power_state()
        .await
        .expect_err("no answer");

    assert!(matches!(error, DriverError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains(SESSIONS), "{error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn html_task_monitor_is_invalid_response() {
    let accepted = json_with(
        202,
        json!({}),
        vec![
            ("Location", "/redfish/v1/TaskService/Tasks/4".into()),
            ("Retry-After", "0".into()),
        ],
    );
    let routes = ilo_routes(
        ilo_cd(false, None),
        vec![
            (
                "POST",
                "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
                accepted,
            ),
            (
                "GET",
                "/redfish/v1/TaskService/Tasks/4",
                Canned::html(200, "<html>Service Unavailable</html>"),
            ),
        ],
    );
    let server = TestServer::start(routes).await;

    let error = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect_err("HTML task");

    assert!(
        matches!(
            &error,
            DriverError::InvalidResponse {
                problem: crate::driver::ResponseProblem::Html,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("/redfish/v1/TaskService/Tasks/4"),
        "{error}"
    );
}

#[tokio::test]
async fn truncated_media_collection_is_retryable_error() {
    let mut routes = ilo_routes(ilo_cd(false, None), vec![]);
    routes.retain(|(_, path, _)| *path != "/redfish/v1/Managers/1/VirtualMedia");
    routes.push((
        "GET",
        "/redfish/v1/Managers/1/VirtualMedia",
        Canned::json(200, r#"{"Members":[{"@odata.id":"/redfish/v1/Man"#),
    ));
    let server = TestServer::start(routes).await;

    let error = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect_err("truncated JSON");

    assert!(
        matches!(
            &error,
            DriverError::InvalidResponse {
                problem: crate::driver::ResponseProblem::Truncated(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .contains("/redfish/v1/Managers/1/VirtualMedia"),
        "{error}"
    );
}

#[tokio::test]
async fn task_monitor_on_another_server_is_rejected() {
    let accepted = json_with(
        202,
        json!({}),
        vec![(
            "Location",
            "http://192.0.2.1/redfish/v1/TaskService/Tasks/1".into(),
        )],
    );
    let routes = ilo_routes(
        ilo_cd(false, None),
        vec![(
            "POST",
            "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia",
            accepted,
        )],
    );
    let server = TestServer::start(routes).await;

    let error = driver(&server, ILO_SYSTEM, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect_err("foreign task monitor");

    assert!(error.to_string().contains("another server"), "{error}");
}

#[tokio::test]
async fn openbmc_console_without_port_uses_2200() {
    let manager = json!({
        "Model": "OpenBmc",
        "SerialConsole": { "ServiceEnabled": true, "ConnectTypesSupported": ["IPMI", "SSH"] },
    });
    let server = TestServer::start(vec![
        (
            "GET",
            ROOT,
            root(
                "OpenBMC",
                "/redfish/v1/Systems/system",
                "/redfish/v1/Managers/bmc",
            ),
        ),
        ("POST", SESSIONS, login(TOKEN)),
        (
            "GET",
            "/redfish/v1/Systems/system",
            Canned::json(
                200,
                system(
                    "/redfish/v1/Systems/system",
                    "/redfish/v1/Managers/bmc",
                    "On",
                )
                .to_string(),
            ),
        ),
        (
            "GET",
            "/redfish/v1/Managers/bmc",
            Canned::json(200, manager.to_string()),
        ),
    ])
    .await;

    let console = driver(&server, "/redfish/v1/Systems/system", DriverKind::Redfish)
        .open_console()
        .await
        .expect("console");

    assert!(
        matches!(&console, Console::Remote { protocol, port: 2200, .. } if protocol == "ssh"),
        "{console:?}"
    );
}
