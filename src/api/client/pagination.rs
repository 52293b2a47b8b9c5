//! `/messages`: paging through a room's timeline and, below it, the history from
//! before this server joined, fetched from the room's other servers when a client pages
//! back past what is stored (`service/rooms/history.rs`).

use std::{collections::BTreeSet, sync::Arc};

use axum::Router;
use ruma::{
    EventId, OwnedEventId, RoomId,
    api::{
        Direction,
        client::{message::get_message_events, room::get_event_by_timestamp},
    },
    events::AnyTimelineEvent,
    serde::Raw,
};

use super::events::parse_token;
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::{
        Services, filters,
        rooms::{
            pdu::{ClientEvent, ClientFormat},
            visibility::Viewer,
        },
        users::Sender,
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(messages).ruma_route(timestamp_to_event)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
///
/// The event closest to a time, in the direction asked, among those the user may see
/// (to jump to a date in the timeline).
async fn timestamp_to_event(
    services: Arc<Services>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if !services
        .rooms
        .can_see_room(&body.room_id, &sender.user_id)?
    {
        return Err(Error::forbidden("You may not see this room"));
    }
    let forwards = body.dir == Direction::Forward;
    let found = services
        .rooms
        .event_near(&body.room_id, body.ts, forwards)?;
    let Some((event_id, time)) = found else {
        return Err(Error::not_found("No event was found in that direction"));
    };
    let visible = services.rooms.visible_event(
        &sender.user_id,
        sender.device_id.as_deref(),
        &event_id,
        ClientFormat::Full,
    )?;
    if visible.is_none() {
        return Err(Error::not_found(
            "No event you may see was found in that direction",
        ));
    }
    Ok(get_event_by_timestamp::v1::Response::new(event_id, time))
}

/// A pagination token: a boundary in the timeline, "after position p", or in the
/// history below it, "just older than history entry n" (`History(0)` lies between the
/// history and the timeline). Timeline tokens are the numbers sync hands out;
/// history tokens are written `h<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boundary {
    Live(u64),
    History(u64),
}

impl Boundary {
    fn parse(token: &str) -> Result<Self> {
        match token.strip_prefix('h') {
            Some(seq) => seq
                .parse()
                .map(Self::History)
                .map_err(|_| Error::invalid_param("Invalid pagination token")),
            None => parse_token(token).map(Self::Live),
        }
    }

    fn token(self) -> String {
        match self {
            Self::Live(position) => position.to_string(),
            Self::History(seq) => format!("h{seq}"),
        }
    }

    /// Where the boundary lies in one order of events and boundaries: history seq `s`
    /// at `-2s+1`, timeline position `p` at `2p`.
    fn key(self) -> i128 {
        match self {
            Self::Live(position) => 2 * i128::from(position) + 1,
            Self::History(seq) => -2 * i128::from(seq),
        }
    }
}

