//! The Ironic bridge against a real standalone Ironic 39, started by
//! `tests/peers/ironic`, and for real power changes the sushy-tools Redfish
//! emulator of `tests/peers/redfish-bmc` behind Ironic's `redfish` type.
//!
//! Each test starts its own Ironic (about 4 s, a fresh database), so tests
//! never share nodes. The nextest group `ironic` runs at most two at a time:
//! each Ironic takes about 300 MB.

use std::time::{Duration, Instant};

use rackhand_e2e::peers::Peer;
use rackhand_ironic_bridge::driver::DriverError;
use rackhand_ironic_bridge::ironic::{
    ApiVersion, ConfigDrive, DeployRequest, DeployStart, DriverInfo, InstanceInfo, IronicAuth,
    IronicClient, IronicConfig, IronicError, NodeSpec, StateDeadlines,
};
use rackhand_ironic_bridge::{
    BmcDriver, BmcEndpoint, BootOverride, BootTarget, DriverKind, PowerState, connect,
};
use rackhand_protocol::{MacAddr, Secret};
use serde_json::json;

/// Bound on every provisioning wait; fake-hardware needs well under a
/// second per state, a Redfish-backed verify about 3 to 8 s.
const STATE_LIMIT: Duration = Duration::from_secs(90);

const INSTANCE: &str = "6f1c6a9e-2d4b-4c1e-9a55-3e1f6b2d7a10";
const OTHER_INSTANCE: &str = "0b7d4f3e-8c21-4a6b-9f10-5d2e7c9a4b31";

/// A running Ironic and the folder with its state; the peer stops first.
struct Ironic {
    peer: Peer,
    _state: tempfile::TempDir,
}

impl Ironic {
    fn start(env: &[(&str, &str)]) -> Ironic {
        let state = tempfile::tempdir().expect("create a state folder");
        let peer = Peer::start("ironic", state.path(), env).expect("start the ironic peer");
        Ironic {
            peer,
            _state: state,
        }
    }

    fn url(&self) -> &str {
        self.peer.var("IRONIC_URL")
    }

    fn client(&self) -> IronicClient {
        IronicClient::new(IronicConfig::new(self.url())).expect("valid client config")
    }
}

fn deadlines() -> StateDeadlines {
    StateDeadlines::all(STATE_LIMIT)
}

fn fake_node(name: &str) -> NodeSpec {
    let mut spec = NodeSpec::new(name, "fake-hardware");
    spec.properties = json!({"cpus": 2, "memory_mb": 1024, "local_gb": 10, "cpu_arch": "x86_64"})
        .as_object()
        .cloned()
        .expect("object literal");
    spec
}

fn deploy_request(instance_uuid: &str) -> DeployRequest {
    DeployRequest {
        instance_uuid: instance_uuid.to_string(),
        instance_info: InstanceInfo {
            image_source: Some("http://127.0.0.1:9/images/debian-12.qcow2".to_string()),
            image_sha256: Some("a".repeat(64)),
            root_device: Some(json!({"size": ">= 8"})),
            ..InstanceInfo::default()
        },
        configdrive: Some(ConfigDrive {
            meta_data: json!({"hostname": "web-1", "uuid": instance_uuid}),
            user_data: Some("#cloud-config\npassword: not-logged\n".to_string()),
            network_data: Some(json!({"links": [], "networks": [], "services": []})),
        }),
    }
}

/// Enrolls a fake-hardware node and makes it available.
async fn available_node(client: &IronicClient, name: &str) {
    client.enroll(&fake_node(name)).await.expect("enroll");
    client.manage(name, &deadlines()).await.expect("manage");
    client.provide(name, &deadlines()).await.expect("provide");
}

#[tokio::test]
async fn fake_node_full_deploy_cycle() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();

    let node = client.enroll(&fake_node("web-1")).await.expect("enroll");
    assert_eq!(node.provision_state, "enroll");
    let node = client.manage("web-1", &deadlines()).await.expect("manage");
    assert_eq!(node.provision_state, "manageable");
    let node = client
        .provide("web-1", &deadlines())
        .await
        .expect("provide");
    assert_eq!(node.provision_state, "available");

    let request = deploy_request(INSTANCE);
    client
        .set_instance_info("web-1", &request.instance_info)
        .await
        .expect("instance_info");
    let node = client
        .provision("web-1", &request, &deadlines())
        .await
        .expect("deploy");
    assert_eq!(node.provision_state, "active");
    assert_eq!(node.instance_uuid.as_deref(), Some(INSTANCE));

    let node = client
        .undeploy("web-1", &deadlines())
        .await
        .expect("undeploy");
    assert_eq!(node.provision_state, "available");
    assert_eq!(node.instance_uuid, None);
}

