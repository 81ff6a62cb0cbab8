//! One flight's download: resume from the partial file, write and hash the
//! body, and move the file into the store when the digest matches.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use ring::digest::{Context, SHA256};

use super::{Flight, Inner, Progress};
use crate::digest::{HASH_BUFFER_SIZE, Sha256Digest};
use crate::error::ImageError;

/// Runs the download of `flight` to its end and publishes the result to
/// every waiter, then removes the flight from the map.
pub(crate) async fn run(
    inner: Arc<Inner>,
    flight: Arc<Flight>,
    url: String,
    expected_size: Option<u64>,
) {
    // Publishes a result even if the download below panics, so waiters
    // never wait for a flight that is gone.
    let mut finish = FinishGuard {
        inner: &inner,
        flight: &flight,
        outcome: None,
    };

    let result = download(&inner, &flight, &url, expected_size).await;
    let digest = flight.digest;
    let outcome = match result {
        Ok(size) => {
            tracing::info!(%digest, size, url = %redact_url(&url), "image downloaded and verified");
            Ok(size)
        }
        Err(error) => {
            tracing::warn!(
                %digest,
                error = &error as &dyn std::error::Error,
                "image download failed"
            );
            Err(Arc::new(error))
        }
    };
    finish.outcome = Some(outcome);
}

struct FinishGuard<'a> {
    inner: &'a Inner,
    flight: &'a Flight,
    outcome: Option<Result<u64, Arc<ImageError>>>,
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Err(Arc::new(ImageError::io(
                "download into",
                &self.flight.path,
                io::Error::other("the download task panicked"),
            )))
        });
        self.inner.budget.release(&self.flight.digest);
        // Leave the map before publishing: a request made after the result
        // must find the stored blob or start a new flight.
        self.inner
            .flights
            .lock()
            .expect("no code panics while holding the flight map lock")
            .remove(&self.flight.digest);
        self.flight
            .progress
            .send_replace(Progress::Finished(outcome));
    }
}

async fn download(
    inner: &Inner,
    flight: &Flight,
    url: &str,
    expected_size: Option<u64>,
) -> Result<u64, ImageError> {
    let target = Target::resolve(inner, flight, url)?;
    let url = target.url.as_str();
    let shown_url = redact_url(url);
    let (mut context, mut offset) = resume_point(flight, expected_size).await?;

    // A partial file that already contains the whole image (the process
    // stopped between the last write and the rename) needs no request.
    if offset > 0 && digest_of(context.clone()) == flight.digest {
        inner.budget.reserve(&inner.store, &flight.digest, offset)?;
        return finish(inner, flight, &shown_url, context, offset).await;
    }

    let mut response = send(&target, flight, &shown_url, offset).await?;
    if response.status() == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
        // The partial file is at least as long as the image, so it cannot
        // be a prefix of it.
        tracing::debug!(digest = %flight.digest, offset, "upstream rejected the resume range; restarting the download");
        restart(flight)?;
        context = Context::new(&SHA256);
        offset = 0;
        response = send(&target, flight, &shown_url, offset).await?;
    }

    let announced = match accept_response(flight, &response, &shown_url, offset) {
        Err(ImageError::UpstreamStatus {
            digest,
            url,
            status,
            ..
        }) => {
            let detail = error_detail(response).await;
            return Err(ImageError::UpstreamStatus {
                digest,
                url,
                status,
                detail,
            });
        }
        other => other?,
    };
    if announced.restart {
        restart(flight)?;
        context = Context::new(&SHA256);
        offset = 0;
    }
    if response.status() == StatusCode::OK {
        save_validator(flight, response.headers());
    }
    let total = announced.total;
    if let (Some(expected), Some(total)) = (expected_size, total)
        && expected != total
    {
        return Err(invalid(
            flight,
            &shown_url,
            format!("upstream announces {total} bytes, the catalogue expects {expected}"),
        ));
    }

    let limit = expected_size.or(total);
    if let Some(size) = limit {
        inner.budget.reserve(&inner.store, &flight.digest, size)?;
    }
    flight
        .progress
        .send_replace(Progress::Running { written: offset });
    let size = write_body(
        inner,
        flight,
        &shown_url,
        response,
        &mut context,
        offset,
        limit,
    )
    .await?;

    if limit.is_none() {
        inner.budget.reserve(&inner.store, &flight.digest, size)?;
    }
    finish(inner, flight, &shown_url, context, size).await
}

