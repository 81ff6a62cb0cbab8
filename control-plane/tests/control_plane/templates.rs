//! Install templates: upload checks that store nothing on failure, the
//! catalogue routes, and the image phase's per-order rendering, which must
//! write the same address and password hash on every run.

use http::StatusCode;
use rackhand_control_plane::phases::credentials::ensure_root_credentials;
use rackhand_control_plane::phases::{self, OrderContext, PhaseOutcome};
use rackhand_control_plane::{install, orders};
use rackhand_install_templates::crypt;
use rackhand_protocol::Phase;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, CURRENCY, TestPlane, VIEWER_TOKEN, id_of};

const KICKSTART: &str = "text\n\
url --url=https://mirror.example.net/rocky/9/BaseOS/x86_64/os/\n\
autopart\n\
bootloader --location=mbr\n\
network --bootproto=static --ip={{network.ipv4.address}} --netmask={{network.ipv4.netmask}} --gateway={{network.ipv4.gateway}} --hostname={{fqdn}}\n\
rootpw --iscrypted {{root_password_hash}}\n\
%post\n\
curl --fail {{callback_url}}\n\
%end\n";

async fn put(plane: &TestPlane, name: &str, format: &str, body: &str) -> crate::harness::Reply {
    let upload = json!({ "format": format, "body": body });
    plane
        .call(
            "PUT",
            &format!("/v1/templates/{name}"),
            Some(ADMIN_TOKEN),
            Some(&upload),
        )
        .await
}

fn error_text(reply: &crate::harness::Reply) -> String {
    reply.json["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn valid_template_is_stored() {
    let plane = TestPlane::start().await;

    let reply = put(&plane, "rocky-ks", "kickstart", KICKSTART).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let shown = plane.get("/v1/templates/rocky-ks").await;
    assert_eq!(shown.json["body"], KICKSTART, "{}", shown.text);
    assert_eq!(shown.json["format"], "kickstart");
    let list = plane.get("/v1/templates").await;
    assert_eq!(list.json[0]["name"], "rocky-ks", "{}", list.text);
}

#[tokio::test]
async fn unescaped_expression_names_line_and_stores_nothing() {
    let plane = TestPlane::start().await;
    let body = "text\nlang en_US.UTF-8\nnetwork --hostname={{{fqdn}}}\n";

    let reply = put(&plane, "bad", "kickstart", body).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "body");
    assert!(error_text(&reply).contains("line 3"), "{}", reply.text);
    assert!(
        error_text(&reply).contains("use {{name}}"),
        "{}",
        reply.text
    );
    assert_eq!(
        plane.count("SELECT COUNT(*) FROM install_templates").await,
        0
    );
}

#[tokio::test]
async fn unknown_variable_names_line_and_known_ones() {
    let plane = TestPlane::start().await;
    let body = "#cloud-config\nhostname: {{hostnme}}\n";

    let reply = put(&plane, "bad", "cloud-config", body).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(error_text(&reply).contains("line 2"), "{}", reply.text);
    assert!(error_text(&reply).contains("\"hostnme\""), "{}", reply.text);
    assert!(error_text(&reply).contains("fqdn"), "{}", reply.text);
}

#[tokio::test]
async fn nul_in_body_names_line_and_column() {
    let plane = TestPlane::start().await;

    let reply = put(&plane, "nul", "cloud-config", "#cloud-config\nx: 1\0\n").await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "body");
    let message = error_text(&reply);
    assert!(message.contains("line 2, column 5"), "{message}");
    assert!(message.contains("U+0000"), "{message}");
    assert!(message.contains("remove it"), "{message}");
    assert_eq!(
        plane.count("SELECT COUNT(*) FROM install_templates").await,
        0
    );
}

#[tokio::test]
async fn byte_order_mark_is_invalid() {
    let plane = TestPlane::start().await;
    let body = format!("\u{feff}{KICKSTART}");

    let reply = put(&plane, "bom", "kickstart", &body).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let message = error_text(&reply);
    assert!(message.contains("remove the byte-order mark"), "{message}");
}

