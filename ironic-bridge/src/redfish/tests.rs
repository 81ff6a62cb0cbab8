//! Tests of the Redfish driver against canned BMC responses: error bodies,
//! transport failures, reset and boot requests, and discovery.

use std::time::Duration;

use rackhand_protocol::{MacAddr, Secret};
use serde_json::{Value, json};

use super::RedfishDriver;
use super::test_server::{Canned, TestServer};
use crate::driver::{
    BmcDriver, BmcEndpoint, BootOverride, BootPersistence, BootTarget, DriverError, DriverKind,
    PowerState, ResponseProblem,
};

const PASSWORD: &str = "s3cret-pw";
const NODE: &str = "rack4-node17";
const SYSTEM: &str = "/redfish/v1/Systems/1";
const RESET: &str = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset";

fn endpoint(url: String) -> BmcEndpoint {
    BmcEndpoint {
        timeout: Duration::from_secs(2),
        ..BmcEndpoint::new(
            DriverKind::Redfish,
            url,
            "admin",
            Secret::new(PASSWORD.to_string()),
            NODE,
        )
    }
}

fn driver(server: &TestServer, path: &str) -> RedfishDriver {
    RedfishDriver::new(endpoint(server.at(path))).expect("valid endpoint")
}

fn system_json(power_state: &str, reset_types: Option<&[&str]>) -> Value {
    let mut reset = json!({ "target": RESET });
    if let Some(types) = reset_types {
        reset["ResetType@Redfish.AllowableValues"] = json!(types);
    }
    json!({
        "@odata.id": SYSTEM,
        "Id": "1",
        "PowerState": power_state,
        "Boot": {
            "BootSourceOverrideTarget": "None",
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd", "Cd", "BiosSetup"],
        },
        "EthernetInterfaces": { "@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces" },
        "Actions": { "#ComputerSystem.Reset": reset },
    })
}

/// Asserts what every request error must show: the node and the URL.
fn assert_names_node_and_url(error: &DriverError, url: &str) {
    let message = error.to_string();
    assert!(message.contains(NODE), "node missing: {message}");
    assert!(message.contains(url), "URL missing: {message}");
}

/// Asserts that neither Display, Debug nor the source chain shows the password.
fn assert_hides_password(error: &DriverError) {
    let mut texts = vec![error.to_string(), format!("{error:?}")];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    for text in texts {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
}

#[tokio::test]
async fn html_error_page_gives_http_error() {
    let page = "<html><head><title>500 Internal Server Error</title></head><body>Internal Server Error</body></html>";
    let server = TestServer::start(vec![("GET", SYSTEM, Canned::html(500, page))]).await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("HTTP 500");

    let DriverError::Http {
        status,
        message,
        body,
        ..
    } = &error
    else {
        panic!("expected Http, got {error:?}");
    };
    assert_eq!(*status, 500);
    assert_eq!(*message, None);
    assert!(body.contains("Internal Server Error"), "{body}");
    assert!(error.is_retryable());
    assert_names_node_and_url(&error, &server.at(SYSTEM));
}

#[tokio::test]
async fn html_page_on_success_is_invalid_response() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::html(200, "<html>login</html>"),
    )])
    .await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("HTML");

    assert!(
        matches!(
            &error,
            DriverError::InvalidResponse {
                problem: ResponseProblem::Html,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_names_node_and_url(&error, &server.at(SYSTEM));
}

#[tokio::test]
async fn truncated_json_is_retryable_invalid_response() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::json(200, r#"{"Id": "1", "PowerState": "O"#),
    )])
    .await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("truncated");

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
    assert_names_node_and_url(&error, &server.at(SYSTEM));
}

#[tokio::test]
async fn body_cut_before_content_length_is_truncated() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"PowerState\":".to_vec();
    let server = TestServer::start(vec![("GET", SYSTEM, Canned::Raw(raw))]).await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("cut body");

    let DriverError::InvalidResponse { problem, body, .. } = &error else {
        panic!("expected InvalidResponse, got {error:?}");
    };
    assert!(
        matches!(problem, ResponseProblem::Truncated(_)),
        "{problem:?}"
    );
    assert_eq!(body, "{\"PowerState\":");
    assert_names_node_and_url(&error, &server.at(SYSTEM));
}