/// An event on the walk, with the boundary just past it in the walk's direction.
struct Step {
    event_id: OwnedEventId,
    past: Boundary,
    key: i128,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(
    services: Arc<Services>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let room_id = &body.room_id;
    let membership = services.rooms.membership(room_id, &sender.user_id)?;
    if membership.is_none() && !services.rooms.can_see_room(room_id, &sender.user_id)? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let forwards = body.dir == Direction::Forward;
    let frontier = services.stream.frontier();
    let from = match &body.from {
        Some(token) => Boundary::parse(token)?,
        None if forwards => Boundary::History(u64::MAX),
        None => Boundary::Live(frontier),
    };
    let to = match &body.to {
        Some(token) => match Boundary::parse(token)? {
            Boundary::Live(position) => Boundary::Live(position.min(frontier)),
            history => history,
        },
        None if forwards => Boundary::Live(frontier),
        None => Boundary::History(u64::MAX),
    };
    let page = walk(&services, sender, body, (from, to)).await?;
    let mut state = Vec::new();
    if !body.filter.lazy_load_options.is_disabled() {
        let current = services.rooms.current_state(room_id)?;
        for member in &page.senders {
            if let Some(event_id) = current.get(&("m.room.member".to_owned(), member.clone()))
                && let Some(pdu) = services.rooms.pdu(event_id)?
            {
                let member = pdu.to_client(event_id, ClientFormat::Full, None, None);
                state.push(member.into_raw());
            }
        }
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = body.from.clone().unwrap_or_else(|| from.token());
    response.end = page.end;
    response.chunk = page.chunk;
    response.state = state;
    Ok(response)
}

/// One page of `/messages`.
struct Page {
    chunk: Vec<Raw<AnyTimelineEvent>>,
    /// The senders of the chunk's events (for lazy-loaded members).
    senders: BTreeSet<String>,
    /// The token after the last event, unless the walk reached the room's start or end.
    end: Option<String>,
}

/// Walks the room from `from` towards `to` in pages, skipping what the viewer may not
/// see, what the filter leaves out and what ignored users sent, until the request's
/// limit is reached.
async fn walk(
    services: &Services,
    sender: &Sender,
    body: &get_message_events::v3::Request,
    (from, to): (Boundary, Boundary),
) -> Result<Page> {
    let forwards = body.dir == Direction::Forward;
    let limit = usize::try_from(u64::from(body.limit))
        .unwrap_or(10)
        .clamp(1, 1000);
    let ignored = services.account_data.ignored_users(&sender.user_id)?;
    // State events still count: the room's state must stay whole.
    let from_ignored =
        |event: &ClientEvent| event.state_key.is_none() && ignored.contains(&event.sender);
    let mut viewer = Viewer::new(
        &services.rooms,
        &sender.user_id,
        sender.device_id.as_deref(),
    );
    let mut page = Page {
        chunk: Vec::new(),
        senders: BTreeSet::new(),
        end: None,
    };
    let beyond = |key: i128| {
        if forwards {
            key >= to.key()
        } else {
            key <= to.key()
        }
    };
    let mut cursor = from;
    loop {
        let steps = next_steps(services, &body.room_id, cursor, forwards, limit).await?;
        let exhausted = steps.len() < limit;
        let ids: Vec<&EventId> = steps.iter().map(|step| &*step.event_id).collect();
        let shown = viewer.events(&ids, ClientFormat::Full)?;
        for (step, shown) in steps.iter().zip(shown) {
            if beyond(step.key) {
                return Ok(page);
            }
            cursor = step.past;
            let Some((_, event)) = shown else {
                continue;
            };
            if !filters::allows_event(&body.filter, &event) || from_ignored(&event) {
                continue;
            }
            page.senders.insert(event.sender.clone());
            page.chunk.push(event.into_raw());
            if page.chunk.len() >= limit {
                page.end = Some(cursor.token());
                return Ok(page);
            }
        }
        if exhausted {
            // The start (or end) of the room: `end` is left out, as the spec asks.
            return Ok(page);
        }
    }
}

/// The next `limit` events past `cursor`: the timeline and the history below it as one
/// sequence. Going back past the stored history fetches more from other servers.
async fn next_steps(
    services: &Services,
    room_id: &RoomId,
    cursor: Boundary,
    forwards: bool,
    limit: usize,
) -> Result<Vec<Step>> {
    let rooms = &services.rooms;
    let live = |position: u64, event_id: OwnedEventId| Step {
        event_id,
        past: Boundary::Live(if forwards { position } else { position - 1 }),
        key: 2 * i128::from(position),
    };
    let history = |seq: u64, event_id: OwnedEventId| Step {
        event_id,
        past: Boundary::History(if forwards { seq - 1 } else { seq }),
        key: -2 * i128::from(seq) + 1,
    };
    let mut steps: Vec<Step> = Vec::new();
    match (cursor, forwards) {
        (Boundary::Live(position), true) => {
            let frontier = services.stream.frontier();
            for (position, id) in rooms.timeline(room_id, position, frontier, true, limit)? {
                steps.push(live(position, id));
            }
        }
        (Boundary::History(seq), true) => {
            for (seq, id) in rooms.history_forward(room_id, seq, limit)? {
                steps.push(history(seq, id));
            }
            if steps.len() < limit {
                let frontier = services.stream.frontier();
                let rest = limit - steps.len();
                for (position, id) in rooms.timeline(room_id, 0, frontier, true, rest)? {
                    steps.push(live(position, id));
                }
            }
        }
        (Boundary::Live(position), false) => {
            // `Rooms::timeline` takes an exclusive starting bound.
            for (position, id) in
                rooms.timeline(room_id, position.saturating_add(1), 0, false, limit)?
            {
                steps.push(live(position, id));
            }
            if steps.len() < limit {
                for (seq, id) in older_history(services, room_id, 0, limit - steps.len()).await? {
                    steps.push(history(seq, id));
                }
            }
        }
        (Boundary::History(seq), false) => {
            for (seq, id) in older_history(services, room_id, seq, limit).await? {
                steps.push(history(seq, id));
            }
        }
    }
    Ok(steps)
}

/// History entries older than `seq`, fetching more from other servers while fewer than
/// `limit` are stored and more are to be had.
async fn older_history(
    services: &Services,
    room_id: &RoomId,
    seq: u64,
    limit: usize,
) -> Result<Vec<(u64, OwnedEventId)>> {
    loop {
        let stored = services.rooms.history_back(room_id, seq, limit)?;
        if stored.len() >= limit || !services.config.federation.enabled {
            return Ok(stored);
        }
        let wanted = limit - stored.len();
        if services
            .federation
            .receiver
            .backfill(room_id, wanted)
            .await?
            == 0
        {
            return services.rooms.history_back(room_id, seq, limit);
        }
    }
}