/// The configdrive JSON the site agent sends (the control plane's built-in
/// meta_data.json and network_data.json, and a cloud-config) goes through
/// Ironic's own configdrive builder, and the ISO it makes contains the same
/// files.
#[tokio::test]
async fn configdrive_builds_into_ironic_iso() {
    use rackhand_install_templates::{OrderContext, configdrive, operator};

    let ironic = Ironic::start(&[("IRONIC_SHOW_INSTANCE_SECRETS", "1")]);
    let client = ironic.client();
    available_node(&client, "web-13").await;
    let context = OrderContext::new(operator::sample_input(true)).expect("sample order");
    let rendered = configdrive::render(&context);
    let json_of = |name: &str| -> serde_json::Value {
        let file = rendered
            .iter()
            .find(|file| file.path.ends_with(name))
            .expect("the built-in configdrive has the file");
        serde_json::from_str(&file.contents).expect("built-in files are JSON")
    };
    let user_data = "#cloud-config\nhostname: \"web1\"\n";
    let mut request = deploy_request(INSTANCE);
    request.configdrive = Some(ConfigDrive {
        meta_data: json_of("meta_data.json"),
        user_data: Some(user_data.to_string()),
        network_data: Some(json_of("network_data.json")),
    });
    client
        .set_instance_info("web-13", &request.instance_info)
        .await
        .expect("instance_info");
    client
        .provision("web-13", &request, &deadlines())
        .await
        .expect("deploy");
    let unpacked = tempfile::tempdir().expect("a temporary folder");

    let files = rackhand_e2e::configdrive::ironic_configdrive_files(
        &ironic.peer,
        "web-13",
        unpacked.path(),
    )
    .expect("the configdrive reads back");

    let on_iso = |path: &str| -> serde_json::Value {
        let text = files
            .get(path)
            .unwrap_or_else(|| panic!("no {path} in {:?}", files.keys()));
        serde_json::from_str(text).expect("the ISO's file is JSON")
    };
    assert_eq!(
        on_iso("openstack/latest/meta_data.json")["uuid"],
        json_of("meta_data.json")["uuid"]
    );
    assert_eq!(
        on_iso("openstack/latest/meta_data.json")["public_keys"],
        json_of("meta_data.json")["public_keys"]
    );
    assert_eq!(
        on_iso("openstack/latest/network_data.json"),
        json_of("network_data.json")
    );
    assert_eq!(
        files.get("openstack/latest/user_data").map(String::as_str),
        Some(user_data)
    );
}

#[tokio::test]
async fn enroll_reuses_node_of_same_name() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();

    let first = client.enroll(&fake_node("web-2")).await.expect("enroll");
    let second = client
        .enroll(&fake_node("web-2"))
        .await
        .expect("enroll again");
    assert_eq!(first.uuid, second.uuid);
}

#[tokio::test]
async fn inspected_fake_node_reports_inventory() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();
    client.enroll(&fake_node("web-12")).await.expect("enroll");
    client.manage("web-12", &deadlines()).await.expect("manage");
    let node = client
        .inspect("web-12", &deadlines())
        .await
        .expect("inspect");
    assert_eq!(node.provision_state, "manageable");

    // The fake inspect interface stores no inventory, so the driver falls
    // back to the node's properties.
    let driver = connect(BmcEndpoint::new(
        DriverKind::Ironic,
        format!("{}/v1/nodes/web-12", ironic.url()),
        "",
        Secret::new(String::new()),
        "web-12",
    ))
    .expect("driver");
    let inventory = driver.inventory().await.expect("inventory");
    assert_eq!(inventory.memory_mib, Some(1024));
    assert_eq!(inventory.cpus[0].cores, Some(2));
    assert_eq!(inventory.uuid.as_deref(), Some(node.uuid.as_str()));
    assert!(driver.boot_macs().await.expect("ports").is_empty());
}

#[tokio::test]
async fn same_instance_retry_finds_deployment() {
    // Two seconds per fake deploy step keep the node in "deploying".
    let ironic = Ironic::start(&[("IRONIC_FAKE_DEPLOY_DELAY", "2")]);
    let client = ironic.client();
    available_node(&client, "web-3").await;

    let request = deploy_request(INSTANCE);
    let first = client.deploy("web-3", &request).await.expect("deploy");
    assert_eq!(first, DeployStart::Started);
    let retry = client
        .deploy("web-3", &request)
        .await
        .expect("retried deploy");
    assert!(matches!(retry, DeployStart::InProgress(_)), "{retry:?}");

    client
        .wait_for_state("web-3", "active", &deadlines())
        .await
        .expect("active");
    let after_active = client
        .deploy("web-3", &request)
        .await
        .expect("deploy once active");
    assert_eq!(after_active, DeployStart::InProgress("active".to_string()));

    let history = client.history("web-3").await.expect("history");
    let deployments = history
        .iter()
        .filter(|event| event.event.starts_with("Starting deployment"))
        .count();
    assert_eq!(deployments, 1, "{history:?}");
}