#[tokio::test]
async fn quoted_container_expression_gets_hint() {
    let plane = TestPlane::start().await;
    let body = r#"{"name": "game", "image": "docker.io/library/game:1", "env": {"HOST": "{{fqdn}}"}, "limits": {"millicpus": 1000, "memory_mib": 1024}}"#;

    let reply = put(&plane, "game", "container", body).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let message = error_text(&reply);
    assert!(
        message.contains("the rendered container spec is not valid JSON at line 1 column"),
        "{message}"
    );
    assert!(
        message.contains("expressions write their own quotes"),
        "{message}"
    );
}

#[tokio::test]
async fn failed_replacement_keeps_stored_template() {
    let plane = TestPlane::start().await;
    put(&plane, "rocky-ks", "kickstart", KICKSTART).await;

    let reply = put(&plane, "rocky-ks", "kickstart", "text\n{{&fqdn}}\n").await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let shown = plane.get("/v1/templates/rocky-ks").await;
    assert_eq!(shown.json["body"], KICKSTART);
}

#[tokio::test]
async fn replacement_returns_ok() {
    let plane = TestPlane::start().await;
    put(&plane, "rocky-ks", "kickstart", KICKSTART).await;
    let changed = format!("{KICKSTART}# changed\n");

    let reply = put(&plane, "rocky-ks", "kickstart", &changed).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let shown = plane.get("/v1/templates/rocky-ks").await;
    assert_eq!(shown.json["body"], changed.as_str());
}

#[tokio::test]
async fn unknown_format_is_invalid() {
    let plane = TestPlane::start().await;

    let reply = put(&plane, "ay", "autoyast", "<profile/>").await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "format");
}

#[tokio::test]
async fn viewer_cannot_upload() {
    let plane = TestPlane::start().await;
    let upload = json!({ "format": "kickstart", "body": KICKSTART });

    let reply = plane
        .call(
            "PUT",
            "/v1/templates/rocky-ks",
            Some(VIEWER_TOKEN),
            Some(&upload),
        )
        .await;

    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
}

async fn seed_product_with_template(plane: &TestPlane) {
    plane.seed_catalog().await;
    plane
        .create(
            "/v1/images",
            &json!({
                "name": "rocky-netinst",
                "kernel_sha256": "c".repeat(64),
                "initrd_sha256": "d".repeat(64),
                "install_method": "kickstart",
            }),
        )
        .await;
    let reply = put(plane, "rocky-ks", "kickstart", KICKSTART).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    plane
        .create(
            "/v1/products",
            &json!({
                "name": "ks-small",
                "price_minor": 1999,
                "currency": CURRENCY,
                "min_cpu_cores": 4,
                "min_ram_mib": 8192,
                "min_disk_gb": 100,
                "image": "rocky-netinst",
                "template": "rocky-ks",
            }),
        )
        .await;
}

