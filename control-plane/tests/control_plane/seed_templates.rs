//! Container and seed templates: upload checks for every format, products
//! that name seed templates, per-order rendering that swaps single NoCloud
//! and configdrive files, and the operator's rendering preview.

use http::StatusCode;
use rackhand_control_plane::install;
use rackhand_control_plane::phases::OrderContext;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, CURRENCY, TestPlane, id_of};

const CLOUD_CONFIG: &str = "#cloud-config\nhostname: {{hostname}}\nfqdn: {{fqdn}}\nusers:\n  - name: root\n    hashed_passwd: {{root_password_hash}}\n";

const META_DATA: &str =
    "instance-id: {{instance_id}}\nlocal-hostname: {{fqdn}}\nplacement: rack-12\n";

const NETWORK_CONFIG: &str = "version: 2\nethernets:\n  uplink:\n    match:\n      macaddress: {{network.mac}}\n    addresses:\n      - {{network.ipv4.cidr}}\n    gateway4: {{network.ipv4.gateway}}\n";

const OPENSTACK_META_DATA: &str =
    "{\"uuid\": {{instance_id}}, \"hostname\": {{fqdn}}, \"meta\": {\"rack\": \"r12\"}}\n";

const OPENSTACK_NETWORK_DATA: &str = "{\"links\": [{\"id\": \"uplink\", \"type\": \"phy\", \"ethernet_mac_address\": {{network.mac}}}],\n \"networks\": [{\"id\": \"v4\", \"type\": \"ipv4\", \"link\": \"uplink\", \"ip_address\": {{network.ipv4.address}}, \"netmask\": {{network.ipv4.netmask}}}],\n \"services\": []}\n";

const CONTAINER: &str = "{\"name\": \"mc\", \"image\": \"docker.io/itzg/minecraft-server:2024.6.1\",\n \"env\": {\"SERVER_NAME\": {{hostname}}, \"EULA\": \"TRUE\"},\n \"ports\": [{\"host\": 25565, \"container\": 25565}],\n \"volumes\": [{\"source\": \"world\", \"target\": \"/data\"}],\n \"limits\": {\"millicpus\": 2000, \"memory_mib\": 4096}}\n";

async fn put(plane: &TestPlane, name: &str, format: &str, body: &str) -> crate::harness::Reply {
    plane
        .call(
            "PUT",
            &format!("/v1/templates/{name}"),
            Some(ADMIN_TOKEN),
            Some(&json!({ "format": format, "body": body })),
        )
        .await
}

async fn put_ok(plane: &TestPlane, name: &str, format: &str, body: &str) {
    let reply = put(plane, name, format, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{name}: {}", reply.text);
}

fn error_text(reply: &crate::harness::Reply) -> String {
    reply.json["error"].as_str().unwrap_or_default().to_string()
}

fn assert_invalid(reply: &crate::harness::Reply, field: &str, wanted: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["field"], field, "{}", reply.text);
    assert!(error_text(reply).contains(wanted), "{}", reply.text);
}

/// Adds a cloud-init image, a cloud-config template and every seed
/// template to the seeded catalogue.
async fn seed_cloud_catalogue(plane: &TestPlane) {
    plane.seed_catalog().await;
    plane
        .create(
            "/v1/images",
            &json!({
                "name": "debian-cloud",
                "kernel_sha256": "c".repeat(64),
                "initrd_sha256": "d".repeat(64),
                "install_method": "cloud-init",
            }),
        )
        .await;
    put_ok(plane, "cc", "cloud-config", CLOUD_CONFIG).await;
    put_ok(plane, "md", "meta-data", META_DATA).await;
    put_ok(plane, "nc", "network-config", NETWORK_CONFIG).await;
    put_ok(plane, "osmd", "openstack-meta-data", OPENSTACK_META_DATA).await;
    put_ok(
        plane,
        "osnd",
        "openstack-network-data",
        OPENSTACK_NETWORK_DATA,
    )
    .await;
}

fn product(name: &str, template: Option<&str>, seeds: &[&str]) -> Value {
    json!({
        "name": name,
        "price_minor": 1999,
        "currency": CURRENCY,
        "min_cpu_cores": 4,
        "min_ram_mib": 8192,
        "min_disk_gb": 100,
        "image": "debian-cloud",
        "template": template,
        "seed_templates": seeds,
    })
}

