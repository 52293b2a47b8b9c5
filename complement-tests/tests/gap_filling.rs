//! An event whose prev events a server has never seen: it fills the gap from the
//! sender. Alice's public room lives on server A; a fake server joined it (`make_join`
//! and `send_join`) with its user Mallory, builds a chain of events and sends A only
//! the last one. A must ask the fake server for the missing events
//! (`get_missing_events`), or, when the gap is longer than it asks for, for the state at
//! the event (`state_ids`, then `/event` and `event_auth` for what it lacks), and end up
//! with the event in the room and the room's state right.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use complement_tests::{
    TestServer, all_messages, eventually,
    fake_server::{FakeRoom, FakeServer, encode, event_id},
    tls::TestCa,
    token,
};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, api::client::room::create_room},
};
use serde_json::{Value, json};

/// The endpoints a server reads another server's room history with.
const READ_ENDPOINTS: [&str; 6] = [
    "/get_missing_events/",
    "/state_ids/",
    "/state/",
    "/event/",
    "/event_auth/",
    "/backfill/",
];

/// Server A with Alice's public room, and the fake server's Mallory joined to it.
struct Scene {
    a: TestServer,
    alice: Client,
    fake: FakeServer,
    /// The room as the fake server builds it: every event it signed is on the chain.
    room: FakeRoom,
    room_id: OwnedRoomId,
    started: Instant,
}

impl Scene {
    async fn start(ca: &TestCa) -> Result<Self> {
        let started = Instant::now();
        let a = TestServer::start_federated(ca).await?;
        let alice = a.register("alice").await?;
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        let room_id = alice.create_room(request).await?.room_id().to_owned();
        let fake = FakeServer::start(ca).await?;
        let room = fake
            .join(a.server_name(), room_id.as_str(), &fake.user_id("mallory"))
            .await?;
        eprintln!("scene ready in {:?}", started.elapsed());
        Ok(Self {
            a,
            alice,
            fake,
            room,
            room_id,
            started,
        })
    }

    fn mallory(&self) -> String {
        self.fake.user_id("mallory")
    }

    fn alice_id(&self) -> String {
        format!("@alice:{}", self.a.server_name())
    }

