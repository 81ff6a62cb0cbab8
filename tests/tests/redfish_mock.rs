//! Checks of the Redfish mock itself with a plain HTTP client: each
//! vendor's layout, sessions, ETags, task monitors, jobs, faults and TLS.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rackhand_e2e::redfish_mock::{
    AsyncOperation, AuthMode, DellVirtualMedia, Fault, FaultRule, MockConfig, RedfishMock,
    Redirect, RequestAuth, TaskOutcome, Vendor,
};
use reqwest::{Client, Method, StatusCode};
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

fn client_with_roots(roots: rustls::RootCertStore, timeout: Duration) -> Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client with a preconfigured TLS config builds")
}

fn client() -> Client {
    client_with_roots(rustls::RootCertStore::empty(), Duration::from_secs(10))
}

async fn start(vendor: Vendor) -> RedfishMock {
    RedfishMock::start(MockConfig::new(vendor))
        .await
        .expect("mock starts")
}

/// Sends `method path` with basic auth and an optional JSON body.
async fn call(
    mock: &RedfishMock,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = client()
        .request(method, format!("{}{path}", mock.url()))
        .basic_auth(mock.username(), Some(mock.password()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request reaches the mock")
}

async fn get_json(mock: &RedfishMock, path: &str) -> Value {
    let response = call(mock, Method::GET, path, None).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("JSON body")
}

fn links(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                if key == "@odata.id"
                    && let Some(link) = member.as_str()
                {
                    out.push(link.to_string());
                } else {
                    links(member, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| links(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_vendor_layout_resolves_from_service_root() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from(["/redfish/v1".to_string()]);
        while let Some(path) = queue.pop_front() {
            assert!(seen.len() < 500, "{vendor:?}: crawl stays bounded");
            if path.contains('#') || !seen.insert(path.clone()) {
                continue;
            }
            let body = get_json(&mock, &path).await;
            assert_eq!(body["@odata.id"], path.as_str(), "{vendor:?} {path}");
            let mut found = Vec::new();
            links(&body, &mut found);
            queue.extend(found);
        }
        assert!(seen.contains(&mock.system_path()), "{vendor:?} system");
        assert!(seen.contains(&mock.manager_path()), "{vendor:?} manager");
        assert!(seen.contains(&mock.chassis_path()), "{vendor:?} chassis");
        for slot in mock.cd_slot_paths() {
            assert!(seen.contains(&slot), "{vendor:?} {slot}");
        }
        assert!(!mock.cd_slot_paths().is_empty(), "{vendor:?} has a CD slot");
    }
}

#[tokio::test]
async fn computer_system_has_inventory_fields() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        let system = get_json(&mock, &mock.system_path()).await;
        assert!(system["PowerState"].is_string(), "{vendor:?}");
        assert!(
            system["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"].is_array(),
            "{vendor:?}"
        );
        assert!(system["ProcessorSummary"]["Count"].is_u64(), "{vendor:?}");
        assert!(
            system["MemorySummary"]["TotalSystemMemoryGiB"].is_u64(),
            "{vendor:?}"
        );
        let manager = get_json(&mock, &mock.manager_path()).await;
        assert!(manager["SerialConsole"].is_object(), "{vendor:?}");
    }
}

#[tokio::test]
async fn openbmc_has_no_host_ethernet_interfaces() {
    let mock = start(Vendor::OpenBmc).await;
    let system = get_json(&mock, &mock.system_path()).await;
    assert!(system.get("EthernetInterfaces").is_none());
}

#[tokio::test]
async fn generic_virtual_media_lives_under_system() {
    let mock = start(Vendor::Generic).await;
    let slot = mock.cd_slot_paths()[0].clone();
    assert!(slot.starts_with(&mock.system_path()), "{slot}");
    let manager = get_json(&mock, &mock.manager_path()).await;
    assert!(manager.get("VirtualMedia").is_none());
}

#[tokio::test]
async fn dell_virtual_media_location_follows_option() {
    let newer = start(Vendor::Dell).await;
    let system = get_json(&newer, &newer.system_path()).await;
    let manager = get_json(&newer, &newer.manager_path()).await;
    assert!(system["VirtualMedia"].is_object());
    assert!(manager.get("VirtualMedia").is_none());

    let mut config = MockConfig::new(Vendor::Dell);
    config.dell_virtual_media = DellVirtualMedia::UnderManager;
    let older = RedfishMock::start(config).await.expect("mock starts");
    let system = get_json(&older, &older.system_path()).await;
    let manager = get_json(&older, &older.manager_path()).await;
    assert!(system.get("VirtualMedia").is_none());
    assert_eq!(
        manager["VirtualMedia"]["@odata.id"],
        "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia"
    );
    assert_eq!(
        older.cd_slot_paths(),
        vec!["/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD".to_string()]
    );
}

#[tokio::test]
async fn session_login_use_and_logout() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        let http = client();
        let login = http
            .post(format!("{}/redfish/v1/SessionService/Sessions", mock.url()))
            .json(&json!({"UserName": mock.username(), "Password": mock.password()}))
            .send()
            .await
            .expect("login reaches the mock");
        assert_eq!(login.status(), StatusCode::CREATED, "{vendor:?}");
        let token = login.headers()["x-auth-token"]
            .to_str()
            .expect("ASCII token")
            .to_string();
        let location = login.headers()["location"]
            .to_str()
            .expect("ASCII location")
            .to_string();
        let session_url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", mock.url())
        };
        assert_eq!(mock.active_sessions(), 1, "{vendor:?}");

        let system_url = format!("{}{}", mock.url(), mock.system_path());
        let with_token = http.get(&system_url).header("X-Auth-Token", &token);
        let read = with_token.send().await.expect("GET reaches the mock");
        assert_eq!(read.status(), StatusCode::OK, "{vendor:?}");

        let logout = http
            .delete(&session_url)
            .header("X-Auth-Token", &token)
            .send()
            .await
            .expect("logout reaches the mock");
        assert!(logout.status().is_success(), "{vendor:?}");
        assert_eq!(mock.active_sessions(), 0, "{vendor:?}");

        let after = http.get(&system_url).header("X-Auth-Token", &token);
        let after = after.send().await.expect("GET reaches the mock");
        assert_eq!(after.status(), StatusCode::UNAUTHORIZED, "{vendor:?}");
    }
}

