//! `/sync` (v3): what changed for a user between two stream positions.
//!
//! A sync token is `s{position}_{typing serial}`. The position is a global stream
//! position at or below the stream's frontier, so a token names an exact point: every
//! write below it is visible, none above it is, and a restart (which resumes above the
//! highest persisted position) never reuses one. The long-poll subscribes to the user's
//! wake-ups first, then reads, then waits.

mod room;
pub mod sliding;
pub mod token;

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use ruma::events::room::member::MembershipState;
use ruma::{
    OneTimeKeyAlgorithm, OwnedRoomId, UInt, UserId,
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::v3::{GlobalAccountData, Response, Rooms},
    },
};
use serde_json::json;

pub use self::token::SyncToken;
use crate::{
    Result,
    service::{
        account_data::AccountData, e2ee, e2ee::E2ee, presence::Presence, push::counts::Counts,
        receipts::Receipts, rooms, rooms::pdu::ClientEvent, stream::Stream, to_device::ToDevice,
        typing::Typing, users::Sender,
    },
};

/// What `/sync` reads from. It writes nothing but the acknowledgement of the to-device
/// messages a device has received.
pub struct Syncer {
    pub rooms: Arc<rooms::Rooms>,
    pub e2ee: Arc<E2ee>,
    pub presence: Arc<Presence>,
    pub account_data: Arc<AccountData>,
    pub to_device: Arc<ToDevice>,
    pub stream: Arc<Stream>,
    pub typing: Arc<Typing>,
    pub receipts: Arc<Receipts>,
    pub push_counts: Arc<Counts>,
    /// Records the delivered receipts of what a sync hands over.
    pub delivery: Arc<crate::service::delivery::Delivery>,
    /// Thread subscriptions, where they are on (the sliding sync extension).
    pub thread_subscriptions:
        Option<Arc<crate::service::thread_subscriptions::ThreadSubscriptions>>,
}

/// What a client asked of one `/sync` call.
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub filter: FilterDefinition,
    pub full_state: bool,
    pub timeout: Duration,
    /// Rooms carry the state at the end of their timeline (`state_after`), not the
    /// state at its start.
    pub use_state_after: bool,
}

/// The window one sync covers, shared by the per-room builders.
pub struct Window<'a> {
    pub sync: &'a Syncer,
    pub sender: &'a Sender,
    pub filter: &'a FilterDefinition,
    /// `None` on an initial sync.
    pub since: Option<SyncToken>,
    pub until: SyncToken,
    pub full_state: bool,
    /// Whether rooms carry `state_after` instead of `state`.
    pub use_state_after: bool,
    /// Users whose messages and invites this user does not want.
    pub ignored: HashSet<String>,
    /// Each joined room's newest event from someone else this sync hands over.
    pub handed: parking_lot::Mutex<Vec<crate::service::delivery::Handed>>,
}

impl Window<'_> {
    /// Whether an event comes from an ignored user. State events still count: the
    /// room's state must stay whole.
    pub fn is_ignored(&self, event: &ClientEvent) -> bool {
        event.state_key.is_none() && self.is_ignored_sender(&event.sender)
    }

    pub fn is_ignored_sender(&self, sender: &str) -> bool {
        self.ignored.contains(sender)
    }
}

impl Window<'_> {
    pub fn user(&self) -> &UserId {
        &self.sender.user_id
    }

    pub fn since_position(&self) -> u64 {
        self.since.map_or(0, |since| since.position)
    }
}

