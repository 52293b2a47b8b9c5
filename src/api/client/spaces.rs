//! Looking at rooms from outside: the room summary (a preview before joining) and the
//! space hierarchy.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedServerName,
    api::client::{room::get_summary, space::get_hierarchy},
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{Services, spaces::Walk},
};

/// Rooms per page of a hierarchy, unless the client asks for fewer.
const DEFAULT_LIMIT: usize = 50;
/// How deep a hierarchy goes, unless the client asks for less.
const MAX_DEPTH: usize = 10;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(summary).ruma_route(hierarchy)
}

/// # `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (and Nheko's unstable path)
///
/// What a room shows before one joins it: name, topic, avatar, alias, member count,
/// join rule. Its members see it, and anyone may see a room that is world-readable or
/// that one may join or knock on; any other room is not found, as one that does not
/// exist. A room this server is not in is asked of the servers given in `via` (and of
/// those its alias names).
async fn summary(
    services: Arc<Services>,
    request: Ruma<get_summary::v1::Request>,
) -> Result<get_summary::v1::Response> {
    let (room_id, servers) = super::membership::resolve(&services, &request.body.room_id_or_alias)
        .await
        .map_err(|_| Error::not_found("Room not found"))?;
    let via: Vec<OwnedServerName> = request.body.via.iter().cloned().chain(servers).collect();
    let user = request.sender.as_ref().map(|sender| &*sender.user_id);
    let Some(summary) = services.spaces.summary(user, &room_id, &via).await? else {
        return Err(Error::not_found("Room not found"));
    };
    let mut response = get_summary::v1::Response::new(summary);
    if let Some(user) = user {
        response.membership = services
            .rooms
            .membership(&room_id, user)?
            .map(|membership| membership.membership);
    }
    Ok(response)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
///
/// The rooms of a space, depth first, a page at a time. The token carries the walk's
/// settings with the position, so a later page that changes them is refused.
async fn hierarchy(
    services: Arc<Services>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let user = request.user_id()?;
    let body = &request.body;
    let walk = Walk {
        max_depth: body.max_depth.map_or(MAX_DEPTH, |depth| {
            u64::from(depth).min(MAX_DEPTH as u64) as usize
        }),
        suggested_only: body.suggested_only,
    };
    let limit = match body.limit.map(u64::from) {
        Some(0) => return Err(Error::invalid_param("limit must be greater than zero")),
        Some(limit) => limit.min(DEFAULT_LIMIT as u64) as usize,
        None => DEFAULT_LIMIT,
    };
    let skip = match &body.from {
        Some(token) => {
            let (skip, from) = parse_token(token)
                .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?;
            if from != walk {
                return Err(Error::invalid_param(
                    "suggested_only and max_depth cannot change on paginated requests",
                ));
            }
            skip
        }
        None => 0,
    };
    let (rooms, more) = services
        .spaces
        .hierarchy(user, &body.room_id, walk, skip, limit)
        .await?;
    let mut response = get_hierarchy::v1::Response::new();
    if more {
        response.next_batch = Some(token(skip + rooms.len(), walk));
    }
    response.rooms = rooms;
    Ok(response)
}

/// `{skip}_{max_depth}_{suggested_only}`.
fn token(skip: usize, walk: Walk) -> String {
    format!(
        "{skip}_{}_{}",
        walk.max_depth,
        u8::from(walk.suggested_only)
    )
}

fn parse_token(token: &str) -> Option<(usize, Walk)> {
    let mut parts = token.split('_');
    let skip = parts.next()?.parse().ok()?;
    let max_depth = parts.next()?.parse().ok()?;
    let suggested_only = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((
        skip,
        Walk {
            max_depth,
            suggested_only,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_carries_the_walk_it_belongs_to() {
        let walk = Walk {
            max_depth: 3,
            suggested_only: true,
        };
        assert_eq!(parse_token(&token(40, walk)), Some((40, walk)));
        for bad in ["", "x", "1_2", "1_2_3", "1_2_1_4", "-1_2_0"] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}