#[tokio::test]
async fn other_instance_on_busy_node_rejected() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();
    available_node(&client, "web-4").await;
    client
        .provision("web-4", &deploy_request(INSTANCE), &deadlines())
        .await
        .expect("first deploy");

    let error = client
        .deploy("web-4", &deploy_request(OTHER_INSTANCE))
        .await
        .expect_err("the node holds another instance");
    assert!(matches!(error, IronicError::Conflict { .. }), "{error:?}");
    assert!(error.to_string().contains(INSTANCE), "{error}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn unknown_clean_step_gives_clean_failed() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();
    client.enroll(&fake_node("web-5")).await.expect("enroll");
    client.manage("web-5", &deadlines()).await.expect("manage");

    let steps = json!({"target": "clean", "clean_steps": [
        {"interface": "deploy", "step": "erase_devices_metadata"}]});
    client
        .set_provision_state("web-5", steps)
        .await
        .expect("clean accepted");
    let error = client
        .wait_for_state("web-5", "manageable", &deadlines())
        .await
        .expect_err("the step does not exist");

    assert!(
        matches!(&error, IronicError::ProvisionFailed { provision_state, .. } if provision_state == "clean failed"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("does not support this clean step"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn cleared_last_error_is_read_from_history() {
    // A power sync every 2 s clears last_error soon after the failure.
    let ironic = Ironic::start(&[("IRONIC_SYNC_POWER_STATE_INTERVAL", "2")]);
    let client = ironic.client();
    client.enroll(&fake_node("web-6")).await.expect("enroll");
    client.manage("web-6", &deadlines()).await.expect("manage");
    let steps = json!({"target": "clean", "clean_steps": [
        {"interface": "deploy", "step": "erase_devices_metadata"}]});
    client
        .set_provision_state("web-6", steps)
        .await
        .expect("clean");

    let started = Instant::now();
    // Ends when the failure shows with last_error cleared, or after 30 s.
    loop {
        let node = client.node("web-6").await.expect("read node");
        if node.provision_state == "clean failed" && node.last_error.is_none() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{node:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let error = client
        .wait_for_state("web-6", "manageable", &deadlines())
        .await
        .expect_err("clean failed");
    assert!(
        error
            .to_string()
            .contains("does not support this clean step"),
        "{error}"
    );
}

#[tokio::test]
async fn microversion_is_negotiated_from_root() {
    let ironic = Ironic::start(&[]);
    let server_max: ApiVersion = ironic
        .peer
        .var("IRONIC_API_MAX_VERSION")
        .parse()
        .expect("the peer prints a version");
    assert_eq!(
        ironic.client().api_version().await.expect("negotiate"),
        server_max
    );

    let capped = IronicClient::new(IronicConfig {
        max_api_version: Some(ApiVersion::new(1, 80)),
        ..IronicConfig::new(ironic.url())
    })
    .expect("config");
    assert_eq!(
        capped.api_version().await.expect("negotiate"),
        ApiVersion::new(1, 80)
    );

    let too_old = IronicClient::new(IronicConfig {
        max_api_version: Some(ApiVersion::new(1, 20)),
        ..IronicConfig::new(ironic.url())
    })
    .expect("config");
    let error = too_old.api_version().await.expect_err("below the minimum");
    assert!(
        matches!(error, IronicError::NoCommonVersion { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn missing_node_error_has_fault() {
    let ironic = Ironic::start(&[]);
    let error = ironic
        .client()
        .node("no-such-node")
        .await
        .expect_err("no such node");

    assert!(
        matches!(&error, IronicError::Api { status: 404, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.ironic_message(),
        Some("Node no-such-node could not be found.")
    );
    assert!(error.to_string().contains(ironic.url()), "{error}");
}

#[tokio::test]
async fn deploy_from_manageable_rejected() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();
    client.enroll(&fake_node("web-7")).await.expect("enroll");
    client.manage("web-7", &deadlines()).await.expect("manage");

    let error = client
        .deploy("web-7", &deploy_request(INSTANCE))
        .await
        .expect_err("not available");
    assert!(error.to_string().contains("manageable"), "{error}");
}

#[tokio::test]
async fn rescue_and_unrescue_fake_node() {
    let ironic = Ironic::start(&[]);
    let client = ironic.client();
    available_node(&client, "web-8").await;
    client
        .provision("web-8", &deploy_request(INSTANCE), &deadlines())
        .await
        .expect("deploy");

    let password = Secret::new("rescue-pw-4471".to_string());
    let node = client
        .rescue("web-8", &password, &deadlines())
        .await
        .expect("rescue");
    assert_eq!(node.provision_state, "rescue");
    let node = client
        .unrescue("web-8", &deadlines())
        .await
        .expect("unrescue");
    assert_eq!(node.provision_state, "active");

    // Ironic aborts only wait states; on an active node it rejects the
    // request, and the error carries its reason.
    let error = client.abort("web-8").await.expect_err("nothing to abort");
    assert!(
        matches!(error, IronicError::Api { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("abort"), "{error}");
}

#[tokio::test]
async fn concurrent_power_changes_wait_for_lock() {
    // The fake power interface keeps the node locked for 3 s per change, so
    // the second request meets 409 "locked" and has to retry.
    let ironic = Ironic::start(&[("IRONIC_FAKE_POWER_DELAY", "3")]);
    ironic
        .client()
        .enroll(&fake_node("web-11"))
        .await
        .expect("enroll");
    let endpoint = BmcEndpoint::new(
        DriverKind::Ironic,
        format!("{}/v1/nodes/web-11", ironic.url()),
        "",
        Secret::new(String::new()),
        "web-11",
    );
    let first = connect(endpoint.clone()).expect("driver");
    let second = connect(endpoint).expect("driver");

    let (a, b) = tokio::join!(first.power_on(), second.power_on());
    a.expect("first power on");
    b.expect("second power on after the lock cleared");
    assert_eq!(first.power_state().await.expect("state"), PowerState::On);
}

#[tokio::test]
async fn basic_auth_drives_node_and_hides_password() {
    let password = "ironic-basic-pw-9031";
    let ironic = Ironic::start(&[("IRONIC_AUTH", "http_basic"), ("IRONIC_PASSWORD", password)]);
    let user = ironic.peer.var("IRONIC_USER").to_string();
    let client = IronicClient::new(IronicConfig {
        auth: IronicAuth::Basic {
            username: user.clone(),
            password: Secret::new(password.to_string()),
        },
        ..IronicConfig::new(ironic.url())
    })
    .expect("config");
    client
        .enroll(&fake_node("web-9"))
        .await
        .expect("enroll with basic auth");

    let endpoint = |password: &str| {
        BmcEndpoint::new(
            DriverKind::Ironic,
            format!("{}/v1/nodes/web-9", ironic.url()),
            user.clone(),
            Secret::new(password.to_string()),
            "web-9",
        )
    };
    let driver = connect(endpoint(password)).expect("driver");
    driver.power_on().await.expect("power on");
    assert_eq!(
        driver.power_state().await.expect("power state"),
        PowerState::On
    );

    let wrong = connect(endpoint("wrong-pw-1187")).expect("driver");
    let error = wrong.power_state().await.expect_err("wrong password");
    assert!(
        matches!(error, DriverError::Authentication { .. }),
        "{error:?}"
    );
    let text = format!("{error} {error:?}");
    assert!(!text.contains("wrong-pw-1187"), "{text}");
}

#[test]
fn node_spec_and_configdrive_debug_hide_secrets() {
    let mut spec = NodeSpec::new("web-10", "redfish");
    spec.driver_info = DriverInfo::new()
        .set("redfish_username", "admin")
        .set_secret("redfish_password", Secret::new("bmc-pw-2209".to_string()));
    let drive = ConfigDrive {
        user_data: Some("#cloud-config\npassword: ud-pw-8812\n".to_string()),
        ..ConfigDrive::default()
    };
    let debug = format!("{spec:?} {drive:?}");
    assert!(!debug.contains("bmc-pw-2209"), "{debug}");
    assert!(!debug.contains("ud-pw-8812"), "{debug}");
}

#[tokio::test]
async fn unreachable_boot_iso_gives_deploy_failed() {
    let bmc_state = tempfile::tempdir().expect("state folder");
    let bmc = Peer::start(
        "redfish-bmc",
        bmc_state.path(),
        &[("REDFISH_SYSTEMS", "1"), ("REDFISH_POWER_DELAY", "1")],
    )
    .expect("start redfish-bmc");
    let ironic = Ironic::start(&[]);
    let client = ironic.client();

    // The ramdisk deploy boots boot_iso from virtual media and needs no
    // agent; Ironic fetches the ISO first, and nothing listens on port 9.
    let mut spec = redfish_node("rf-2", &bmc);
    spec.interfaces = [
        ("boot_interface", "redfish-virtual-media"),
        ("deploy_interface", "ramdisk"),
    ]
    .into_iter()
    .map(|(field, interface)| (field.to_string(), interface.to_string()))
    .collect();
    spec.automated_clean = Some(false);
    client.enroll(&spec).await.expect("enroll");
    client.manage("rf-2", &deadlines()).await.expect("manage");
    client.provide("rf-2", &deadlines()).await.expect("provide");

    let mut request = deploy_request(INSTANCE);
    request.instance_info = InstanceInfo::default();
    request
        .instance_info
        .extra
        .insert("boot_iso".into(), json!("http://127.0.0.1:9/boot.iso"));
    let error = client
        .provision("rf-2", &request, &deadlines())
        .await
        .expect_err("the ISO is unreachable");

    assert!(
        matches!(&error, IronicError::ProvisionFailed { provision_state, .. } if provision_state == "deploy failed"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("http://127.0.0.1:9/boot.iso"),
        "{error}"
    );
    let text = format!("{error} {error:?}");
    assert!(!text.contains(bmc.var("REDFISH_PASSWORD")), "{text}");
}

/// Builds a `redfish` node spec pointed at the emulator's only system.
fn redfish_node(name: &str, bmc: &Peer) -> NodeSpec {
    let system = bmc.var("REDFISH_SYSTEM_IDS");
    let mut spec = NodeSpec::new(name, "redfish");
    spec.driver_info = DriverInfo::new()
        .set("redfish_address", bmc.var("REDFISH_URL"))
        .set("redfish_system_id", format!("/redfish/v1/Systems/{system}"))
        .set("redfish_username", bmc.var("REDFISH_USER"))
        .set("redfish_verify_ca", false)
        .set_secret(
            "redfish_password",
            Secret::new(bmc.var("REDFISH_PASSWORD").to_string()),
        );
    spec
}

/// Reads one system from the Redfish emulator over its own API.
async fn emulator_system(bmc: &Peer, system: &str) -> serde_json::Value {
    let url = format!("{}/redfish/v1/Systems/{system}", bmc.var("REDFISH_URL"));
    let driver_client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("plain HTTP client");
    driver_client
        .get(&url)
        .basic_auth(bmc.var("REDFISH_USER"), Some(bmc.var("REDFISH_PASSWORD")))
        .send()
        .await
        .expect("emulator answers")
        .json()
        .await
        .expect("emulator JSON")
}

async fn wait_for_emulator_power(bmc: &Peer, system: &str, want: &str) {
    let started = Instant::now();
    // Ends when the emulator shows `want`, or after 20 s.
    loop {
        let state = emulator_system(bmc, system).await["PowerState"].clone();
        if state == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "emulator still shows {state} instead of {want}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn redfish_power_changes_emulator() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bmc_state = tempfile::tempdir().expect("state folder");
    let bmc = Peer::start(
        "redfish-bmc",
        bmc_state.path(),
        &[("REDFISH_SYSTEMS", "1"), ("REDFISH_POWER_DELAY", "1")],
    )
    .expect("start redfish-bmc");
    let ironic = Ironic::start(&[]);
    let client = ironic.client();
    let system = bmc.var("REDFISH_SYSTEM_IDS").to_string();
    let mac: MacAddr = bmc.var("REDFISH_SYSTEM_MACS").parse().expect("MAC");

    let mut spec = redfish_node("rf-1", &bmc);
    spec.ports = vec![mac];
    client.enroll(&spec).await.expect("enroll");
    client.manage("rf-1", &deadlines()).await.expect("manage");

    let driver = connect(BmcEndpoint::new(
        DriverKind::Ironic,
        format!("{}/v1/nodes/rf-1", ironic.url()),
        "",
        Secret::new(String::new()),
        "rf-1",
    ))
    .expect("driver");

    driver.power_on().await.expect("power on");
    wait_for_emulator_power(&bmc, &system, "On").await;
    assert_eq!(driver.power_state().await.expect("state"), PowerState::On);

    driver
        .set_next_boot(BootOverride::once(BootTarget::Pxe))
        .await
        .expect("boot device");
    let boot = emulator_system(&bmc, &system).await["Boot"]["BootSourceOverrideTarget"].clone();
    assert_eq!(boot, "Pxe");

    driver.power_off(true).await.expect("power off");
    wait_for_emulator_power(&bmc, &system, "Off").await;

    assert_eq!(driver.boot_macs().await.expect("ports"), vec![mac]);
}
