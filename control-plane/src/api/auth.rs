//! Bearer-token authentication for the operator API.
//!
//! Tokens are configured as sha256 hashes, so the configuration file holds
//! nothing that opens the API. A request's token is hashed and compared in
//! constant time against each configured hash.

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use ring::digest;

use crate::api::error::ApiError;
use crate::app::SharedApp;
use crate::config::Role;

/// An authenticated operator. Extracting it checks the token and, for
/// methods other than GET and HEAD, requires the `admin` role.
#[derive(Debug, Clone)]
pub struct Operator {
    pub token_name: String,
    pub role: Role,
}

impl FromRequestParts<SharedApp> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> Result<Operator, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing Authorization header; send `Authorization: Bearer <token>`".into(),
                )
            })?;
        if header.trim().eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized(
                "missing token after `Bearer`; set RACKHAND_TOKEN or pass --token-file".into(),
            ));
        }
        // The scheme name is case-insensitive (RFC 9110, section 11.1).
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization header must use the Bearer scheme".into())
            })?;

        let hash = digest::digest(&digest::SHA256, token.trim().as_bytes());
        let found = app
            .config
            .api
            .tokens
            .iter()
            .find(|configured| constant_time_eq(hash.as_ref(), &configured.sha256));
        let Some(configured) = found else {
            return Err(ApiError::Unauthorized("invalid API token".into()));
        };

        let reads = parts.method == Method::GET || parts.method == Method::HEAD;
        if !reads && configured.role != Role::Admin {
            return Err(ApiError::Forbidden(format!(
                "token {:?} has the viewer role and may only read; use an admin token",
                configured.name
            )));
        }
        Ok(Operator {
            token_name: configured.name.clone(),
            role: configured.role,
        })
    }
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
