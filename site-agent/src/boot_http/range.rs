//! The validators and byte ranges of an image response (RFC 9110 sections
//! 8.8.3, 13.1 and 14): which status and which bytes a request gets.
//!
//! Blobs are content addressed, so the sha256 is a strong `ETag` that never
//! changes for a URL. No `Last-Modified` is sent, so an `If-Range` holding a
//! date never matches and the whole blob is sent.

/// What to send for a GET or HEAD of a blob of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    /// 200 with the whole blob.
    Whole,
    /// 206 with the bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 304: the client's copy, named by `If-None-Match`, is current.
    NotModified,
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// The request headers that decide the [`Selection`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Conditions<'a> {
    pub is_get: bool,
    pub if_none_match: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub range: Option<&'a str>,
}

/// Decides the response for a blob of `len` bytes whose entity tag is
/// `etag` (quotes included).
///
/// Range is applied to GET only, as RFC 9110 defines it for GET alone, so a
/// HEAD gets the headers of a whole-blob GET. A `Range` that does not parse
/// is ignored, as the RFC allows. A request with more than one range gets
/// the whole blob with 200 instead of a `multipart/byteranges` body: netboot
/// clients, installers and the Ironic Python Agent send one range at a time,
/// and the RFC lets a server ignore `Range`.
pub(crate) fn select(len: u64, etag: &str, conditions: Conditions<'_>) -> Selection {
    if conditions
        .if_none_match
        .is_some_and(|value| if_none_match_matches(value, etag))
    {
        return Selection::NotModified;
    }

    let Some(range) = conditions.range.filter(|_| conditions.is_get) else {
        return Selection::Whole;
    };
    // `If-Range` uses the strong comparison: a weak tag or a date never
    // matches, so the client gets the whole, current blob.
    if conditions
        .if_range
        .is_some_and(|value| value.trim() != etag)
    {
        return Selection::Whole;
    }

    match parse_range(range, len) {
        Some(RangeSpec::One(start, end)) => Selection::Partial { start, end },
        Some(RangeSpec::Unsatisfiable) => Selection::Unsatisfiable,
        Some(RangeSpec::Several) | None => Selection::Whole,
    }
}

/// A parsed `Range` header against a blob of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// One satisfiable range, clamped to the blob: first and last byte.
    One(u64, u64),
    /// More than one range; see [`select`].
    Several,
    /// No range overlaps the blob.
    Unsatisfiable,
}

/// Parses `bytes=first-last`, `bytes=first-` and `bytes=-suffix`, and
/// comma-separated lists of them. Returns `None` for a header that is not a
/// valid byte range set (another unit, a `last` before `first`, no digits).
fn parse_range(header: &str, len: u64) -> Option<RangeSpec> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }

    let mut satisfiable = Vec::new();
    for spec in set
        .split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
    {
        if let Some(range) = parse_one(spec, len)? {
            satisfiable.push(range);
        }
    }
    match satisfiable.as_slice() {
        [] => Some(RangeSpec::Unsatisfiable),
        [(start, end)] => Some(RangeSpec::One(*start, *end)),
        _ => Some(RangeSpec::Several),
    }
}

/// Parses one range spec. The outer `None` means invalid syntax, the inner
/// one a valid range that does not overlap the blob.
fn parse_one(spec: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());

    if first.is_empty() {
        let suffix = parse_digits(last)?;
        if suffix == 0 || len == 0 {
            return Some(None);
        }
        return Some(Some((len.saturating_sub(suffix), len - 1)));
    }

    let start = parse_digits(first)?;
    let end = match last {
        "" => u64::MAX,
        digits => parse_digits(digits)?,
    };
    if end < start {
        return None;
    }
    if start >= len {
        return Some(None);
    }
    Some(Some((start, end.min(len - 1))))
}

