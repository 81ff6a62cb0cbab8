//! The test control plane: an app built from a config in a temporary folder,
//! driven through `api::router` without a socket, plus inventory fixtures.

use std::path::PathBuf;

use axum::body::Body;
use http::{Request, StatusCode, header};
use rackhand_control_plane::app::SharedApp;
use rackhand_control_plane::config::Config;
use rackhand_control_plane::{api, server};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt as _;

pub const ADMIN_TOKEN: &str = "rh-test-admin-4f1c9e";
pub const VIEWER_TOKEN: &str = "rh-test-viewer-8a2d07";
pub const STRIPE_SECRET: &str = "whsec_rackhand_test_6d3b1f0a";

/// Largest response body a test reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A control plane whose state lives in a temporary folder, removed on drop.
pub struct TestPlane {
    pub app: SharedApp,
    pub dir: TempDir,
}

/// A response with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub text: String,
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub json: Value,
}

// The catalog that `TestPlane::seed_catalog` creates: site `dc1` and the
// product `small` (4 cores, 8192 MiB, 100 GB, 19.99 EUR).
pub const SITE: &str = "dc1";
pub const PRODUCT: &str = "small";
pub const PRICE_MINOR: i64 = 1999;
pub const CURRENCY: &str = "eur";

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

impl TestPlane {
    /// Builds the app with an admin and a viewer token and a Stripe secret.
    pub async fn start() -> TestPlane {
        TestPlane::start_with("").await
    }

    /// Builds the app like [`TestPlane::start`], with `extra` appended to the
    /// config (whole sections such as `[images]`).
    pub async fn start_with(extra: &str) -> TestPlane {
        let dir = tempfile::tempdir().expect("a temporary folder can be created");
        let config_text = format!(
            r#"
state_dir = "state"

[api]
listen = "127.0.0.1:0"

[[api.tokens]]
name = "test-admin"
role = "admin"
sha256 = "{admin}"

[[api.tokens]]
name = "test-viewer"
role = "viewer"
sha256 = "{viewer}"

[stripe]
webhook_secret = "{STRIPE_SECRET}"

[network]
domain = "servers.invalid"
dns_servers = ["192.0.2.53"]

[handoff]
outbox_dir = "outbox"

{extra}
"#,
            admin = sha256_hex(ADMIN_TOKEN),
            viewer = sha256_hex(VIEWER_TOKEN),
        );
        let config_path = dir.path().join("control-plane.toml");
        let config = Config::parse(&config_path, &config_text).expect("the test config is valid");
        let app = server::build_app(config)
            .await
            .expect("the app builds in an empty state folder");
        TestPlane { app, dir }
    }

    /// Returns the SQLite database file.
    pub fn database_file(&self) -> PathBuf {
        self.dir.path().join("state").join("rackhand.db")
    }