/// The client, absolute URL and extra headers of one download.
struct Target<'a> {
    client: &'a reqwest::Client,
    url: String,
    headers: Option<&'a HeaderMap>,
}

impl<'a> Target<'a> {
    /// Resolves a relative URL (a path) against the cache's origin, whose
    /// client and headers it then uses. Absolute URLs use the cache's own
    /// client.
    fn resolve(inner: &'a Inner, flight: &Flight, url: &str) -> Result<Self, ImageError> {
        if !url.starts_with('/') {
            return Ok(Target {
                client: &inner.client,
                url: url.to_string(),
                headers: None,
            });
        }
        let Some(origin) = inner.origin.get() else {
            return Err(ImageError::NoOrigin {
                digest: flight.digest,
                url: url.to_string(),
            });
        };
        Ok(Target {
            client: &origin.client,
            url: format!("{}{url}", origin.base_url.trim_end_matches('/')),
            headers: Some(&origin.headers),
        })
    }
}

/// Sends the GET for the image, asking for the bytes from `offset` on (with
/// the saved validator in `If-Range`) when `offset` is not 0.
async fn send(
    target: &Target<'_>,
    flight: &Flight,
    shown_url: &str,
    offset: u64,
) -> Result<reqwest::Response, ImageError> {
    let mut request = target.client.get(&target.url);
    if let Some(headers) = target.headers {
        request = request.headers(headers.clone());
    }
    if offset > 0 {
        request = request.header(header::RANGE, format!("bytes={offset}-"));
        if let Some(validator) = read_validator(flight) {
            request = request.header(header::IF_RANGE, validator);
        }
    }
    request
        .send()
        .await
        .map_err(|source| http_error(flight, shown_url, source))
}

/// What the response's status and headers announce.
struct Announced {
    /// The image's total size, when the upstream sent it.
    total: Option<u64>,
    /// Whether the body is the whole image although a range was requested,
    /// so the partial file must be emptied first.
    restart: bool,
}

/// Checks the status and `Content-Range` against the request.
fn accept_response(
    flight: &Flight,
    response: &reqwest::Response,
    shown_url: &str,
    offset: u64,
) -> Result<Announced, ImageError> {
    match response.status() {
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let (start, total) = parse_content_range(response.headers()).ok_or_else(|| {
                invalid(
                    flight,
                    shown_url,
                    "206 response without a valid Content-Range".to_string(),
                )
            })?;
            if start != offset {
                return Err(invalid(
                    flight,
                    shown_url,
                    format!(
                        "Content-Range starts at {start}, but bytes from {offset} were requested"
                    ),
                ));
            }
            let total = total.or_else(|| response.content_length().map(|length| offset + length));
            Ok(Announced {
                total,
                restart: false,
            })
        }
        StatusCode::OK => {
            if offset > 0 {
                tracing::debug!(digest = %flight.digest, offset, "upstream sent the whole image; restarting the download");
            }
            Ok(Announced {
                total: response.content_length(),
                restart: offset > 0,
            })
        }
        other => Err(ImageError::UpstreamStatus {
            digest: flight.digest,
            url: shown_url.to_string(),
            status: other.as_u16(),
            detail: None,
        }),
    }
}

/// Largest error body read for its message, in bytes.
const MAX_ERROR_BODY: usize = 4096;

