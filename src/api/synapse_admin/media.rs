//! Synapse's media admin API (`/_synapse/admin/v1/...`), so its admin tools and
//! scripts work: delete one media, a user's media, local media by age and size, and
//! purge the cache of other servers' media.

use std::sync::Arc;

use axum::{
    Router,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use http::{HeaderMap, Uri};
use ruma::{OwnedServerName, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{answer, param, require_admin};
use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(
            "/_synapse/admin/v1/media/{server_name}/{media_id}",
            delete(delete_one),
        )
        .route("/_synapse/admin/v1/media/delete", post(delete_by_age))
        .route(
            "/_synapse/admin/v1/media/{server_name}/delete",
            post(delete_by_age_of),
        )
        .route(
            "/_synapse/admin/v1/users/{user_id}/media",
            get(list_of_user).delete(delete_of_user),
        )
        .route("/_synapse/admin/v1/purge_media_cache", post(purge_cache))
}

/// # `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`
async fn delete_one(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    path: std::result::Result<Path<(OwnedServerName, String)>, PathRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let Path((server_name, media_id)) = param(path)?;
            if !services.media.delete(&server_name, &media_id).await? {
                return Err(Error::not_found("Unknown media"));
            }
            Ok(json!({ "deleted_media": [media_id], "total": 1 }))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct AgeQuery {
    before_ts: u64,
    #[serde(default)]
    size_gt: u64,
}

/// # `POST /_synapse/admin/v1/media/delete?before_ts=…&size_gt=…`
///
/// This server's media created before `before_ts` (ms) and larger than `size_gt` bytes.
async fn delete_by_age(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    query: std::result::Result<Query<AgeQuery>, QueryRejection>,
) -> Response {
    answer(by_age(&services, &headers, &uri, query).await)
}

/// # `POST /_synapse/admin/v1/media/{serverName}/delete?before_ts=…`
async fn delete_by_age_of(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    Path(server_name): Path<String>,
    query: std::result::Result<Query<AgeQuery>, QueryRejection>,
) -> Response {
    if server_name != services.config.server_name.as_str() {
        return Error::invalid_param("Can only delete local media").into_response();
    }
    answer(by_age(&services, &headers, &uri, query).await)
}

async fn by_age(
    services: &Services,
    headers: &HeaderMap,
    uri: &Uri,
    query: std::result::Result<Query<AgeQuery>, QueryRejection>,
) -> Result<Value> {
    require_admin(services, headers, uri)?;
    let Query(query) = param(query)?;
    let deleted = services
        .media
        .delete_local_before(query.before_ts, query.size_gt)
        .await?;
    Ok(json!({ "total": deleted.len(), "deleted_media": deleted }))
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    from: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    dir: Option<String>,
}

fn default_limit() -> usize {
    100
}

/// A user's uploads, newest first unless `dir=f`, the page asked for.
fn page(
    services: &Services,
    user_id: &OwnedUserId,
    query: &PageQuery,
) -> Result<(Vec<crate::service::media::admin::Upload>, usize)> {
    let mut uploads = services.media.uploads(user_id)?;
    if query.dir.as_deref() != Some("f") {
        uploads.reverse();
    }
    let total = uploads.len();
    let page = uploads
        .into_iter()
        .skip(query.from)
        .take(query.limit)
        .collect();
    Ok((page, total))
}

/// # `GET /_synapse/admin/v1/users/{userId}/media`
async fn list_of_user(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    path: std::result::Result<Path<OwnedUserId>, PathRejection>,
    query: std::result::Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let (Path(user_id), Query(query)) = (param(path)?, param(query)?);
            let (uploads, total) = page(&services, &user_id, &query)?;
            let next = query.from + uploads.len();
            let media: Vec<Value> = uploads
                .into_iter()
                .map(|upload| {
                    json!({
                        "media_id": upload.media_id,
                        "media_type": upload.record.content_type,
                        "media_length": upload.record.size,
                        "upload_name": upload.record.filename,
                        "created_ts": upload.record.created,
                        "last_access_ts": upload.record.created,
                        "quarantined_by": null,
                        "safe_from_quarantine": false,
                    })
                })
                .collect();
            let mut body = json!({ "media": media, "total": total });
            if next < total {
                body["next_token"] = json!(next);
            }
            Ok(body)
        }
        .await,
    )
}

/// # `DELETE /_synapse/admin/v1/users/{userId}/media`
///
/// Deletes the page of the user's uploads the query names (all, up to `limit`).
async fn delete_of_user(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    path: std::result::Result<Path<OwnedUserId>, PathRejection>,
    query: std::result::Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let (Path(user_id), Query(query)) = (param(path)?, param(query)?);
            let (uploads, _) = page(&services, &user_id, &query)?;
            let mut deleted = Vec::new();
            for upload in uploads {
                let server = services.config.server_name.clone();
                if services.media.delete(&server, &upload.media_id).await? {
                    deleted.push(upload.media_id);
                }
            }
            Ok(json!({ "total": deleted.len(), "deleted_media": deleted }))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct PurgeQuery {
    before_ts: u64,
}

/// # `POST /_synapse/admin/v1/purge_media_cache?before_ts=…`
///
/// Other servers' media fetched before `before_ts` (ms).
async fn purge_cache(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    query: std::result::Result<Query<PurgeQuery>, QueryRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let Query(query) = param(query)?;
            let purged = services.media.purge_remote_before(query.before_ts).await?;
            Ok(json!({ "deleted": purged }))
        }
        .await,
    )
}