#[tokio::test]
async fn every_new_format_accepts_its_template() {
    let plane = TestPlane::start().await;

    put_ok(&plane, "game", "container", CONTAINER).await;
    seed_cloud_catalogue(&plane).await;

    let list = plane.get("/v1/templates").await;
    let formats: Vec<&str> = list
        .json
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|row| row["format"].as_str())
        .collect();
    assert_eq!(
        formats,
        [
            "cloud-config",
            "container",
            "meta-data",
            "network-config",
            "openstack-meta-data",
            "openstack-network-data"
        ]
    );
}

#[tokio::test]
async fn container_spec_out_of_range_names_field() {
    let plane = TestPlane::start().await;
    let body = CONTAINER.replace("\"memory_mib\": 4096", "\"memory_mib\": 1");

    let reply = put(&plane, "game", "container", &body).await;

    assert_invalid(&reply, "body", "memory_mib");
    assert_eq!(
        plane.count("SELECT COUNT(*) FROM install_templates").await,
        0
    );
}

#[tokio::test]
async fn meta_data_without_instance_id_is_invalid() {
    let plane = TestPlane::start().await;

    let reply = put(&plane, "md", "meta-data", "local-hostname: {{fqdn}}\n").await;

    assert_invalid(&reply, "body", "instance-id");
}

#[tokio::test]
async fn network_data_with_unknown_link_is_invalid() {
    let plane = TestPlane::start().await;
    let body = OPENSTACK_NETWORK_DATA.replace("\"link\": \"uplink\"", "\"link\": \"eth9\"");

    let reply = put(&plane, "osnd", "openstack-network-data", &body).await;

    assert_invalid(&reply, "body", "eth9");
}

#[tokio::test]
async fn product_names_seed_templates() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;

    plane
        .create(
            "/v1/products",
            &product("cloud", Some("cc"), &["osnd", "md", "nc", "osmd"]),
        )
        .await;

    let list = plane.get("/v1/products").await;
    let cloud = list
        .json
        .as_array()
        .expect("a list")
        .iter()
        .find(|row| row["name"] == "cloud")
        .expect("the product is listed")
        .clone();
    assert_eq!(cloud["template"], "cc");
    // Listed by the file they replace.
    assert_eq!(cloud["seed_templates"], json!(["md", "nc", "osmd", "osnd"]));
    let shown = plane.get("/v1/templates/md").await;
    assert_eq!(shown.json["products"], json!(["cloud"]), "{}", shown.text);
}

#[tokio::test]
async fn seed_templates_need_cloud_config_product() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;

    let mut live = product("cloud", None, &["md"]);
    live["image"] = json!("debian-12");

    let reply = plane.post("/v1/products", &live).await;

    assert_invalid(&reply, "seed_templates", "cloud-config template");
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM products WHERE name = 'cloud'")
            .await,
        0
    );
}

#[tokio::test]
async fn seed_template_as_main_template_is_invalid() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;

    let reply = plane
        .post("/v1/products", &product("cloud", Some("md"), &[]))
        .await;

    assert_invalid(&reply, "template", "--seed-template");
}

#[tokio::test]
async fn main_template_as_seed_is_invalid() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;

    let reply = plane
        .post("/v1/products", &product("cloud", Some("cc"), &["cc"]))
        .await;

    assert_invalid(&reply, "seed_templates", "not a seed template");
}

#[tokio::test]
async fn two_seeds_for_one_file_are_invalid() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;
    put_ok(&plane, "md2", "meta-data", META_DATA).await;

    let reply = plane
        .post(
            "/v1/products",
            &product("cloud", Some("cc"), &["md", "md2"]),
        )
        .await;

    assert_invalid(&reply, "seed_templates", "one template per file");
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM product_seed_templates")
            .await,
        0
    );
}

#[tokio::test]
async fn seed_named_twice_is_invalid() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;

    let reply = plane
        .post("/v1/products", &product("cloud", Some("cc"), &["md", "md"]))
        .await;

    assert_invalid(
        &reply,
        "seed_templates",
        "template \"md\" is named twice in seed_templates",
    );
    assert!(!error_text(&reply).contains("are both"), "{}", reply.text);
}

#[tokio::test]
async fn unknown_seed_template_is_invalid() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;

    let reply = plane
        .post("/v1/products", &product("cloud", Some("cc"), &["missing"]))
        .await;

    assert_invalid(&reply, "seed_templates", "\"missing\" does not exist");
}

