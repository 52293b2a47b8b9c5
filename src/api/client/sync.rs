//! `/sync`.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::api::client::{filter::FilterDefinition, sync::sync_events};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        sync::{SyncRequest, SyncToken},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(sync)
}

/// # `GET /_matrix/client/v3/sync`
async fn sync(
    services: Arc<Services>,
    request: Ruma<sync_events::v3::Request>,
) -> Result<sync_events::v3::Response> {
    let sender = request.sender()?.clone();
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
    // A syncing client is its user being online (unless it says otherwise).
    let presence = body.set_presence.as_str();
    if presence != "offline" {
        let status_msg = services
            .presence
            .get(&sender.user_id)?
            .and_then(|record| record.status_msg);
        services.federation.presence.publish(
            &sender.user_id,
            crate::service::presence::PresenceRecord {
                presence: presence.to_owned(),
                status_msg,
                last_active_ts: crate::service::users::now_ms(),
            },
        )?;
    }
    let max = Duration::from_millis(services.config.sync_timeout_max_ms);
    let request = SyncRequest {
        since,
        filter,
        full_state: body.full_state,
        timeout: body.timeout.unwrap_or_default().min(max),
    };
    services.sync.sync(&sender, request).await
}
