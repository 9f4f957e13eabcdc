//! When a failed delivery is tried again: exponential backoff with jitter,
//! or what the receiver's `Retry-After` asks for, never longer than the
//! sink's bound.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// What one attempt got.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// A status worth retrying, with the receiver's `Retry-After` if any.
    Retry {
        /// The status, or `None` when no answer came.
        status: Option<u16>,
        /// What went wrong, for the log and the dead-letter row.
        error: String,
        /// How long the receiver asked to wait.
        retry_after: Option<Duration>,
    },
    /// A status that says the target is gone (Web Push 404 and 410).
    Gone(u16),
}

/// What one request's result means: 2xx is delivered, a status in `gone`
/// says the target is gone, anything else (another status, a timeout, a
/// connection error) may be retried.
pub fn outcome(response: Result<reqwest::Response, reqwest::Error>, gone: &[u16]) -> Outcome {
    match response {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if gone.contains(&r.status().as_u16()) => Outcome::Gone(r.status().as_u16()),
        Ok(r) => Outcome::Retry {
            status: Some(r.status().as_u16()),
            error: format!("answered {}", r.status()),
            retry_after: retry_after(r.headers()),
        },
        Err(e) => Outcome::Retry {
            status: None,
            error: describe(&e),
            retry_after: None,
        },
    }
}

/// An HTTP error without the URL (it may carry a token in its query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The delay before retry number `retry` (0 for the first retry):
/// `base · 2^retry`, capped at `max`, then drawn from its upper half, so
/// that many sinks failing at once do not retry in step. A `Retry-After`
/// replaces it, within `max`.
pub fn delay(retry: u32, base: Duration, max: Duration, retry_after: Option<Duration>) -> Duration {
    if let Some(asked) = retry_after {
        return asked.min(max);
    }
    let full = base
        .checked_mul(1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let half = full / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// A `Retry-After` header: delay-seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let at = SystemTime::from(at);
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bound_and_keeps_its_upper_half() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for retry in 0..40 {
            let full = (base * 2u32.pow(retry.min(20))).min(max);
            let got = delay(retry, base, max, None);
            assert!(got >= full / 2 && got <= full, "retry {retry}: {got:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_the_bound() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let asked = Some(Duration::from_secs(2));
        assert_eq!(delay(0, base, max, asked), Duration::from_secs(2));
        assert_eq!(delay(0, base, max, Some(Duration::from_secs(60))), max);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
