//! The operator REST API (`/v1/…`, JSON, `Authorization: Bearer <token>`),
//! the payment webhooks (`/webhooks/…`, authenticated by their signatures)
//! and the health check.
//!
//! Handlers are thin: they extract and check the request, call the domain
//! modules, and map results to JSON or an [`error::ApiError`]. The router is
//! built by [`router`], so tests drive it without a socket.

pub mod auth;
pub mod error;
pub mod image_library;
pub mod inventory;
pub mod node_ops;
pub mod nodes;
pub mod orders;
pub mod subnets;
pub mod templates;
pub mod webhooks;

use axum::Router;
use axum::routing::{get, post, put};

use crate::app::SharedApp;

/// Builds the operator API and webhook router.
pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/webhooks/stripe", post(webhooks::stripe))
        .route("/v1/ca", get(inventory::ca))
        .route(
            "/v1/sites",
            get(inventory::list_sites).post(inventory::create_site),
        )
        .route(
            "/v1/sites/{site}/enrollment-tokens",
            post(inventory::create_enrollment_token),
        )
        .route(
            "/v1/subnets",
            get(subnets::list_subnets).post(subnets::create_subnet),
        )
        .route("/v1/nodes", get(nodes::list_nodes).post(nodes::create_node))
        .route(
            "/v1/nodes/{name}",
            get(node_ops::show).patch(nodes::update_node),
        )
        .route("/v1/nodes/{name}/inspect", post(node_ops::inspect))
        .route(
            "/v1/nodes/{name}/power",
            get(node_ops::power_state).post(node_ops::power),
        )
        .route("/v1/nodes/{name}/boot", put(node_ops::boot))
        .route(
            "/v1/nodes/{name}/media",
            post(node_ops::insert_media).delete(node_ops::eject_media),
        )
        .route("/v1/nodes/{name}/sensors", get(node_ops::sensors))
        .route("/v1/nodes/{name}/console", get(node_ops::console))
        .route(
            "/v1/nodes/{name}/console/attach",
            get(node_ops::attach_console),
        )
        .route("/v1/operations/{id}", get(node_ops::operation))
        .route(
            "/v1/images",
            get(inventory::list_images).post(inventory::create_image),
        )
        .route(
            "/v1/images/{name}",
            get(image_library::show_image).delete(image_library::delete_image),
        )
        .route(
            "/v1/images/{name}/files/{role}",
            put(image_library::upload_file),
        )
        .route("/v1/images/{name}/stage", post(image_library::stage_image))
        .route(
            "/v1/products",
            get(inventory::list_products).post(inventory::create_product),
        )
        .route("/v1/templates", get(templates::list_templates))
        .route(
            "/v1/templates/{name}",
            get(templates::show_template)
                .put(templates::put_template)
                .delete(templates::delete_template),
        )
        .route(
            "/v1/templates/{name}/render",
            post(templates::render_template),
        )
        .route("/v1/agents", get(inventory::list_agents))
        .route("/v1/orders", get(orders::list).post(orders::create))
        .route("/v1/orders/{id}", get(orders::show))
        .route("/v1/orders/{id}/retry", post(orders::retry))
        .route("/v1/webhook-events", get(orders::webhook_events))
        .with_state(app)
}