#[tokio::test]
async fn seed_template_in_use_is_kept() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;
    plane
        .create("/v1/products", &product("cloud", Some("cc"), &["md"]))
        .await;

    let delete = plane
        .call("DELETE", "/v1/templates/md", Some(ADMIN_TOKEN), None)
        .await;
    let change = put(&plane, "md", "network-config", NETWORK_CONFIG).await;

    assert_eq!(delete.status, StatusCode::CONFLICT, "{}", delete.text);
    assert!(error_text(&delete).contains("cloud"), "{}", delete.text);
    assert_eq!(change.status, StatusCode::CONFLICT, "{}", change.text);
    assert_eq!(plane.get("/v1/templates/md").await.json["body"], META_DATA);
}

/// Places an order for product `cloud`, reserves a node driven by
/// `bmc_driver` and returns the order's context.
async fn cloud_order(plane: &TestPlane, seeds: &[&str], bmc_driver: &str) -> OrderContext {
    seed_cloud_catalogue(plane).await;
    plane
        .create("/v1/products", &product("cloud", Some("cc"), seeds))
        .await;
    let node = plane.create_node("n1", "52:54:00:00:30:01").await;
    sqlx::query("UPDATE nodes SET bmc_driver = ? WHERE id = ?")
        .bind(bmc_driver)
        .bind(node)
        .execute(&plane.app.pool)
        .await
        .expect("the node exists");
    plane.allocated_order_of("cloud").await
}

async fn rendered_files(plane: &TestPlane, order: &OrderContext) -> Vec<(String, String)> {
    install::prepare(&plane.app, order).await.expect("prepares");
    let rendered = install::render_for_order(&plane.app, order.id)
        .await
        .expect("renders")
        .expect("the product has a template");
    rendered
        .files
        .into_iter()
        .map(|file| (file.name, file.content.expose().clone()))
        .collect()
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    files
        .iter()
        .find(|(file, _)| file == name)
        .map(|(_, content)| content.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no {name} among {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        })
}

#[tokio::test]
async fn ironic_order_renders_seed_templates() {
    let plane = TestPlane::start().await;
    let order = cloud_order(&plane, &["md", "osnd"], "ironic").await;

    let files = rendered_files(&plane, &order).await;

    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "user-data",
            "meta-data",
            "network-config",
            "meta_data.json",
            "network_data.json"
        ]
    );
    assert!(file(&files, "meta-data").contains("placement: rack-12"));
    let network: Value = serde_json::from_str(file(&files, "network_data.json")).expect("JSON");
    assert_eq!(network["links"][0]["id"], "uplink");
    assert_eq!(
        network["links"][0]["ethernet_mac_address"],
        "52:54:00:00:30:01"
    );
    // Files without a seed template are the built-in ones.
    let meta: Value = serde_json::from_str(file(&files, "meta_data.json")).expect("JSON");
    assert_eq!(meta["uuid"], order.uid.as_str());
    assert!(file(&files, "network-config").contains("52:54:00:00:30:01"));
}

#[tokio::test]
async fn order_ssh_keys_reach_rendered_files() {
    let plane = TestPlane::start().await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0nT8Y1Mq0Sx7xAjvJNbBhhOZ7Ji6XmfQm6T8kQfVp alice@laptop";
    put_ok(
        &plane,
        "cc-keys",
        "cloud-config",
        "#cloud-config\nusers:\n  - name: root\n    hashed_passwd: {{root_password_hash}}\nssh_authorized_keys:\n{{#each ssh_authorized_keys}}\n  - {{this}}\n{{/each}}\n",
    )
    .await;
    let order = cloud_order(&plane, &[], "ironic").await;
    sqlx::query("UPDATE products SET install_template_id = (SELECT id FROM install_templates WHERE name = 'cc-keys')")
        .execute(&plane.app.pool)
        .await
        .expect("updates");
    sqlx::query("UPDATE orders SET ssh_authorized_keys = ? WHERE id = ?")
        .bind(json!([key]).to_string())
        .bind(order.id)
        .execute(&plane.app.pool)
        .await
        .expect("updates");

    let files = rendered_files(&plane, &order).await;

    assert!(
        file(&files, "user-data").contains(&format!("  - \"{key}\"")),
        "{}",
        file(&files, "user-data")
    );
    let meta: Value = serde_json::from_str(file(&files, "meta_data.json")).expect("JSON");
    assert_eq!(meta["public_keys"]["key-0"], key);
}