    /// Sends `request` through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = api::router(self.app.clone())
            .oneshot(request)
            .await
            .expect("the router's error type is Infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES)
            .await
            .expect("the response body is readable and small");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).expect("the request is well formed"))
            .await
    }

    /// Sends `GET uri` as the admin.
    pub async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri, Some(ADMIN_TOKEN), None).await
    }

    /// Sends `POST uri` with a JSON body as the admin.
    pub async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.call("POST", uri, Some(ADMIN_TOKEN), Some(body)).await
    }

    /// Posts as the admin and fails the test unless the status is 201.
    pub async fn create(&self, uri: &str, body: &Value) -> Value {
        let reply = self.post(uri, body).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "POST {uri}: {}",
            reply.text
        );
        reply.json
    }

    /// Creates the site, subnet, image and product that orders use, without
    /// any node.
    pub async fn seed_catalog(&self) {
        self.create("/v1/sites", &json!({ "name": SITE })).await;
        self.create("/v1/subnets", &subnet_body()).await;
        self.create(
            "/v1/images",
            &json!({
                "name": "debian-12",
                "kernel_sha256": "a".repeat(64),
                "initrd_sha256": "b".repeat(64),
            }),
        )
        .await;
        self.create(
            "/v1/products",
            &json!({
                "name": PRODUCT,
                "price_minor": PRICE_MINOR,
                "currency": CURRENCY,
                "min_cpu_cores": 4,
                "min_ram_mib": 8192,
                "min_disk_gb": 100,
                "image": "debian-12",
            }),
        )
        .await;
    }

    /// Creates node `name` at `dc1` that fits the product, and returns its id.
    pub async fn create_node(&self, name: &str, mac: &str) -> i64 {
        let created = self
            .create("/v1/nodes", &node_body(name, mac, "bmc-password"))
            .await;
        created["id"]
            .as_i64()
            .expect("a created node has an integer id")
    }

    /// Inserts an order for the product with its open invoice, as the API
    /// would, but without the API's capacity check, so that allocator and
    /// billing tests control the nodes themselves. Returns the order's
    /// `order_id`, `invoice_id`, `amount_minor` and `currency`.
    pub async fn create_order(&self) -> Value {
        let pool = &self.app.pool;
        let now = rackhand_control_plane::db::now_ms();
        let order_id: i64 = sqlx::query_scalar(
            "INSERT INTO orders (uid, product_id, site_id, customer_email, hostname, state, created_at, updated_at)
             SELECT ?, p.id, s.id, 'customer@example.com', 'srv', 'pending_payment', ?, ?
             FROM products p, sites s WHERE p.name = ? AND s.name = ?
             RETURNING id",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(now)
        .bind(now)
        .bind(PRODUCT)
        .bind(SITE)
        .fetch_one(pool)
        .await
        .expect("the catalog is seeded");
        sqlx::query("UPDATE orders SET hostname = ? WHERE id = ?")
            .bind(format!("srv-{order_id}"))
            .bind(order_id)
            .execute(pool)
            .await
            .expect("the order exists");
        let invoice_id: i64 = sqlx::query_scalar(
            "INSERT INTO invoices (order_id, amount_minor, currency, state, created_at)
             VALUES (?, ?, ?, 'open', ?) RETURNING id",
        )
        .bind(order_id)
        .bind(PRICE_MINOR)
        .bind(CURRENCY)
        .bind(now)
        .fetch_one(pool)
        .await
        .expect("the invoice inserts");
        json!({ "order_id": order_id, "invoice_id": invoice_id, "amount_minor": PRICE_MINOR, "currency": CURRENCY })
    }

    /// Inserts an order of product `product` (see [`Self::create_order`]),
    /// reserves a fitting node for it and returns its phase context.
    pub async fn allocated_order_of(
        &self,
        product: &str,
    ) -> rackhand_control_plane::phases::OrderContext {
        let pool = &self.app.pool;
        let order_id = id_of(&self.create_order().await, "order_id");
        sqlx::query(
            "UPDATE orders SET product_id = (SELECT id FROM products WHERE name = ?) WHERE id = ?",
        )
        .bind(product)
        .bind(order_id)
        .execute(pool)
        .await
        .expect("the order exists");
        rackhand_control_plane::phases::allocate::allocate(pool, order_id, None)
            .await
            .expect("a fitting node is free");
        rackhand_control_plane::orders::context(pool, order_id)
            .await
            .expect("the order reads")
            .expect("the order exists")
    }

    /// Returns the result of a `SELECT COUNT(*)` statement.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.app.pool)
            .await
            .expect("the count query runs")
    }

    /// Returns the state of order `order_id`.
    pub async fn order_state(&self, order_id: i64) -> String {
        sqlx::query_scalar("SELECT state FROM orders WHERE id = ?")
            .bind(order_id)
            .fetch_one(&self.app.pool)
            .await
            .expect("the order exists")
    }
}

/// Returns the body that creates subnet `dc1-public` (192.0.2.0/24) at `dc1`.
pub fn subnet_body() -> Value {
    json!({
        "name": "dc1-public",
        "site": SITE,
        "cidr": "192.0.2.0/24",
        "gateway": "192.0.2.1",
        "range_start": "192.0.2.10",
        "range_end": "192.0.2.200",
    })
}

/// Returns the body that creates a Redfish node with 8 cores, 16 GiB and 240 GB.
pub fn node_body(name: &str, mac: &str, bmc_password: &str) -> Value {
    json!({
        "name": name,
        "site": SITE,
        "subnet": "dc1-public",
        "boot_mac": mac,
        "cpu_cores": 8,
        "ram_mib": 16384,
        "disk_gb": 240,
        "bmc": {
            "url": format!("https://127.0.0.1:1/redfish/v1/Systems/{name}"),
            "username": "root",
            "password": bmc_password,
        },
    })
}

/// Returns the `id` field of a created order or invoice.
pub fn id_of(created: &Value, key: &str) -> i64 {
    created[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is an integer in {created}"))
}
