//! Thread subscriptions (MSC4306): `PUT`, `GET` and `DELETE
//! /rooms/{roomId}/thread/{threadRoot}/subscription`, and the paginated changes of all of
//! a user's subscriptions (MSC4308, `/thread_subscriptions`), which the sliding sync
//! extension points back to. Served where the configuration turns subscriptions on;
//! elsewhere they answer as unknown endpoints.

use std::sync::Arc;

use axum::{Router, http::StatusCode};
use ruma::{
    EventId, RoomId,
    api::{
        client::threads::{
            get_thread_subscription, get_thread_subscriptions_changes, subscribe_thread,
            unsubscribe_thread,
        },
        error::ErrorKind,
    },
};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services,
        rooms::{
            pdu::ClientFormat,
            relations::{THREAD, relation_of},
            visibility::{Shown, Viewer},
        },
        thread_subscriptions::{
            Asked, CHANGES_LIMIT, CHANGES_MOST, Standing, Subscribed, ThreadSubscriptions, listed,
            parse_page_token,
        },
        users::Sender,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(subscribe)
        .ruma_route(subscription)
        .ruma_route(unsubscribe)
        .ruma_route(changes)
}

fn enabled(services: &Services) -> Result<&ThreadSubscriptions> {
    services
        .thread_subscriptions
        .as_deref()
        .ok_or_else(|| Error::unrecognized(StatusCode::NOT_FOUND))
}

/// The event, when it is one of the room's that the user may see.
fn in_room(viewer: &mut Viewer<'_>, room_id: &RoomId, event_id: &EventId) -> Result<Option<Shown>> {
    Ok(viewer
        .event(event_id, ClientFormat::Full)?
        .filter(|(served, _)| served.stored.room_id == room_id))
}

/// 404 unless the thread root is an event of the room the user may see.
fn require_root(viewer: &mut Viewer<'_>, room_id: &RoomId, root: &EventId) -> Result<()> {
    match in_room(viewer, room_id, root)? {
        Some(_) => Ok(()),
        None => Err(Error::not_found(
            "No such thread root, or you may not see it",
        )),
    }
}

/// # `PUT /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRoot}/subscription`
async fn subscribe(
    services: Arc<Services>,
    request: Ruma<subscribe_thread::unstable::Request>,
) -> Result<subscribe_thread::unstable::Response> {
    let subscriptions = enabled(&services)?;
    let sender = request.sender()?;
    let body = &request.body;
    let mut viewer = viewer(&services, sender);
    require_root(&mut viewer, &body.room_id, &body.thread_root)?;
    let asked = match &body.automatic {
        None => Asked::Manual,
        Some(cause) => {
            let Some((served, event)) = in_room(&mut viewer, &body.room_id, cause)? else {
                return Err(Error::not_found(
                    "No such event for the automatic subscription, or you may not see it",
                ));
            };
            let in_thread = *cause == body.thread_root
                || event
                    .content()
                    .and_then(|content| relation_of(&content))
                    .is_some_and(|(rel_type, parent)| {
                        rel_type == THREAD && parent == body.thread_root
                    });
            if !in_thread {
                return Err(Error::new(
                    ErrorKind::NotInThread,
                    "The automatic subscription's event is not in the thread",
                ));
            }
            Asked::Automatic {
                cause: served.stored.position,
            }
        }
    };
    match subscriptions.subscribe(&sender.user_id, &body.room_id, &body.thread_root, asked)? {
        Subscribed::Changed | Subscribed::Unchanged => {
            Ok(subscribe_thread::unstable::Response::new())
        }
        Subscribed::ConflictsWithUnsubscription => Err(Error::new(
            ErrorKind::ConflictingUnsubscription,
            "You unsubscribed from this thread after the event that caused this subscription",
        )
        .with_status(StatusCode::CONFLICT)),
    }
}

/// # `GET /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRoot}/subscription`
async fn subscription(
    services: Arc<Services>,
    request: Ruma<get_thread_subscription::unstable::Request>,
) -> Result<get_thread_subscription::unstable::Response> {
    let subscriptions = enabled(&services)?;
    let sender = request.sender()?;
    let body = &request.body;
    require_root(
        &mut viewer(&services, sender),
        &body.room_id,
        &body.thread_root,
    )?;
    match subscriptions.standing(&sender.user_id, &body.room_id, &body.thread_root)? {
        Some(Standing::Subscribed { automatic }) => {
            Ok(get_thread_subscription::unstable::Response::new(automatic))
        }
        _ => Err(Error::not_found("You are not subscribed to this thread")),
    }
}

/// # `DELETE /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRoot}/subscription`
async fn unsubscribe(
    services: Arc<Services>,
    request: Ruma<unsubscribe_thread::unstable::Request>,
) -> Result<unsubscribe_thread::unstable::Response> {
    let subscriptions = enabled(&services)?;
    let sender = request.sender()?;
    let body = &request.body;
    require_root(
        &mut viewer(&services, sender),
        &body.room_id,
        &body.thread_root,
    )?;
    // Unsubscribing from a thread one does not follow changes nothing and succeeds.
    subscriptions.unsubscribe(&sender.user_id, &body.room_id, &body.thread_root)?;
    Ok(unsubscribe_thread::unstable::Response::new())
}

fn viewer<'a>(services: &'a Services, sender: &'a Sender) -> Viewer<'a> {
    Viewer::new(
        &services.rooms,
        &sender.user_id,
        sender.device_id.as_deref(),
    )
}

/// # `GET /_matrix/client/unstable/io.element.msc4308/thread_subscriptions`
///
/// Backwards only, as the proposal defines it: the newest changes first.
async fn changes(
    services: Arc<Services>,
    request: Ruma<get_thread_subscriptions_changes::unstable::Request>,
) -> Result<get_thread_subscriptions_changes::unstable::Response> {
    let subscriptions = enabled(&services)?;
    let user = request.user_id()?.to_owned();
    let body = &request.body;
    let from = match body.from.as_deref() {
        Some(token) => Some(
            parse_page_token(token).ok_or_else(|| Error::invalid_param("Unknown from token"))?,
        ),
        None => None,
    };
    let before = from.map_or(u64::MAX, |(before, _)| before);
    let after = body
        .to
        .as_deref()
        .and_then(parse_page_token)
        .map(|(to, _)| to)
        .or_else(|| from.map(|(_, after)| after))
        .unwrap_or(0);
    let limit = body
        .limit
        .map_or(CHANGES_LIMIT, |limit| u64::from(limit) as usize)
        .clamp(1, CHANGES_MOST);
    let (changes, end) = subscriptions.changes(&user, after, before, limit)?;
    let (subscribed, unsubscribed) = listed(changes);
    let mut response = get_thread_subscriptions_changes::unstable::Response::new();
    response.subscribed = subscribed;
    response.unsubscribed = unsubscribed;
    response.end = end;
    Ok(response)
}
