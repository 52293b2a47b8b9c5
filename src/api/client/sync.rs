//! `/sync`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::Router;
use ruma::api::{
    OutgoingResponseExt,
    client::{filter::FilterDefinition, sync::sync_events},
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        sync::{SyncRequest, SyncToken, sliding},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route_json(sync).ruma_route(sliding_sync)
}

/// # `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
///
/// Simplified sliding sync (MSC4186): the room list in ranges, open rooms, extensions.
async fn sliding_sync(
    services: Arc<Services>,
    request: Ruma<sync_events::v5::Request>,
) -> Result<sync_events::v5::Response> {
    let sender = request.sender()?.clone();
    let spaces = sliding::space_filters(request.json.as_ref());
    let body = request.body;
    mark_online(&services, &sender.user_id, body.set_presence.as_str())?;
    let max = Duration::from_millis(services.config.sync_timeout_max_ms);
    let timeout = body.timeout.unwrap_or_default().min(max);
    let request = sliding::SlidingRequest {
        body,
        spaces,
        timeout,
    };
    services.sliding_sync.sync(&sender, request).await
}

/// A syncing client is its user being online (unless it says otherwise).
fn mark_online(services: &Services, user: &ruma::UserId, presence: &str) -> Result<()> {
    services.federation.presence.synced(user, presence)
}

/// # `GET /_matrix/client/v3/sync`
async fn sync(
    services: Arc<Services>,
    request: Ruma<sync_events::v3::Request>,
) -> Result<Box<RawValue>> {
    let sender = request.sender()?.clone();
    let uri = request.uri.clone();
    let body = request.body;
    let since = match &body.since {
        Some(token) => Some(
            token
                .parse::<SyncToken>()
                .map_err(|()| Error::invalid_param("Invalid since token"))?,
        ),
        None => None,
    };
    let filter = match body.filter {
        Some(sync_events::v3::Filter::FilterDefinition(definition)) => definition,
        Some(sync_events::v3::Filter::FilterId(id)) => {
            match services.filters.get(&sender.user_id, &id)? {
                Some(value) => {
                    serde_json::from_value(value).map_err(|e| Error::bad_json(e.to_string()))?
                }
                None => return Err(Error::not_found("Unknown filter")),
            }
        }
        Some(_) | None => FilterDefinition::default(),
    };
    mark_online(&services, &sender.user_id, body.set_presence.as_str())?;
    let max = Duration::from_millis(services.config.sync_timeout_max_ms);
    // MSC4222 before it was in the spec, as matrix-js-sdk asks for it.
    let unstable_state_after = uri_query_flag(&uri, UNSTABLE_USE_STATE_AFTER);
    let request = SyncRequest {
        since,
        filter,
        full_state: body.full_state,
        timeout: body.timeout.unwrap_or_default().min(max),
        use_state_after: body.use_state_after || unstable_state_after,
    };
    let response = services.sync.sync(&sender, request).await?;
    let http = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(Error::internal)?;
    let state_after_key = if unstable_state_after && !body.use_state_after {
        UNSTABLE_STATE_AFTER
    } else {
        "state_after"
    };
    with_limited(http.into_body(), state_after_key)
}

const UNSTABLE_USE_STATE_AFTER: &str = "org.matrix.msc4222.use_state_after";
const UNSTABLE_STATE_AFTER: &str = "org.matrix.msc4222.state_after";

/// Whether the request's query sets `name` to `true`.
fn uri_query_flag(uri: &http::Uri, name: &str) -> bool {
    uri.query().is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, value)| key == name && value == "true")
    })
}

type Object = BTreeMap<String, Box<RawValue>>;

fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(Error::internal)
}

/// The response with `limited` in every room's timeline, `false` included: ruma leaves
/// a `false` out, and clients and tools read it on every timeline; and each room's
/// `state_after` under the name the client asked by. Only the room and timeline
/// objects are taken apart; everything else is copied through as raw JSON.
fn with_limited(body: Vec<u8>, state_after_key: &str) -> Result<Box<RawValue>> {
    let mut top: Object = serde_json::from_slice(&body).map_err(Error::internal)?;
    if let Some(rooms) = top.get("rooms") {
        let mut rooms: Object = serde_json::from_str(rooms.get()).map_err(Error::internal)?;
        for section in ["join", "leave"] {
            let Some(list) = rooms.get(section) else {
                continue;
            };
            let mut list: BTreeMap<String, Object> =
                serde_json::from_str(list.get()).map_err(Error::internal)?;
            for room in list.values_mut() {
                if state_after_key != "state_after"
                    && let Some(state_after) = room.remove("state_after")
                {
                    room.insert(state_after_key.to_owned(), state_after);
                }
                let Some(timeline) = room.get("timeline") else {
                    continue;
                };
                let mut timeline: Object =
                    serde_json::from_str(timeline.get()).map_err(Error::internal)?;
                if !timeline.contains_key("limited") {
                    timeline.insert("limited".to_owned(), raw(&false)?);
                    room.insert("timeline".to_owned(), raw(&timeline)?);
                }
            }
            rooms.insert(section.to_owned(), raw(&list)?);
        }
        top.insert("rooms".to_owned(), raw(&rooms)?);
    }
    raw(&top)
}
