//! The events a fake server knows, and the endpoints that serve them to other servers:
//! `get_missing_events`, `state_ids`, `event` and `event_auth`. It knows every event it
//! signed and every event a `send_join` answer taught it. It knows the state before its
//! joins (the state `send_join` answered) and before any event that leads back to one
//! of them through single prev events; the state before an event with several prev
//! events would need state resolution, which it does not do, and it answers 404.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};

use super::now_ms;

/// A room's state: the event id of each `(type, state_key)`.
pub(super) type StateMap = BTreeMap<(String, String), String>;

/// How many events `get_missing_events` returns when the request names no limit.
const DEFAULT_LIMIT: u64 = 10;

/// The events a fake server knows, by id, and the state before those whose state it
/// was told.
#[derive(Default)]
pub(super) struct History {
    pdus: HashMap<String, Value>,
    state_before: HashMap<String, StateMap>,
}

impl History {
    /// Keeps an event under its id.
    pub(super) fn insert(&mut self, event_id: &str, pdu: &Value) {
        self.pdus.insert(event_id.to_owned(), pdu.clone());
    }

    /// The event `event_id`, if known.
    pub(super) fn get(&self, event_id: &str) -> Option<&Value> {
        self.pdus.get(event_id)
    }

    /// Records the state before an event (a join, as `send_join` answered it).
    pub(super) fn set_state_before(&mut self, event_id: &str, state: StateMap) {
        self.state_before.insert(event_id.to_owned(), state);
    }

    /// The event `event_id` if it is known and of the room `room_id`.
    fn pdu_in_room(&self, room_id: &str, event_id: &str) -> Option<&Value> {
        self.pdus
            .get(event_id)
            .filter(|pdu| in_room(pdu, room_id, event_id))
    }

    /// The state before an event: told, or walked forward from the nearest event whose
    /// state was told through single prev events.
    fn state_before(&self, event_id: &str) -> Option<StateMap> {
        // The prev events between the event and the base, newest first.
        let mut walked = Vec::new();
        let mut current = event_id.to_owned();
        let mut state = loop {
            if let Some(state) = self.state_before.get(&current) {
                break state.clone();
            }
            let prev = match prev_events(self.pdus.get(&current)?).as_slice() {
                [prev] => prev.clone(),
                _ => return None,
            };
            walked.push(prev.clone());
            current = prev;
        };
        for id in walked.iter().rev() {
            let pdu = self.pdus.get(id)?;
            if let (Some(kind), Some(state_key)) = (pdu["type"].as_str(), pdu["state_key"].as_str())
            {
                state.insert((kind.to_owned(), state_key.to_owned()), id.clone());
            }
        }
        Some(state)
    }

    /// The known events reachable through auth events from `from` (not `from` itself,
    /// unless one of them authorises another).
    fn auth_chain<'a>(&self, from: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        let mut queue: Vec<String> = from
            .into_iter()
            .filter_map(|id| self.pdus.get(id))
            .flat_map(auth_events)
            .collect();
        let mut chain = BTreeSet::new();
        while let Some(id) = queue.pop() {
            let Some(pdu) = self.pdus.get(&id) else {
                continue;
            };
            if chain.insert(id) {
                queue.extend(auth_events(pdu));
            }
        }
        chain
    }

    /// The events of a breadth-first walk through prev events from `latest` (which are
    /// not returned), skipping `earliest` and what lies behind it and events below
    /// `min_depth`, at most `limit`, oldest first.
    fn missing_events(
        &self,
        room_id: &str,
        earliest: &HashSet<String>,
        latest: &[String],
        limit: usize,
        min_depth: u64,
    ) -> Vec<Value> {
        let mut queue: VecDeque<String> = latest
            .iter()
            .filter_map(|id| self.pdu_in_room(room_id, id))
            .flat_map(prev_events)
            .collect();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            if found.len() >= limit {
                break;
            }
            if earliest.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some(pdu) = self.pdu_in_room(room_id, &id) else {
                continue;
            };
            let depth = pdu["depth"].as_u64().unwrap_or(0);
            if depth < min_depth {
                continue;
            }
            queue.extend(prev_events(pdu));
            found.push((depth, pdu.clone()));
        }
        found.sort_by_key(|(depth, _)| *depth);
        found.into_iter().map(|(_, pdu)| pdu).collect()
    }
}

/// The routes that serve `history` to other servers, as `server_name`.
pub(super) fn routes(history: Arc<Mutex<History>>, server_name: String) -> Router {
    Router::new()
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(missing_events),
        )
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(state_ids))
        .route("/_matrix/federation/v1/event/{event_id}", get(event))
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(event_auth),
        )
        .with_state(Arc::new(Served {
            history,
            server_name,
        }))
}

/// What the read endpoints share.
struct Served {
    history: Arc<Mutex<History>>,
    server_name: String,
}

impl Served {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().expect("the history")
    }
}

type Answer = (StatusCode, Json<Value>);

fn ok(body: Value) -> Answer {
    (StatusCode::OK, Json(body))
}

fn error(status: StatusCode, errcode: &str, message: &str) -> Answer {
    (
        status,
        Json(json!({ "errcode": errcode, "error": message })),
    )
}