/// Parses a non-empty run of ASCII digits. A value past `u64::MAX` saturates,
/// because it can only mean "beyond the end".
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// Returns whether an `If-None-Match` value names `etag`, with the weak
/// comparison RFC 9110 requires for this header (`W/` is ignored).
fn if_none_match_matches(value: &str, etag: &str) -> bool {
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"abc\"";

    fn get_range(range: &str, len: u64) -> Selection {
        select(
            len,
            ETAG,
            Conditions {
                is_get: true,
                range: Some(range),
                ..Conditions::default()
            },
        )
    }

    #[test]
    fn closed_range_is_partial() {
        assert_eq!(
            get_range("bytes=0-99", 1000),
            Selection::Partial { start: 0, end: 99 }
        );
    }

    #[test]
    fn open_range_runs_to_end() {
        assert_eq!(
            get_range("bytes=900-", 1000),
            Selection::Partial {
                start: 900,
                end: 999
            }
        );
    }

    #[test]
    fn suffix_range_takes_last_bytes() {
        assert_eq!(
            get_range("bytes=-100", 1000),
            Selection::Partial {
                start: 900,
                end: 999
            }
        );
    }

    #[test]
    fn suffix_longer_than_blob_takes_all() {
        assert_eq!(
            get_range("bytes=-5000", 1000),
            Selection::Partial { start: 0, end: 999 }
        );
    }

    #[test]
    fn range_past_end_is_clamped() {
        assert_eq!(
            get_range("bytes=500-99999999999999999999999", 1000),
            Selection::Partial {
                start: 500,
                end: 999
            }
        );
    }

    #[test]
    fn start_at_length_is_unsatisfiable() {
        assert_eq!(get_range("bytes=1000-", 1000), Selection::Unsatisfiable);
    }

    #[test]
    fn zero_suffix_is_unsatisfiable() {
        assert_eq!(get_range("bytes=-0", 1000), Selection::Unsatisfiable);
    }

    #[test]
    fn any_range_of_empty_blob_is_unsatisfiable() {
        assert_eq!(get_range("bytes=0-", 0), Selection::Unsatisfiable);
    }

    #[test]
    fn several_ranges_get_whole_blob() {
        assert_eq!(get_range("bytes=0-1,5-9", 1000), Selection::Whole);
    }

    #[test]
    fn several_ranges_with_one_satisfiable_are_partial() {
        assert_eq!(
            get_range("bytes=0-9, 5000-6000", 1000),
            Selection::Partial { start: 0, end: 9 }
        );
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        for range in [
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
            "items=0-1",
            "bytes 0-1",
            "bytes=+1-2",
        ] {
            assert_eq!(get_range(range, 1000), Selection::Whole, "{range}");
        }
    }

    #[test]
    fn head_ignores_range() {
        let selection = select(
            1000,
            ETAG,
            Conditions {
                is_get: false,
                range: Some("bytes=0-1"),
                ..Conditions::default()
            },
        );
        assert_eq!(selection, Selection::Whole);
    }

    #[test]
    fn if_none_match_with_etag_is_not_modified() {
        for value in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            let selection = select(
                1000,
                ETAG,
                Conditions {
                    is_get: true,
                    if_none_match: Some(value),
                    range: Some("bytes=0-1"),
                    ..Conditions::default()
                },
            );
            assert_eq!(selection, Selection::NotModified, "{value}");
        }
    }

    #[test]
    fn if_none_match_with_other_etag_is_whole() {
        let selection = select(
            1000,
            ETAG,
            Conditions {
                is_get: true,
                if_none_match: Some("\"other\""),
                ..Conditions::default()
            },
        );
        assert_eq!(selection, Selection::Whole);
    }

    #[test]
    fn if_range_with_etag_keeps_range() {
        let selection = select(
            1000,
            ETAG,
            Conditions {
                is_get: true,
                if_range: Some("\"abc\""),
                range: Some("bytes=0-1"),
                ..Conditions::default()
            },
        );
        assert_eq!(selection, Selection::Partial { start: 0, end: 1 });
    }

    #[test]
    fn if_range_with_other_validator_sends_whole() {
        for value in ["\"other\"", "W/\"abc\"", "Fri, 04 Dec 2026 19:00:00 GMT"] {
            let selection = select(
                1000,
                ETAG,
                Conditions {
                    is_get: true,
                    if_range: Some(value),
                    range: Some("bytes=0-1"),
                    ..Conditions::default()
                },
            );
            assert_eq!(selection, Selection::Whole, "{value}");
        }
    }
}