#[tokio::test]
async fn pxe_order_gets_no_configdrive_files() {
    let plane = TestPlane::start().await;
    let order = cloud_order(&plane, &["osmd", "nc"], "redfish").await;

    let files = rendered_files(&plane, &order).await;

    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["user-data", "meta-data", "network-config"]);
    assert!(file(&files, "network-config").contains("uplink"));
}

async fn render(plane: &TestPlane, name: &str, body: Value) -> crate::harness::Reply {
    plane
        .call(
            "POST",
            &format!("/v1/templates/{name}/render"),
            Some(ADMIN_TOKEN),
            Some(&body),
        )
        .await
}

#[tokio::test]
async fn container_preview_gives_spec_and_compose_file() {
    let plane = TestPlane::start().await;
    put_ok(&plane, "game", "container", CONTAINER).await;

    let reply = render(&plane, "game", json!({})).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let files = reply.json["files"].as_array().expect("files");
    assert_eq!(files[0]["name"], "container.json");
    assert!(
        files[0]["content"]
            .as_str()
            .expect("text")
            .contains("\"SERVER_NAME\": \"web1\"")
    );
    assert_eq!(files[1]["name"], "compose.yaml");
    let compose = files[1]["content"].as_str().expect("text");
    assert!(compose.contains("25565:25565/tcp"), "{compose}");
    assert!(compose.contains("mem_limit"), "{compose}");
}

#[tokio::test]
async fn order_preview_omits_real_hash() {
    let plane = TestPlane::start().await;
    let order = cloud_order(&plane, &[], "redfish").await;
    install::prepare(&plane.app, &order)
        .await
        .expect("prepares");
    put_ok(
        &plane,
        "cc-hash",
        "cloud-config",
        "#cloud-config\nhostname: {{hostname}}\npassword: {{root_password_hash}}\n",
    )
    .await;

    let reply = render(&plane, "cc-hash", json!({ "order": order.id })).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let text = reply.json["files"][0]["content"].as_str().expect("text");
    assert!(
        text.contains(&format!("hostname: \"{}\"", order.hostname)),
        "{text}"
    );
    let sealed_hash: Option<String> =
        sqlx::query_scalar("SELECT root_password_hash_sealed FROM services WHERE order_id = ?")
            .bind(order.id)
            .fetch_one(&plane.app.pool)
            .await
            .expect("the service exists");
    assert!(sealed_hash.is_some());
    let credentials =
        rackhand_control_plane::phases::credentials::ensure_root_credentials(&plane.app, order.id)
            .await
            .expect("credentials");
    assert!(!reply.text.contains(credentials.hash.expose().as_str()));
    assert!(!reply.text.contains(credentials.password.expose().as_str()));
}

