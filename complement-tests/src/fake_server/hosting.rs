//! A fake server that hosts a room of its own, as an older server would: it answers
//! `make_join`, the `/v1/` `send_join` only (the `/v2/` one gets 404 `M_UNRECOGNIZED`),
//! and `/backfill`. A test builds the room's history by hand (`host_room`,
//! `post_in_hosted`), forgeries and events the auth rules refuse included.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    routing::{get, put},
};
use ruma17::RoomVersionId;
use serde_json::{Value, json};

use super::{FakeRoom, FakeServer, history::History, now_ms};

/// The rooms a fake server hosts, by id.
pub(super) type Hosted = Arc<Mutex<HashMap<String, FakeRoom>>>;

impl FakeServer {
    /// Creates a public room of version 11 with `creator` (of this server) in it; returns
    /// its id.
    pub fn host_room(&self, creator: &str) -> Result<String> {
        let version = RoomVersionId::V11;
        let room_id = format!("!hosted{}:{}", now_ms(), self.server_name);
        let mut room = FakeRoom {
            room_id: room_id.clone(),
            version: version.clone(),
            state: Default::default(),
            prev_event: String::new(),
            depth: 0,
        };
        let create = json!({
            "room_id": room_id, "sender": creator, "type": "m.room.create", "state_key": "",
            "content": { "creator": creator, "room_version": "11" },
            "origin_server_ts": now_ms(), "depth": 1, "prev_events": [], "auth_events": [],
        });
        let (create_id, create) = self.sign_event(&version, create)?;
        room.advance(&create_id, &create);
        let initial = [
            (
                "m.room.member",
                Some(creator),
                json!({ "membership": "join" }),
            ),
            (
                "m.room.power_levels",
                Some(""),
                json!({ "users": { creator: 100 }, "users_default": 0 }),
            ),
            (
                "m.room.join_rules",
                Some(""),
                json!({ "join_rule": "public" }),
            ),
            (
                "m.room.history_visibility",
                Some(""),
                json!({ "history_visibility": "shared" }),
            ),
        ];
        for (kind, state_key, content) in initial {
            let event = room.event(creator, kind, state_key, content);
            let (id, signed) = self.sign_event(&version, event)?;
            room.advance(&id, &signed);
        }
        self.hosted
            .lock()
            .expect("the hosted rooms")
            .insert(room_id.clone(), room);
        Ok(room_id)
    }

    /// Adds an event of `sender` to a hosted room's history, whether or not the auth
    /// rules allow it; returns its id.
    pub fn post_in_hosted(
        &self,
        room_id: &str,
        sender: &str,
        kind: &str,
        content: Value,
    ) -> Result<String> {
        let mut hosted = self.hosted.lock().expect("the hosted rooms");
        let room = hosted.get_mut(room_id).context("not a hosted room")?;
        let event = room.event(sender, kind, None, content);
        let (id, signed) = self.sign_event(&room.version.clone(), event)?;
        room.advance(&id, &signed);
        Ok(id)
    }
}

/// The routes of the hosted rooms.
pub(super) fn routes(hosted: Hosted, history: Arc<Mutex<History>>, server_name: String) -> Router {
    Router::new()
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(make_join),
        )
        .route(
            "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
            put(send_join_v1),
        )
        .route("/_matrix/federation/v1/backfill/{room_id}", get(backfill))
        .with_state(Arc::new(Hosting {
            hosted,
            history,
            server_name,
        }))
}

struct Hosting {
    hosted: Hosted,
    history: Arc<Mutex<History>>,
    server_name: String,
}

type Answer = (StatusCode, Json<Value>);

fn not_found() -> Answer {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "errcode": "M_NOT_FOUND", "error": "Not a hosted room" })),
    )
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    State(hosting): State<Arc<Hosting>>,
    Path((room_id, user_id)): Path<(String, String)>,
) -> Answer {
    let hosted = hosting.hosted.lock().expect("the hosted rooms");
    let Some(room) = hosted.get(&room_id) else {
        return not_found();
    };
    let template = room.event(
        &user_id,
        "m.room.member",
        Some(&user_id),
        json!({ "membership": "join" }),
    );
    (
        StatusCode::OK,
        Json(json!({ "room_version": room.version.as_str(), "event": template })),
    )
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`: the join taken as it is,
/// answered `[200, {origin, state, auth_chain}]` with the state before it.
async fn send_join_v1(
    State(hosting): State<Arc<Hosting>>,
    Path((room_id, event_id)): Path<(String, String)>,
    Json(join): Json<Value>,
) -> Answer {
    let mut hosted = hosting.hosted.lock().expect("the hosted rooms");
    let Some(room) = hosted.get_mut(&room_id) else {
        return not_found();
    };
    let mut history = hosting.history.lock().expect("the history");
    let state: Vec<Value> = room
        .state
        .values()
        .filter_map(|id| history.get(id).cloned())
        .collect();
    history.insert(&event_id, &join);
    room.advance(&event_id, &join);
    let answer = json!({ "origin": hosting.server_name, "state": state, "auth_chain": state });
    (StatusCode::OK, Json(json!([200, answer])))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=...`: the events named and
/// their ancestors, newest first, up to the limit.
async fn backfill(
    State(hosting): State<Arc<Hosting>>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let mut from = Vec::new();
    let mut limit = 10usize;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "v" => from.push(value.into_owned()),
            "limit" => limit = value.parse().unwrap_or(limit),
            _ => {}
        }
    }
    if !hosting
        .hosted
        .lock()
        .expect("the hosted rooms")
        .contains_key(&room_id)
    {
        return not_found();
    }
    let history = hosting.history.lock().expect("the history");
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<String> = from.into();
    let mut pdus = Vec::new();
    while let Some(id) = queue.pop_front() {
        if pdus.len() >= limit || !seen.insert(id.clone()) {
            continue;
        }
        let Some(pdu) = history.get(&id) else {
            continue;
        };
        queue.extend(
            pdu["prev_events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
        pdus.push(pdu.clone());
    }
    (
        StatusCode::OK,
        Json(json!({ "origin": hosting.server_name, "origin_server_ts": now_ms(), "pdus": pdus })),
    )
}