#[tokio::test]
async fn hpe_session_location_is_absolute() {
    let mock = start(Vendor::Hpe).await;
    let login = client()
        .post(format!("{}/redfish/v1/SessionService/Sessions", mock.url()))
        .json(&json!({"UserName": mock.username(), "Password": mock.password()}))
        .send()
        .await
        .expect("login reaches the mock");
    let location = login.headers()["location"].to_str().expect("ASCII");
    assert!(location.starts_with(&mock.url()), "{location}");
}

#[tokio::test]
async fn bad_credentials_get_vendor_error_body() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        let response = client()
            .get(format!("{}{}", mock.url(), mock.system_path()))
            .basic_auth(mock.username(), Some("wrong"))
            .send()
            .await
            .expect("request reaches the mock");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{vendor:?}");
        let body: Value = response.json().await.expect("JSON error body");
        let info = &body["error"]["@Message.ExtendedInfo"][0];
        assert!(info["MessageId"].is_string(), "{vendor:?}: {body}");
        match vendor {
            Vendor::Hpe => assert_eq!(body["error"]["code"], "iLO.0.10.ExtendedInfo"),
            Vendor::Supermicro => assert!(body["error"]["Message"].is_string()),
            _ => assert!(body["error"]["message"].is_string(), "{vendor:?}"),
        }
    }
}

