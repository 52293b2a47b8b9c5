//! The content repository for clients: uploads (at once, or to a URI created first),
//! downloads and thumbnails through the authenticated endpoints, and the deprecated
//! `/_matrix/media/v3/` ones, which serve only media from before the freeze when it is on.

// ruma marks the deprecated endpoints' types deprecated; serving them is the point here.
#![allow(deprecated)]

use std::{sync::Arc, time::Duration};

use axum::{Router, response::Response};
use futures::StreamExt;
use http::{HeaderMap, header};
use ruma::{
    OwnedMxcUri, ServerName, UInt,
    api::{
        client::{authenticated_media, media},
        error::ErrorKind,
    },
    media::Method as RumaMethod,
};

use crate::{
    Error, Result,
    api::{
        Ruma, RumaRouter,
        download::{self, Caching},
        ruma::RawBody,
    },
    service::{
        Services,
        media::{Access, Media, Staged, image_ops::Method, thumbnails},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(config)
        .ruma_route(legacy_config)
        .ruma_route_raw(upload)
        .ruma_route(create)
        .ruma_route_raw(upload_to_created)
        .ruma_route_raw(download)
        .ruma_route_raw(download_as)
        .ruma_route_raw(thumbnail)
        .ruma_route_raw(legacy_download)
        .ruma_route_raw(legacy_download_as)
        .ruma_route_raw(legacy_thumbnail)
        .ruma_route_json(preview)
        .ruma_route_json(legacy_preview)
}

/// # `GET /_matrix/client/v1/media/config`
async fn config(
    services: Arc<Services>,
    _: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> Result<authenticated_media::get_media_config::v1::Response> {
    Ok(authenticated_media::get_media_config::v1::Response::new(
        upload_size(&services.media),
    ))
}

/// # `GET /_matrix/media/v3/config`
async fn legacy_config(
    services: Arc<Services>,
    _: Ruma<media::get_media_config::v3::Request>,
) -> Result<media::get_media_config::v3::Response> {
    Ok(media::get_media_config::v3::Response::new(upload_size(
        &services.media,
    )))
}

fn upload_size(media: &Media) -> UInt {
    UInt::try_from(media.limits().max_upload_size).unwrap_or(UInt::MAX)
}

/// # `POST /_matrix/media/v3/upload`
async fn upload(
    services: Arc<Services>,
    request: Ruma<media::create_content::v3::Request>,
    raw: RawBody,
) -> Result<Response> {
    let user = request.user_id()?;
    let media = &services.media;
    let staged = stage(media, raw).await?;
    let media_id = media
        .create_uploaded(
            user,
            staged,
            request.body.content_type.clone(),
            request.body.filename.clone(),
        )
        .await?;
    let uri = mxc(media.server_name(), &media_id);
    json(&serde_json::json!({ "content_uri": uri }))
}

/// # `POST /_matrix/media/v1/create`
async fn create(
    services: Arc<Services>,
    request: Ruma<media::create_mxc_uri::v1::Request>,
) -> Result<media::create_mxc_uri::v1::Response> {
    let user = request.user_id()?;
    let (media_id, expires) = services.media.create_pending(user)?;
    let mut response =
        media::create_mxc_uri::v1::Response::new(mxc(services.media.server_name(), &media_id));
    response.unused_expires_at = Some(ruma::MilliSecondsSinceUnixEpoch(
        UInt::try_from(expires).unwrap_or(UInt::MAX),
    ));
    Ok(response)
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
///
/// The URI is checked before the body is read, so a refused upload costs no transfer.
async fn upload_to_created(
    services: Arc<Services>,
    request: Ruma<media::create_content_async::v3::Request>,
    raw: RawBody,
) -> Result<Response> {
    let user = request.user_id()?;
    let body = &request.body;
    let media = &services.media;
    media.check_pending(user, &body.server_name, &body.media_id)?;
    let staged = stage(media, raw).await?;
    media
        .complete_pending(
            user,
            &body.media_id,
            staged,
            body.content_type.clone(),
            body.filename.clone(),
        )
        .await?;
    json(&serde_json::json!({}))
}

/// Streams an upload body to staging. A body refused as too large is read on a little
/// (at most 1 MiB more, for at most two seconds) before the answer, so a client still
/// writing a slightly oversized upload reads the 413 instead of a broken connection.
async fn stage(media: &Media, raw: RawBody) -> Result<Staged> {
    const DRAIN_BYTES: usize = 1024 * 1024;
    let declared = raw
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let mut body = raw.body.into_data_stream();
    let staged = media.stage(&mut body, declared).await;
    if matches!(&staged, Err(error) if error.kind() == Some(&ErrorKind::TooLarge)) {
        let drain = async {
            let mut drained = 0;
            while drained < DRAIN_BYTES {
                match body.next().await {
                    Some(Ok(chunk)) => drained += chunk.len(),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    staged
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content::v1::Request>,
    raw: RawBody,
) -> Result<Response> {
    let body = &request.body;
    let fetch = Fetch::authenticated(&body.server_name, &body.media_id, body.timeout_ms);
    serve(&services.media, fetch, &raw.headers, None).await
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content_as_filename::v1::Request>,
    raw: RawBody,
) -> Result<Response> {
    let body = &request.body;
    let fetch = Fetch::authenticated(&body.server_name, &body.media_id, body.timeout_ms);
    serve(&services.media, fetch, &raw.headers, Some(&body.filename)).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
async fn legacy_download(
    services: Arc<Services>,
    request: Ruma<media::get_content::v3::Request>,
    raw: RawBody,
) -> Result<Response> {
    let body = &request.body;
    let fetch = Fetch::legacy(
        &body.server_name,
        &body.media_id,
        body.timeout_ms,
        body.allow_remote,
    );
    serve(&services.media, fetch, &raw.headers, None).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
async fn legacy_download_as(
    services: Arc<Services>,
    request: Ruma<media::get_content_as_filename::v3::Request>,
    raw: RawBody,
) -> Result<Response> {
    let body = &request.body;
    let fetch = Fetch::legacy(
        &body.server_name,
        &body.media_id,
        body.timeout_ms,
        body.allow_remote,
    );
    serve(&services.media, fetch, &raw.headers, Some(&body.filename)).await
}

/// Which media a download asks for and how it reaches it: which endpoints, how long it
/// waits for an awaited upload, whether another server's media may be fetched.
struct Fetch<'a> {
    server: &'a ServerName,
    media_id: &'a str,
    access: Access,
    timeout: Duration,
    allow_remote: bool,
}

impl<'a> Fetch<'a> {
    fn authenticated(server: &'a ServerName, media_id: &'a str, timeout: Duration) -> Self {
        Self {
            server,
            media_id,
            access: Access::Authenticated,
            timeout,
            allow_remote: true,
        }
    }

    fn legacy(
        server: &'a ServerName,
        media_id: &'a str,
        timeout: Duration,
        allow_remote: bool,
    ) -> Self {
        Self {
            server,
            media_id,
            access: Access::Legacy,
            timeout,
            allow_remote,
        }
    }

    fn caching(&self) -> Caching {
        match self.access {
            Access::Authenticated => Caching::Private,
            Access::Legacy => Caching::Public,
        }
    }
}

async fn serve(
    media: &Media,
    fetch: Fetch<'_>,
    headers: &HeaderMap,
    filename: Option<&str>,
) -> Result<Response> {
    let content = media
        .content(
            fetch.server,
            fetch.media_id,
            fetch.access,
            fetch.timeout,
            fetch.allow_remote,
        )
        .await?;
    download::download(media, &content, headers, filename, fetch.caching()).await
}

/// The parameters of a thumbnail request as ruma parsed them: every thumbnail request
/// type (client, deprecated, federation) has the same fields.
macro_rules! asked {
    ($body:expr) => {
        $crate::api::client::media::Asked {
            width: $body.width,
            height: $body.height,
            method: $body.method.as_ref(),
            animated: $body.animated,
        }
    };
}
pub(crate) use asked;

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_content_thumbnail::v1::Request>,
    raw: RawBody,
) -> Result<Response> {
    let body = &request.body;
    let fetch = Fetch::authenticated(&body.server_name, &body.media_id, body.timeout_ms);
    serve_thumbnail(&services.media, asked!(body), fetch, &raw.headers).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
async fn legacy_thumbnail(
    services: Arc<Services>,
    request: Ruma<media::get_content_thumbnail::v3::Request>,
    raw: RawBody,
) -> Result<Response> {
    let body = &request.body;
    let fetch = Fetch::legacy(
        &body.server_name,
        &body.media_id,
        body.timeout_ms,
        body.allow_remote,
    );
    serve_thumbnail(&services.media, asked!(body), fetch, &raw.headers).await
}

/// A thumbnail request's parameters as ruma parsed them.
pub struct Asked<'a> {
    pub width: UInt,
    pub height: UInt,
    pub method: Option<&'a RumaMethod>,
    pub animated: Option<bool>,
}

impl Asked<'_> {
    /// The request in the service's terms: `scale` when no method is given, and an
    /// unknown method is the spec's 400.
    pub fn to_request(&self) -> Result<thumbnails::Request> {
        let method = match self.method {
            None | Some(RumaMethod::Scale) => Method::Scale,
            Some(RumaMethod::Crop) => Method::Crop,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown thumbnail method {}",
                    other.as_str()
                )));
            }
        };
        let side = |value: UInt| u32::try_from(u64::from(value)).unwrap_or(u32::MAX);
        Ok(thumbnails::Request {
            width: side(self.width),
            height: side(self.height),
            method,
            animated: self.animated.unwrap_or(false),
        })
    }
}
async fn serve_thumbnail(
    media: &Media,
    asked: Asked<'_>,
    fetch: Fetch<'_>,
    headers: &HeaderMap,
) -> Result<Response> {
    let content = media
        .thumbnail(
            fetch.server,
            fetch.media_id,
            asked.to_request()?,
            fetch.access,
            fetch.timeout,
            fetch.allow_remote,
        )
        .await?;
    download::download(media, &content, headers, None, fetch.caching()).await
}

fn mxc(server: &ServerName, media_id: &str) -> OwnedMxcUri {
    OwnedMxcUri::from(format!("mxc://{server}/{media_id}"))
}

fn json(value: &serde_json::Value) -> Result<Response> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            serde_json::to_vec(value).map_err(Error::internal)?,
        ))
        .map_err(Error::internal)
}

/// # `GET /_matrix/client/v1/media/preview_url`
async fn preview(
    services: Arc<Services>,
    request: Ruma<authenticated_media::get_media_preview::v1::Request>,
) -> Result<serde_json::Value> {
    let user = request.user_id()?;
    services.media.preview(user, &request.body.url).await
}

/// # `GET /_matrix/media/v3/preview_url`
async fn legacy_preview(
    services: Arc<Services>,
    request: Ruma<media::get_media_preview::v3::Request>,
) -> Result<serde_json::Value> {
    let user = request.user_id()?;
    services.media.preview(user, &request.body.url).await
}
