//! Inventory rules that keep two customers from sharing a machine or an
//! address: overlapping subnets, shared BMCs, impossible orders, reused host
//! names; and BMC access updates.

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{PRODUCT, SITE, TestPlane, node_body};

fn assert_status(reply: &crate::harness::Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.text);
}

fn error_text(reply: &crate::harness::Reply) -> String {
    reply.json["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn overlapping_subnet_is_rejected() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;

    let reply = plane
        .post(
            "/v1/subnets",
            &json!({ "name": "inner", "site": SITE, "cidr": "192.0.2.0/25" }),
        )
        .await;

    assert_status(&reply, StatusCode::CONFLICT);
    assert!(error_text(&reply).contains("dc1-public"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM subnets").await, 1);
}

#[tokio::test]
async fn subnet_range_must_avoid_network_and_broadcast() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;

    let reply = plane
        .post(
            "/v1/subnets",
            &json!({ "name": "s", "site": SITE, "cidr": "203.0.113.0/24", "range_start": "203.0.113.0" }),
        )
        .await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "range_start");
}

#[tokio::test]
async fn ptr_zone_outside_subnet_is_rejected() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;

    let reply = plane
        .post(
            "/v1/subnets",
            &json!({ "name": "s", "site": SITE, "cidr": "203.0.113.0/24", "ptr_zone": "example.com" }),
        )
        .await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "ptr_zone");
}

#[tokio::test]
async fn second_node_on_same_bmc_is_rejected() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:01").await;

    let mut body = node_body("n2", "52:54:00:00:20:02", "pw");
    // Same BMC as n1, written differently (case, trailing slash).
    body["bmc"]["url"] = json!("HTTPS://127.0.0.1:1/redfish/v1/Systems/n1/");
    let reply = plane.post("/v1/nodes", &body).await;

    assert_status(&reply, StatusCode::CONFLICT);
    assert!(error_text(&reply).contains("\"n1\""), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM nodes").await, 1);
}

#[tokio::test]
async fn bad_node_values_name_their_field() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let cases: [(&str, Value, &str); 4] = [
        ("boot_mac", json!("ff:ff:ff:ff:ff:ff"), "boot_mac"),
        ("disk_gb", json!(0), "disk_gb"),
        (
            "bmc.url",
            json!("https://admin:secret@bmc.example/redfish/v1"),
            "bmc.url",
        ),
        ("bmc.password", json!(""), "bmc.password"),
    ];
    for (key, value, field) in cases {
        let mut body = node_body("n1", "52:54:00:00:20:01", "pw");
        match key.split_once('.') {
            Some((outer, inner)) => body[outer][inner] = value,
            None => body[key] = value,
        }
        let reply = plane.post("/v1/nodes", &body).await;
        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json["field"], field, "{}", reply.text);
        assert!(
            !reply.text.contains("secret"),
            "the URL's password is not echoed: {}",
            reply.text
        );
    }
    assert_eq!(plane.count("SELECT COUNT(*) FROM nodes").await, 0);
}

#[tokio::test]
async fn free_product_is_rejected() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;

    let reply = plane
        .post(
            "/v1/products",
            &json!({ "name": "free", "price_minor": 0, "currency": "eur", "min_cpu_cores": 1,
                     "min_ram_mib": 1, "min_disk_gb": 1, "image": "debian-12" }),
        )
        .await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "price_minor");
}

fn order_body(hostname: &str) -> Value {
    json!({ "product": PRODUCT, "site": SITE, "customer_email": "c@example.com", "hostname": hostname })
}

#[tokio::test]
async fn order_without_fitting_node_is_rejected() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;

    let reply = plane.post("/v1/orders", &order_body("web1")).await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "site");
    assert_eq!(plane.count("SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(plane.count("SELECT COUNT(*) FROM invoices").await, 0);
}

#[tokio::test]
async fn order_when_all_nodes_reserved_is_conflict() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:01").await;
    sqlx::query("UPDATE nodes SET state = 'reserved'")
        .execute(&plane.app.pool)
        .await
        .expect("updates");

    let reply = plane.post("/v1/orders", &order_body("web1")).await;

    assert_status(&reply, StatusCode::CONFLICT);
    assert_eq!(plane.count("SELECT COUNT(*) FROM orders").await, 0);
}

#[tokio::test]
async fn reused_hostname_is_conflict() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:01").await;
    plane.create_node("n2", "52:54:00:00:20:02").await;
    plane.create("/v1/orders", &order_body("web1")).await;

    let reply = plane.post("/v1/orders", &order_body("web1")).await;

    assert_status(&reply, StatusCode::CONFLICT);
    assert!(error_text(&reply).contains("web1"), "{}", reply.text);
    assert_eq!(plane.count("SELECT COUNT(*) FROM orders").await, 1);
}

