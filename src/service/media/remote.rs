//! Other servers' media: fetched once over federation (`/_matrix/federation/v1/media/
//! download`, or the deprecated unauthenticated download for servers that predate it),
//! streamed to a staged file within the upload size limit and the federation request
//! timeout, then kept and served like local media.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use palisade_federation::{ClientError, FederationClient, legacy_media};
use parking_lot::Mutex;
use ruma::{ServerName, api::error::ErrorKind, api::federation::authenticated_media};

use super::{Media, MediaRecord, Staged, image_ops::Method, now_ms};
use crate::{Error, Result};

/// Fetches under way, by `server/media_id`: a second request for the same media waits
/// for the first instead of fetching again.
#[derive(Default)]
pub struct Fetches(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A remote file, staged.
pub(super) struct Fetched {
    pub(super) staged: Staged,
    pub(super) content_type: Option<String>,
    filename: Option<String>,
}

impl Media {
    /// Fetches `mxc://{server}/{media_id}` from its server and keeps it.
    pub(super) async fn fetch_remote(
        &self,
        server: &ServerName,
        media_id: &str,
    ) -> Result<MediaRecord> {
        let Some(client) = self.client.clone() else {
            return Err(Error::not_found("Media not found"));
        };
        let owner = Self::owner(server, media_id);
        let fetching = self
            .fetches
            .0
            .lock()
            .entry(owner.clone())
            .or_default()
            .clone();
        let _fetching = fetching.lock().await;
        if let Some(record) = self.record(server, media_id)? {
            return Ok(record);
        }
        let fetched = match self.fetch_authenticated(&client, server, media_id).await {
            Err(error) if error.is_unknown_endpoint() => {
                self.fetch_legacy(&client, server, media_id).await
            }
            other => other,
        };
        self.fetches.0.lock().remove(&owner);
        let fetched = fetched.map_err(|error| remote_error(server, error))?;
        let record = MediaRecord {
            sha256: Some(fetched.staged.sha256.clone()),
            size: fetched.staged.size,
            content_type: fetched.content_type,
            filename: fetched.filename,
            uploader: None,
            created: now_ms(),
            expires: None,
            authenticated_only: self.limits.freeze_legacy,
        };
        self.keep(fetched.staged, server, media_id, record.clone(), |_| {})
            .await?;
        Ok(record)
    }

    async fn fetch_authenticated(
        &self,
        client: &FederationClient,
        server: &ServerName,
        media_id: &str,
    ) -> Result<Fetched, FetchError> {
        let mut request = authenticated_media::get_content::v1::Request::new(media_id.to_owned());
        request.timeout_ms = Duration::from_secs(20);
        let response = client.send_streaming(server, request).await?;
        self.read_multipart(client, response).await
    }

    /// A thumbnail made by the media's own server for a `width`×`height` box: small,
    /// where the original may be a large video.
    pub(super) async fn fetch_remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        box_size: (u32, u32, Method),
        animated: bool,
    ) -> Result<Fetched, FetchError> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| FetchError::Bad("federation is off".into()))?;
        let (width, height, method) = box_size;
        let method = match method {
            Method::Crop => ruma::media::Method::Crop,
            Method::Scale => ruma::media::Method::Scale,
        };
        let mut request = authenticated_media::get_content_thumbnail::v1::Request::new(
            media_id.to_owned(),
            width.into(),
            height.into(),
        );
        request.method = Some(method);
        request.animated = Some(animated);
        request.timeout_ms = Duration::from_secs(20);
        let response = client.send_streaming(server, request).await?;
        self.read_multipart(&client, response).await
    }

    /// The file of a federation media answer: `multipart/mixed`, a metadata part then
    /// the file or a `Location` to fetch it from.
    async fn read_multipart(
        &self,
        client: &FederationClient,
        response: reqwest::Response,
    ) -> Result<Fetched, FetchError> {
        let content_type = header(&response, http::header::CONTENT_TYPE)
            .ok_or_else(|| FetchError::Bad("multipart answer without a content type".into()))?;
        let boundary = multipart_boundary(&content_type)
            .ok_or_else(|| FetchError::Bad(format!("not multipart/mixed: {content_type}")))?;
        let mut multipart = multer::Multipart::new(body_stream(response), boundary);
        let bad = |error: multer::Error| FetchError::Bad(error.to_string());
        // The first part is the metadata (an empty JSON object so far).
        multipart
            .next_field()
            .await
            .map_err(bad)?
            .ok_or_else(|| FetchError::Bad("no metadata part".into()))?;
        let field = multipart
            .next_field()
            .await
            .map_err(bad)?
            .ok_or_else(|| FetchError::Bad("no content part".into()))?;
        if let Some(location) = field.headers().get(http::header::LOCATION) {
            let location = location
                .to_str()
                .map_err(|_| FetchError::Bad("unreadable Location".into()))?
                .to_owned();
            return self.fetch_redirect(client, &location).await;
        }
        let content_type = field.content_type().map(ToString::to_string);
        let filename = field
            .headers()
            .get(http::header::CONTENT_DISPOSITION)
            .and_then(|value| value.to_str().ok())
            .and_then(disposition_filename);
        let staged = Staged::write(&*self.blobs, Box::pin(field), self.limits.max_upload_size)
            .await
            .map_err(FetchError::Local)?;
        Ok(Fetched {
            staged,
            content_type,
            filename,
        })
    }

    /// Follows the `Location` of a multipart answer: HTTPS only (a redirect must not
    /// reach into this server's own network).
    async fn fetch_redirect(
        &self,
        client: &FederationClient,
        location: &str,
    ) -> Result<Fetched, FetchError> {
        if !location.starts_with("https://") {
            return Err(FetchError::Bad("redirect to a non-HTTPS location".into()));
        }
        let response = client.get_url(location).await?;
        self.fetch_plain(response).await
    }

    async fn fetch_legacy(
        &self,
        client: &FederationClient,
        server: &ServerName,
        media_id: &str,
    ) -> Result<Fetched, FetchError> {
        let request = legacy_media::Request::new(
            server.to_owned(),
            media_id.to_owned(),
            Duration::from_secs(20),
        );
        let response = client.send_streaming(server, request).await?;
        self.fetch_plain(response).await
    }

    /// A plain download: the file is the body, its type and name in the headers.
    async fn fetch_plain(&self, response: reqwest::Response) -> Result<Fetched, FetchError> {
        let content_type = header(&response, http::header::CONTENT_TYPE);
        let filename = header(&response, http::header::CONTENT_DISPOSITION)
            .as_deref()
            .and_then(disposition_filename);
        let staged = Staged::write(
            &*self.blobs,
            Box::pin(body_stream(response)),
            self.limits.max_upload_size,
        )
        .await
        .map_err(FetchError::Local)?;
        Ok(Fetched {
            staged,
            content_type,
            filename,
        })
    }
}

