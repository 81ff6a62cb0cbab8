//! The Redfish driver against the vendor-shaped Redfish mock
//! (`rackhand_e2e::redfish_mock`): one mock per test, in the shape of Dell
//! iDRAC, HPE iLO, Lenovo XCC, Supermicro, OpenBMC or a plain DMTF service.
//! These cover what the sushy-tools emulator lacks: sessions, ETags, task
//! monitors, Dell jobs, virtual media under Managers, vendor error bodies.

use std::time::{Duration, Instant};

use rackhand_e2e::redfish_mock::{
    AsyncOperation, DellVirtualMedia, Fault, FaultRule, MockConfig, RedfishMock, Redirect,
    RequestAuth, TaskOutcome, Vendor as MockVendor,
};
use rackhand_ironic_bridge::driver::{DriverError, ResponseProblem};
use rackhand_ironic_bridge::redfish::{RedfishDriver, Vendor};
use rackhand_ironic_bridge::{
    BmcDriver, BmcEndpoint, BootMode, BootOverride, BootPersistence, BootTarget, Console,
    DriverKind, PowerState,
};
use rackhand_protocol::Secret;
use serde_json::json;

const NODE: &str = "mock-node-3";
const IMAGE: &str = "http://127.0.0.1:9/install.iso";
/// bmcweb mounts only `https://` and `smb://` images.
const HTTPS_IMAGE: &str = "https://127.0.0.1:9/install.iso";

/// Returns an image URL the vendor's BMC accepts for virtual media.
fn image_for(vendor: MockVendor) -> &'static str {
    match vendor {
        MockVendor::OpenBmc => HTTPS_IMAGE,
        _ => IMAGE,
    }
}

/// Every mock profile, the driver kind an operator would pick for it, and
/// the profile the driver must end up with.
const PROFILES: [(MockVendor, DriverKind, Vendor); 6] = [
    (MockVendor::Generic, DriverKind::Redfish, Vendor::Generic),
    (MockVendor::Dell, DriverKind::Idrac, Vendor::Dell),
    (MockVendor::Hpe, DriverKind::Ilo, Vendor::Hpe),
    (MockVendor::Lenovo, DriverKind::Redfish, Vendor::Lenovo),
    (
        MockVendor::Supermicro,
        DriverKind::Redfish,
        Vendor::Supermicro,
    ),
    (MockVendor::OpenBmc, DriverKind::Redfish, Vendor::OpenBmc),
];

async fn start(config: MockConfig) -> RedfishMock {
    RedfishMock::start(config)
        .await
        .expect("start the Redfish mock")
}

fn endpoint(mock: &RedfishMock, kind: DriverKind) -> BmcEndpoint {
    BmcEndpoint {
        timeout: Duration::from_secs(5),
        ..BmcEndpoint::new(
            kind,
            mock.url(),
            mock.username(),
            Secret::new(mock.password()),
            NODE,
        )
    }
}

fn driver(mock: &RedfishMock, kind: DriverKind) -> RedfishDriver {
    RedfishDriver::new(endpoint(mock, kind))
        .expect("valid endpoint")
        .with_task_deadline(Duration::from_secs(20))
}

fn count(mock: &RedfishMock, method: &str, path: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|request| request.method == method && request.path == path)
        .count()
}

/// Asserts what every error must show, and must not.
fn assert_names_node_and_hides_password(error: &DriverError, mock: &RedfishMock) {
    let text = format!("{error} {error:?}");
    assert!(text.contains(NODE), "node missing: {text}");
    assert!(text.contains("127.0.0.1"), "BMC address missing: {text}");
    assert!(!text.contains(&mock.password()), "password leaked: {text}");
}