impl Syncer {
    /// Answers a sync, waiting up to the timeout for something new.
    pub async fn sync(&self, sender: &Sender, request: SyncRequest) -> Result<Response> {
        let deadline = tokio::time::Instant::now() + request.timeout;
        let _waiting = crate::metrics::Tracked::new(&crate::metrics::metrics().sync_waiters);
        let _syncing = (sender.device_id.as_deref())
            .map(|device| self.stream.syncing(&sender.user_id, device));
        if let (Some(since), Some(device)) = (request.since, sender.device_id.as_deref()) {
            // A token from beyond the frontier acknowledges nothing it could not have shown.
            self.to_device.acknowledge(
                &sender.user_id,
                device,
                since.to_device_received().min(self.stream.frontier()),
            )?;
        }
        loop {
            let mut wake = self.stream.subscribe(&sender.user_id);
            let until = SyncToken {
                position: self
                    .stream
                    .frontier()
                    .max(request.since.map_or(0, |s| s.position)),
                typing: self.typing.serial(),
                to_device: None,
            };
            let window = Window {
                sync: self,
                sender,
                filter: &request.filter,
                since: request.since,
                until,
                full_state: request.full_state,
                use_state_after: request.use_state_after,
                ignored: self.account_data.ignored_users(&sender.user_id)?,
                handed: Default::default(),
            };
            // Boxed: a held long-poll keeps this future alive, and without the box it would
            // reserve room for the whole response-building state while it only waits.
            let response = Box::pin(build(&window)).await?;
            let has_news = !response.rooms.is_empty()
                || !response.account_data.events.is_empty()
                || !response.presence.events.is_empty()
                || !response.to_device.events.is_empty()
                || !response.device_lists.is_empty();
            if has_news || request.since.is_none() || request.full_state {
                let handed = std::mem::take(&mut *window.handed.lock());
                self.delivery.record_handed(&sender.user_id, handed);
                return Ok(response);
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return Ok(response);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(response),
            }
        }
    }
}

/// Presence changes in the window of the people the user shares a room with (on an
/// initial sync, everyone's known presence), the user included.
fn presence(window: &Window<'_>) -> Result<ruma::api::client::sync::sync_events::v3::Presence> {
    let sync = window.sync;
    let mut out = ruma::api::client::sync::sync_events::v3::Presence::new();
    if !super::filters::allows_kind(&window.filter.presence, "m.presence")
        || window.filter.presence.limit == Some(UInt::MIN)
    {
        return Ok(out);
    }
    // Incremental syncs, the common case, read the change stream first: most windows
    // hold no change, and a change is checked against the user's rooms one key each.
    let users: Vec<ruma::OwnedUserId> = match window.since {
        Some(since) => {
            let changed = sync
                .presence
                .changed(since.position, window.until.position)?;
            if changed.is_empty() {
                return Ok(out);
            }
            let rooms = sync.rooms.joined_rooms(window.user())?;
            let mut shared = Vec::new();
            for user in changed {
                if user == window.user() || sync.rooms.joined_any(&rooms, &user)? {
                    shared.push(user);
                }
            }
            shared
        }
        None => {
            let mut users = sync.rooms.shared_audience(window.user())?.users;
            if !users.iter().any(|user| user == window.user()) {
                users.push(window.user().to_owned());
            }
            users
        }
    };
    for user in users {
        if let Some(record) = sync.presence.get(&user)? {
            out.events.push(crate::json::raw(json!({
                "type": "m.presence",
                "sender": user,
                "content": record.content(),
            })));
        }
    }
    Ok(out)
}

async fn build(window: &Window<'_>) -> Result<Response> {
    let sync = window.sync;
    let user = window.user();
    let mut response = Response::new(window.until.to_string());
    let mut rooms = Rooms::new();

    let changed: Vec<OwnedRoomId> = match window.since {
        Some(since) => {
            sync.rooms
                .membership_changes(user, since.position, window.until.position)?
        }
        None => Vec::new(),
    };
    let room_filter = &window.filter.room;
    let account_data =
        sync.account_data
            .changes_since(user, window.since_position(), window.until.position)?;
    let mut room_account_data: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    let mut global_account_data = Vec::new();
    for (room_id, event_type, content) in account_data {
        match room_id {
            Some(room_id) => room_account_data
                .entry(room_id)
                .or_default()
                .push((event_type, content)),
            None => global_account_data.push(json!({ "type": event_type, "content": content })),
        }
    }

    let candidates = match window.since {
        Some(since) if !window.full_state => {
            rooms_to_visit(window, since, &changed, &room_account_data)?
        }
        _ => None,
    };
    let candidates = match candidates {
        Some(candidates) => candidates,
        None => sync.rooms.user_rooms(user)?,
    };
    for (room_id, membership) in candidates {
        if room_filter.not_rooms.contains(&room_id)
            || room_filter
                .rooms
                .as_ref()
                .is_some_and(|rooms| !rooms.contains(&room_id))
        {
            continue;
        }
        let membership_changed = window.since.is_none() || changed.contains(&room_id);
        let account_data = room_account_data
            .remove(room_id.as_str())
            .unwrap_or_default();
        match membership.membership {
            MembershipState::Join => {
                if let Some(joined) =
                    room::joined(window, &room_id, &membership, account_data).await?
                {
                    rooms.join.insert(room_id, joined);
                }
            }
            MembershipState::Invite if membership_changed => {
                if let Some(invited) = room::invited(window, &room_id, &membership)? {
                    rooms.invite.insert(room_id.clone(), invited);
                }
            }
            MembershipState::Knock if membership_changed => {
                if let Some(knocked) = room::knocked(window, &room_id, &membership)? {
                    rooms.knock.insert(room_id.clone(), knocked);
                }
            }
            MembershipState::Leave | MembershipState::Ban
                if membership_changed && (window.since.is_some() || room_filter.include_leave) =>
            {
                if let Some(left) = room::left(window, &room_id, &membership)? {
                    rooms.leave.insert(room_id, left);
                }
            }
            _ => {}
        }
    }
    response.rooms = rooms;
    let mut global = GlobalAccountData::new();
    global.events = global_account_data
        .into_iter()
        .map(crate::json::raw)
        .collect();
    response.account_data = global;
    response.presence = presence(window)?;
    encryption(window, &mut response)?;
    Ok(response)
}

