//! Simplified sliding sync (MSC4186): the room list as the client shows it (lists of
//! rooms sorted by activity, of which the client asks ranges), rooms it has open
//! (subscriptions), and extensions (to-device, encryption, account data, receipts,
//! typing). Each connection remembers what it was sent (`connections.rs`), so a
//! response carries only what changed; the rooms to look at come from the stream's
//! change index, so a response costs what changed, not the number of rooms.

mod connections;
mod extensions;
mod lists;
mod required;
mod room;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::{
    OwnedRoomId, RoomId, UInt,
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::v5::{Request, Response, response},
    },
};

pub use self::{connections::Connections, lists::space_filters};
use self::{
    connections::{ConnKey, Delta, Memberships, SentRoom, Start},
    extensions::Since,
    lists::{FilterFacts, ListedRoom},
    room::{RoomConfig, RoomInputs},
};
use super::{SyncToken, Syncer, Window};
use crate::{Result, service::users::Sender};

/// What a client asked of one sliding sync call.
pub struct SlidingRequest {
    pub body: Request,
    /// Each list's `spaces` filter (ruma's request type has no field for it).
    pub spaces: BTreeMap<String, Vec<OwnedRoomId>>,
    pub timeout: Duration,
}

pub struct SlidingSync {
    sync: Arc<Syncer>,
    connections: Connections,
}

impl SlidingSync {
    pub fn new(sync: Arc<Syncer>, connections: Connections) -> Self {
        Self { sync, connections }
    }

    /// Forgets connections unused for a week.
    pub fn expire_connections(&self) -> Result<usize> {
        self.connections.expire()
    }