#[tokio::test]
async fn each_profile_detected_with_session() {
    for (mock_vendor, kind, vendor) in PROFILES {
        let mock = start(MockConfig::new(mock_vendor)).await;
        let driver = driver(&mock, kind);

        let state = driver.power_state().await.expect("power state");

        assert_eq!(state, PowerState::Off, "{mock_vendor:?}");
        assert_eq!(
            driver.vendor().await.expect("vendor"),
            vendor,
            "{mock_vendor:?}"
        );
        let system_read = mock
            .requests()
            .into_iter()
            .find(|request| request.path == mock.system_path())
            .expect("the system was read");
        assert_eq!(
            system_read.auth,
            RequestAuth::Session { valid: true },
            "{mock_vendor:?}"
        );

        driver.close().await.expect("logout");
        assert_eq!(mock.active_sessions(), 0, "{mock_vendor:?}");
    }
}

#[tokio::test]
async fn each_profile_powers_on_once() {
    for (mock_vendor, kind, _) in PROFILES {
        let mock = start(MockConfig::new(mock_vendor)).await;
        let driver = driver(&mock, kind);
        let reset = format!("{}/Actions/ComputerSystem.Reset", mock.system_path());

        driver.power_on().await.expect("power on");
        wait_for_on(&driver).await;
        driver.power_on().await.expect("power on again");

        assert_eq!(mock.power_state(), "On", "{mock_vendor:?}");
        assert_eq!(count(&mock, "POST", &reset), 1, "{mock_vendor:?}");
    }
}

async fn wait_for_on(driver: &RedfishDriver) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if driver.power_state().await.expect("power state") == PowerState::On {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node did not reach On within 10 s");
}

#[tokio::test]
async fn each_profile_sets_boot_override_once() {
    let boot = BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Uefi),
    };
    for (mock_vendor, kind, _) in PROFILES {
        let mock = start(MockConfig::new(mock_vendor)).await;
        let driver = driver(&mock, kind);

        driver.set_next_boot(boot).await.expect("boot override");
        driver
            .set_next_boot(boot)
            .await
            .expect("same boot override");

        let system = mock.resource(&mock.system_path()).expect("system");
        assert_eq!(
            system["Boot"]["BootSourceOverrideTarget"], "Pxe",
            "{mock_vendor:?}"
        );
        assert_eq!(
            system["Boot"]["BootSourceOverrideEnabled"], "Once",
            "{mock_vendor:?}"
        );
        assert_eq!(
            count(&mock, "PATCH", &mock.system_path()),
            1,
            "{mock_vendor:?}"
        );
        let patch = mock
            .requests()
            .into_iter()
            .find(|request| request.method == "PATCH")
            .expect("PATCH sent");
        assert!(patch.if_match.is_some(), "{mock_vendor:?}: no If-Match");
    }
}

#[tokio::test]
async fn each_profile_inserts_and_ejects_media() {
    for (mock_vendor, kind, _) in PROFILES {
        let mock = start(MockConfig::new(mock_vendor)).await;
        let driver = driver(&mock, kind);
        let slot = mock.cd_slot_paths()[0].clone();

        let image = image_for(mock_vendor);
        driver.insert_media(image).await.expect("insert");
        let requests_after_insert = mock.requests().len();
        driver.insert_media(image).await.expect("insert again");

        let inserted = mock.resource(&slot).expect("CD slot");
        assert_eq!(inserted["Image"], image, "{mock_vendor:?}");
        assert_eq!(inserted["Inserted"], true, "{mock_vendor:?}");
        let repeated: Vec<_> = mock.requests()[requests_after_insert..]
            .iter()
            .filter(|request| request.method != "GET")
            .map(|request| format!("{} {}", request.method, request.path))
            .collect();
        assert!(repeated.is_empty(), "{mock_vendor:?}: {repeated:?}");

        driver.eject_media().await.expect("eject");

        let ejected = mock.resource(&slot).expect("CD slot");
        assert_eq!(ejected["Inserted"], false, "{mock_vendor:?}");
    }
}

