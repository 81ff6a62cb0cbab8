//! Unit tests of the Ironic client against canned responses: bodies a real
//! Ironic does not send on demand (HTML, truncated JSON, an old version
//! range) and the Keystone token flow, for which no Keystone runs here.

use std::time::Duration;

use rackhand_protocol::Secret;

use super::{
    ApiVersion, IronicAuth, IronicClient, IronicConfig, KeystoneAuth, MAX_API_VERSION,
    MIN_API_VERSION, fault_message, negotiate,
};
use crate::driver::ResponseProblem;
use crate::ironic::IronicError;
use crate::redfish::test_server::{Canned, TestServer};

const ROOT_115: &str =
    r#"{"default_version": {"id": "v1", "min_version": "1.1", "version": "1.115"}}"#;

fn client(url: &str, auth: IronicAuth) -> IronicClient {
    IronicClient::new(IronicConfig {
        auth,
        timeout: Duration::from_secs(5),
        ..IronicConfig::new(url)
    })
    .expect("valid config")
}

#[test]
fn negotiation_picks_highest_common_version() {
    let v = ApiVersion::new;
    assert_eq!(
        negotiate(v(1, 1), v(1, 115), v(1, 56), v(1, 99)),
        Some(v(1, 99))
    );
    assert_eq!(
        negotiate(v(1, 1), v(1, 80), v(1, 56), v(1, 115)),
        Some(v(1, 80))
    );
}

#[test]
fn negotiation_fails_without_overlap() {
    let v = ApiVersion::new;
    assert_eq!(negotiate(v(1, 1), v(1, 40), v(1, 56), v(1, 115)), None);
}

#[test]
fn version_parses_and_orders_numerically() {
    let low: ApiVersion = "1.9".parse().expect("valid");
    let high: ApiVersion = "1.10".parse().expect("valid");
    assert!(low < high);
    assert!("1".parse::<ApiVersion>().is_err());
}

#[test]
fn double_encoded_fault_is_decoded() {
    let body = br#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node x could not be found.\", \"debuginfo\": null}"}"#;
    assert_eq!(
        fault_message(body).as_deref(),
        Some("Node x could not be found.")
    );
}

#[test]
fn fault_object_is_decoded() {
    let body = br#"{"error_message": {"faultcode": "Client", "faultstring": "Bad request"}}"#;
    assert_eq!(fault_message(body).as_deref(), Some("Bad request"));
}

#[test]
fn fault_absent_from_html() {
    assert_eq!(fault_message(b"<html><body>502</body></html>"), None);
}