fn not_found(message: &str) -> Answer {
    error(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn missing_events(
    State(served): State<Arc<Served>>,
    Path(room_id): Path<String>,
    body: Bytes,
) -> Answer {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "The body is not JSON",
        );
    };
    let list = |field: &str| -> Option<Vec<String>> {
        body[field]
            .as_array()?
            .iter()
            .map(|id| id.as_str().map(str::to_owned))
            .collect()
    };
    let (Some(earliest), Some(latest)) = (list("earliest_events"), list("latest_events")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "earliest_events and latest_events must be lists of event ids",
        );
    };
    let limit = body["limit"].as_u64().unwrap_or(DEFAULT_LIMIT);
    let min_depth = body["min_depth"].as_u64().unwrap_or(0);
    let events = served.history().missing_events(
        &room_id,
        &earliest.into_iter().collect(),
        &latest,
        usize::try_from(limit).unwrap_or(usize::MAX),
        min_depth,
    );
    ok(json!({ "events": events }))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
async fn state_ids(
    State(served): State<Arc<Served>>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let event_id = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "event_id")
        .map(|(_, value)| value.into_owned());
    let Some(event_id) = event_id else {
        return error(
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
            "event_id is required",
        );
    };
    let history = served.history();
    if history.pdu_in_room(&room_id, &event_id).is_none() {
        return not_found("Unknown event");
    }
    let Some(state) = history.state_before(&event_id) else {
        return not_found("The state at this event is unknown");
    };
    let pdu_ids: Vec<&String> = state.values().collect();
    let auth_chain_ids = history.auth_chain(state.values());
    ok(json!({ "auth_chain_ids": auth_chain_ids, "pdu_ids": pdu_ids }))
}

/// `GET /_matrix/federation/v1/event/{eventId}`
async fn event(State(served): State<Arc<Served>>, Path(event_id): Path<String>) -> Answer {
    let Some(pdu) = served.history().pdus.get(&event_id).cloned() else {
        return not_found("Unknown event");
    };
    ok(json!({
        "origin": served.server_name,
        "origin_server_ts": now_ms(),
        "pdus": [pdu],
    }))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth(
    State(served): State<Arc<Served>>,
    Path((room_id, event_id)): Path<(String, String)>,
) -> Answer {
    let history = served.history();
    if history.pdu_in_room(&room_id, &event_id).is_none() {
        return not_found("Unknown event");
    }
    let auth_chain: Vec<&Value> = history
        .auth_chain([&event_id])
        .iter()
        .filter_map(|id| history.pdus.get(id))
        .collect();
    ok(json!({ "auth_chain": auth_chain }))
}

fn prev_events(pdu: &Value) -> Vec<String> {
    ids(&pdu["prev_events"])
}

fn auth_events(pdu: &Value) -> Vec<String> {
    ids(&pdu["auth_events"])
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect()
}

/// Whether an event is of the room: its `room_id`, or for a create event without one
/// (room version 12), its id is the room's.
fn in_room(pdu: &Value, room_id: &str, event_id: &str) -> bool {
    match pdu["room_id"].as_str() {
        Some(id) => id == room_id,
        None => pdu["type"] == "m.room.create" && room_id.get(1..) == event_id.get(1..),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "!room:fake";

    /// A history of a join (`$0`, the state before it: the create event `$c`) and
    /// `$1`..`$n` built on it one after the other; `$2` is a state event.
    fn chain(n: u64) -> History {
        let mut history = History::default();
        history.insert(
            "$c",
            &json!({ "room_id": ROOM, "type": "m.room.create", "state_key": "", "depth": 1,
                     "prev_events": [], "auth_events": [] }),
        );
        history.insert(
            "$0",
            &json!({ "room_id": ROOM, "type": "m.room.member", "state_key": "@m:fake",
                     "depth": 2, "prev_events": ["$c"], "auth_events": ["$c"] }),
        );
        let create = ("m.room.create".to_owned(), String::new());
        history.set_state_before("$0", StateMap::from([(create, "$c".to_owned())]));
        for i in 1..=n {
            let mut pdu = json!({ "room_id": ROOM, "type": "m.room.message", "depth": i + 2,
                                  "prev_events": [format!("${}", i - 1)],
                                  "auth_events": ["$c", "$0"] });
            if i == 2 {
                pdu["type"] = json!("m.room.topic");
                pdu["state_key"] = json!("");
            }
            history.insert(&format!("${i}"), &pdu);
        }
        history
    }

    fn positions(events: &[Value]) -> Vec<u64> {
        events
            .iter()
            .map(|pdu| pdu["depth"].as_u64().unwrap_or(0) - 2)
            .collect()
    }

    #[test]
    fn missing_events_stop_at_earliest_limit_and_min_depth_oldest_first() {
        let history = chain(6);
        let earliest = HashSet::from(["$1".to_owned()]);
        let latest = ["$6".to_owned()];
        let all = history.missing_events(ROOM, &earliest, &latest, 10, 0);
        assert_eq!(positions(&all), [2, 3, 4, 5]);
        let limited = history.missing_events(ROOM, &earliest, &latest, 2, 0);
        assert_eq!(positions(&limited), [4, 5]);
        let deep = history.missing_events(ROOM, &earliest, &latest, 10, 6);
        assert_eq!(positions(&deep), [4, 5]);
        let other_room = history.missing_events("!other:fake", &earliest, &latest, 10, 0);
        assert!(other_room.is_empty());
    }

    #[test]
    fn state_before_walks_forward_from_the_join() {
        let history = chain(4);
        let state = history.state_before("$4").expect("the state before $4");
        assert_eq!(state.len(), 3);
        assert_eq!(state[&("m.room.topic".to_owned(), String::new())], "$2");
        assert_eq!(
            state[&("m.room.member".to_owned(), "@m:fake".to_owned())],
            "$0"
        );
        let before_topic = history.state_before("$2").expect("the state before $2");
        assert!(!before_topic.contains_key(&("m.room.topic".to_owned(), String::new())));
        assert_eq!(
            history.auth_chain(state.values()),
            BTreeSet::from(["$c".to_owned(), "$0".to_owned()])
        );
    }
}