#[tokio::test]
async fn dell_media_under_manager_on_older_firmware() {
    for placement in [
        DellVirtualMedia::UnderSystem,
        DellVirtualMedia::UnderManager,
    ] {
        let mock = start(MockConfig {
            dell_virtual_media: placement,
            ..MockConfig::new(MockVendor::Dell)
        })
        .await;
        let slot = mock.cd_slot_paths()[0].clone();

        driver(&mock, DriverKind::Idrac)
            .insert_media(IMAGE)
            .await
            .expect("insert");

        assert_eq!(
            mock.resource(&slot).expect("slot")["Image"],
            IMAGE,
            "{placement:?}"
        );
    }
}

#[tokio::test]
async fn supermicro_insert_omits_inserted_flags() {
    let mock = start(MockConfig::new(MockVendor::Supermicro)).await;

    driver(&mock, DriverKind::Redfish)
        .insert_media(IMAGE)
        .await
        .expect("insert");

    let insert = mock
        .requests()
        .into_iter()
        .find(|request| request.path.ends_with("InsertMedia"))
        .expect("InsertMedia sent");
    assert_eq!(insert.body, Some(json!({ "Image": IMAGE })));
}

#[tokio::test]
async fn supermicro_unlicensed_media_fails() {
    let mock = start(MockConfig {
        supermicro_licensed: false,
        ..MockConfig::new(MockVendor::Supermicro)
    })
    .await;

    let error = driver(&mock, DriverKind::Redfish)
        .insert_media(IMAGE)
        .await
        .expect_err("no licence");

    assert!(
        matches!(error, DriverError::LicenceRequired { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("licence required"), "{error}");
    assert!(!error.is_retryable());
    assert_names_node_and_hides_password(&error, &mock);
}

#[tokio::test]
async fn supermicro_unlicensed_inventory_works() {
    let mock = start(MockConfig {
        supermicro_licensed: false,
        ..MockConfig::new(MockVendor::Supermicro)
    })
    .await;

    let inventory = driver(&mock, DriverKind::Redfish)
        .inventory()
        .await
        .expect("inventory without the licensed parts");

    assert!(!inventory.cpus.is_empty(), "{inventory:?}");
}

#[tokio::test]
async fn stale_etag_is_retried_with_a_fresh_one() {
    let mock = start(MockConfig::new(MockVendor::Hpe)).await;
    let driver = driver(&mock, DriverKind::Ilo);
    let system = mock.system_path();
    mock.inject_fault(
        FaultRule::new(
            &system,
            Fault::ExtendedInfo {
                status: 412,
                message_id: "Base.1.4.PreconditionFailed".into(),
                message: "The ETag supplied did not match the ETag required.".into(),
                resolution: "Read the resource again.".into(),
            },
        )
        .method("PATCH")
        .times(1),
    );

    driver
        .set_next_boot(BootOverride::once(BootTarget::Pxe))
        .await
        .expect("second PATCH succeeds");

    assert_eq!(count(&mock, "PATCH", &system), 2);
    let resource = mock.resource(&system).expect("system");
    assert_eq!(resource["Boot"]["BootSourceOverrideTarget"], "Pxe");
}

#[tokio::test]
async fn task_monitor_is_polled_to_completion() {
    let mock = start(MockConfig {
        async_operations: Some(vec![AsyncOperation::InsertMedia]),
        task_polls: 2,
        ..MockConfig::new(MockVendor::Hpe)
    })
    .await;
    let slot = mock.cd_slot_paths()[0].clone();

    driver(&mock, DriverKind::Ilo)
        .insert_media(IMAGE)
        .await
        .expect("task completes");

    // The mock applies the insert when the task completes.
    assert_eq!(mock.resource(&slot).expect("slot")["Image"], IMAGE);
}

#[tokio::test]
async fn failed_task_carries_the_bmc_message() {
    let mock = start(MockConfig {
        async_operations: Some(vec![AsyncOperation::InsertMedia]),
        task_polls: 1,
        task_outcome: TaskOutcome::Exception {
            message_id: "Base.1.8.ResourceNotFound".into(),
            message: "The image at the URL could not be found.".into(),
        },
        ..MockConfig::new(MockVendor::OpenBmc)
    })
    .await;

    let error = driver(&mock, DriverKind::Redfish)
        .insert_media(HTTPS_IMAGE)
        .await
        .expect_err("task failed");

    assert!(matches!(error, DriverError::TaskFailed { .. }), "{error:?}");
    assert!(error.to_string().contains("could not be found"), "{error}");
    assert_names_node_and_hides_password(&error, &mock);
}

#[tokio::test]
async fn reset_as_task_is_waited_for() {
    let mock = start(MockConfig {
        async_operations: Some(vec![AsyncOperation::Reset]),
        task_polls: 1,
        task_outcome: TaskOutcome::NoContent,
        ..MockConfig::new(MockVendor::Generic)
    })
    .await;

    driver(&mock, DriverKind::Redfish)
        .power_on()
        .await
        .expect("reset task");

    assert_ne!(mock.power_state(), "Off");
}

#[tokio::test]
async fn dell_bios_boot_mode_is_queued_as_job() {
    let mock = start(MockConfig::new(MockVendor::Dell)).await;
    let system = mock.system_path();
    // Older iDRAC firmware: no BootSourceOverrideMode on the System.
    assert!(mock.update_resource(
        &system,
        &json!({ "Boot": { "BootSourceOverrideMode": null } })
    ));
    let boot = BootOverride {
        target: BootTarget::Pxe,
        persistence: BootPersistence::Once,
        mode: Some(BootMode::Legacy),
    };

    driver(&mock, DriverKind::Idrac)
        .set_next_boot(boot)
        .await
        .expect("boot mode through a BIOS job");

    let settings = format!("{system}/Bios/Settings");
    let patch = mock
        .requests()
        .into_iter()
        .find(|request| request.method == "PATCH" && request.path == settings)
        .expect("BIOS settings PATCH");
    let body = patch.body.expect("PATCH body");
    assert_eq!(body["Attributes"]["BootMode"], "Bios");
    assert_eq!(body["@Redfish.SettingsApplyTime"]["ApplyTime"], "OnReset");
}

#[tokio::test]
async fn short_retry_after_is_respected() {
    let mock = start(MockConfig::new(MockVendor::Generic)).await;
    let driver = driver(&mock, DriverKind::Redfish);
    driver.power_state().await.expect("first read");
    mock.set_unavailable(1, 1);
    let started = Instant::now();

    driver.power_state().await.expect("read after the wait");

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn long_retry_after_reaches_caller() {
    let mock = start(MockConfig::new(MockVendor::Generic)).await;
    let driver = driver(&mock, DriverKind::Redfish);
    driver.power_state().await.expect("first read");
    mock.set_unavailable(1, 120);

    let error = driver.power_state().await.expect_err("busy");

    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn broken_bodies_name_node_and_url() {
    let cases = [
        (Fault::HtmlPage { status: 200 }, "HTML"),
        (Fault::TruncatedBody, "truncated"),
        (Fault::CutJson, "truncated"),
        (Fault::InvalidJson, "invalid JSON"),
    ];
    for (fault, expected) in cases {
        let mock = start(MockConfig::new(MockVendor::Dell)).await;
        let driver = driver(&mock, DriverKind::Idrac);
        mock.inject_fault(FaultRule::new(&mock.system_path(), fault.clone()).method("GET"));

        let error = driver.power_state().await.expect_err("broken body");

        assert!(
            matches!(error, DriverError::InvalidResponse { .. }),
            "{fault:?}: {error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(expected), "{fault:?}: {message}");
        assert!(
            message.contains(&mock.system_path()),
            "{fault:?}: {message}"
        );
        assert_names_node_and_hides_password(&error, &mock);
    }
}

#[tokio::test]
async fn html_error_page_is_http_error() {
    let mock = start(MockConfig::new(MockVendor::Hpe)).await;
    let driver = driver(&mock, DriverKind::Ilo);
    mock.inject_fault(FaultRule::new(
        &mock.system_path(),
        Fault::HtmlPage { status: 502 },
    ));

    let error = driver.power_state().await.expect_err("HTML 502");

    assert!(
        matches!(error, DriverError::Http { status: 502, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_names_node_and_hides_password(&error, &mock);
}

#[tokio::test]
async fn silent_bmc_times_out() {
    let mock = start(MockConfig::new(MockVendor::Supermicro)).await;
    let driver = RedfishDriver::new(BmcEndpoint {
        timeout: Duration::from_millis(500),
        ..endpoint(&mock, DriverKind::Redfish)
    })
    .expect("valid endpoint");
    mock.inject_fault(FaultRule::new(&mock.system_path(), Fault::Hang));

    let error = driver.power_state().await.expect_err("no answer");

    assert!(matches!(error, DriverError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert_names_node_and_hides_password(&error, &mock);
}

#[tokio::test]
async fn extended_info_is_carried_into_the_error() {
    let mock = start(MockConfig::new(MockVendor::Lenovo)).await;
    let reset = format!("{}/Actions/ComputerSystem.Reset", mock.system_path());
    mock.inject_fault(FaultRule::new(
        &reset,
        Fault::ExtendedInfo {
            status: 400,
            message_id: "Base.1.8.ActionParameterNotSupported".into(),
            message: "The parameter ResetType for the action Reset is not supported.".into(),
            resolution: "Remove the parameter.".into(),
        },
    ));

    let error = driver(&mock, DriverKind::Redfish)
        .power_on()
        .await
        .expect_err("rejected reset");

    assert!(
        matches!(error, DriverError::Http { status: 400, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("ResetType for the action Reset"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn redirect_to_another_host_is_refused() {
    let mock = start(MockConfig::new(MockVendor::Generic)).await;
    let driver = driver(&mock, DriverKind::Redfish);
    mock.add_redirect(&mock.system_path(), Redirect::OtherHost);

    let error = driver.power_state().await.expect_err("foreign redirect");

    assert_names_node_and_hides_password(&error, &mock);
    assert!(!error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn redirect_on_the_same_host_is_followed() {
    let mock = start(MockConfig::new(MockVendor::Generic)).await;
    let alias = "/redfish/v1/Systems/alias";
    mock.add_redirect(
        alias,
        Redirect::SameHost {
            to: mock.system_path(),
        },
    );
    let endpoint = BmcEndpoint {
        url: format!("{}{alias}", mock.url()),
        ..endpoint(&mock, DriverKind::Redfish)
    };

    let state = RedfishDriver::new(endpoint)
        .expect("valid endpoint")
        .power_state()
        .await
        .expect("power state through the redirect");

    assert_eq!(state, PowerState::Off);
}

#[tokio::test]
async fn wrong_password_is_authentication_error() {
    let mock = start(MockConfig::new(MockVendor::Dell)).await;
    let endpoint = BmcEndpoint {
        password: Secret::new("wrong-password-3x".into()),
        ..endpoint(&mock, DriverKind::Idrac)
    };

    let error = RedfishDriver::new(endpoint)
        .expect("valid endpoint")
        .power_state()
        .await
        .expect_err("bad credentials");

    assert!(
        matches!(error, DriverError::Authentication { .. }),
        "{error:?}"
    );
    assert!(
        !format!("{error:?}").contains("wrong-password-3x"),
        "{error:?}"
    );
}

#[tokio::test]
async fn each_profile_reads_inventory_and_sensors() {
    for (mock_vendor, kind, _) in PROFILES {
        let mock = start(MockConfig::new(mock_vendor)).await;
        let driver = driver(&mock, kind);

        let inventory = driver.inventory().await.expect("inventory");
        let sensors = driver.sensors().await.expect("sensors");

        assert!(!inventory.cpus.is_empty(), "{mock_vendor:?}: {inventory:?}");
        assert!(inventory.memory_mib.is_some(), "{mock_vendor:?}");
        assert!(
            !inventory.disks.is_empty(),
            "{mock_vendor:?}: {inventory:?}"
        );
        assert!(
            !inventory.firmware.is_empty(),
            "{mock_vendor:?}: {inventory:?}"
        );
        assert!(!sensors.readings.is_empty(), "{mock_vendor:?}: {sensors:?}");
    }
}

#[tokio::test]
async fn each_profile_reports_its_console() {
    for (mock_vendor, kind, _) in PROFILES {
        let mock = start(MockConfig::new(mock_vendor)).await;

        match driver(&mock, kind).open_console().await {
            Ok(Console::Remote { host, port, .. }) => {
                assert_eq!(host, "127.0.0.1", "{mock_vendor:?}");
                assert!(port > 0, "{mock_vendor:?}");
            }
            Ok(other) => panic!("{mock_vendor:?}: unexpected console {other:?}"),
            Err(error) => assert!(
                matches!(error, DriverError::Unsupported { .. }),
                "{mock_vendor:?}: {error:?}"
            ),
        }
    }
}

#[tokio::test]
async fn pinned_fingerprint_and_ca_are_trusted() {
    let mock = start(MockConfig {
        tls: true,
        ..MockConfig::new(MockVendor::Hpe)
    })
    .await;
    let tls = mock.tls().expect("TLS material").clone();

    let pinned = BmcEndpoint {
        fingerprint: Some(tls.cert_sha256.clone()),
        ..endpoint(&mock, DriverKind::Ilo)
    };
    let with_ca = BmcEndpoint {
        ca_pem: Some(tls.ca_pem.clone()),
        ..endpoint(&mock, DriverKind::Ilo)
    };
    let wrong = BmcEndpoint {
        fingerprint: Some("11".repeat(32)),
        ca_pem: Some(tls.ca_pem.clone()),
        ..endpoint(&mock, DriverKind::Ilo)
    };

    for endpoint in [pinned, with_ca] {
        let state = RedfishDriver::new(endpoint)
            .expect("valid endpoint")
            .power_state()
            .await
            .expect("power state over HTTPS");
        assert_eq!(state, PowerState::Off);
    }
    let error = RedfishDriver::new(wrong)
        .expect("valid endpoint")
        .power_state()
        .await
        .expect_err("the fingerprint wins over the CA");
    assert!(
        matches!(error, DriverError::TlsHandshake { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn cut_media_slot_body_is_retryable() {
    let mock = start(MockConfig::new(MockVendor::OpenBmc)).await;
    let slot = mock.cd_slot_paths()[0].clone();
    mock.inject_fault(FaultRule::new(&slot, Fault::CutJson).method("GET"));

    let error = driver(&mock, DriverKind::Redfish)
        .insert_media(IMAGE)
        .await
        .expect_err("cut JSON");

    assert!(
        matches!(
            &error,
            DriverError::InvalidResponse {
                problem: ResponseProblem::Truncated(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn ilo_cd_boot_sets_oem_flag() {
    let mock = start(MockConfig::new(MockVendor::Hpe)).await;
    let driver = driver(&mock, DriverKind::Ilo);
    let slot = mock.cd_slot_paths()[0].clone();
    driver.insert_media(IMAGE).await.expect("insert");

    driver
        .set_next_boot(BootOverride::once(BootTarget::Cd))
        .await
        .expect("boot from the virtual CD");

    let cd = mock.resource(&slot).expect("slot");
    assert_eq!(cd["Oem"]["Hpe"]["BootOnNextServerReset"], true);
    let system = mock.resource(&mock.system_path()).expect("system");
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Cd");
}
