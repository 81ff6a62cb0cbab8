//! Install templates: upload (create or replace), list, show and delete.
//!
//! An upload is checked in full (see [`crate::install::check_template`])
//! before anything is written. A template that fails is rejected with 422
//! naming the line and the fix, and the stored one, if any, stays.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rackhand_install_templates::TemplateError;
use rackhand_install_templates::checks::check_source_characters;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::auth::Operator;
use crate::api::error::{ApiError, Body};
use crate::api::inventory::check_name;
use crate::app::SharedApp;
use crate::db;
use crate::install::{InstallError, MAX_TEMPLATE_BYTES, TemplateFormat, check_template};

/// Body of `PUT /v1/templates/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateUpload {
    format: String,
    body: String,
}

/// `PUT /v1/templates/{name}`: stores a checked template, 201 when it is
/// new and 200 when it replaced one.
pub async fn put_template(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(upload): Body<TemplateUpload>,
) -> Result<Response, ApiError> {
    check_name("name", &name)?;
    let format: TemplateFormat = upload
        .format
        .parse()
        .map_err(|message: String| ApiError::invalid("format", message))?;
    if upload.body.len() > MAX_TEMPLATE_BYTES {
        return Err(ApiError::invalid(
            "body",
            format!(
                "is {} bytes; templates may have at most {MAX_TEMPLATE_BYTES} bytes",
                upload.body.len()
            ),
        ));
    }
    // Checked on the source first, so the line and column point into the
    // uploaded file rather than into the rendered text.
    check_source_characters(&name, &upload.body)
        .map_err(|error| ApiError::invalid("body", error.to_string()))?;
    check_template(&name, format, &upload.body, &app.config.network.dns_servers).map_err(
        |error| {
            let hint = quote_hint(&upload.body, &error);
            ApiError::invalid("body", format!("{error}{hint}"))
        },
    )?;

    let sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        upload.body.as_bytes(),
    ));
    let now = db::now_ms();
    let mut tx = db::begin(&app.pool).await?;
    let existing: Option<(i64, String)> =
        sqlx::query_as("SELECT id, format FROM install_templates WHERE name = ?")
            .bind(&name)
            .fetch_optional(&mut *tx)
            .await?;
    let status = match existing {
        Some((id, old_format)) => {
            if old_format != format.as_str() {
                let products = products_using(&mut tx, id).await?;
                if !products.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "template {name:?} is a {old_format} template used by product(s) {}, whose images expect that format; upload the {format} template under a new name",
                        products.join(", ")
                    )));
                }
            }
            sqlx::query(
                "UPDATE install_templates SET format = ?, body = ?, sha256 = ?, updated_at = ? WHERE id = ?",
            )
            .bind(format.as_str())
            .bind(&upload.body)
            .bind(&sha256)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            StatusCode::OK
        }
        None => {
            sqlx::query(
                "INSERT INTO install_templates (name, format, body, sha256, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&name)
            .bind(format.as_str())
            .bind(&upload.body)
            .bind(&sha256)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            StatusCode::CREATED
        }
    };
    tx.commit().await?;
    tracing::info!(template = %name, format = %format, sha256 = %sha256, "install template stored");
    let body = json!({ "name": name, "format": format.as_str(), "sha256": sha256 });
    Ok((status, Json(body)).into_response())
}

/// Returns a hint for a container template that quotes an expression
/// (`"{{fqdn}}"`). The JSON escaping writes the quotes already, so the
/// rendered spec has two pairs and does not parse.
fn quote_hint(body: &str, error: &TemplateError) -> &'static str {
    let quoted_expression = body.contains("\"{{");
    // Any rejection of a body with a quoted expression gets the hint: in
    // JSON formats the doubled quotes break the syntax, and in YAML ones the
    // placement check refuses the expression.
    if quoted_expression && !matches!(error, TemplateError::UnknownVariable { .. }) {
        "; expressions write their own quotes, so write {{fqdn}} rather than \"{{fqdn}}\""
    } else {
        ""
    }
}

/// Names the products that use template `template_id`, as their main
/// template or as a seed template.
async fn products_using(tx: &mut db::Tx<'_>, template_id: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM products WHERE install_template_id = ?1
         UNION
         SELECT p.name FROM products p
         JOIN product_seed_templates ps ON ps.product_id = p.id
         WHERE ps.template_id = ?1
         ORDER BY name",
    )
    .bind(template_id)
    .fetch_all(&mut **tx)
    .await
}

/// A stored template without its body.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TemplateRow {
    name: String,
    format: String,
    sha256: String,
    bytes: i64,
    created_at: i64,
    updated_at: i64,
}

/// `GET /v1/templates`.
pub async fn list_templates(
    State(app): State<SharedApp>,
    _operator: Operator,
) -> Result<Json<Vec<TemplateRow>>, ApiError> {
    let rows = sqlx::query_as(
        "SELECT name, format, sha256, LENGTH(CAST(body AS BLOB)) AS bytes, created_at, updated_at
         FROM install_templates ORDER BY name",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows))
}

/// `GET /v1/templates/{name}`: the template with its body and the products
/// that use it.
pub async fn show_template(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row: Option<(i64, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, format, body, sha256, created_at, updated_at FROM install_templates WHERE name = ?",
    )
    .bind(&name)
    .fetch_optional(&app.pool)
    .await?;
    let (id, format, body, sha256, created_at, updated_at) =
        row.ok_or_else(|| ApiError::not_found("template", &name))?;
    let mut tx = db::begin(&app.pool).await?;
    let products = products_using(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "name": name,
        "format": format,
        "sha256": sha256,
        "created_at": created_at,
        "updated_at": updated_at,
        "products": products,
        "body": body,
    })))
}