    /// Builds and signs an event on the fake server's chain, without sending it.
    fn build(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<String> {
        let event = self.room.event(sender, kind, state_key, content);
        let (event_id, pdu) = self.fake.sign_event(&self.room.version, event)?;
        self.room.advance(&event_id, &pdu);
        Ok(event_id)
    }

    /// Builds `count` messages of Mallory's on the chain, with bodies `<label> <n>`;
    /// returns their ids, oldest first.
    fn build_messages(&mut self, label: &str, count: usize) -> Result<Vec<String>> {
        let mallory = self.mallory();
        (1..=count)
            .map(|n| {
                self.build(
                    &mallory,
                    "m.room.message",
                    None,
                    json!({ "msgtype": "m.text", "body": format!("{label} {n}") }),
                )
            })
            .collect()
    }

    /// Sends the event `event_id` of the chain to A in a transaction of its own and
    /// checks A accepted it; returns the read requests A made of the fake server
    /// meanwhile.
    async fn send_to_a(&self, event_id: &str) -> Result<Vec<String>> {
        let pdu = self
            .fake
            .known_event(event_id)
            .context("the fake server does not know the event")?;
        let before = self.fake.requests().len();
        let sent = Instant::now();
        let (status, body) = self
            .fake
            .send_transaction(self.a.server_name(), &[pdu], &[])
            .await?;
        ensure!(status == 200, "the transaction answered {status}: {body}");
        eprintln!(
            "A answered the transaction in {:?}: {}",
            sent.elapsed(),
            body["pdus"][event_id]
        );
        let requests: Vec<String> = self.fake.requests()[before..]
            .iter()
            .filter(|request| READ_ENDPOINTS.iter().any(|path| request.contains(path)))
            .cloned()
            .collect();
        eprintln!("A's read requests to the fake server: {requests:#?}");
        ensure!(
            body["pdus"][event_id].get("error").is_none(),
            "A refused {event_id}: {}\nA's log:\n{}",
            body["pdus"][event_id],
            self.a.log()
        );
        Ok(requests)
    }

    /// Every event of the room Alice's `/messages` gives, oldest first.
    async fn alice_messages(&self) -> Result<Vec<Value>> {
        let mut all = all_messages(&self.a, &token(&self.alice), self.room_id.as_str()).await?;
        all.reverse();
        Ok(all)
    }

    /// The content of the room's current state event of `kind` and `state_key` on A, as
    /// Alice reads it.
    async fn alice_state(&self, kind: &str, state_key: &str) -> Result<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
            self.room_id,
            encode(state_key)
        );
        let (status, content) = self
            .a
            .request("GET", &path, Some(&token(&self.alice)), None)
            .await?;
        ensure!(
            status == 200,
            "the state {kind} {state_key} answered {status}: {content}"
        );
        Ok(content)
    }

    /// What `GET /rooms/{roomId}/event/{eventId}` on A answers Alice.
    async fn alice_get_event(&self, event_id: &str) -> Result<(u16, Value)> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            self.room_id,
            encode(event_id)
        );
        self.a
            .request("GET", &path, Some(&token(&self.alice)), None)
            .await
    }

    /// Checks the room's state on A that the gap must not have disturbed: Alice has
    /// power 100, Mallory is joined.
    async fn assert_state_intact(&self) -> Result<()> {
        let levels = self.alice_state("m.room.power_levels", "").await?;
        ensure!(
            levels["users"][self.alice_id()] == 100,
            "Alice lost her power: {levels}"
        );
        let mallory = self.alice_state("m.room.member", &self.mallory()).await?;
        ensure!(
            mallory["membership"] == "join",
            "Mallory is not joined: {mallory}"
        );
        Ok(())
    }

    /// Alice sends a message; returns it as the fake server received it from A.
    async fn alice_sends(&self, body: &str) -> Result<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/gap-{}",
            self.room_id,
            self.started.elapsed().as_nanos()
        );
        let (status, answer) = self
            .a
            .request(
                "PUT",
                &path,
                Some(&token(&self.alice)),
                Some(json!({ "msgtype": "m.text", "body": body })),
            )
            .await?;
        ensure!(status == 200, "Alice's send answered {status}: {answer}");
        let sent_id = answer["event_id"].as_str().context("no event_id")?;
        let what = format!("A never sent Alice's {sent_id} to the fake server");
        eventually(&what, async || {
            for pdu in self.fake.received_pdus() {
                if event_id(&self.room.version, &pdu)? == sent_id {
                    return Ok(Some(pdu));
                }
            }
            Ok(None)
        })
        .await
    }
}

/// Checks that each of `ids` is in `events`, in that order.
fn assert_in_order(events: &[Value], ids: &[String]) -> Result<()> {
    let mut positions = Vec::new();
    for id in ids {
        let position = events
            .iter()
            .position(|event| event["event_id"] == id.as_str())
            .with_context(|| format!("{id} is not in Alice's /messages"))?;
        positions.push(position);
    }
    ensure!(
        positions.is_sorted(),
        "Alice's /messages has the events out of order (positions {positions:?})"
    );
    Ok(())
}

fn count(requests: &[String], endpoint: &str) -> usize {
    requests
        .iter()
        .filter(|request| request.contains(endpoint))
        .count()
}