#[tokio::test]
async fn session_only_mode_rejects_basic_auth() {
    let mut config = MockConfig::new(Vendor::OpenBmc);
    config.auth = Some(AuthMode::SessionOnly);
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let response = call(&mock, Method::GET, &mock.system_path(), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn service_root_needs_no_credentials() {
    let mock = start(Vendor::Lenovo).await;
    let response = client()
        .get(format!("{}/redfish/v1/", mock.url()))
        .send()
        .await
        .expect("request reaches the mock");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn reset(mock: &RedfishMock, reset_type: &str) -> reqwest::Response {
    let target = format!("{}/Actions/ComputerSystem.Reset", mock.system_path());
    call(
        mock,
        Method::POST,
        &target,
        Some(json!({"ResetType": reset_type})),
    )
    .await
}

#[tokio::test]
async fn reset_changes_power_state() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        assert_eq!(mock.power_state(), "Off");
        assert!(reset(&mock, "On").await.status().is_success(), "{vendor:?}");
        let system = get_json(&mock, &mock.system_path()).await;
        assert_eq!(system["PowerState"], "On", "{vendor:?}");
        assert!(reset(&mock, "ForceOff").await.status().is_success());
        assert_eq!(mock.power_state(), "Off", "{vendor:?}");
    }
}

#[tokio::test]
async fn power_on_delay_reports_powering_on() {
    let mut config = MockConfig::new(Vendor::Generic);
    config.power_on_delay = Duration::from_millis(300);
    let mock = RedfishMock::start(config).await.expect("mock starts");
    assert!(reset(&mock, "On").await.status().is_success());
    assert_eq!(mock.power_state(), "PoweringOn");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(mock.power_state(), "On");
}

#[tokio::test]
async fn dell_rejects_reset_to_current_state() {
    let mock = start(Vendor::Dell).await;
    let response = reset(&mock, "ForceOff").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn dell_power_on_when_on_names_psu501() {
    let mut config = MockConfig::new(Vendor::Dell);
    config.powered_on = true;
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let response = reset(&mock, "On").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let error: Value = response.json().await.expect("JSON body");
    let info = &error["error"]["@Message.ExtendedInfo"][0];
    assert_eq!(info["MessageId"], "IDRAC.2.8.PSU501");
    assert_eq!(info["Severity"], "Informational");
}

#[tokio::test]
async fn hpe_error_entry_omits_empty_message_args() {
    let mock = start(Vendor::Hpe).await;
    let response = client()
        .get(format!("{}{}", mock.url(), mock.system_path()))
        .send()
        .await
        .expect("GET reaches the mock");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let error: Value = response.json().await.expect("JSON body");
    let info = &error["error"]["@Message.ExtendedInfo"][0];
    assert_eq!(info["MessageId"], "Base.1.17.NoValidSession");
    assert!(info.get("MessageArgs").is_none());
}

#[tokio::test]
async fn reset_type_outside_allowable_values_is_rejected() {
    let mock = start(Vendor::Hpe).await;
    let response = reset(&mock, "PowerCycle").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn hpe_success_answer_wraps_success_message() {
    let mock = start(Vendor::Hpe).await;
    let response = reset(&mock, "On").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(
        body["error"]["@Message.ExtendedInfo"][0]["MessageId"],
        "Base.1.17.Success"
    );
}

async fn patch_boot(mock: &RedfishMock, boot: Value) -> reqwest::Response {
    patch_matching(mock, &mock.system_path(), json!({"Boot": boot})).await
}

#[tokio::test]
async fn once_boot_override_is_used_up_by_boot() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        let boot = json!({"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"});
        let response = patch_boot(&mock, boot).await;
        assert!(response.status().is_success(), "{vendor:?}");
        let system = get_json(&mock, &mock.system_path()).await;
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe");
        assert!(reset(&mock, "On").await.status().is_success());
        let system = get_json(&mock, &mock.system_path()).await;
        assert_eq!(system["Boot"]["BootSourceOverrideEnabled"], "Disabled");
    }
}

#[tokio::test]
async fn continuous_boot_override_survives_boot() {
    let mock = start(Vendor::Dell).await;
    let boot =
        json!({"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"});
    assert!(patch_boot(&mock, boot).await.status().is_success());
    assert!(reset(&mock, "On").await.status().is_success());
    let system = get_json(&mock, &mock.system_path()).await;
    assert_eq!(system["Boot"]["BootSourceOverrideEnabled"], "Continuous");
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Hdd");
}

#[tokio::test]
async fn boot_target_outside_allowable_values_is_rejected() {
    let mock = start(Vendor::OpenBmc).await;
    let response = patch_boot(&mock, json!({"BootSourceOverrideTarget": "UefiHttp"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(
        body["error"]["@Message.ExtendedInfo"][0]["MessageId"],
        "Base.1.19.PropertyValueNotInList"
    );
}

#[tokio::test]
async fn hpe_patch_without_if_match_gets_428() {
    let mock = start(Vendor::Hpe).await;
    let body = json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}});
    let response = call(&mock, Method::PATCH, &mock.system_path(), Some(body)).await;
    assert_eq!(response.status(), StatusCode::PRECONDITION_REQUIRED);
    let error: Value = response.json().await.expect("JSON body");
    assert!(error["error"]["@Message.ExtendedInfo"][0]["MessageId"].is_string());
}

#[tokio::test]
async fn stale_etag_gets_412_and_fresh_one_passes() {
    let mock = start(Vendor::Hpe).await;
    let path = mock.system_path();
    let read = call(&mock, Method::GET, &path, None).await;
    let etag = read.headers()["etag"].to_str().expect("ASCII").to_string();
    mock.update_resource(&path, &json!({"AssetTag": "changed elsewhere"}));

    let body = json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}});
    let stale = client()
        .patch(format!("{}{path}", mock.url()))
        .basic_auth(mock.username(), Some(mock.password()))
        .header("If-Match", &etag)
        .json(&body)
        .send()
        .await
        .expect("PATCH reaches the mock");
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);

    let fresh = call(&mock, Method::GET, &path, None).await;
    let etag = fresh.headers()["etag"].to_str().expect("ASCII").to_string();
    let retried = client()
        .patch(format!("{}{path}", mock.url()))
        .basic_auth(mock.username(), Some(mock.password()))
        .header("If-Match", &etag)
        .json(&body)
        .send()
        .await
        .expect("PATCH reaches the mock");
    assert!(retried.status().is_success());
}

/// Sends a PATCH with the resource's current ETag in `If-Match`.
async fn patch_matching(mock: &RedfishMock, path: &str, body: Value) -> reqwest::Response {
    client()
        .patch(format!("{}{path}", mock.url()))
        .basic_auth(mock.username(), Some(mock.password()))
        .header("If-Match", mock.etag(path))
        .json(&body)
        .send()
        .await
        .expect("PATCH reaches the mock")
}

async fn insert(mock: &RedfishMock, slot: &str, body: Value) -> reqwest::Response {
    if mock.vendor() == Vendor::Lenovo {
        return patch_matching(mock, slot, body).await;
    }
    let target = format!("{slot}/Actions/VirtualMedia.InsertMedia");
    call(mock, Method::POST, &target, Some(body)).await
}