/// `DELETE /v1/templates/{name}`: 204, or 409 while a product uses it.
pub async fn delete_template(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = db::begin(&app.pool).await?;
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM install_templates WHERE name = ?")
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
    let id = id.ok_or_else(|| ApiError::not_found("template", &name))?;
    let products = products_using(&mut tx, id).await?;
    if !products.is_empty() {
        return Err(ApiError::Conflict(format!(
            "template {name:?} is used by product(s) {}; a template cannot be deleted while a product names it, and products cannot be changed or deleted yet",
            products.join(", ")
        )));
    }
    sqlx::query("DELETE FROM install_templates WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(template = %name, "install template deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Returns the id of the main template a new product names, checking that
/// its format drives the install method of the product's image.
pub(crate) async fn template_for_image(
    app: &SharedApp,
    template: &str,
    image: &str,
    install_method: &str,
) -> Result<(i64, TemplateFormat), ApiError> {
    let (id, format) = stored_template(app, "template", template).await?;
    let Some(expected) = format.install_method() else {
        return Err(ApiError::invalid(
            "template",
            format!(
                "template {template:?} is a {format} seed template, which replaces one file of a cloud-init seed; name it in seed_templates (--seed-template) and a cloud-config template here"
            ),
        ));
    };
    if expected.as_str() != install_method {
        return Err(ApiError::invalid(
            "template",
            format!(
                "template {template:?} is a {format} template, which needs an image with install method {expected}, but image {image:?} has {install_method}; pick a template of the image's method or an image registered with --install-method {expected}"
            ),
        ));
    }
    Ok((id, format))
}

/// Returns the ids of the seed templates a new product names, by format,
/// checking that each is a seed template, that no two replace the same
/// file and that the product's main template is a cloud-config.
pub(crate) async fn seed_templates(
    app: &SharedApp,
    names: &[String],
    main: Option<TemplateFormat>,
) -> Result<Vec<(TemplateFormat, i64)>, ApiError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if main != Some(TemplateFormat::CloudConfig) {
        return Err(ApiError::invalid(
            "seed_templates",
            "seed templates replace files of the NoCloud seed or the configdrive, which only products with a cloud-config template get; name a cloud-config template in template, or drop seed_templates",
        ));
    }
    let mut seeds: Vec<(TemplateFormat, i64, &str)> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) {
            return Err(ApiError::invalid(
                "seed_templates",
                format!("template {name:?} is named twice in seed_templates; name it once"),
            ));
        }
        let (id, format) = stored_template(app, "seed_templates", name).await?;
        if !format.is_seed() {
            return Err(ApiError::invalid(
                "seed_templates",
                format!(
                    "template {name:?} is a {format} template, not a seed template; seed templates have format meta-data, network-config, openstack-meta-data or openstack-network-data"
                ),
            ));
        }
        if let Some((_, _, other)) = seeds.iter().find(|(f, _, _)| *f == format) {
            return Err(ApiError::invalid(
                "seed_templates",
                format!(
                    "templates {other:?} and {name:?} are both {format} templates; a product can name one template per file"
                ),
            ));
        }
        seeds.push((format, id, name));
    }
    Ok(seeds
        .into_iter()
        .map(|(format, id, _)| (format, id))
        .collect())
}

async fn stored_template(
    app: &SharedApp,
    field: &'static str,
    name: &str,
) -> Result<(i64, TemplateFormat), ApiError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, format FROM install_templates WHERE name = ?")
            .bind(name)
            .fetch_optional(&app.pool)
            .await?;
    let (id, format) = row.ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("template {name:?} does not exist; upload it with `rackhand template put`"),
        )
    })?;
    let format: TemplateFormat = format
        .parse()
        .map_err(|message: String| ApiError::Internal(anyhow::anyhow!(message)))?;
    Ok((id, format))
}

/// Body of `POST /v1/templates/{name}/render`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// Render with this order's values instead of the sample order's.
    #[serde(default)]
    order: Option<i64>,
}

/// `POST /v1/templates/{name}/render`: the template rendered for an order,
/// or for the sample order, so an operator can read what an installer would
/// get. See [`crate::install::preview`] for what differs from an order's
/// real files.
pub async fn render_template(
    State(app): State<SharedApp>,
    _operator: Operator,
    Path(name): Path<String>,
    Body(request): Body<RenderRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT format, body FROM install_templates WHERE name = ?")
            .bind(&name)
            .fetch_optional(&app.pool)
            .await?;
    let (format, body) = row.ok_or_else(|| ApiError::not_found("template", &name))?;
    let format: TemplateFormat = format
        .parse()
        .map_err(|message: String| ApiError::Internal(anyhow::anyhow!(message)))?;
    if let Some(order) = request.order {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ?")
            .bind(order)
            .fetch_optional(&app.pool)
            .await?;
        if exists.is_none() {
            return Err(ApiError::invalid(
                "order",
                format!("order {order} does not exist"),
            ));
        }
    }
    let files = crate::install::preview(&app, &name, format, &body, request.order)
        .await
        .map_err(|error| match error {
            InstallError::Database(error) => ApiError::from(error),
            InstallError::NotReady(message) => ApiError::Conflict(format!(
                "order {}: {message} (the driver step chooses them once the order is paid); leave out order (--order) to render with the sample order",
                request.order.unwrap_or_default()
            )),
            InstallError::Template(message) => ApiError::Conflict(message),
        })?;
    Ok(Json(json!({
        "name": name,
        "format": format.as_str(),
        "order": request.order,
        "files": files,
    })))
}