    /// Answers a request, waiting up to its timeout for something new.
    pub async fn sync(&self, sender: &Sender, request: SlidingRequest) -> Result<Response> {
        let _waiting = crate::metrics::Tracked::new(&crate::metrics::metrics().sync_waiters);
        let key = ConnKey {
            user: sender.user_id.clone(),
            device: sender.txn_scope(),
            conn_id: request.body.conn_id.clone().unwrap_or_default(),
        };
        let start = self.connections.start(key, request.body.pos.as_deref())?;
        let deadline = tokio::time::Instant::now() + request.timeout;
        let _syncing = (sender.device_id.as_deref())
            .map(|device| self.sync.stream.syncing(&sender.user_id, device));
        let ignored = self.sync.account_data.ignored_users(&sender.user_id)?;
        let filter = FilterDefinition::default();
        loop {
            let mut wake = self.sync.stream.subscribe(&sender.user_id);
            let until = SyncToken {
                position: self.sync.stream.frontier().max(start.state.position),
                typing: self.sync.typing.serial(),
                to_device: None,
            };
            let window = Window {
                sync: &self.sync,
                sender,
                filter: &filter,
                since: None,
                until,
                full_state: false,
                use_state_after: false,
                ignored: ignored.clone(),
                handed: Default::default(),
            };
            let (mut response, delta, news) =
                Box::pin(build(&window, &request, &start, &self.connections)).await?;
            let expired = tokio::time::Instant::now() >= deadline;
            if news || start.fresh || expired {
                let handed = std::mem::take(&mut *window.handed.lock());
                self.sync.delivery.record_handed(&sender.user_id, handed);
                response.pos = self.connections.finish(&start, delta)?.to_string();
                response.txn_id = request.body.txn_id.clone();
                return Ok(response);
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return Ok(response);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// The response for the window `(state.position, until]`, the change it makes to the
/// connection, and whether it holds news.
async fn build(
    window: &Window<'_>,
    request: &SlidingRequest,
    start: &Start,
    connections: &Connections,
) -> Result<(Response, Delta, bool)> {
    let (state, fresh) = (&*start.state, start.fresh);
    let sync = window.sync;
    let user = window.user();
    let body = &request.body;
    let since_position = (!fresh).then_some(state.position);
    let changed: Option<HashSet<OwnedRoomId>> = match since_position {
        Some(position) => sync
            .rooms
            .changed_since(position)
            .map(|rooms| rooms.into_iter().collect()),
        None => None,
    };

    // The lists: each one's rooms in order, and the rooms in its ranges.
    let memberships = memberships(window, start, connections)?;
    let all = lists::user_rooms(sync, &memberships.rooms, since_position)?;
    let mut facts = FilterFacts::new(sync, user);
    let mut response = Response::new(String::new());
    let mut delta = Delta {
        position: window.until.position,
        typing: window.until.typing,
        ..Delta::default()
    };
    // Subscriptions: rooms the client has open, whether or not in a list's range.
    let mut subscribed: Vec<(ListedRoom, RoomConfig)> = Vec::new();
    for (room_id, subscription) in &body.room_subscriptions {
        let listed = match all.iter().find(|listed| &listed.room_id == room_id) {
            Some(listed) => listed.clone(),
            None => match sync.rooms.membership(room_id, user)? {
                // A room left long ago, still open in the client.
                Some(membership) => ListedRoom {
                    room_id: room_id.clone(),
                    bump: membership.position,
                    membership,
                },
                None => continue,
            },
        };
        let config = RoomConfig::of(subscription.timeline_limit, &subscription.required_state);
        subscribed.push((listed, config));
    }
    // Each room in the window: its config, the lists it is in, whether subscribed.
    let mut in_window: HashMap<&RoomId, InWindow<'_>> = HashMap::new();
    let mut news = false;
    for (name, list) in &body.lists {
        let in_spaces = match request.spaces.get(name) {
            Some(spaces) => Some(facts.space_children(spaces)?),
            None => None,
        };
        let mut members = Vec::new();
        for listed in &all {
            let passes = match &list.filters {
                Some(filters) => facts.passes(listed, filters, in_spaces.as_ref())?,
                None => in_spaces
                    .as_ref()
                    .is_none_or(|children| children.contains(&listed.room_id)),
            };
            if passes {
                members.push(listed);
            }
        }
        let count = members.len() as u64;
        news |= state.lists.get(name) != Some(&count);
        delta.lists.insert(name.clone(), count);
        response.lists.insert(name.clone(), list_count(count));
        let config = RoomConfig::of(
            list.room_details.timeline_limit,
            &list.room_details.required_state,
        );
        for index in lists::in_ranges(&list.ranges, members.len()) {
            let listed = members[index];
            in_window
                .entry(&listed.room_id)
                .and_modify(|entry| entry.config.merge(&config))
                .or_insert_with(|| InWindow::new(listed, config.clone()))
                .lists
                .push(name);
        }
    }
    for (listed, config) in &subscribed {
        in_window
            .entry(&listed.room_id)
            .and_modify(|entry| entry.config.merge(config))
            .or_insert_with(|| InWindow::new(listed, config.clone()))
            .subscribed = true;
    }

    // The rooms: whole when new to the connection, else what changed.
    let mut initial_rooms = HashSet::new();
    for (room_id, entry) in &in_window {
        let prior = if fresh {
            None
        } else {
            state.rooms.get(*room_id)
        };
        if let Some(prior) = prior
            && entry.unchanged_since(prior, state.position, changed.as_ref())
        {
            continue;
        }
        let inputs = RoomInputs {
            listed: entry.listed,
            config: &entry.config,
            prior,
            prior_required: prior
                .and_then(|prior| state.required_sets.get(&prior.required))
                .map(|set| &**set),
            position: since_position.unwrap_or(0),
            changed: changed.as_ref(),
        };
        let (room, sent) = room::build(window, inputs).await?;
        if let Some(room) = room {
            if room.initial == Some(true) {
                initial_rooms.insert((*room_id).to_owned());
            }
            response.rooms.insert((*room_id).to_owned(), room);
        }
        if prior != Some(&sent) {
            if !state.required_sets.contains_key(&sent.required)
                && !delta
                    .required_sets
                    .iter()
                    .any(|(id, _)| *id == sent.required)
            {
                let set = entry.config.required.entries.clone();
                delta.required_sets.push((sent.required, set));
            }
            delta.rooms.push(((*room_id).to_owned(), Some(sent)));
        }
    }
    // Rooms that left the window: the client has them up to the connection's position.
    if !fresh {
        for (room_id, sent) in &state.rooms {
            if sent.since.is_none() && !in_window.contains_key::<RoomId>(room_id) {
                let parked = SentRoom {
                    since: Some(state.position),
                    ..sent.clone()
                };
                delta.rooms.push((room_id.clone(), Some(parked)));
            }
        }
    }
    news |= !response.rooms.is_empty();

    // Extensions, over the rooms of the window they name.
    let since = Since {
        position: since_position,
        typing: if fresh { 0 } else { state.typing },
        initial_rooms,
    };
    let asked = &body.extensions;
    let mut extensions = response::Extensions::default();
    extensions.to_device = extensions::to_device(window, &asked.to_device)?;
    extensions.e2ee = extensions::e2ee(window, &asked.e2ee, &since)?;
    let coverage = |lists, rooms| extensions::Coverage::new(lists, rooms, &in_window);
    extensions.account_data = extensions::account_data(
        window,
        &asked.account_data,
        &since,
        &coverage(&asked.account_data.lists, &asked.account_data.rooms),
    )?;
    extensions.receipts = extensions::receipts(
        window,
        &asked.receipts,
        &since,
        &coverage(&asked.receipts.lists, &asked.receipts.rooms),
        changed.as_ref(),
    )?;
    extensions.typing = extensions::typing(
        window,
        &asked.typing,
        &since,
        &coverage(&asked.typing.lists, &asked.typing.rooms),
    )?;
    extensions.thread_subscriptions =
        extensions::thread_subscriptions(window, &asked.thread_subscriptions, &since)?;
    news |= extensions::has_news(&extensions);
    response.extensions = extensions;
    Ok((response, delta, news))
}

/// The user's rooms and memberships: as the connection last read them while the user's
/// membership has not changed since, else read again.
fn memberships(
    window: &Window<'_>,
    start: &Start,
    connections: &Connections,
) -> Result<Arc<Memberships>> {
    let sync = window.sync;
    let until = window.until.position;
    if let Some(known) = connections.memberships(start)
        && known.as_of <= until
        && sync
            .rooms
            .membership_changes(window.user(), known.as_of, until)?
            .is_empty()
    {
        return Ok(known);
    }
    // Read after `until` was: a change above it read now only makes the next check
    // read again.
    let read = Arc::new(Memberships {
        as_of: until,
        rooms: sync.rooms.user_rooms(window.user())?,
    });
    connections.keep_memberships(start, read.clone());
    Ok(read)
}

/// A room in the client's window: in a list's ranges or subscribed.
pub struct InWindow<'a> {
    listed: &'a ListedRoom,
    config: RoomConfig,
    /// The lists whose ranges hold it.
    lists: Vec<&'a str>,
    subscribed: bool,
}

impl<'a> InWindow<'a> {
    fn new(listed: &'a ListedRoom, config: RoomConfig) -> Self {
        Self {
            listed,
            config,
            lists: Vec::new(),
            subscribed: false,
        }
    }

    /// Whether the client already has all of this room: live, sent as asked now, and
    /// nothing in it (nor the user's membership) moved since the connection's position.
    fn unchanged_since(
        &self,
        prior: &SentRoom,
        position: u64,
        changed: Option<&HashSet<OwnedRoomId>>,
    ) -> bool {
        prior.since.is_none()
            && prior.timeline_limit == self.config.timeline_limit
            && prior.required == self.config.required_id
            && self.listed.membership.position <= position
            && changed.is_some_and(|changed| !changed.contains(&self.listed.room_id))
    }
}

fn list_count(count: u64) -> response::List {
    let mut list = response::List::default();
    list.count = UInt::new(count).unwrap_or(UInt::MAX);
    list
}
