//! Option negotiation (RFC 2347) for `blksize` (RFC 2348), `timeout` and
//! `tsize` (RFC 2349) and `windowsize` (RFC 7440).
//!
//! Invalid values and unknown options are left out of the OACK, which marks
//! them as not accepted. A request without accepted options gets
//! no OACK: the transfer starts with DATA block 1, as in plain RFC 1350.

use std::time::Duration;

/// Block size without a `blksize` option (RFC 1350).
pub(crate) const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest and largest `blksize` a client may request (RFC 2348).
pub(crate) const BLKSIZE_RANGE: std::ops::RangeInclusive<u16> = 8..=65464;
/// Upper bound for the configurable maximum `windowsize`. Each transfer keeps
/// one window of blocks in memory, so the window is capped.
pub(crate) const MAX_WINDOWSIZE: u16 = 64;

/// The parameters of one transfer after negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) blksize: u16,
    pub(crate) windowsize: u16,
    pub(crate) timeout: Duration,
    /// Options for the OACK, in request order; empty when no OACK is sent.
    pub(crate) accepted: Vec<(String, String)>,
}

/// Limits the server applies to what clients request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_blksize: u16,
    pub(crate) max_windowsize: u16,
    pub(crate) default_timeout: Duration,
}

/// Negotiates the options of a read request for a file of `file_size` bytes.
pub(crate) fn negotiate(
    requested: &[(String, String)],
    file_size: u64,
    limits: Limits,
) -> Negotiated {
    let mut negotiated = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        accepted: Vec::new(),
    };

    for (name, value) in requested {
        let accepted_value = match name.as_str() {
            "blksize" => value
                .parse::<u16>()
                .ok()
                .filter(|size| BLKSIZE_RANGE.contains(size))
                .map(|size| {
                    negotiated.blksize = size.min(limits.max_blksize);
                    negotiated.blksize.to_string()
                }),
            // The client sends 0 in a read request; the server returns the
            // file size.
            "tsize" => value.parse::<u64>().ok().map(|_| file_size.to_string()),
            // RFC 2349: the server must accept the value as is or ignore it.
            "timeout" => value
                .parse::<u8>()
                .ok()
                .filter(|seconds| *seconds >= 1)
                .map(|seconds| {
                    negotiated.timeout = Duration::from_secs(u64::from(seconds));
                    seconds.to_string()
                }),
            "windowsize" => value
                .parse::<u16>()
                .ok()
                .filter(|size| *size >= 1)
                .map(|size| {
                    negotiated.windowsize = size.min(limits.max_windowsize);
                    negotiated.windowsize.to_string()
                }),
            _ => None,
        };
        if let Some(accepted_value) = accepted_value {
            negotiated.accepted.push((name.clone(), accepted_value));
        }
    }
    negotiated
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: 8,
        default_timeout: Duration::from_secs(1),
    };

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn no_options_means_no_oack() {
        let negotiated = negotiate(&[], 1000, LIMITS);

        assert_eq!(negotiated.blksize, 512);
        assert_eq!(negotiated.windowsize, 1);
        assert!(negotiated.accepted.is_empty());
    }

    #[test]
    fn edk2_options_are_accepted() {
        let requested = options(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]);

        let negotiated = negotiate(&requested, 173_792, LIMITS);

        assert_eq!(
            negotiated.accepted,
            options(&[
                ("tsize", "173792"),
                ("blksize", "1468"),
                ("windowsize", "4")
            ])
        );
        assert_eq!(negotiated.blksize, 1468);
        assert_eq!(negotiated.windowsize, 4);
    }

    #[test]
    fn blksize_is_clamped_to_max() {
        let negotiated = negotiate(&options(&[("blksize", "65464")]), 1, LIMITS);

        assert_eq!(negotiated.blksize, 1468);
        assert_eq!(negotiated.accepted, options(&[("blksize", "1468")]));
    }

    #[test]
    fn blksize_out_of_range_is_ignored() {
        for value in ["7", "65465", "0", "big", "-1"] {
            let negotiated = negotiate(&options(&[("blksize", value)]), 1, LIMITS);
            assert_eq!(negotiated.blksize, 512, "blksize {value}");
            assert!(negotiated.accepted.is_empty(), "blksize {value}");
        }
    }

    #[test]
    fn smallest_blksize_is_accepted() {
        let negotiated = negotiate(&options(&[("blksize", "8")]), 1, LIMITS);

        assert_eq!(negotiated.blksize, 8);
    }

    #[test]
    fn timeout_is_echoed_and_used() {
        let negotiated = negotiate(&options(&[("timeout", "6")]), 1, LIMITS);

        assert_eq!(negotiated.timeout, Duration::from_secs(6));
        assert_eq!(negotiated.accepted, options(&[("timeout", "6")]));
    }

    #[test]
    fn invalid_timeout_is_ignored() {
        for value in ["0", "256", "x"] {
            let negotiated = negotiate(&options(&[("timeout", value)]), 1, LIMITS);
            assert_eq!(
                negotiated.timeout,
                Duration::from_secs(1),
                "timeout {value}"
            );
            assert!(negotiated.accepted.is_empty(), "timeout {value}");
        }
    }

    #[test]
    fn windowsize_is_clamped_to_max() {
        let negotiated = negotiate(&options(&[("windowsize", "32")]), 1, LIMITS);

        assert_eq!(negotiated.windowsize, 8);
        assert_eq!(negotiated.accepted, options(&[("windowsize", "8")]));
    }

    #[test]
    fn unknown_option_is_ignored() {
        let negotiated = negotiate(&options(&[("multicast", ""), ("tsize", "0")]), 42, LIMITS);

        assert_eq!(negotiated.accepted, options(&[("tsize", "42")]));
    }
}
