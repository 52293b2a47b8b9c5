//! The `/.well-known/matrix/server` document: reading a response, and how long to keep what it
//! said.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};
use ruma::OwnedServerName;

/// How long a valid document is kept when the response says nothing about caching.
pub(super) const DEFAULT_CACHE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest a valid document is kept, whatever the response says.
pub(super) const MAX_CACHE_PERIOD: Duration = Duration::from_secs(48 * 60 * 60);
/// The shortest a valid document is kept, so a server answering `no-store` or `max-age=0` is
/// not asked again before every request.
pub(super) const MIN_CACHE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// How long a failure (no document, or an invalid one) is kept.
pub(super) const FAILURE_CACHE_PERIOD: Duration = Duration::from_secs(60 * 60);

/// What a well-known response said, and for how long to believe it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct WellKnown {
    /// The delegated server name; `None` when the response was not a valid document.
    pub(super) server: Option<OwnedServerName>,
    /// How long to cache this result.
    pub(super) cache_for: Duration,
}

impl WellKnown {
    /// No valid document.
    pub(super) fn failure() -> Self {
        WellKnown {
            server: None,
            cache_for: FAILURE_CACHE_PERIOD,
        }
    }
}

/// Reads a response to `GET /.well-known/matrix/server` received at `now`. The body is JSON
/// whatever its content type says.
pub(super) fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> WellKnown {
    if status != StatusCode::OK {
        return WellKnown::failure();
    }
    // An object: serde would also read a struct from a JSON array.
    let Ok(document) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
    else {
        return WellKnown::failure();
    };
    let Some(Ok(server)) = document
        .get("m.server")
        .and_then(serde_json::Value::as_str)
        .map(OwnedServerName::try_from)
    else {
        return WellKnown::failure();
    };
    WellKnown {
        server: Some(server),
        cache_for: cache_period(headers, now)
            .unwrap_or(DEFAULT_CACHE_PERIOD)
            .clamp(MIN_CACHE_PERIOD, MAX_CACHE_PERIOD),
    }
}

/// The freshness lifetime the response gives: `Cache-Control` (`no-store`, `no-cache`,
/// `max-age`) takes precedence over `Expires`. `None` when it gives none.
fn cache_period(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let directives = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    let mut max_age = None;
    for directive in directives {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // An unparsable max-age makes the response stale (RFC 9111, 4.2.1).
            let seconds = value
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0);
            max_age = Some(Duration::from_secs(seconds));
        }
    }
    if max_age.is_some() {
        return max_age;
    }
    let expires = headers.get(header::EXPIRES)?.to_str().ok()?;
    // An invalid date, like a date in the past, means already expired.
    let expires = httpdate::parse_http_date(expires).unwrap_or(SystemTime::UNIX_EPOCH);
    Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use ruma::server_name;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ok(body: &str) -> WellKnown {
        parse(
            StatusCode::OK,
            &HeaderMap::new(),
            body.as_bytes(),
            SystemTime::now(),
        )
    }

    #[test]
    fn a_valid_document_gives_the_delegated_name_for_a_day() {
        let parsed = ok(r#"{"m.server": "matrix.example.org:443", "other": 1}"#);
        assert_eq!(
            parsed,
            WellKnown {
                server: Some(server_name!("matrix.example.org:443").to_owned()),
                cache_for: DEFAULT_CACHE_PERIOD,
            }
        );
        let parsed = ok(r#"{"m.server": "[2001:db8::1]"}"#);
        assert_eq!(parsed.server.unwrap().as_str(), "[2001:db8::1]");
    }

    #[test]
    fn invalid_json_is_a_failure() {
        assert_eq!(ok("<html>not found</html>"), WellKnown::failure());
        assert_eq!(ok(""), WellKnown::failure());
        assert_eq!(ok(r#"{"m.server": "a.org""#), WellKnown::failure());
        assert_eq!(ok(r#"["m.server"]"#), WellKnown::failure());
    }

    #[test]
    fn a_missing_or_non_string_m_server_is_a_failure() {
        assert_eq!(ok("{}"), WellKnown::failure());
        assert_eq!(ok(r#"{"m.homeserver": "a.org"}"#), WellKnown::failure());
        assert_eq!(ok(r#"{"m.server": 8448}"#), WellKnown::failure());
        assert_eq!(ok(r#"{"m.server": null}"#), WellKnown::failure());
    }

    #[test]
    fn an_invalid_server_name_is_a_failure() {
        for name in [
            "",
            "a.org:99999",
            "a.org:",
            "https://a.org",
            "a.org/path",
            "[not-ipv6]",
            "ex ample.org",
        ] {
            let body = serde_json::json!({ "m.server": name }).to_string();
            assert_eq!(ok(&body), WellKnown::failure(), "{name:?}");
        }
    }

    #[test]
    fn a_non_200_status_is_a_failure_whatever_the_body() {
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::NO_CONTENT,
            StatusCode::BAD_GATEWAY,
        ] {
            let parsed = parse(
                status,
                &HeaderMap::new(),
                br#"{"m.server": "a.org"}"#,
                SystemTime::now(),
            );
            assert_eq!(parsed, WellKnown::failure());
        }
        assert_eq!(WellKnown::failure().cache_for, FAILURE_CACHE_PERIOD);
    }

    #[test]
    fn cache_control_max_age_sets_the_period_within_the_bounds() {
        let body = br#"{"m.server": "a.org"}"#;
        let now = SystemTime::now();
        let period = |value: &str| {
            parse(
                StatusCode::OK,
                &headers(&[(header::CACHE_CONTROL, value)]),
                body,
                now,
            )
            .cache_for
        };
        assert_eq!(period("max-age=3600"), Duration::from_secs(3600));
        assert_eq!(period("public, max-age=7200"), Duration::from_secs(7200));
        assert_eq!(period("Max-Age=\"7200\""), Duration::from_secs(7200));
        assert_eq!(period("max-age=31536000"), MAX_CACHE_PERIOD);
        assert_eq!(period("max-age=0"), MIN_CACHE_PERIOD);
        assert_eq!(period("max-age=soon"), MIN_CACHE_PERIOD);
        assert_eq!(period("no-store"), MIN_CACHE_PERIOD);
        assert_eq!(period("public"), DEFAULT_CACHE_PERIOD);
    }

    #[test]
    fn expires_is_used_when_there_is_no_max_age() {
        let body = br#"{"m.server": "a.org"}"#;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_two_hours = httpdate::fmt_http_date(now + Duration::from_secs(7200));
        let parsed = parse(
            StatusCode::OK,
            &headers(&[(header::EXPIRES, &in_two_hours)]),
            body,
            now,
        );
        assert_eq!(parsed.cache_for, Duration::from_secs(7200));

        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        let parsed = parse(
            StatusCode::OK,
            &headers(&[(header::EXPIRES, &past)]),
            body,
            now,
        );
        assert_eq!(parsed.cache_for, MIN_CACHE_PERIOD);

        let parsed = parse(
            StatusCode::OK,
            &headers(&[
                (header::EXPIRES, &in_two_hours),
                (header::CACHE_CONTROL, "max-age=600"),
            ]),
            body,
            now,
        );
        assert_eq!(parsed.cache_for, Duration::from_secs(600));
    }
}
