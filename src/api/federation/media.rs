//! Media for other servers: this server's own files, as `multipart/mixed` (a metadata
//! part, then the file). Other servers' media cached here are not served on.

use std::sync::Arc;

use axum::{Router, response::Response};
use ruma::api::federation::authenticated_media::{get_content, get_content_thumbnail};

use crate::{
    Result,
    api::{Ruma, RumaRouter, client::media::asked, download, ruma::RawBody},
    service::{Services, media::Access},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route_raw(media_download)
        .ruma_route_raw(media_thumbnail)
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn media_download(
    services: Arc<Services>,
    request: Ruma<get_content::v1::Request>,
    _: RawBody,
) -> Result<Response> {
    let media = &services.media;
    let body = &request.body;
    let content = media
        .content(
            media.server_name(),
            &body.media_id,
            Access::Authenticated,
            body.timeout_ms,
            false,
        )
        .await?;
    download::multipart(media, &content).await
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn media_thumbnail(
    services: Arc<Services>,
    request: Ruma<get_content_thumbnail::v1::Request>,
    _: RawBody,
) -> Result<Response> {
    let media = &services.media;
    let body = &request.body;
    let asked = asked!(body);
    let content = media
        .thumbnail(
            media.server_name(),
            &body.media_id,
            asked.to_request()?,
            Access::Authenticated,
            body.timeout_ms,
            false,
        )
        .await?;
    download::multipart(media, &content).await
}