#[tokio::test]
async fn template_of_other_method_is_invalid() {
    let plane = TestPlane::start().await;
    seed_product_with_template(&plane).await;

    // debian-12 is a live image, which reads no kickstart.
    let reply = plane
        .post(
            "/v1/products",
            &json!({
                "name": "ks-live",
                "price_minor": 1999,
                "currency": CURRENCY,
                "min_cpu_cores": 4,
                "min_ram_mib": 8192,
                "min_disk_gb": 100,
                "image": "debian-12",
                "template": "rocky-ks",
            }),
        )
        .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "template");
    assert!(
        error_text(&reply).contains("install method kickstart"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn delete_is_refused_while_product_uses_it() {
    let plane = TestPlane::start().await;
    seed_product_with_template(&plane).await;

    let reply = plane
        .call("DELETE", "/v1/templates/rocky-ks", Some(ADMIN_TOKEN), None)
        .await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(error_text(&reply).contains("ks-small"), "{}", reply.text);
    assert_eq!(
        plane.get("/v1/templates/rocky-ks").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unused_template_deletes() {
    let plane = TestPlane::start().await;
    put(&plane, "rocky-ks", "kickstart", KICKSTART).await;

    let reply = plane
        .call("DELETE", "/v1/templates/rocky-ks", Some(ADMIN_TOKEN), None)
        .await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let shown = plane.get("/v1/templates/rocky-ks").await;
    assert_eq!(shown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn format_change_is_refused_while_used() {
    let plane = TestPlane::start().await;
    seed_product_with_template(&plane).await;

    let reply = put(
        &plane,
        "rocky-ks",
        "cloud-config",
        "#cloud-config\nusers:\n  - name: root\n    hashed_passwd: {{root_password_hash}}\n",
    )
    .await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
}

#[tokio::test]
async fn product_with_unknown_template_is_invalid() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;

    let reply = plane
        .post(
            "/v1/products",
            &json!({
                "name": "ks-small",
                "price_minor": 1999,
                "currency": CURRENCY,
                "min_cpu_cores": 4,
                "min_ram_mib": 8192,
                "min_disk_gb": 100,
                "image": "debian-12",
                "template": "missing",
            }),
        )
        .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "template");
}

/// Places an order for `ks-small`, reserves a node and returns its context.
async fn templated_order(plane: &TestPlane) -> OrderContext {
    seed_product_with_template(plane).await;
    plane.create_node("n1", "52:54:00:00:20:01").await;
    plane.allocated_order_of("ks-small").await
}

fn kickstart_of(rendered: &install::RenderedInstall) -> String {
    rendered
        .files
        .iter()
        .find(|file| file.name == "ks.cfg")
        .map(|file| file.content.expose().clone())
        .expect("a kickstart file is rendered")
}

/// Returns the `$6$` hash on the kickstart's `rootpw` line.
fn rootpw_hash(kickstart: &str) -> String {
    let line = kickstart
        .lines()
        .find(|line| line.starts_with("rootpw"))
        .expect("a rootpw line");
    line.rsplit(' ')
        .next()
        .expect("a hash word")
        .trim_matches('\'')
        .to_string()
}

#[tokio::test]
async fn image_render_repeats_same_bytes() {
    let plane = TestPlane::start().await;
    let order = templated_order(&plane).await;

    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");
    install::prepare(&plane.app, &order)
        .await
        .expect("prepares again");
    let first = install::render_for_order(&plane.app, order.id)
        .await
        .expect("renders")
        .expect("the product has a template");
    let second = install::render_for_order(&plane.app, order.id)
        .await
        .expect("renders")
        .expect("the product has a template");

    assert_eq!(first.files, second.files);
    assert_eq!(plane.count("SELECT COUNT(*) FROM services").await, 1);
}

#[tokio::test]
async fn image_render_uses_network_phase_address() {
    let plane = TestPlane::start().await;
    let order = templated_order(&plane).await;
    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");
    let rendered = install::render_for_order(&plane.app, order.id)
        .await
        .expect("renders")
        .expect("the product has a template");

    let key = phases::correlation_key(&order, Phase::Network);
    let outcome = phases::network::run(&plane.app, &order, &key)
        .await
        .expect("network runs");

    let PhaseOutcome::Done { payload, .. } = outcome else {
        panic!("the network phase completes");
    };
    let ipv4 = payload
        .as_ref()
        .map(|p| p["ipv4"].clone())
        .unwrap_or(Value::Null);
    assert_eq!(ipv4, "192.0.2.10");
    assert!(
        kickstart_of(&rendered).contains("--ip='192.0.2.10'"),
        "{}",
        kickstart_of(&rendered)
    );
}

#[tokio::test]
async fn image_render_hash_matches_handoff_password() {
    let plane = TestPlane::start().await;
    let order = templated_order(&plane).await;
    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");
    let rendered = install::render_for_order(&plane.app, order.id)
        .await
        .expect("renders")
        .expect("the product has a template");

    let credentials = ensure_root_credentials(&plane.app, order.id)
        .await
        .expect("the stored credentials open");

    let hash = rootpw_hash(&kickstart_of(&rendered));
    let salt = hash.split('$').nth(2).expect("a $6$salt$ hash");
    let recomputed = crypt::sha512_crypt(
        credentials.password.expose().as_bytes(),
        salt.as_bytes(),
        None,
    );
    assert_eq!(recomputed, hash);
    assert!(!kickstart_of(&rendered).contains(credentials.password.expose().as_str()));
}

#[tokio::test]
async fn product_without_template_renders_nothing() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:02").await;
    let order_id = id_of(&plane.create_order().await, "order_id");
    phases::allocate::allocate(&plane.app.pool, order_id, None)
        .await
        .expect("a fitting node is free");
    let order = orders::context(&plane.app.pool, order_id)
        .await
        .expect("the order reads")
        .expect("the order exists");

    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");

    assert_eq!(plane.count("SELECT COUNT(*) FROM services").await, 0);
    let rendered = install::render_for_order(&plane.app, order.id)
        .await
        .expect("renders");
    assert!(rendered.is_none());
}

#[tokio::test]
async fn prepare_after_crash_keeps_address() {
    let plane = TestPlane::start().await;
    let order = templated_order(&plane).await;
    // A crash after the address was stored and before the credentials were.
    phases::network::ensure_address(&plane.app, &order)
        .await
        .expect("assigns");

    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");

    assert_eq!(plane.count("SELECT COUNT(*) FROM services").await, 1);
    let ipv4: String = sqlx::query_scalar("SELECT ipv4 FROM services WHERE order_id = ?")
        .bind(order.id)
        .fetch_one(&plane.app.pool)
        .await
        .expect("the service row reads");
    assert_eq!(ipv4, "192.0.2.10");
}

#[tokio::test]
async fn password_without_hash_gets_one_hash() {
    let plane = TestPlane::start().await;
    let order = templated_order(&plane).await;
    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");
    let before = ensure_root_credentials(&plane.app, order.id)
        .await
        .expect("opens");
    // A password sealed before hashes were stored.
    sqlx::query("UPDATE services SET root_password_hash_sealed = NULL WHERE order_id = ?")
        .bind(order.id)
        .execute(&plane.app.pool)
        .await
        .expect("updates");

    let first = ensure_root_credentials(&plane.app, order.id)
        .await
        .expect("hashes");
    let second = ensure_root_credentials(&plane.app, order.id)
        .await
        .expect("opens");

    assert_eq!(first.password.expose(), before.password.expose());
    assert_eq!(first.hash.expose(), second.hash.expose());
    let salt = first.hash.expose().split('$').nth(2).expect("a salt");
    let recomputed =
        crypt::sha512_crypt(before.password.expose().as_bytes(), salt.as_bytes(), None);
    assert_eq!(&recomputed, first.hash.expose());
}

#[tokio::test]
async fn dot_only_template_name_is_invalid() {
    let plane = TestPlane::start().await;

    // A client sends `..` percent-encoded, so the route sees the dots.
    let reply = put(&plane, "%2E%2E", "kickstart", KICKSTART).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(
        error_text(&reply).contains("only of dots"),
        "{}",
        reply.text
    );
    assert_eq!(
        plane.count("SELECT COUNT(*) FROM install_templates").await,
        0
    );
}

#[tokio::test]
async fn installer_image_without_template_is_invalid() {
    let plane = TestPlane::start().await;
    seed_product_with_template(&plane).await;

    let reply = plane
        .post(
            "/v1/products",
            &json!({
                "name": "ks-no-template",
                "price_minor": 1999,
                "currency": CURRENCY,
                "min_cpu_cores": 4,
                "min_ram_mib": 8192,
                "min_disk_gb": 100,
                "image": "rocky-netinst",
            }),
        )
        .await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], "template");
    assert!(
        error_text(&reply).contains("--format kickstart"),
        "{}",
        reply.text
    );
}