async fn eject(mock: &RedfishMock, slot: &str) -> reqwest::Response {
    if mock.vendor() == Vendor::Lenovo {
        return patch_matching(mock, slot, json!({"Image": null})).await;
    }
    let target = format!("{slot}/Actions/VirtualMedia.EjectMedia");
    call(mock, Method::POST, &target, Some(json!({}))).await
}

#[tokio::test]
async fn insert_and_eject_change_media_state() {
    for vendor in Vendor::ALL {
        let mock = start(vendor).await;
        let slot = mock.cd_slot_paths()[0].clone();
        // bmcweb mounts only HTTPS and SMB images.
        let image = match vendor {
            Vendor::OpenBmc => "https://127.0.0.1:9/boot.iso",
            _ => "http://127.0.0.1:9/boot.iso",
        };
        let response = insert(&mock, &slot, json!({"Image": image})).await;
        assert!(response.status().is_success(), "{vendor:?} {slot}");
        let media = get_json(&mock, &slot).await;
        assert_eq!(media["Inserted"], true, "{vendor:?}");
        assert_eq!(media["Image"], image, "{vendor:?}");
        assert_eq!(media["ConnectedVia"], "URI", "{vendor:?}");

        let again = insert(&mock, &slot, json!({"Image": image})).await;
        assert_eq!(again.status(), StatusCode::CONFLICT, "{vendor:?}");

        assert!(
            eject(&mock, &slot).await.status().is_success(),
            "{vendor:?}"
        );
        let media = get_json(&mock, &slot).await;
        assert_eq!(media["Inserted"], false, "{vendor:?}");
        assert_eq!(media["Image"], Value::Null, "{vendor:?}");
    }
}

#[tokio::test]
async fn supermicro_eject_keeps_image_name() {
    let mock = start(Vendor::Supermicro).await;
    let slot = mock.cd_slot_paths()[0].clone();
    let response = insert(&mock, &slot, json!({"Image": "http://127.0.0.1:9/a.iso"})).await;
    assert!(response.status().is_success());
    assert!(eject(&mock, &slot).await.status().is_success());
    let media = get_json(&mock, &slot).await;
    assert_eq!(media["ImageName"], "a.iso");
    assert_eq!(media["ConnectedVia"], "NotConnected");
}