#[tokio::test]
async fn unknown_order_state_filter_is_rejected() {
    let plane = TestPlane::start().await;

    let reply = plane.get("/v1/orders?state=bogus").await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "state");
}

#[tokio::test]
async fn node_bmc_update_replaces_url_and_password() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    let id = plane.create_node("n1", "52:54:00:00:20:01").await;
    let before: String = sqlx::query_scalar("SELECT bmc_password_sealed FROM nodes WHERE id = ?")
        .bind(id)
        .fetch_one(&plane.app.pool)
        .await
        .expect("reads");

    let reply = plane
        .call(
            "PATCH",
            "/v1/nodes/n1",
            Some(crate::harness::ADMIN_TOKEN),
            Some(&json!({ "bmc": { "url": "https://bmc-new.example/redfish/v1", "password": "New-Password-1" } })),
        )
        .await;

    assert_status(&reply, StatusCode::OK);
    let (url, after): (String, String) =
        sqlx::query_as("SELECT bmc_url, bmc_password_sealed FROM nodes WHERE id = ?")
            .bind(id)
            .fetch_one(&plane.app.pool)
            .await
            .expect("reads");
    assert_eq!(url, "https://bmc-new.example/redfish/v1");
    assert_ne!(after, before, "the sealed password changed");
    let opened = plane
        .app
        .sealer
        .open(
            &rackhand_control_plane::seal::bmc_password_context(id),
            &after,
        )
        .expect("opens");
    assert_eq!(opened.expose(), "New-Password-1");
    assert!(!reply.text.contains("New-Password-1"));
}

#[tokio::test]
async fn node_update_for_unknown_node_is_not_found() {
    let plane = TestPlane::start().await;

    let reply = plane
        .call(
            "PATCH",
            "/v1/nodes/ghost",
            Some(crate::harness::ADMIN_TOKEN),
            Some(&json!({ "bmc": { "username": "root" } })),
        )
        .await;

    assert_status(&reply, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hostname_conflict_ignores_case() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:01").await;
    plane.create_node("n2", "52:54:00:00:20:02").await;
    plane.create("/v1/orders", &order_body("web1")).await;

    let reply = plane.post("/v1/orders", &order_body("WEB1")).await;

    assert_status(&reply, StatusCode::CONFLICT);
}

#[tokio::test]
async fn retry_refused_when_hostname_taken() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:01").await;
    plane.create_node("n2", "52:54:00:00:20:02").await;
    let first = plane.create("/v1/orders", &order_body("web1")).await;
    let first_id = crate::harness::id_of(&first, "order_id");
    sqlx::query("UPDATE orders SET state = 'failed', failed_phase = 'driver' WHERE id = ?")
        .bind(first_id)
        .execute(&plane.app.pool)
        .await
        .expect("updates");
    plane.create("/v1/orders", &order_body("web1")).await;

    let reply = plane
        .post(&format!("/v1/orders/{first_id}/retry"), &json!({}))
        .await;

    assert_status(&reply, StatusCode::CONFLICT);
    assert_eq!(plane.order_state(first_id).await, "failed");
}

#[tokio::test]
async fn customer_email_is_checked_and_normalized() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane.create_node("n1", "52:54:00:00:20:01").await;
    for bad in [
        "a@b",
        "a@localhost",
        "Customer <c@example.com>",
        "not-an-address",
    ] {
        let mut body = order_body("web1");
        body["customer_email"] = json!(bad);
        let reply = plane.post("/v1/orders", &body).await;
        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json["field"], "customer_email", "{bad}");
    }
    let mut body = order_body("web1");
    body["customer_email"] = json!("  c@example.com ");
    plane.create("/v1/orders", &body).await;
    let stored: String = sqlx::query_scalar("SELECT customer_email FROM orders")
        .fetch_one(&plane.app.pool)
        .await
        .expect("reads");
    assert_eq!(stored, "c@example.com");
}

#[tokio::test]
async fn special_networks_are_rejected() {
    let plane = TestPlane::start().await;
    plane.create("/v1/sites", &json!({ "name": SITE })).await;
    for cidr in ["224.0.0.0/24", "127.0.0.0/8", "240.0.0.0/24", "0.0.0.0/8"] {
        let reply = plane
            .post(
                "/v1/subnets",
                &json!({ "name": "s", "site": SITE, "cidr": cidr }),
            )
            .await;
        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json["field"], "cidr", "{cidr}");
    }
}

#[tokio::test]
async fn all_zero_mac_is_rejected() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;

    let reply = plane
        .post("/v1/nodes", &node_body("n1", "00:00:00:00:00:00", "pw"))
        .await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "boot_mac");
}

fn image_body(name: &str) -> Value {
    json!({
        "name": name,
        "kernel_sha256": "a".repeat(64),
        "initrd_sha256": "b".repeat(64),
    })
}