#[tokio::test]
async fn old_server_gives_no_common_version() {
    let root = r#"{"default_version": {"min_version": "1.1", "version": "1.40"}}"#;
    let server = TestServer::start(vec![("GET", "/", Canned::json(200, root))]).await;
    let error = client(&server.url, IronicAuth::None)
        .api_version()
        .await
        .expect_err("1.40 is below the client's minimum");
    assert!(
        matches!(error, IronicError::NoCommonVersion { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("1.40"), "{error}");
}

#[tokio::test]
async fn every_request_carries_negotiated_version() {
    let server = TestServer::start(vec![
        ("GET", "/", Canned::json(200, ROOT_115)),
        (
            "GET",
            "/v1/nodes/n1?fields=uuid",
            Canned::json(200, r#"{"uuid": "u"}"#),
        ),
    ])
    .await;
    let client = client(&server.url, IronicAuth::None);
    let _: serde_json::Value = client
        .get_json("n1", "/v1/nodes/n1?fields=uuid")
        .await
        .expect("node read");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("x-openstack-ironic-api-version"),
        Some("1.115")
    );
}

#[tokio::test]
async fn html_body_is_invalid_response() {
    let server = TestServer::start(vec![
        ("GET", "/", Canned::json(200, ROOT_115)),
        (
            "GET",
            "/v1/nodes/n1",
            Canned::html(200, "<html>proxy login</html>"),
        ),
    ])
    .await;
    let error = client(&server.url, IronicAuth::None)
        .get_json::<serde_json::Value>("n1", "/v1/nodes/n1")
        .await
        .expect_err("HTML is not JSON");
    assert!(
        matches!(&error, IronicError::InvalidResponse { problem: ResponseProblem::Html, node, url, .. }
            if node == "n1" && url.ends_with("/v1/nodes/n1")),
        "{error:?}"
    );
}

#[tokio::test]
async fn truncated_body_is_retryable() {
    let server = TestServer::start(vec![
        ("GET", "/", Canned::json(200, ROOT_115)),
        (
            "GET",
            "/v1/nodes/n1",
            Canned::json(200, r#"{"uuid": "u", "provision"#),
        ),
    ])
    .await;
    let error = client(&server.url, IronicAuth::None)
        .get_json::<serde_json::Value>("n1", "/v1/nodes/n1")
        .await
        .expect_err("truncated JSON");
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn unreachable_ironic_names_url() {
    // Port 9 (discard) on loopback has no listener.
    let error = client("http://127.0.0.1:9", IronicAuth::None)
        .api_version()
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(error, IronicError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("127.0.0.1:9"), "{error}");
}

fn keystone(server: &TestServer) -> IronicAuth {
    IronicAuth::Keystone(KeystoneAuth {
        auth_url: server.at("/v3"),
        username: "rackhand".into(),
        password: Secret::new("keystone-pw-7731".into()),
        user_domain: "Default".into(),
        project: "baremetal".into(),
        project_domain: "Default".into(),
    })
}

fn token_reply() -> Canned {
    Canned::Full {
        status: 201,
        content_type: "application/json",
        body: r#"{"token": {}}"#.into(),
        headers: vec![("X-Subject-Token", "tok-1".into())],
    }
}

#[tokio::test]
async fn keystone_token_is_fetched_once_and_sent() {
    let server = TestServer::start(vec![
        ("POST", "/v3/auth/tokens", token_reply()),
        ("GET", "/", Canned::json(200, ROOT_115)),
        ("GET", "/v1/nodes/n1", Canned::json(200, r#"{"uuid": "u"}"#)),
    ])
    .await;
    let client = client(&server.url, keystone(&server));
    for _ in 0..2 {
        let _: serde_json::Value = client.get_json("n1", "/v1/nodes/n1").await.expect("read");
    }
    assert_eq!(server.requests_with("POST").len(), 1);
    let gets = server.requests_with("GET");
    assert!(
        gets.iter()
            .all(|request| request.header("x-auth-token") == Some("tok-1"))
    );
}

#[tokio::test]
async fn rejected_token_is_renewed_once() {
    let rejected = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
    let server = TestServer::start(vec![
        ("POST", "/v3/auth/tokens", token_reply()),
        ("GET", "/", Canned::json(200, ROOT_115)),
        ("GET", "/v1/nodes/n1", Canned::json(401, rejected)),
    ])
    .await;
    let error = client(&server.url, keystone(&server))
        .get_json::<serde_json::Value>("n1", "/v1/nodes/n1")
        .await
        .expect_err("Ironic keeps rejecting");
    assert!(
        matches!(error, IronicError::Authentication { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(server.requests_with("POST").len(), 2);
}

#[tokio::test]
async fn keystone_failure_hides_password() {
    let server = TestServer::start(vec![(
        "POST",
        "/v3/auth/tokens",
        Canned::json(
            401,
            r#"{"error": {"message": "bad password keystone-pw-7731"}}"#,
        ),
    )])
    .await;
    let error = client(&server.url, keystone(&server))
        .api_version()
        .await
        .expect_err("Keystone rejects");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("keystone-pw-7731"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

#[test]
fn config_debug_hides_passwords() {
    let config = IronicConfig {
        auth: IronicAuth::Basic {
            username: "ironic".into(),
            password: Secret::new("basic-pw-5512".into()),
        },
        ..IronicConfig::new("http://127.0.0.1:6385")
    };
    let debug = format!("{config:?}");
    assert!(!debug.contains("basic-pw-5512"), "{debug}");
}

#[test]
fn credentials_in_url_are_rejected() {
    let error = IronicClient::new(IronicConfig::new("http://u:p@127.0.0.1:6385"))
        .expect_err("credentials in URL");
    assert!(
        matches!(error, IronicError::InvalidConfig { .. }),
        "{error:?}"
    );
}

#[test]
fn client_range_is_consistent() {
    assert!(MIN_API_VERSION <= MAX_API_VERSION);
}