/// The rooms an incremental sync must look at, with the user's membership: those whose
/// timeline or receipts moved, whose typing changed, whose account data changed, and
/// where the user's membership did. `None` when the change index does not reach back to
/// `since` (a token from before a restart): then every room of the user.
fn rooms_to_visit(
    window: &Window<'_>,
    since: SyncToken,
    membership_changed: &[OwnedRoomId],
    account_data: &BTreeMap<String, Vec<(String, serde_json::Value)>>,
) -> Result<Option<Vec<(OwnedRoomId, rooms::Membership)>>> {
    let sync = window.sync;
    let Some(mut rooms) = sync.rooms.changed_since(since.position) else {
        return Ok(None);
    };
    rooms.extend(sync.typing.rooms_changed_since(since.typing));
    rooms.extend(membership_changed.iter().cloned());
    rooms.extend(
        account_data
            .keys()
            .filter_map(|room_id| OwnedRoomId::try_from(room_id.as_str()).ok()),
    );
    rooms.sort_unstable();
    rooms.dedup();
    let mut out = Vec::with_capacity(rooms.len());
    for room_id in rooms {
        if let Some(membership) = sync.rooms.membership(&room_id, window.user())? {
            out.push((room_id, membership));
        }
    }
    Ok(Some(out))
}

/// The end-to-end encryption parts: to-device messages, whose devices changed, and the
/// device's key counts.
fn encryption(window: &Window<'_>, response: &mut Response) -> Result<()> {
    let sync = window.sync;
    let user = window.user();
    if let Some(since) = window.since {
        let delta = e2ee::device_lists::delta(
            &sync.e2ee,
            &sync.rooms,
            user,
            since.position,
            window.until.position,
        )?;
        response.device_lists.changed = delta.changed;
        response.device_lists.left = delta.left;
    }
    // An application service acting without a device has no messages or keys of its own.
    let Some(device) = window.sender.device_id.as_deref() else {
        return Ok(());
    };
    let (events, cut) = sync
        .to_device
        .pending(user, device, window.until.position)?;
    response.to_device.events = events.into_iter().map(crate::json::raw).collect();
    if cut.is_some() {
        response.next_batch = SyncToken {
            to_device: cut,
            ..window.until
        }
        .to_string();
    }
    let (counts, fallback) = key_counts(sync, user, device)?;
    response.device_one_time_keys_count = counts;
    response.device_unused_fallback_key_types = Some(fallback);
    Ok(())
}

/// A device's one-time key counts (signed curve25519 always there, 0 when none) and the
/// algorithms of its unused fallback keys.
pub(crate) fn key_counts(
    sync: &Syncer,
    user: &UserId,
    device: &ruma::DeviceId,
) -> Result<(
    BTreeMap<OneTimeKeyAlgorithm, UInt>,
    Vec<OneTimeKeyAlgorithm>,
)> {
    let mut counts = BTreeMap::from([(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN)]);
    for (algorithm, count) in sync.e2ee.one_time_key_counts(user, device)? {
        counts.insert(
            OneTimeKeyAlgorithm::from(algorithm.as_str()),
            UInt::try_from(count).unwrap_or(UInt::MAX),
        );
    }
    let fallback = sync
        .e2ee
        .unused_fallback_types(user, device)?
        .iter()
        .map(|algorithm| OneTimeKeyAlgorithm::from(algorithm.as_str()))
        .collect();
    Ok((counts, fallback))
}
