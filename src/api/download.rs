//! Serving a media file: the spec's `Content-Disposition` (inline only for the types it
//! lists as safe), a sandboxing `Content-Security-Policy`, an `ETag` (the file's hash:
//! content at an `mxc://` URI never changes), a single `Range`, and the `multipart/mixed`
//! form of the federation endpoints. Bodies stream from the store.

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::{
    Error, Result,
    service::media::{Content, Media},
};

/// The types the spec allows to be served `inline` ("Serving inline content"); anything
/// else is an `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Scripts, plugins, forms and frames are off for anything opened from the media store.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; \
     object-src 'self'";

/// Whether `content_type` may be shown inline.
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// `inline` or `attachment`, with the file name when there is one.
pub fn disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    match filename {
        None => kind.to_owned(),
        Some(name)
            if name
                .bytes()
                .all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\') =>
        {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => {
            let encoded =
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            format!("{kind}; filename*=utf-8''{encoded}")
        }
    }
}

/// How a response may be cached: per user behind authentication, by anyone on the
/// deprecated open endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    Private,
    Public,
}

/// A download of `content`, whole or the one range `request` asks for, under `filename`
/// (the name asked in the path, else the uploader's).
pub async fn download(
    media: &Media,
    content: &Content,
    request: &HeaderMap,
    filename: Option<&str>,
    caching: Caching,
) -> Result<Response> {
    let content_type = content
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let etag = format!("\"{}\"", content.sha256);
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, &content_type)
        .header(
            header::CONTENT_DISPOSITION,
            disposition(&content_type, filename.or(content.filename.as_deref())),
        )
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header("Cross-Origin-Resource-Policy", "cross-origin")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CACHE_CONTROL,
            match caching {
                Caching::Private => "private, max-age=31536000, immutable",
                Caching::Public => "public, max-age=31536000, immutable",
            },
        );
    if request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        })
    {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(Error::internal);
    }
    let range = match requested_range(request, &etag, content.size) {
        Range::Whole => None,
        Range::Part(start, end) => Some((start, end)),
        Range::Unsatisfiable => {
            return response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", content.size))
                .body(Body::empty())
                .map_err(Error::internal);
        }
    };
    let (start, end) = range.unwrap_or((0, content.size));
    if let Some((start, end)) = range {
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", end - 1, content.size),
        );
    }
    let stream = media.read(&content.sha256, start, Some(end)).await?;
    response
        .header(header::CONTENT_LENGTH, end - start)
        .body(Body::from_stream(stream))
        .map_err(Error::internal)
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// No range, several (not served as multipart), one this server does not read, or an
    /// `If-Range` that no longer matches: the whole file.
    Whole,
    /// Bytes `start..end`.
    Part(u64, u64),
    Unsatisfiable,
}

fn requested_range(request: &HeaderMap, etag: &str, size: u64) -> Range {
    let Some(value) = request
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    else {
        return Range::Whole;
    };
    if let Some(condition) = request.get(header::IF_RANGE)
        && condition.as_bytes() != etag.as_bytes()
    {
        return Range::Whole;
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Range::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // `bytes=-n`: the last n bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return Range::Unsatisfiable,
            Ok(suffix) => Some((size.saturating_sub(suffix), size)),
            Err(_) => None,
        },
        (false, true) => first.parse::<u64>().ok().map(|start| (start, size)),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(start), Ok(last)) if last >= start => Some((start, (last + 1).min(size))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => Range::Whole,
        Some((start, _)) if start >= size => Range::Unsatisfiable,
        Some((start, end)) => Range::Part(start, end),
    }
}

/// The federation form of a download: `multipart/mixed`, a JSON metadata part (`{}`)
/// then the file with its type and disposition.
pub async fn multipart(media: &Media, content: &Content) -> Result<Response> {
    let boundary = crate::service::users::random_string(32);
    let content_type = content
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: {content_type}\r\nContent-Disposition: {}\r\n\r\n",
        disposition(&content_type, content.filename.as_deref())
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + content.size + tail.len() as u64;
    let file = media.read(&content.sha256, 0, None).await?;
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(file)
        .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
                .map_err(Error::internal)?,
        )
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_stream(body))
        .map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Range {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        requested_range(&headers, "\"x\"", size)
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-9", 100), Range::Part(0, 10));
        assert_eq!(range("bytes=90-200", 100), Range::Part(90, 100));
        assert_eq!(range("bytes=50-", 100), Range::Part(50, 100));
        assert_eq!(range("bytes=-10", 100), Range::Part(90, 100));
        assert_eq!(range("bytes=-500", 100), Range::Part(0, 100));
        assert_eq!(range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(range("items=0-1", 100), Range::Whole);
        assert_eq!(range("bytes=5-1", 100), Range::Whole);
    }

    #[test]
    fn only_safe_types_are_inline_and_names_are_quoted_or_encoded() {
        assert_eq!(disposition("image/png", None), "inline");
        assert_eq!(
            disposition("IMAGE/PNG; charset=x", Some("cat.png")),
            "inline; filename=\"cat.png\""
        );
        assert_eq!(
            disposition("text/html", Some("a.html")),
            "attachment; filename=\"a.html\""
        );
        assert_eq!(
            disposition("application/pdf", Some("€ \"x\".pdf")),
            "attachment; filename*=utf-8''%E2%82%AC%20%22x%22%2Epdf"
        );
        assert!(!is_inline("image/svg+xml"));
    }
}