/// Returns the `error` member of a JSON error body, as the control plane
/// sends it, so a download failure says why the control plane refused.
/// Other bodies (such as a mirror's HTML error page) are ignored.
async fn error_detail(mut response: reqwest::Response) -> Option<String> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return None;
    }
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => return None,
        }
    }
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let message: String = value
        .get("error")?
        .as_str()?
        .chars()
        .filter(|c| !c.is_control())
        .take(500)
        .collect();
    Some(message)
}

/// Writes the body into the partial file from `offset` on, hashing it and
/// publishing each chunk, and returns the file's final length.
///
/// A body larger than `limit` (or, without a limit, than the budget) is
/// rejected and emptied. A body that ends early keeps its bytes for a
/// resume.
async fn write_body(
    inner: &Inner,
    flight: &Flight,
    shown_url: &str,
    mut response: reqwest::Response,
    context: &mut Context,
    mut offset: u64,
    limit: Option<u64>,
) -> Result<u64, ImageError> {
    let max = limit.unwrap_or(inner.budget.limit());
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|source| http_error(flight, shown_url, source))?;
        let Some(chunk) = chunk else { break };

        let end = offset + chunk.len() as u64;
        if end > max {
            restart(flight)?;
            return Err(match limit {
                Some(_) => invalid(
                    flight,
                    shown_url,
                    format!("upstream sent more than {max} bytes"),
                ),
                None => ImageError::LargerThanBudget {
                    digest: flight.digest,
                    size: end,
                    budget: max,
                },
            });
        }

        // Chunks are a few KiB to tens of KiB and land in the page cache,
        // so writing and hashing them on the runtime thread is short.
        flight
            .file
            .write_all_at(&chunk, offset)
            .map_err(|error| ImageError::io("write", &flight.path, error))?;
        context.update(&chunk);
        offset = end;
        flight
            .progress
            .send_replace(Progress::Running { written: offset });
    }

    if let Some(total) = limit
        && offset != total
    {
        return Err(invalid(
            flight,
            shown_url,
            format!("body ended after {offset} of {total} bytes"),
        ));
    }
    Ok(offset)
}

/// Wraps a reqwest error without its URL, which may carry a token.
fn http_error(flight: &Flight, shown_url: &str, source: reqwest::Error) -> ImageError {
    ImageError::Http {
        digest: flight.digest,
        url: shown_url.to_string(),
        source: source.without_url(),
    }
}

fn invalid(flight: &Flight, shown_url: &str, reason: String) -> ImageError {
    ImageError::InvalidResponse {
        digest: flight.digest,
        url: shown_url.to_string(),
        reason,
    }
}

fn digest_of(context: Context) -> Sha256Digest {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(context.finish().as_ref());
    Sha256Digest(bytes)
}

/// Checks the hash and moves the partial file into the store. A mismatch
/// deletes the partial file, so the next request downloads from zero.
async fn finish(
    inner: &Inner,
    flight: &Flight,
    shown_url: &str,
    context: Context,
    size: u64,
) -> Result<u64, ImageError> {
    let actual = digest_of(context);
    if actual != flight.digest {
        discard(flight);
        return Err(ImageError::DownloadMismatch {
            url: shown_url.to_string(),
            expected: flight.digest,
            actual,
        });
    }

    inner
        .store
        .adopt(Arc::clone(&flight.file), flight.path.clone(), flight.digest)
        .await?;
    remove_quietly(&flight.validator_path());
    inner.budget.touch(&flight.digest);
    Ok(size)
}

/// Returns the hash state and length of the partial file's prefix to resume
/// from, or a fresh state at 0 after truncating a file that cannot be a
/// prefix of the image.
async fn resume_point(
    flight: &Flight,
    expected_size: Option<u64>,
) -> Result<(Context, u64), ImageError> {
    let length = flight
        .file
        .metadata()
        .map_err(|error| ImageError::io("stat", &flight.path, error))?
        .len();
    if length == 0 {
        return Ok((Context::new(&SHA256), 0));
    }
    if expected_size.is_some_and(|size| length > size) {
        restart(flight)?;
        return Ok((Context::new(&SHA256), 0));
    }

    let file = Arc::clone(&flight.file);
    let context = tokio::task::spawn_blocking(move || hash_prefix(&file, length))
        .await
        .map_err(|source| ImageError::Task {
            path: flight.path.clone(),
            source,
        })?
        .map_err(|error| ImageError::io("read", &flight.path, error))?;
    tracing::debug!(digest = %flight.digest, offset = length, "resuming image download");
    Ok((context, length))
}