#[tokio::test]
async fn supermicro_insert_rejects_inserted_and_write_protected() {
    let mock = start(Vendor::Supermicro).await;
    let slot = mock.cd_slot_paths()[0].clone();
    let body =
        json!({"Image": "http://127.0.0.1:9/a.iso", "Inserted": true, "WriteProtected": true});
    let response = insert(&mock, &slot, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("JSON body");
    let text = error.to_string();
    assert!(text.contains("PropertyUnknown"), "{text}");
    assert!(text.contains("The property Inserted"), "{text}");
    assert!(text.contains("The property WriteProtected"), "{text}");
}

#[tokio::test]
async fn supermicro_without_licence_gets_license_error() {
    let mut config = MockConfig::new(Vendor::Supermicro);
    config.supermicro_licensed = false;
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let slot = mock.cd_slot_paths()[0].clone();
    let response = insert(&mock, &slot, json!({"Image": "http://127.0.0.1:9/a.iso"})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let error: Value = response.json().await.expect("JSON body");
    assert_eq!(
        error["error"]["@Message.ExtendedInfo"][0]["MessageId"],
        "SMC.1.0.OemLicenseNotPassed"
    );
}

#[tokio::test]
async fn lenovo_rdoc_slot_cannot_be_mounted() {
    let mock = start(Vendor::Lenovo).await;
    let slot = "/redfish/v1/Managers/1/VirtualMedia/RDOC1";
    let body = json!({"Image": "http://127.0.0.1:9/a.iso", "Inserted": true});
    let response = patch_matching(&mock, slot, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dell_rejects_if_match_on_actions() {
    let mock = start(Vendor::Dell).await;
    let target = format!("{}/Actions/ComputerSystem.Reset", mock.system_path());
    let response = client()
        .post(format!("{}{target}", mock.url()))
        .basic_auth(mock.username(), Some(mock.password()))
        .header("If-Match", mock.etag(&mock.system_path()))
        .json(&json!({"ResetType": "On"}))
        .send()
        .await
        .expect("POST reaches the mock");
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(mock.power_state(), "Off");
}

#[tokio::test]
async fn lenovo_patch_without_if_match_gets_428() {
    let mock = start(Vendor::Lenovo).await;
    let slot = mock.cd_slot_paths()[0].clone();
    let body = json!({"Image": "http://127.0.0.1:9/a.iso", "Inserted": true});
    let response = call(&mock, Method::PATCH, &slot, Some(body)).await;
    assert_eq!(response.status(), StatusCode::PRECONDITION_REQUIRED);
}

#[tokio::test]
async fn lenovo_rejects_https_image() {
    let mock = start(Vendor::Lenovo).await;
    let slot = mock.cd_slot_paths()[0].clone();
    let body = json!({"Image": "https://127.0.0.1:9/a.iso", "Inserted": true});
    let response = patch_matching(&mock, &slot, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("JSON body");
    assert_eq!(
        error["error"]["@Message.ExtendedInfo"][0]["MessageId"],
        "Base.1.8.SourceDoesNotSupportProtocol"
    );
}

#[tokio::test]
async fn openbmc_rejects_http_image() {
    let mock = start(Vendor::OpenBmc).await;
    let slot = mock.cd_slot_paths()[0].clone();
    let response = insert(&mock, &slot, json!({"Image": "http://127.0.0.1:9/a.iso"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("JSON body");
    assert_eq!(
        error["error"]["code"],
        "Base.1.19.ResourceAtUriInUnknownFormat"
    );
}

#[tokio::test]
async fn openbmc_media_actions_answer_empty_200() {
    let mock = start(Vendor::OpenBmc).await;
    let slot = mock.cd_slot_paths()[0].clone();
    let image = "smb://127.0.0.1/share/a.iso";
    let inserted = insert(&mock, &slot, json!({"Image": image})).await;
    assert_eq!(inserted.status(), StatusCode::OK);
    assert!(inserted.bytes().await.expect("body").is_empty());
    let media = get_json(&mock, &slot).await;
    assert_eq!(media["TransferProtocolType"], "CIFS");
    assert_eq!(media["WriteProtected"], false);

    let ejected = eject(&mock, &slot).await;
    assert_eq!(ejected.status(), StatusCode::OK);
    assert!(ejected.bytes().await.expect("body").is_empty());
    let media = get_json(&mock, &slot).await;
    assert!(media.get("Image").is_none());
    assert!(media.get("TransferProtocolType").is_none());
}

#[tokio::test]
async fn openbmc_etag_is_strong_and_only_in_header() {
    let mock = start(Vendor::OpenBmc).await;
    let response = call(&mock, Method::GET, &mock.system_path(), None).await;
    let etag = response.headers()["etag"]
        .to_str()
        .expect("ASCII")
        .to_string();
    assert!(etag.starts_with('"'), "{etag}");
    assert_eq!(etag, etag.to_ascii_uppercase());
    let body: Value = response.json().await.expect("JSON body");
    assert!(body.get("@odata.etag").is_none());
}

#[tokio::test]
async fn openbmc_proxy_slots_use_jsnbd_endpoints() {
    let mock = start(Vendor::OpenBmc).await;
    for n in 0..2 {
        let slot = get_json(
            &mock,
            &format!("/redfish/v1/Managers/bmc/VirtualMedia/Slot_{n}"),
        )
        .await;
        assert_eq!(
            slot["Oem"]["OpenBMC"]["WebSocketEndpoint"],
            format!("/nbd/{n}")
        );
    }
}

#[tokio::test]
async fn openbmc_proxy_slot_has_no_insert_action() {
    let mock = start(Vendor::OpenBmc).await;
    let target = "/redfish/v1/Managers/bmc/VirtualMedia/Slot_0/Actions/VirtualMedia.InsertMedia";
    let body = json!({"Image": "http://127.0.0.1:9/a.iso"});
    let response = call(&mock, Method::POST, target, Some(body)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

fn async_insert_config(vendor: Vendor, outcome: TaskOutcome) -> MockConfig {
    let mut config = MockConfig::new(vendor);
    config.async_operations = Some(vec![AsyncOperation::InsertMedia]);
    config.task_polls = 2;
    config.task_outcome = outcome;
    config
}

async fn poll(mock: &RedfishMock, monitor: &str) -> reqwest::Response {
    call(mock, Method::GET, monitor, None).await
}

#[tokio::test]
async fn task_monitor_answers_202_then_completes() {
    let config = async_insert_config(Vendor::Generic, TaskOutcome::Completed);
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let slot = mock.cd_slot_paths()[0].clone();
    let started = insert(&mock, &slot, json!({"Image": "http://127.0.0.1:9/a.iso"})).await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let monitor = started.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_string();

    for _ in 0..2 {
        let pending = poll(&mock, &monitor).await;
        assert_eq!(pending.status(), StatusCode::ACCEPTED);
        assert_eq!(pending.headers()["retry-after"], "1");
        assert_eq!(mock.resource(&slot).expect("slot")["Inserted"], false);
    }
    let done = poll(&mock, &monitor).await;
    assert_eq!(done.status(), StatusCode::OK);
    let task: Value = done.json().await.expect("JSON task");
    assert_eq!(task["TaskState"], "Completed");
    assert_eq!(mock.resource(&slot).expect("slot")["Inserted"], true);
}

#[tokio::test]
async fn task_monitor_exception_leaves_media_empty() {
    let outcome = TaskOutcome::Exception {
        message_id: "Base.1.16.InternalError".to_string(),
        message: "The image could not be read.".to_string(),
    };
    let mock = RedfishMock::start(async_insert_config(Vendor::Hpe, outcome))
        .await
        .expect("mock starts");
    let slot = mock.cd_slot_paths()[0].clone();
    let started = insert(&mock, &slot, json!({"Image": "http://127.0.0.1:9/a.iso"})).await;
    let monitor = started.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_string();
    poll(&mock, &monitor).await;
    poll(&mock, &monitor).await;
    let done = poll(&mock, &monitor).await;
    let task: Value = done.json().await.expect("JSON task");
    assert_eq!(task["TaskState"], "Exception");
    assert_eq!(task["Messages"][0]["MessageId"], "Base.1.16.InternalError");
    assert_eq!(mock.resource(&slot).expect("slot")["Inserted"], false);
}

#[tokio::test]
async fn task_monitor_can_end_with_no_content() {
    let config = async_insert_config(Vendor::OpenBmc, TaskOutcome::NoContent);
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let slot = mock.cd_slot_paths()[0].clone();
    let started = insert(&mock, &slot, json!({"Image": "https://127.0.0.1:9/a.iso"})).await;
    let monitor = started.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_string();
    poll(&mock, &monitor).await;
    poll(&mock, &monitor).await;
    assert_eq!(poll(&mock, &monitor).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn dell_bios_rejects_immediate_apply_time() {
    let mock = start(Vendor::Dell).await;
    let settings = format!("{}/Bios/Settings", mock.system_path());
    let body = json!({
        "Attributes": {"ProcVirtualization": "Disabled"},
        "@Redfish.SettingsApplyTime": {"ApplyTime": "Immediate"},
    });
    let response = call(&mock, Method::PATCH, &settings, Some(body)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dell_bios_job_waits_for_reset() {
    let mock = start(Vendor::Dell).await;
    let settings = format!("{}/Bios/Settings", mock.system_path());
    let body = json!({
        "Attributes": {"ProcVirtualization": "Disabled"},
        "@Redfish.SettingsApplyTime": {"ApplyTime": "OnReset"},
    });
    let response = call(&mock, Method::PATCH, &settings, Some(body)).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job = response.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_string();
    assert!(
        job.starts_with("/redfish/v1/Managers/iDRAC.Embedded.1/Jobs/JID_"),
        "{job}"
    );

    assert_eq!(get_json(&mock, &job).await["JobState"], "Scheduled");
    assert_eq!(get_json(&mock, &job).await["JobState"], "Scheduled");
    assert!(reset(&mock, "On").await.status().is_success());
    assert_eq!(get_json(&mock, &job).await["JobState"], "Running");
    assert_eq!(get_json(&mock, &job).await["JobState"], "Running");
    assert_eq!(get_json(&mock, &job).await["JobState"], "Completed");
    let bios = get_json(&mock, &format!("{}/Bios", mock.system_path())).await;
    assert_eq!(bios["Attributes"]["ProcVirtualization"], "Disabled");
}

#[tokio::test]
async fn dell_second_bios_patch_with_pending_job_is_rejected() {
    let mock = start(Vendor::Dell).await;
    let settings = format!("{}/Bios/Settings", mock.system_path());
    let body = json!({
        "Attributes": {"ProcVirtualization": "Disabled"},
        "@Redfish.SettingsApplyTime": {"ApplyTime": "OnReset"},
    });
    let first = call(&mock, Method::PATCH, &settings, Some(body.clone())).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = call(&mock, Method::PATCH, &settings, Some(body)).await;
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);

    let clear = format!(
        "{}/Oem/Dell/DellJobService/Actions/DellJobService.DeleteJobQueue",
        mock.manager_path()
    );
    let cleared = call(
        &mock,
        Method::POST,
        &clear,
        Some(json!({"JobID": "JID_CLEARALL"})),
    )
    .await;
    assert!(cleared.status().is_success());
    let jobs = get_json(&mock, &format!("{}/Jobs", mock.manager_path())).await;
    assert_eq!(jobs["Members@odata.count"], 0);
}

#[tokio::test]
async fn unavailable_answers_503_with_retry_after_then_recovers() {
    let mock = start(Vendor::Generic).await;
    mock.set_unavailable(2, 3);
    for _ in 0..2 {
        let response = call(&mock, Method::GET, &mock.system_path(), None).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "3");
    }
    let response = call(&mock, Method::GET, &mock.system_path(), None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirects_point_to_same_or_other_host() {
    let mock = start(Vendor::Generic).await;
    mock.add_redirect(
        "/redfish/v1/Systems/old",
        Redirect::SameHost {
            to: mock.system_path(),
        },
    );
    mock.add_redirect("/redfish/v1/Chassis", Redirect::OtherHost);

    let same = call(&mock, Method::GET, "/redfish/v1/Systems/old", None).await;
    assert_eq!(same.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = same.headers()["location"].to_str().expect("ASCII");
    assert_eq!(location, format!("{}{}", mock.url(), mock.system_path()));

    let other = call(&mock, Method::GET, "/redfish/v1/Chassis", None).await;
    let location = other.headers()["location"].to_str().expect("ASCII");
    assert!(location.starts_with("http://127.0.0.2:"), "{location}");
}

#[tokio::test]
async fn html_fault_serves_html_with_chosen_status() {
    let mock = start(Vendor::Dell).await;
    let path = mock.system_path();
    mock.inject_fault(FaultRule::new(&path, Fault::HtmlPage { status: 200 }).times(1));
    let response = call(&mock, Method::GET, &path, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with("text/html")
    );
    let text = response.text().await.expect("text body");
    assert!(text.starts_with("<!DOCTYPE html>"));

    let next = call(&mock, Method::GET, &path, None).await;
    let body: Value = next.json().await.expect("fault used up");
    assert_eq!(body["Id"], "System.Embedded.1");
}

#[tokio::test]
async fn truncated_body_fault_breaks_the_read() {
    let mock = start(Vendor::Generic).await;
    let path = mock.system_path();
    mock.inject_fault(FaultRule::new(&path, Fault::TruncatedBody));
    let response = call(&mock, Method::GET, &path, None).await;
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn cut_and_invalid_json_faults_do_not_parse() {
    let mock = start(Vendor::Generic).await;
    let path = mock.system_path();
    for fault in [Fault::CutJson, Fault::InvalidJson] {
        mock.clear_faults();
        mock.inject_fault(FaultRule::new(&path, fault.clone()));
        let response = call(&mock, Method::GET, &path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{fault:?}");
        let bytes = response.bytes().await.expect("whole body");
        assert!(
            serde_json::from_slice::<Value>(&bytes).is_err(),
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn hang_fault_never_answers() {
    let mock = start(Vendor::Generic).await;
    let path = mock.system_path();
    mock.inject_fault(FaultRule::new(&path, Fault::Hang).method("GET"));
    let quick = client_with_roots(rustls::RootCertStore::empty(), Duration::from_millis(500));
    let result = quick.get(format!("{}{path}", mock.url())).send().await;
    let error = result.expect_err("no response within the timeout");
    assert!(error.is_timeout(), "{error}");
}

#[tokio::test]
async fn extended_info_fault_uses_vendor_shape() {
    let mock = start(Vendor::Dell).await;
    let path = mock.system_path();
    let fault = Fault::ExtendedInfo {
        status: 500,
        message_id: "InternalError".to_string(),
        message: "The request failed due to an internal service error.".to_string(),
        resolution: "Resubmit the request.".to_string(),
    };
    mock.inject_fault(FaultRule::new(&path, fault));
    let response = call(&mock, Method::GET, &path, None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.expect("JSON body");
    let info = &body["error"]["@Message.ExtendedInfo"][0];
    assert_eq!(info["MessageId"], "Base.1.12.InternalError");
    assert_eq!(info["Resolution"], "Resubmit the request.");
}

#[tokio::test]
async fn request_log_redacts_passwords() {
    let mock = start(Vendor::Generic).await;
    client()
        .post(format!("{}/redfish/v1/SessionService/Sessions", mock.url()))
        .json(&json!({"UserName": mock.username(), "Password": mock.password()}))
        .send()
        .await
        .expect("login reaches the mock");
    call(&mock, Method::GET, &mock.system_path(), None).await;

    let requests = mock.requests();
    let login = &requests[0];
    assert_eq!(
        login.body.as_ref().expect("JSON body")["Password"],
        "[redacted]"
    );
    assert!(!format!("{requests:?}").contains(&mock.password()));
    assert_eq!(
        requests[1].auth,
        RequestAuth::Basic {
            username: mock.username()
        }
    );
}

#[tokio::test]
async fn https_serves_certificate_from_mock_ca() {
    let mut config = MockConfig::new(Vendor::Hpe);
    config.tls = true;
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let tls = mock.tls().expect("TLS material");
    assert!(mock.url().starts_with("https://127.0.0.1:"));

    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(tls.ca_pem.as_bytes())
        .expect("CA PEM parses");
    roots.add(ca).expect("CA is a valid trust anchor");
    let trusted = client_with_roots(roots, Duration::from_secs(10));
    let response = trusted
        .get(format!("{}/redfish/v1", mock.url()))
        .send()
        .await
        .expect("TLS handshake with the mock CA");
    assert_eq!(response.status(), StatusCode::OK);

    let untrusted = client()
        .get(format!("{}/redfish/v1", mock.url()))
        .send()
        .await;
    assert!(untrusted.is_err());

    let digest = ring::digest::digest(&ring::digest::SHA256, &tls.cert_der);
    assert_eq!(tls.cert_sha256, hex::encode(digest.as_ref()));
    assert_eq!(tls.ca_sha256.len(), 64);
    assert_ne!(tls.ca_sha256, tls.cert_sha256);
}

#[tokio::test]
async fn debug_output_hides_password_and_tokens() {
    let config = MockConfig::new(Vendor::Dell);
    assert!(!format!("{config:?}").contains(&config.password));

    let mock = RedfishMock::start(config.clone())
        .await
        .expect("mock starts");
    let login = client()
        .post(format!("{}/redfish/v1/SessionService/Sessions", mock.url()))
        .json(&json!({"UserName": mock.username(), "Password": mock.password()}))
        .send()
        .await
        .expect("login reaches the mock");
    let token = login.headers()["x-auth-token"]
        .to_str()
        .expect("ASCII")
        .to_string();
    let printed = format!("{mock:?}");
    assert!(!printed.contains(&mock.password()), "{printed}");
    assert!(!printed.contains(&token), "{printed}");
}

#[tokio::test]
async fn pending_bios_values_apply_at_next_boot() {
    let mock = start(Vendor::Generic).await;
    let settings = format!("{}/Bios/Settings", mock.system_path());
    let body = json!({"Attributes": {"ProcTurboMode": "Disabled"}});
    let response = call(&mock, Method::PATCH, &settings, Some(body)).await;
    assert!(response.status().is_success());
    let bios_path = format!("{}/Bios", mock.system_path());
    assert_eq!(
        get_json(&mock, &bios_path).await["Attributes"]["ProcTurboMode"],
        "Enabled"
    );

    assert!(reset(&mock, "On").await.status().is_success());
    assert_eq!(
        get_json(&mock, &bios_path).await["Attributes"]["ProcTurboMode"],
        "Disabled"
    );
    assert_eq!(get_json(&mock, &settings).await["Attributes"], json!({}));
}

#[tokio::test]
async fn unknown_bios_attribute_is_rejected() {
    let mock = start(Vendor::Dell).await;
    let settings = format!("{}/Bios/Settings", mock.system_path());
    let body = json!({"Attributes": {"NoSuchAttribute": "x"}});
    let response = call(&mock, Method::PATCH, &settings, Some(body)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn supermicro_storage_needs_licence() {
    let mut config = MockConfig::new(Vendor::Supermicro);
    config.supermicro_licensed = false;
    let mock = RedfishMock::start(config).await.expect("mock starts");
    let storage = format!("{}/Storage", mock.system_path());
    let response = call(&mock, Method::GET, &storage, None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let simple = format!("{}/SimpleStorage", mock.system_path());
    let response = call(&mock, Method::GET, &simple, None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn hpe_boot_on_next_reset_is_patchable() {
    let mock = start(Vendor::Hpe).await;
    let slot = "/redfish/v1/Managers/1/VirtualMedia/2";
    let body = json!({"Oem": {"Hpe": {"BootOnNextServerReset": true}}});
    let response = patch_matching(&mock, slot, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let media = get_json(&mock, slot).await;
    assert_eq!(media["Oem"]["Hpe"]["BootOnNextServerReset"], true);
}

#[tokio::test]
async fn hpe_oem_insert_action_mounts_image() {
    let mock = start(Vendor::Hpe).await;
    let slot = "/redfish/v1/Managers/1/VirtualMedia/2";
    let target = format!("{slot}/Actions/Oem/Hpe/HpeiLOVirtualMedia.InsertVirtualMedia");
    let body = json!({"Image": "http://127.0.0.1:9/a.iso"});
    let response = call(&mock, Method::POST, &target, Some(body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(get_json(&mock, slot).await["Inserted"], true);
}

#[tokio::test]
async fn sessions_collection_lists_live_sessions() {
    let mock = start(Vendor::OpenBmc).await;
    let login = client()
        .post(format!("{}/redfish/v1/SessionService/Sessions", mock.url()))
        .json(&json!({"UserName": mock.username(), "Password": mock.password()}))
        .send()
        .await
        .expect("login reaches the mock");
    let location = login.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_string();
    let sessions = get_json(&mock, "/redfish/v1/SessionService/Sessions").await;
    assert_eq!(sessions["Members@odata.count"], 1);
    assert_eq!(sessions["Members"][0]["@odata.id"], location.as_str());
}

#[tokio::test]
async fn trailing_slash_names_same_resource() {
    let mock = start(Vendor::Hpe).await;
    let with_slash = format!("{}/", mock.system_path());
    let body = get_json(&mock, &with_slash).await;
    assert_eq!(body["@odata.id"], mock.system_path().as_str());
}

#[tokio::test]
async fn expired_session_token_gets_401() {
    let mock = start(Vendor::Supermicro).await;
    let login = client()
        .post(format!("{}/redfish/v1/SessionService/Sessions", mock.url()))
        .json(&json!({"UserName": mock.username(), "Password": mock.password()}))
        .send()
        .await
        .expect("login reaches the mock");
    let token = login.headers()["x-auth-token"]
        .to_str()
        .expect("ASCII")
        .to_string();
    mock.expire_sessions();
    assert_eq!(mock.active_sessions(), 0);

    let read = client()
        .get(format!("{}{}", mock.url(), mock.system_path()))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .expect("GET reaches the mock");
    assert_eq!(read.status(), StatusCode::UNAUTHORIZED);
    let requests = mock.requests();
    let last = requests.last().expect("GET recorded");
    assert_eq!(last.auth, RequestAuth::Session { valid: false });
}