#[tokio::test]
async fn invalid_json_is_permanent_invalid_response() {
    let server = TestServer::start(vec![("GET", SYSTEM, Canned::json(200, "PowerState=On"))]).await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("not JSON");

    assert!(
        matches!(
            &error,
            DriverError::InvalidResponse {
                problem: ResponseProblem::InvalidJson(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn extended_info_becomes_error_message() {
    let body = json!({
        "error": {
            "code": "Base.1.8.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [{
                "MessageId": "Base.1.8.PropertyValueNotInList",
                "Message": "The value Floppy for the property BootSourceOverrideTarget is not in the list of acceptable values.",
                "Severity": "Warning",
            }],
        }
    });
    let server = TestServer::start(vec![
        (
            "GET",
            SYSTEM,
            Canned::json(200, system_json("Off", None).to_string()),
        ),
        ("PATCH", SYSTEM, Canned::json(400, body.to_string())),
    ])
    .await;

    let error = driver(&server, SYSTEM)
        .set_next_boot(BootOverride {
            target: BootTarget::Pxe,
            persistence: BootPersistence::Once,
            mode: None,
        })
        .await
        .expect_err("HTTP 400");

    let DriverError::Http {
        status, message, ..
    } = &error
    else {
        panic!("expected Http, got {error:?}");
    };
    assert_eq!(*status, 400);
    let message = message.as_deref().expect("message from ExtendedInfo");
    assert!(
        message.contains("not in the list of acceptable values"),
        "{message}"
    );
    assert!(error.to_string().contains("not in the list"), "{error}");
    assert!(!error.is_retryable());
    assert_names_node_and_url(&error, &server.at(SYSTEM));
}

#[tokio::test]
async fn plain_error_message_becomes_error_message() {
    let body = r#"{"error":{"code":"Base.1.0.GeneralError","message":"Power state Nmi is not supported"}}"#;
    let server = TestServer::start(vec![
        (
            "GET",
            SYSTEM,
            Canned::json(200, system_json("Off", None).to_string()),
        ),
        ("POST", RESET, Canned::json(501, body)),
    ])
    .await;

    let error = driver(&server, SYSTEM)
        .power_on()
        .await
        .expect_err("HTTP 501");

    let DriverError::Http { message, .. } = &error else {
        panic!("expected Http, got {error:?}");
    };
    assert_eq!(message.as_deref(), Some("Power state Nmi is not supported"));
    assert_names_node_and_url(&error, &server.at(RESET));
}

#[tokio::test]
async fn unauthorized_gives_authentication_error() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::html(401, "<h1>Unauthorized</h1>"),
    )])
    .await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("HTTP 401");

    assert!(
        matches!(&error, DriverError::Authentication { status: 401, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("\"admin\""), "{error}");
    assert_names_node_and_url(&error, &server.at(SYSTEM));
    assert_hides_password(&error);
}

#[tokio::test]
async fn password_echoed_by_bmc_is_redacted() {
    let echo = format!(r#"{{"error":{{"message":"login admin/{PASSWORD} failed"}}}}"#);
    let server = TestServer::start(vec![
        ("GET", SYSTEM, Canned::json(403, echo.clone())),
        ("GET", "/redfish/v1/Systems/2", Canned::json(500, echo)),
    ])
    .await;

    let forbidden = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("HTTP 403");
    assert!(forbidden.to_string().contains("[redacted]"), "{forbidden}");
    assert_hides_password(&forbidden);

    let failed = driver(&server, "/redfish/v1/Systems/2")
        .power_state()
        .await
        .expect_err("HTTP 500");
    assert_hides_password(&failed);
}

#[tokio::test]
async fn basic_auth_is_sent_on_every_request() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::json(200, system_json("On", None).to_string()),
    )])
    .await;

    driver(&server, SYSTEM)
        .power_state()
        .await
        .expect("power state");

    // The service root (404 here) and the system.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        // "admin:s3cret-pw" in base64.
        assert_eq!(
            request.header("authorization"),
            Some("Basic YWRtaW46czNjcmV0LXB3"),
            "{}",
            request.path
        );
    }
}