/// Why a fetch failed.
#[derive(Debug)]
pub(super) enum FetchError {
    Remote(ClientError),
    Bad(String),
    Local(Error),
}

impl From<ClientError> for FetchError {
    fn from(error: ClientError) -> Self {
        FetchError::Remote(error)
    }
}

impl FetchError {
    fn is_unknown_endpoint(&self) -> bool {
        matches!(self, FetchError::Remote(error) if error.is_unknown_endpoint())
    }
}

/// What a client is told: the remote's 404 and 504 as they are, too large as the spec's
/// 502 `M_TOO_LARGE`, anything else a 502.
fn remote_error(server: &ServerName, error: FetchError) -> Error {
    let bad_gateway = http::StatusCode::BAD_GATEWAY;
    match error {
        FetchError::Local(error) if error.kind() == Some(&ErrorKind::TooLarge) => {
            Error::new(ErrorKind::TooLarge, "Content is too large to serve")
                .with_status(bad_gateway)
        }
        FetchError::Local(error) => error,
        FetchError::Remote(error) if error.status() == Some(http::StatusCode::NOT_FOUND) => {
            Error::not_found("Media not found")
        }
        FetchError::Remote(error) if error.errcode() == Some("M_NOT_YET_UPLOADED") => Error::new(
            ErrorKind::NotYetUploaded,
            "Content has not yet been uploaded",
        ),
        FetchError::Remote(error) => {
            tracing::info!(%server, %error, "remote media fetch failed");
            Error::new(
                ErrorKind::Unknown,
                format!("Could not fetch media from {server}"),
            )
            .with_status(bad_gateway)
        }
        FetchError::Bad(reason) => {
            tracing::info!(%server, %reason, "remote media answer unreadable");
            Error::new(
                ErrorKind::Unknown,
                format!("Could not fetch media from {server}"),
            )
            .with_status(bad_gateway)
        }
    }
}

pub(super) fn header(response: &reqwest::Response, name: http::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A response body as a stream of chunks.
pub(super) fn body_stream(
    response: reqwest::Response,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send {
    futures::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), response)),
            Ok(None) => None,
            Err(error) => Some((Err(error), response)),
        }
    })
}

/// The boundary of a `multipart/mixed` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parameters = content_type.split(';');
    let essence = parameters.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    parameters.find_map(|parameter| {
        let (name, value) = parameter.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|boundary| !boundary.is_empty())
    })
}

/// The file name of a `Content-Disposition` header: `filename*=utf-8''…` (RFC 6266),
/// else `filename="…"` or a bare `filename=…`.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    for parameter in value.split(';').map(str::trim) {
        let Some((name, raw)) = parameter.split_once('=') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let (charset, rest) = raw.split_once('\'')?;
                let (_, encoded) = rest.split_once('\'')?;
                if charset.eq_ignore_ascii_case("utf-8") {
                    let decoded = percent_encoding::percent_decode_str(encoded)
                        .decode_utf8()
                        .ok()?;
                    return Some(decoded.into_owned());
                }
            }
            "filename" => {
                let raw = raw.trim();
                let unquoted = raw
                    .strip_prefix('"')
                    .and_then(|inner| inner.strip_suffix('"'))
                    .map(|inner| inner.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| raw.to_owned());
                plain = Some(unquoted);
            }
            _ => {}
        }
    }
    plain.filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{disposition_filename, multipart_boundary};

    #[test]
    fn boundaries_are_read_from_multipart_mixed_only() {
        assert_eq!(
            multipart_boundary("multipart/mixed; boundary=abc123").as_deref(),
            Some("abc123")
        );
        assert_eq!(
            multipart_boundary("Multipart/Mixed; charset=x; boundary=\"q r\"").as_deref(),
            Some("q r")
        );
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=abc"),
            None
        );
        assert_eq!(multipart_boundary("multipart/mixed"), None);
    }

    #[test]
    fn file_names_are_read_from_either_form() {
        assert_eq!(
            disposition_filename("inline; filename=\"cat.png\"").as_deref(),
            Some("cat.png")
        );
        assert_eq!(
            disposition_filename("attachment; filename*=utf-8''%E2%82%AC%20rates.pdf").as_deref(),
            Some("€ rates.pdf")
        );
        assert_eq!(
            disposition_filename("inline; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(disposition_filename("inline"), None);
    }
}
