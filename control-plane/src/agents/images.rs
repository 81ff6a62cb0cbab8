//! Image files and pre-staging on the agent API: agents download uploaded
//! files by sha256 (with `Range`, so an interrupted download resumes) and
//! report the status of the images their site was asked to pre-stage.

use axum::body::Body as RawBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rackhand_images::{ImageError, Sha256Digest};
use rackhand_protocol::images::{StageReport, StageStatus};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

use crate::agents::Agent;
use crate::api::error::{ApiError, Body};
use crate::app::SharedApp;
use crate::db;

/// `GET /agent/v1/images/{sha256}`: an uploaded file, verified against its
/// digest as it is opened. Supports one `bytes=` range and `If-Range` with
/// the strong `ETag` (the quoted sha256, which never changes for a path).
pub async fn serve_file(
    State(app): State<SharedApp>,
    agent: Agent,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("uploaded image file", &sha256);
    let digest: Sha256Digest = sha256.parse().map_err(|_| not_found())?;
    let known: Option<(String, String)> = sqlx::query_as(
        "SELECT i.name, f.role FROM image_files f JOIN images i ON i.id = f.image_id
         WHERE f.sha256 = ? ORDER BY f.image_id LIMIT 1",
    )
    .bind(digest.to_hex())
    .fetch_optional(&app.pool)
    .await?;
    let Some((image, role)) = known else {
        return Err(not_found());
    };
    let blob = match app.images.open_verified(&digest).await {
        Ok(blob) => blob,
        Err(error @ (ImageError::NotFound { .. } | ImageError::DigestMismatch { .. })) => {
            return Err(lost_copy(&agent, &image, &role, &digest, &error));
        }
        Err(error) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(error).context(format!("serving image file {digest}")),
            ));
        }
    };

    let etag = format!("\"{}\"", digest.to_hex());
    let range = requested_range(&headers, &etag, blob.size);
    let (status, start, length) = match range {
        Range::Whole => (StatusCode::OK, 0, blob.size),
        Range::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Range::Unsatisfiable => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{}", blob.size)),
            );
            return Ok(response);
        }
    };
    tracing::debug!(site = %agent.site, %digest, start, length, "serving an image file to an agent");

    let mut file = blob.file;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error)))?;
    let body = RawBody::from_stream(ReaderStream::new(file.take(length)));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_LENGTH, header_value(length.to_string()));
    response_headers.insert(header::ETAG, header_value(etag));
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        response_headers.insert(
            header::CONTENT_RANGE,
            header_value(format!(
                "bytes {start}-{}/{}",
                start + length - 1,
                blob.size
            )),
        );
    }
    Ok(response)
}

/// The answer for a recorded file whose stored copy is gone or failed
/// verification: the agent cannot fix it, so the message tells the
/// operator which file to upload again. Logged as an error, because every
/// order on the image fails until then.
fn lost_copy(
    agent: &Agent,
    image: &str,
    role: &str,
    digest: &Sha256Digest,
    error: &ImageError,
) -> ApiError {
    tracing::error!(site = %agent.site, image, role, %digest, error = %error, "an uploaded image file is missing from the control plane's store");
    let what = match error {
        ImageError::DigestMismatch { .. } => "failed verification and was quarantined",
        _ => "is missing from the store",
    };
    ApiError::Unavailable(format!(
        "the control plane's copy of the {role} of image {image:?} (sha256 {digest}) {what}; an operator must upload the same file again with `rackhand image upload {image} {role} FILE`"
    ))
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).expect("digits, quotes and hex are valid header characters")
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    Whole,
    /// Bytes `start..=end`.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Reads one `bytes=` range. A missing, malformed or multi-part range, or an
/// `If-Range` that is not the current `ETag`, selects the whole file, as
/// RFC 9110 (section 14.2) allows.
fn requested_range(headers: &HeaderMap, etag: &str, size: u64) -> Range {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && if_range.as_bytes() != etag.as_bytes()
    {
        return Range::Whole;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Range::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(size.saturating_sub(1)))),
        (Ok(start), Err(_)) if last.is_empty() => Some((start, size.saturating_sub(1))),
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 {
                return Range::Unsatisfiable;
            }
            Some((size.saturating_sub(suffix), size.saturating_sub(1)))
        }
        _ => None,
    };
    match parsed {
        None => Range::Whole,
        Some((start, _)) if start >= size => Range::Unsatisfiable,
        Some((start, end)) => Range::Part { start, end },
    }
}

/// `POST /agent/v1/image-stages`: the agent's status of one staged image.
pub async fn report_stage(
    State(app): State<SharedApp>,
    agent: Agent,
    Body(report): Body<StageReport>,
) -> Result<StatusCode, ApiError> {
    if report.status == StageStatus::Requested {
        return Err(ApiError::invalid(
            "status",
            "agents report downloading, staged or failed",
        ));
    }
    let error = report
        .error
        .as_deref()
        .map(|text| text.chars().take(2000).collect::<String>());
    let updated = sqlx::query(
        "UPDATE image_stages SET status = ?, error = ?, updated_at = ?
         WHERE site_id = ? AND image_id = (SELECT id FROM images WHERE name = ?)",
    )
    .bind(report.status.as_str())
    .bind(&error)
    .bind(db::now_ms())
    .bind(agent.site_id)
    .bind(&report.image)
    .execute(&app.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found(
            "stage request for image",
            format!("{:?} at site {:?}", report.image, agent.site),
        ));
    }
    match report.status {
        StageStatus::Failed => {
            tracing::warn!(site = %agent.site, image = %report.image, error = error.as_deref().unwrap_or(""), "image pre-staging failed")
        }
        status => {
            tracing::info!(site = %agent.site, image = %report.image, status = status.as_str(), "image pre-staging status")
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{Range, requested_range};

    const ETAG: &str = "\"abc\"";

    fn headers(range: &str, if_range: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).expect("valid"));
        if let Some(value) = if_range {
            headers.insert(
                header::IF_RANGE,
                HeaderValue::from_str(value).expect("valid"),
            );
        }
        headers
    }

    #[test]
    fn open_range_runs_to_end() {
        let range = requested_range(&headers("bytes=10-", Some(ETAG)), ETAG, 100);
        assert_eq!(range, Range::Part { start: 10, end: 99 });
    }

    #[test]
    fn stale_if_range_sends_whole_file() {
        let range = requested_range(&headers("bytes=10-", Some("\"other\"")), ETAG, 100);
        assert_eq!(range, Range::Whole);
    }

    #[test]
    fn range_past_end_is_unsatisfiable() {
        let range = requested_range(&headers("bytes=100-", None), ETAG, 100);
        assert_eq!(range, Range::Unsatisfiable);
    }

    #[test]
    fn suffix_range_takes_last_bytes() {
        let range = requested_range(&headers("bytes=-5", None), ETAG, 100);
        assert_eq!(range, Range::Part { start: 95, end: 99 });
    }
}