#[tokio::test]
async fn connection_refused_gives_unreachable() {
    // Bind and release a port so that nothing listens on it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let url = format!("http://{address}{SYSTEM}");

    let error = RedfishDriver::new(endpoint(url.clone()))
        .expect("valid endpoint")
        .power_state()
        .await
        .expect_err("nothing listens");

    assert!(
        matches!(&error, DriverError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    // The first request goes to the service root of that BMC.
    assert_names_node_and_url(&error, &format!("http://{address}/redfish/v1/"));
    assert_hides_password(&error);
}

#[tokio::test]
async fn silent_bmc_gives_timeout() {
    let server = TestServer::start(vec![("GET", SYSTEM, Canned::Silent)]).await;
    let endpoint = BmcEndpoint {
        timeout: Duration::from_millis(300),
        ..endpoint(server.at(SYSTEM))
    };
    let driver = RedfishDriver::new(endpoint).expect("valid endpoint");

    let started = std::time::Instant::now();
    let error = driver.power_state().await.expect_err("no answer");

    assert!(matches!(&error, DriverError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(error.is_retryable());
    assert_names_node_and_url(&error, &server.at(SYSTEM));
}

#[tokio::test]
async fn service_unavailable_carries_retry_after() {
    let canned = Canned::Full {
        status: 503,
        content_type: "application/json",
        body: r#"{"error":{"message":"busy"}}"#.into(),
        headers: vec![("Retry-After", "120".into())],
    };
    let server = TestServer::start(vec![("GET", SYSTEM, canned)]).await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("HTTP 503");

    assert!(error.is_retryable());
    // Longer than the client waits itself, so the caller gets it.
    assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn missing_power_state_is_invalid_response() {
    let server = TestServer::start(vec![("GET", SYSTEM, Canned::json(200, r#"{"Id":"1"}"#))]).await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("no PowerState");

    assert!(
        matches!(
            &error,
            DriverError::InvalidResponse {
                problem: ResponseProblem::UnexpectedContent(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("PowerState"), "{error}");
}

#[tokio::test]
async fn unmapped_power_state_is_kept_verbatim() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::json(200, system_json("Paused", None).to_string()),
    )])
    .await;

    let state = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect("power state");

    assert_eq!(state, PowerState::Unknown("Paused".to_string()));
}

#[tokio::test]
async fn power_on_picks_allowed_reset_type() {
    let server = TestServer::start(vec![
        (
            "GET",
            SYSTEM,
            Canned::json(
                200,
                system_json("Off", Some(&["ForceOn", "ForceOff"])).to_string(),
            ),
        ),
        ("POST", RESET, Canned::json(204, "")),
    ])
    .await;

    driver(&server, SYSTEM).power_on().await.expect("power on");

    let posts = server.requests_with("POST");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, RESET);
    assert_eq!(posts[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&posts[0].body).expect("JSON body");
    assert_eq!(body, json!({ "ResetType": "ForceOn" }));
}

#[tokio::test]
async fn power_on_prefers_on_when_allowed() {
    let server = TestServer::start(vec![
        (
            "GET",
            SYSTEM,
            Canned::json(
                200,
                system_json("Off", Some(&["On", "ForceOn"])).to_string(),
            ),
        ),
        ("POST", RESET, Canned::json(204, "")),
    ])
    .await;

    driver(&server, SYSTEM).power_on().await.expect("power on");

    let body: Value =
        serde_json::from_str(&server.requests_with("POST")[0].body).expect("JSON body");
    assert_eq!(body, json!({ "ResetType": "On" }));
}

#[tokio::test]
async fn power_on_skips_reset_when_on() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::json(200, system_json("On", None).to_string()),
    )])
    .await;

    driver(&server, SYSTEM)
        .power_on()
        .await
        .expect("already on");

    assert!(server.requests_with("POST").is_empty());
}

#[tokio::test]
async fn power_off_sends_graceful_or_force() {
    for (force, expected) in [(false, "GracefulShutdown"), (true, "ForceOff")] {
        let server = TestServer::start(vec![
            (
                "GET",
                SYSTEM,
                Canned::json(200, system_json("On", None).to_string()),
            ),
            ("POST", RESET, Canned::json(200, "{}")),
        ])
        .await;

        driver(&server, SYSTEM)
            .power_off(force)
            .await
            .expect("power off");

        let body: Value =
            serde_json::from_str(&server.requests_with("POST")[0].body).expect("JSON body");
        assert_eq!(body, json!({ "ResetType": expected }), "force = {force}");
    }
}

#[tokio::test]
async fn disallowed_reset_type_is_unsupported() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::json(
            200,
            system_json("On", Some(&["ForceOff", "ForceRestart"])).to_string(),
        ),
    )])
    .await;

    let error = driver(&server, SYSTEM)
        .power_off(false)
        .await
        .expect_err("not allowed");

    assert!(
        matches!(&error, DriverError::Unsupported { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("GracefulShutdown"), "{error}");
    assert!(server.requests_with("POST").is_empty());
}

#[tokio::test]
async fn action_info_supplies_allowed_values() {
    let mut system = system_json("Off", None);
    system["Actions"]["#ComputerSystem.Reset"]["@Redfish.ActionInfo"] =
        json!("/redfish/v1/Systems/1/ResetActionInfo");
    let info = json!({
        "Parameters": [{ "Name": "ResetType", "AllowableValues": ["ForceOn", "ForceOff"] }]
    });
    let server = TestServer::start(vec![
        ("GET", SYSTEM, Canned::json(200, system.to_string())),
        (
            "GET",
            "/redfish/v1/Systems/1/ResetActionInfo",
            Canned::json(200, info.to_string()),
        ),
        ("POST", RESET, Canned::json(204, "")),
    ])
    .await;

    driver(&server, SYSTEM).power_on().await.expect("power on");

    let body: Value =
        serde_json::from_str(&server.requests_with("POST")[0].body).expect("JSON body");
    assert_eq!(body, json!({ "ResetType": "ForceOn" }));
}

#[tokio::test]
async fn set_next_boot_patches_override() {
    let server = TestServer::start(vec![
        (
            "GET",
            SYSTEM,
            Canned::json(200, system_json("Off", None).to_string()),
        ),
        ("PATCH", SYSTEM, Canned::json(204, "")),
    ])
    .await;

    driver(&server, SYSTEM)
        .set_next_boot(BootOverride {
            target: BootTarget::Disk,
            persistence: BootPersistence::Continuous,
            mode: None,
        })
        .await
        .expect("set boot");

    let patches = server.requests_with("PATCH");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&patches[0].body).expect("JSON body");
    let expected = json!({ "Boot": { "BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous" } });
    assert_eq!(body, expected);
}

#[tokio::test]
async fn disallowed_boot_target_is_unsupported() {
    let server = TestServer::start(vec![(
        "GET",
        SYSTEM,
        Canned::json(200, system_json("Off", None).to_string()),
    )])
    .await;

    let error = driver(&server, SYSTEM)
        .set_next_boot(BootOverride {
            target: BootTarget::UefiHttp,
            persistence: BootPersistence::Once,
            mode: None,
        })
        .await
        .expect_err("UefiHttp not listed");

    assert!(
        matches!(&error, DriverError::Unsupported { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("UefiHttp"), "{error}");
    assert!(server.requests_with("PATCH").is_empty());
}

/// Routes for a service root with two systems, each with one interface.
fn two_system_routes() -> Vec<(&'static str, &'static str, Canned)> {
    let system = |id: &str, mac: &str| {
        vec![
            json!({
                "PowerState": "Off",
                "EthernetInterfaces": { "@odata.id": format!("/redfish/v1/Systems/{id}/EthernetInterfaces") },
            }),
            json!({ "Members": [{ "@odata.id": format!("/redfish/v1/Systems/{id}/EthernetInterfaces/{mac}") }] }),
            json!({ "Id": mac, "MACAddress": mac.to_uppercase() }),
        ]
    };
    let a = system("a", "52:54:00:00:00:01");
    let b = system("b", "52:54:00:00:00:02");
    vec![
        (
            "GET",
            "/redfish/v1/",
            Canned::json(200, r#"{"Systems":{"@odata.id":"/redfish/v1/Systems"}}"#),
        ),
        (
            "GET",
            "/redfish/v1/Systems",
            Canned::json(
                200,
                r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/a"},{"@odata.id":"/redfish/v1/Systems/b"}]}"#,
            ),
        ),
        (
            "GET",
            "/redfish/v1/Systems/a",
            Canned::json(200, a[0].to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Systems/a/EthernetInterfaces",
            Canned::json(200, a[1].to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Systems/a/EthernetInterfaces/52:54:00:00:00:01",
            Canned::json(200, a[2].to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Systems/b",
            Canned::json(200, b[0].to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Systems/b/EthernetInterfaces",
            Canned::json(200, b[1].to_string()),
        ),
        (
            "GET",
            "/redfish/v1/Systems/b/EthernetInterfaces/52:54:00:00:00:02",
            Canned::json(200, b[2].to_string()),
        ),
    ]
}

#[tokio::test]
async fn discovery_picks_system_by_mac() {
    let server = TestServer::start(two_system_routes()).await;
    let mac: MacAddr = "52:54:00:00:00:02".parse().expect("valid MAC");
    let endpoint = BmcEndpoint {
        boot_mac: Some(mac),
        ..endpoint(server.url.clone())
    };
    let driver = RedfishDriver::new(endpoint).expect("valid endpoint");

    let system = driver.system_url().await.expect("discovered").to_string();

    assert_eq!(system, server.at("/redfish/v1/Systems/b"));
    assert_eq!(driver.boot_macs().await.expect("MACs"), vec![mac]);
}

#[tokio::test]
async fn discovery_without_mac_needs_single_system() {
    let server = TestServer::start(two_system_routes()).await;

    let error = driver(&server, "/redfish/v1")
        .power_state()
        .await
        .expect_err("two systems");

    assert!(
        matches!(&error, DriverError::SystemNotFound { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("2 ComputerSystems"), "{error}");
    assert_names_node_and_url(&error, &server.at("/redfish/v1/Systems"));
}

#[tokio::test]
async fn discovery_with_unknown_mac_fails() {
    let server = TestServer::start(two_system_routes()).await;
    let endpoint = BmcEndpoint {
        boot_mac: Some("52:54:00:00:00:99".parse().expect("valid MAC")),
        ..endpoint(server.url.clone())
    };

    let error = RedfishDriver::new(endpoint)
        .expect("valid endpoint")
        .power_state()
        .await
        .expect_err("no such MAC");

    assert!(
        matches!(&error, DriverError::SystemNotFound { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("52:54:00:00:00:99"), "{error}");
}

#[tokio::test]
async fn link_to_other_server_is_rejected() {
    let server = TestServer::start(vec![(
        "GET",
        "/redfish/v1/",
        Canned::json(
            200,
            r#"{"Systems":{"@odata.id":"http://127.0.0.1:9/redfish/v1/Systems"}}"#,
        ),
    )])
    .await;

    let error = driver(&server, "")
        .power_state()
        .await
        .expect_err("foreign link");

    assert!(error.to_string().contains("another server"), "{error}");
    assert_eq!(
        server.requests().len(),
        1,
        "nothing may follow the foreign link"
    );
}

#[tokio::test]
async fn redirect_to_other_server_is_not_followed() {
    let canned = Canned::Full {
        status: 307,
        content_type: "text/plain",
        body: String::new(),
        headers: vec![("Location", "http://127.0.0.1:9/redfish/v1/Systems/1".into())],
    };
    let server = TestServer::start(vec![("GET", SYSTEM, canned)]).await;

    let error = driver(&server, SYSTEM)
        .power_state()
        .await
        .expect_err("foreign redirect");

    assert!(
        matches!(&error, DriverError::Http { status: 307, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn redirect_on_same_server_is_followed() {
    let canned = Canned::Full {
        status: 307,
        content_type: "text/plain",
        body: String::new(),
        headers: vec![("Location", SYSTEM.into())],
    };
    let server = TestServer::start(vec![
        ("GET", "/redfish/v1/Systems/node-1", canned),
        (
            "GET",
            SYSTEM,
            Canned::json(200, system_json("On", None).to_string()),
        ),
    ])
    .await;

    let state = driver(&server, "/redfish/v1/Systems/node-1")
        .power_state()
        .await
        .expect("power state");

    assert_eq!(state, PowerState::On);
    let followed: Vec<_> = server
        .requests_with("GET")
        .into_iter()
        .filter(|request| request.path != "/redfish/v1/")
        .collect();
    assert_eq!(followed.len(), 2);
    assert_eq!(
        followed[1].header("authorization"),
        Some("Basic YWRtaW46czNjcmV0LXB3")
    );
}

#[test]
fn invalid_ca_pem_is_rejected() {
    let endpoint = BmcEndpoint {
        ca_pem: Some(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
        ),
        ..endpoint("https://127.0.0.1:1".into())
    };

    let error = RedfishDriver::new(endpoint).expect_err("bad PEM");

    assert!(
        matches!(&error, DriverError::InvalidCaCertificate { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(NODE), "{error}");
}

#[test]
fn pem_without_certificate_is_rejected() {
    let endpoint = BmcEndpoint {
        ca_pem: Some("just text".into()),
        ..endpoint("https://127.0.0.1:1".into())
    };

    let error = RedfishDriver::new(endpoint).expect_err("no certificate");

    assert!(
        matches!(&error, DriverError::InvalidCaCertificate { .. }),
        "{error:?}"
    );
}