fn hash_prefix(file: &File, length: u64) -> io::Result<Context> {
    let mut context = Context::new(&SHA256);
    let mut buffer = vec![0u8; HASH_BUFFER_SIZE];
    let mut offset = 0;
    while offset < length {
        let want = usize::try_from(length - offset)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let read = file.read_at(&mut buffer[..want], offset)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "partial file shrank while it was hashed",
            ));
        }
        context.update(&buffer[..read]);
        offset += read as u64;
    }
    Ok(context)
}

/// Empties the partial file and deletes its validator. Readers have not
/// been told of any byte yet when this runs, except on the error paths,
/// where they get the error.
fn restart(flight: &Flight) -> Result<(), ImageError> {
    remove_quietly(&flight.validator_path());
    flight
        .file
        .set_len(0)
        .map_err(|error| ImageError::io("truncate", &flight.path, error))
}

fn discard(flight: &Flight) {
    remove_quietly(&flight.path);
    remove_quietly(&flight.validator_path());
}

fn remove_quietly(path: &std::path::Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!(path = %path.display(), %error, "cannot remove download leftover");
    }
}

/// Reads the validator saved with the partial file.
fn read_validator(flight: &Flight) -> Option<String> {
    let text = std::fs::read_to_string(flight.validator_path()).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Saves the answer's strong `ETag`, else its `Last-Modified`, for the
/// `If-Range` of a resume. Weak ETags are not allowed in `If-Range`
/// (RFC 9110, section 13.1.5), so they are skipped.
fn save_validator(flight: &Flight, headers: &HeaderMap) {
    let etag = headers
        .get(header::ETAG)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.starts_with("W/"));
    let last_modified = headers
        .get(header::LAST_MODIFIED)
        .and_then(|value| value.to_str().ok());
    match etag.or(last_modified) {
        Some(validator) => {
            if let Err(error) = std::fs::write(flight.validator_path(), validator) {
                tracing::debug!(digest = %flight.digest, %error, "cannot save the download validator");
            }
        }
        None => remove_quietly(&flight.validator_path()),
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`) into
/// the start and the total.
fn parse_content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        number => Some(number.parse().ok()?),
    };
    Some((start, total))
}

/// Returns `url` without credentials and query, for errors and logs:
/// upstream URLs may carry a signed token in either.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        // A relative URL on the control plane: a path, shown without query.
        Err(_) if url.starts_with('/') => url.split(['?', '#']).next().unwrap_or("").to_string(),
        Err(_) => "<invalid URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{CONTENT_RANGE, HeaderMap, HeaderValue};

    use super::{parse_content_range, redact_url};

    fn headers(content_range: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_RANGE,
            HeaderValue::from_str(content_range).expect("valid header value"),
        );
        headers
    }

    #[test]
    fn content_range_with_total_parses() {
        assert_eq!(
            parse_content_range(&headers("bytes 100-199/200")),
            Some((100, Some(200)))
        );
    }

    #[test]
    fn content_range_with_unknown_total_parses() {
        assert_eq!(
            parse_content_range(&headers("bytes 5-9/*")),
            Some((5, None))
        );
    }

    #[test]
    fn content_range_reversed_is_rejected() {
        assert_eq!(parse_content_range(&headers("bytes 9-5/10")), None);
    }

    #[test]
    fn redacted_url_drops_credentials_and_query() {
        let shown = redact_url("https://user:pw@mirror.example/img.raw?token=abc");
        assert_eq!(shown, "https://mirror.example/img.raw");
    }
}