#[tokio::test]
async fn image_write_install_records_its_disk_image() {
    let plane = TestPlane::start().await;
    let mut body = image_body("debian-disk");
    body["os_family"] = json!("debian");
    body["install_method"] = json!("image");
    body["disk_sha256"] = json!("C".repeat(64));
    body["disk_size"] = json!(8_388_608);
    body["disk_url"] = json!("https://mirror.example/debian.img");

    plane.create("/v1/images", &body).await;

    let list = plane.get("/v1/images").await;
    let image = &list.json[0];
    assert_eq!(image["os_family"], "debian");
    assert_eq!(image["install_method"], "image");
    assert_eq!(image["disk_sha256"], json!("c".repeat(64)));
    assert_eq!(image["disk_size"], 8_388_608);
}

#[tokio::test]
async fn image_write_install_without_disk_is_rejected() {
    let plane = TestPlane::start().await;
    let mut body = image_body("no-disk");
    body["install_method"] = json!("image");

    let reply = plane.post("/v1/images", &body).await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "disk_sha256");
    assert_eq!(plane.count("SELECT COUNT(*) FROM images").await, 0);
}

#[tokio::test]
async fn disk_image_on_live_image_is_rejected() {
    let plane = TestPlane::start().await;
    let mut body = image_body("live");
    body["disk_sha256"] = json!("c".repeat(64));
    body["disk_size"] = json!(1);

    let reply = plane.post("/v1/images", &body).await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_text(&reply).contains("\"live\""), "{}", reply.text);
}

#[tokio::test]
async fn unknown_install_method_is_rejected() {
    let plane = TestPlane::start().await;
    let mut body = image_body("odd");
    body["install_method"] = json!("floppy");

    let reply = plane.post("/v1/images", &body).await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_text(&reply).contains("floppy"), "{}", reply.text);
}

#[tokio::test]
async fn os_family_with_spaces_is_rejected() {
    let plane = TestPlane::start().await;
    let mut body = image_body("spaced");
    body["os_family"] = json!("Debian Linux");

    let reply = plane.post("/v1/images", &body).await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["field"], "os_family");
}

#[tokio::test]
async fn kernel_args_that_break_boot_script_are_rejected() {
    let plane = TestPlane::start().await;
    for (args, expected) in [
        ("root=${root-path}", "${"),
        ("quiet || shell", "\"||\""),
        ("quiet && shell", "\"&&\""),
        ("rackhand.callback=http://evil/", "rackhand.callback"),
    ] {
        let mut body = image_body("args");
        body["kernel_args"] = json!(args);

        let reply = plane.post("/v1/images", &body).await;

        assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.json["field"], "kernel_args", "{args}");
        assert!(
            error_text(&reply).contains(expected),
            "{args}: {}",
            reply.text
        );
    }
    assert_eq!(plane.count("SELECT COUNT(*) FROM images").await, 0);
}

#[tokio::test]
async fn dot_only_names_are_rejected() {
    let plane = TestPlane::start().await;

    for name in [".", "..", "..."] {
        let site = plane.post("/v1/sites", &json!({ "name": name })).await;
        let image = plane
            .post("/v1/images", &json!({ "name": name, "upload": true }))
            .await;

        for reply in [&site, &image] {
            assert_status(reply, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                error_text(reply).contains("only of dots"),
                "{name}: {}",
                reply.text
            );
        }
    }
    assert_eq!(plane.count("SELECT COUNT(*) FROM images").await, 0);
}

#[tokio::test]
async fn names_with_dots_and_letters_are_accepted() {
    let plane = TestPlane::start().await;

    let reply = plane.post("/v1/sites", &json!({ "name": ".dc1.v2" })).await;

    assert_status(&reply, StatusCode::CREATED);
}

#[tokio::test]
async fn product_on_container_image_is_rejected() {
    let plane = TestPlane::start().await;
    plane.seed_catalog().await;
    plane
        .create(
            "/v1/images",
            &json!({
                "name": "app-container",
                "kernel_sha256": "c".repeat(64),
                "initrd_sha256": "d".repeat(64),
                "install_method": "container",
            }),
        )
        .await;

    let reply = plane
        .post(
            "/v1/products",
            &json!({
                "name": "containers",
                "price_minor": 1999,
                "currency": "eur",
                "min_cpu_cores": 1,
                "min_ram_mib": 512,
                "min_disk_gb": 1,
                "image": "app-container",
            }),
        )
        .await;

    assert_status(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error_text(&reply).contains("install method container"),
        "{}",
        reply.text
    );
    assert_eq!(
        plane
            .count("SELECT COUNT(*) FROM products WHERE name = 'containers'")
            .await,
        0
    );
}