/// (a) Three messages in a chain, only the last one sent: A fetches the two before it
/// with `get_missing_events` and Alice reads all three, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_gap_is_filled_with_get_missing_events() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let chain = scene.build_messages("short gap", 3)?;
    let last = chain.last().context("no chain")?;
    let requests = scene.send_to_a(last).await?;
    ensure!(
        count(&requests, "/get_missing_events/") == 1,
        "A did not ask for the missing events once: {requests:?}"
    );
    ensure!(
        count(&requests, "/state_ids/") == 0 && count(&requests, "/event/") == 0,
        "A needed more than the missing events: {requests:?}"
    );
    let messages = scene.alice_messages().await?;
    assert_in_order(&messages, &chain)?;
    for (n, id) in chain.iter().enumerate() {
        let event = messages
            .iter()
            .find(|event| event["event_id"] == id.as_str())
            .context("a message went missing")?;
        ensure!(
            event["content"]["body"] == format!("short gap {}", n + 1),
            "message {n} lost its body: {event}"
        );
    }
    eprintln!("(a) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (a) The same while Alice has sent a message Mallory's server never saw: the room
/// forks. The fake server's walk back from the last message never meets A's forward
/// extremity (Alice's message), so it also returns events A has (the join and the
/// room's first events); A appends the two it lacks, and Alice's next event joins both
/// branches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_gap_beside_a_local_message_is_filled() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let (status, answer) = scene
        .a
        .request(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/beside",
                scene.room_id
            ),
            Some(&token(&scene.alice)),
            Some(json!({ "msgtype": "m.text", "body": "Alice, beside the gap" })),
        )
        .await?;
    ensure!(status == 200, "Alice's send answered {status}: {answer}");
    let beside = answer["event_id"]
        .as_str()
        .context("no event_id")?
        .to_owned();
    let chain = scene.build_messages("gap beside", 3)?;
    let last = chain.last().context("no chain")?;
    let requests = scene.send_to_a(last).await?;
    ensure!(
        count(&requests, "/get_missing_events/") == 1 && count(&requests, "/state_ids/") == 0,
        "A did not fill the gap with get_missing_events: {requests:?}"
    );
    let messages = scene.alice_messages().await?;
    assert_in_order(&messages, &chain)?;
    scene.assert_state_intact().await?;
    let pdu = scene.alice_sends("Alice, after the fork").await?;
    let prev = pdu["prev_events"].as_array().cloned().unwrap_or_default();
    ensure!(
        prev.iter().any(|id| id == last.as_str()) && prev.iter().any(|id| id == beside.as_str()),
        "Alice's event does not join both branches: {pdu}"
    );
    eprintln!("(a, fork) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (b) A gap of 29 events, Eve (another user of the fake server) joining in the middle
/// of it, and only the 30th sent: more than A asks for with `get_missing_events`, so it
/// takes the state at the event from `state_ids` and fetches the one state event it
/// lacks (Eve's join) with `/event`. The event is in the room, the room's state is
/// right, and Alice's next event builds on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_gap_is_bridged_with_the_state_at_the_event() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let eve = scene.fake.user_id("eve");
    let mut chain = scene.build_messages("long gap, before Eve", 14)?;
    let eve_join = scene.build(
        &eve,
        "m.room.member",
        Some(&eve),
        json!({ "membership": "join" }),
    )?;
    chain.push(eve_join.clone());
    chain.extend(scene.build_messages("long gap, after Eve", 15)?);
    let last = chain.last().context("no chain")?.clone();
    let requests = scene.send_to_a(&last).await?;

    let position = |endpoint: &str| requests.iter().position(|r| r.contains(endpoint));
    let (Some(missing), Some(state)) = (
        position("/get_missing_events/"),
        position(&format!("/state_ids/{}?event_id={last}", scene.room_id)),
    ) else {
        bail!("A did not ask for the missing events, then the state at {last}: {requests:?}");
    };
    ensure!(missing < state, "A asked for the state first: {requests:?}");
    let fetched: Vec<&String> = requests
        .iter()
        .filter(|request| request.contains("/event/"))
        .collect();
    ensure!(
        fetched == [&format!("GET /_matrix/federation/v1/event/{eve_join}")],
        "A fetched other events than Eve's join: {fetched:?}"
    );
    ensure!(
        position("/event/").is_some_and(|fetch| fetch > state),
        "A fetched Eve's join before it asked for the state: {requests:?}"
    );

    let messages = scene.alice_messages().await?;
    ensure!(
        messages
            .iter()
            .any(|event| event["event_id"] == last.as_str()),
        "the last message is not in Alice's /messages"
    );
    let in_gap = chain[..chain.len() - 1]
        .iter()
        .filter(|id| {
            messages
                .iter()
                .any(|event| event["event_id"] == id.as_str())
        })
        .count();
    eprintln!("Alice's /messages shows {in_gap} of the 29 events of the gap");
    let (status, served) = scene.alice_get_event(&last).await?;
    ensure!(
        status == 200 && served["content"]["body"] == "long gap, after Eve 15",
        "/event did not serve the last message: {status} {served}"
    );
    scene.assert_state_intact().await?;
    let eve_state = scene.alice_state("m.room.member", &eve).await?;
    ensure!(
        eve_state["membership"] == "join",
        "Eve's join in the gap is not in the room's state: {eve_state}"
    );

    let pdu = scene.alice_sends("Alice, after the gap").await?;
    ensure!(
        pdu["prev_events"]
            .as_array()
            .is_some_and(|prev| prev.iter().any(|id| id == last.as_str())),
        "Alice's event does not build on Mallory's: {pdu}"
    );
    eprintln!("(b) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// Builds `before` messages, Mallory's display name change, `after` messages; sends
/// only the last to A and checks the new name is in A's current state. Returns the
/// chain's event ids, oldest first, and A's read requests.
async fn rename_in_gap(
    scene: &mut Scene,
    before: usize,
    after: usize,
) -> Result<(Vec<String>, Vec<String>)> {
    let mallory = scene.mallory();
    let name = "Mallory, renamed in the gap";
    let mut chain = scene.build_messages("before the rename", before)?;
    chain.push(scene.build(
        &mallory,
        "m.room.member",
        Some(&mallory),
        json!({ "membership": "join", "displayname": name }),
    )?);
    chain.extend(scene.build_messages("after the rename", after)?);
    let last = chain.last().context("no chain")?;
    let requests = scene.send_to_a(last).await?;
    let member = scene.alice_state("m.room.member", &mallory).await?;
    ensure!(
        member["membership"] == "join" && member["displayname"] == name,
        "the rename in the gap is not in A's current state: {member}\nA's log:\n{}",
        scene.a.log()
    );
    scene.assert_state_intact().await?;
    Ok((chain, requests))
}

/// (c) Mallory changes her display name in the middle of a short gap: the change is an
/// auth event of the last message, so A first takes its auth chain (`event_auth`), then
/// fetches the gap (`get_missing_events`); the new name is in the room's current state,
/// and the whole chain, the change included, is in Alice's `/messages` in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_change_in_a_short_gap_reaches_the_current_state() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let (chain, requests) = rename_in_gap(&mut scene, 2, 2).await?;
    ensure!(
        count(&requests, "/get_missing_events/") == 1 && count(&requests, "/state_ids/") == 0,
        "A did not fill the gap with get_missing_events: {requests:?}"
    );
    let messages = scene.alice_messages().await?;
    assert_in_order(&messages, &chain)?;
    eprintln!("(c, short) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (c) Mallory changes her display name in the middle of a gap of 30 events: the change
/// is an auth event of the last one, which A fetches with `event_auth`; the state at the
/// last event (`state_ids`) has it, and so does the room's current state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_change_in_a_long_gap_reaches_the_current_state() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let (_, requests) = rename_in_gap(&mut scene, 14, 15).await?;
    ensure!(
        count(&requests, "/event_auth/") == 1 && count(&requests, "/state_ids/") == 1,
        "A did not take the auth chain and the state at the event: {requests:?}"
    );
    eprintln!("(c, long) done in {:?}", scene.started.elapsed());
    Ok(())
}
