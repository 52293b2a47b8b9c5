//! User directory search: local users who share a room with the searcher or are in a
//! public room, matched on user id and display name.

use std::{collections::HashSet, sync::Arc};

use axum::Router;
use ruma::api::client::user_directory::search_users;
use ruma::events::room::member::MembershipState;

use crate::{
    Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(search)
}

/// # `POST /_matrix/client/v3/user_directory/search`
async fn search(
    services: Arc<Services>,
    request: Ruma<search_users::v3::Request>,
) -> Result<search_users::v3::Response> {
    let searcher = request.user_id()?;
    let term = request.body.search_term.to_lowercase();
    let limit = usize::try_from(u64::from(request.body.limit))
        .unwrap_or(10)
        .min(1000);

    let mut visible = HashSet::new();
    let public: HashSet<_> = services.rooms.public_rooms()?.into_iter().collect();
    for (room_id, membership) in services.rooms.user_rooms(searcher)? {
        if membership.membership == MembershipState::Join {
            visible.extend(
                services
                    .rooms
                    .members_with(&room_id, MembershipState::Join)?,
            );
        }
    }
    for room_id in &public {
        visible.extend(
            services
                .rooms
                .members_with(room_id, MembershipState::Join)?,
        );
    }
    let mut matches = Vec::new();
    let mut candidates: Vec<_> = visible.into_iter().collect();
    candidates.sort();
    for user_id in candidates {
        if !services.users.is_active(&user_id)? {
            continue;
        }
        let display_name = services.users.displayname(&user_id)?;
        let hit = user_id.as_str().to_lowercase().contains(&term)
            || display_name
                .as_deref()
                .is_some_and(|name| name.to_lowercase().contains(&term));
        if hit {
            let mut user = search_users::v3::User::new(user_id.clone());
            user.display_name = display_name;
            user.avatar_url = services.users.avatar_url(&user_id)?.map(Into::into);
            matches.push(user);
        }
    }
    let limited = matches.len() > limit;
    matches.truncate(limit);
    Ok(search_users::v3::Response::new(matches, limited))
}