#[tokio::test]
async fn preview_of_order_without_address_is_conflict() {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;
    let order_id = id_of(&plane.create_order().await, "order_id");

    let reply = render(&plane, "cc", json!({ "order": order_id })).await;

    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(
        error_text(&reply).contains("leave out order (--order)"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn preview_of_unknown_order_is_invalid() {
    let plane = TestPlane::start().await;
    put_ok(&plane, "cc", "cloud-config", CLOUD_CONFIG).await;

    let reply = render(&plane, "cc", json!({ "order": 4242 })).await;

    assert_invalid(&reply, "order", "order 4242 does not exist");
}

#[tokio::test]
async fn preview_of_unknown_template_is_not_found() {
    let plane = TestPlane::start().await;

    let reply = render(&plane, "missing", json!({})).await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
}

const ED25519_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0nT8Y1Mq0Sx7xAjvJNbBhhOZ7Ji6XmfQm6T8kQfVp alice@laptop";

/// Places an order of `product` through the API with `keys`.
async fn order_with_keys(plane: &TestPlane, product: &str, keys: Value) -> crate::harness::Reply {
    plane
        .post(
            "/v1/orders",
            &json!({
                "product": product, "site": crate::harness::SITE,
                "customer_email": "c@example.com", "hostname": "web1",
                "ssh_authorized_keys": keys,
            }),
        )
        .await
}

/// Starts a plane with the cloud-config product `cloud` and a node for it.
async fn keyed_plane() -> TestPlane {
    let plane = TestPlane::start().await;
    seed_cloud_catalogue(&plane).await;
    plane
        .create("/v1/products", &product("cloud", Some("cc"), &[]))
        .await;
    plane.create_node("n1", "52:54:00:00:30:02").await;
    plane
}

#[tokio::test]
async fn order_keeps_checked_ssh_keys() {
    let plane = keyed_plane().await;

    let reply = order_with_keys(&plane, "cloud", json!([format!("  {ED25519_KEY}\n")])).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let stored: String = sqlx::query_scalar("SELECT ssh_authorized_keys FROM orders")
        .fetch_one(&plane.app.pool)
        .await
        .expect("reads");
    assert_eq!(stored, json!([ED25519_KEY]).to_string());
}

#[tokio::test]
async fn private_key_in_order_is_rejected_unquoted() {
    let plane = keyed_plane().await;
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----";

    let reply = order_with_keys(&plane, "cloud", json!([ED25519_KEY, private])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "key 2 of 2");
    assert!(
        error_text(&reply).contains("is a private key"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("BEGIN"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn too_many_ssh_keys_are_rejected() {
    let plane = keyed_plane().await;

    let reply = order_with_keys(&plane, "cloud", json!(vec![ED25519_KEY; 17])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "at most 16");
}

#[tokio::test]
async fn shell_syntax_in_key_comment_is_rejected() {
    let plane = keyed_plane().await;
    let key = ED25519_KEY.replace("alice@laptop", "alice $(id)");

    let reply = order_with_keys(&plane, "cloud", json!([key])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "comment");
    assert!(!reply.text.contains("$(id)"), "{}", reply.text);
}

#[tokio::test]
async fn key_blob_of_other_type_is_rejected() {
    let plane = keyed_plane().await;
    let key = ED25519_KEY.replace("ssh-ed25519", "ssh-rsa");

    let reply = order_with_keys(&plane, "cloud", json!([key])).await;

    assert_invalid(
        &reply,
        "ssh_authorized_keys",
        "says ssh-rsa, but its base64 key",
    );
}

#[tokio::test]
async fn short_key_blob_is_rejected() {
    let plane = keyed_plane().await;

    let reply = order_with_keys(&plane, "cloud", json!(["ssh-ed25519 AAAA"])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "key 1 of 1");
}

#[tokio::test]
async fn keys_for_product_without_template_are_rejected() {
    let plane = keyed_plane().await;

    let reply = order_with_keys(&plane, crate::harness::PRODUCT, json!([ED25519_KEY])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "cannot install SSH keys");
}

/// Builds an `ssh-rsa` line whose modulus has `bits` bits.
fn rsa_key(bits: usize) -> String {
    use base64::Engine as _;
    let mut blob = Vec::new();
    let mut string = |bytes: &[u8]| {
        blob.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        blob.extend_from_slice(bytes);
    };
    string(b"ssh-rsa");
    string(&[1, 0, 1]);
    let mut modulus = vec![0u8; 1 + bits / 8];
    modulus[1] = 0x80;
    string(&modulus);
    format!(
        "ssh-rsa {} ops@example.net",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    )
}

#[tokio::test]
async fn small_rsa_key_is_rejected() {
    let plane = keyed_plane().await;

    let reply = order_with_keys(&plane, "cloud", json!([rsa_key(1024)])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "1024-bit RSA key");
}

#[tokio::test]
async fn rsa_2048_key_with_tab_is_accepted() {
    let plane = keyed_plane().await;
    let key = rsa_key(2048).replacen(' ', "\t", 1);

    let reply = order_with_keys(&plane, "cloud", json!([key])).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

#[tokio::test]
async fn dsa_key_is_rejected() {
    let plane = keyed_plane().await;

    let reply = order_with_keys(&plane, "cloud", json!(["ssh-dss AAAAB3NzaC1kc3MAAAA= x@y"])).await;

    assert_invalid(&reply, "ssh_authorized_keys", "DSA key");
}

#[tokio::test]
async fn key_list_given_as_string_is_rejected_unquoted() {
    let plane = keyed_plane().await;
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n";

    let reply = order_with_keys(&plane, "cloud", json!(private)).await;

    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("not one string"), "{}", reply.text);
    assert!(!reply.text.contains("b3Bl"), "{}", reply.text);
}
