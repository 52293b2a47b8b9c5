//! Forged events from a malicious server never get in. Two instances of this server
//! share a room (Alice's on A, Bob on B); a fake server joined it properly (`make_join`
//! and `send_join` on A) with its user Mallory, and then sends B what a malicious server
//! could: an event impersonating Alice, an event altered after signing, events the auth
//! rules forbid, transactions with forged `X-Matrix` headers, a badly signed event on
//! unknown prev events, an event of a banned member dated before the ban (soft-failed).
//! Each forgery must be refused and never served to Bob (his sync, `/messages`,
//! `/event`), while a genuine event sent the same way right after is accepted, which
//! shows the path works and only the forgery was refused.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use complement_tests::{
    PATIENCE, TestServer, all_messages, eventually,
    fake_server::{FakeRoom, FakeServer, encode, new_key},
    raw_sync_filtered,
    tls::TestCa,
    token,
};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, RoomOrAliasId, api::client::room::create_room},
};
use serde_json::{Value, json};

/// Servers A and B with Alice and Bob in Alice's public room, and the fake server's
/// Mallory joined to it through A.
struct Scene {
    a: TestServer,
    b: TestServer,
    alice: Client,
    bob: Client,
    fake: FakeServer,
    /// The fake server's member whose messages prove the path works (Mallory, unless a
    /// test joins another).
    member: String,
    /// The room as that member's join left it, advanced with every accepted event.
    room: FakeRoom,
    room_id: OwnedRoomId,
    started: Instant,
}

impl Scene {
    async fn start(ca: &TestCa) -> Result<Self> {
        let started = Instant::now();
        let (a, b) = TestServer::start_federated_pair(ca).await?;
        let alice = a.register("alice").await?;
        let bob = b.register("bob").await?;
        let mut request = create_room::v3::Request::new();
        request.room_alias_name = Some("lobby".to_owned());
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        let room_id = alice.create_room(request).await?.room_id().to_owned();
        let alias = format!("#lobby:{}", a.server_name());
        tokio::time::timeout(
            PATIENCE,
            bob.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[]),
        )
        .await
        .context("Bob's join took too long")??;
        let fake = FakeServer::start(ca).await?;
        let room = fake
            .join(a.server_name(), room_id.as_str(), &fake.user_id("mallory"))
            .await?;
        let scene = Self {
            a,
            b,
            alice,
            bob,
            member: fake.user_id("mallory"),
            fake,
            room,
            room_id,
            started,
        };
        // A forwards Mallory's join to B, which checks it with the fake server's key.
        scene.wait_for_join_on_b(&scene.mallory()).await?;
        eprintln!("scene ready in {:?}", started.elapsed());
        Ok(scene)
    }

    fn mallory(&self) -> String {
        self.fake.user_id("mallory")
    }

    fn alice_id(&self) -> String {
        format!("@alice:{}", self.a.server_name())
    }

    fn bob_token(&self) -> String {
        token(&self.bob)
    }

    async fn wait_for_join_on_b(&self, user_id: &str) -> Result<()> {
        eventually(&format!("B never learnt of {user_id}'s join"), async || {
            let (status, content) = self.bob_state("m.room.member", user_id).await?;
            Ok((status == 200 && content["membership"] == "join").then_some(()))
        })
        .await
    }

    /// Bob's sync position now.
    async fn bob_since(&self) -> Result<String> {
        let sync = raw_sync_filtered(&self.b, &self.bob_token(), None, 0, None).await?;
        Ok(sync["next_batch"]
            .as_str()
            .context("no next_batch")?
            .to_owned())
    }

    /// Sends a PDU to B in a transaction of its own; returns B's result for it (`{}` if
    /// accepted, `{"error": ...}` if not).
    async fn send_to_b(&self, event_id: &str, pdu: &Value) -> Result<Value> {
        let (status, body) = self
            .fake
            .send_transaction(self.b.server_name(), std::slice::from_ref(pdu), &[])
            .await?;
        ensure!(status == 200, "the transaction answered {status}: {body}");
        let result = body["pdus"][event_id].clone();
        eprintln!("B's result for {event_id}: {result}");
        Ok(result)
    }

    /// A message of the fake server's member on the room's head, signed by the fake
    /// server.
    fn message(&self, body: &str) -> Result<(String, Value)> {
        let event = self.room.event(
            &self.member,
            "m.room.message",
            None,
            json!({ "msgtype": "m.text", "body": body }),
        );
        self.fake.sign_event(&self.room.version, event)
    }

    /// Sends a genuine message of the fake server's member to B and checks it is accepted and reaches
    /// Bob's timeline; returns every timeline event Bob's syncs from `since` delivered
    /// until then.
    async fn send_genuine(&mut self, body: &str, since: &str) -> Result<Vec<Value>> {
        let (event_id, pdu) = self.message(body)?;
        let result = self.send_to_b(&event_id, &pdu).await?;
        ensure!(
            result.get("error").is_none(),
            "B refused a genuine event: {result}\n{}",
            self.b.log()
        );
        self.room.advance(&event_id, &pdu);
        let events = self.bob_timeline_until(since, &event_id).await?;
        let genuine = events
            .iter()
            .find(|event| event["event_id"] == event_id.as_str())
            .context("the genuine event is not in the timeline")?;
        ensure!(
            genuine["content"]["body"] == body,
            "the genuine event lost its body: {genuine}"
        );
        Ok(events)
    }

    /// Bob's timeline events in the room from `since` until `event_id` arrives.
    async fn bob_timeline_until(&self, since: &str, event_id: &str) -> Result<Vec<Value>> {
        let mut since = since.to_owned();
        let mut seen = Vec::new();
        let what = format!("{event_id} never reached Bob's timeline");
        eventually(&what, async || {
            let sync =
                raw_sync_filtered(&self.b, &self.bob_token(), Some(&since), 1000, None).await?;
            let events = sync
                .pointer(&format!("/rooms/join/{}/timeline/events", self.room_id))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            seen.extend(events);
            if seen.iter().any(|event| event["event_id"] == event_id) {
                return Ok(Some(()));
            }
            since = sync["next_batch"]
                .as_str()
                .context("no next_batch")?
                .to_owned();
            Ok(None)
        })
        .await?;
        Ok(seen)
    }

    /// What `GET /rooms/{roomId}/state/{type}/{stateKey}` on B answers Bob.
    async fn bob_state(&self, kind: &str, state_key: &str) -> Result<(u16, Value)> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
            self.room_id,
            encode(state_key)
        );
        self.b
            .request("GET", &path, Some(&self.bob_token()), None)
            .await
    }

    /// What `GET /rooms/{roomId}/event/{eventId}` on B answers Bob.
    async fn bob_get_event(&self, event_id: &str) -> Result<(u16, Value)> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            self.room_id,
            encode(event_id)
        );
        self.b
            .request("GET", &path, Some(&self.bob_token()), None)
            .await
    }

    /// Every event of the room Bob's `/messages` on B gives, newest first.
    async fn bob_messages(&self) -> Result<Vec<Value>> {
        all_messages(&self.b, &self.bob_token(), self.room_id.as_str()).await
    }

    /// Checks that B never serves `event_id` nor anything with `marker` (a message body
    /// or state content only the forgery carries) to Bob: not in `timeline` (what his
    /// syncs delivered), not in `/messages`, and `/event` answers 404.
    async fn assert_never_served(
        &self,
        event_id: &str,
        marker: &str,
        timeline: &[Value],
    ) -> Result<()> {
        let carries = |event: &Value| {
            event["event_id"] == event_id || event["content"].to_string().contains(marker)
        };
        if let Some(event) = timeline.iter().find(|event| carries(event)) {
            bail!("the forgery reached Bob's sync: {event}");
        }
        if let Some(event) = self
            .bob_messages()
            .await?
            .iter()
            .find(|event| carries(event))
        {
            bail!("the forgery is in Bob's /messages: {event}");
        }
        let (status, body) = self.bob_get_event(event_id).await?;
        ensure!(
            status == 404,
            "GET /event/{event_id} answered {status}: {body}\nB's log about it:\n{}",
            self.b_log_about(event_id)
        );
        Ok(())
    }

    /// The lines of B's log that mention `event_id` (set `PALISADE_TEST_LOG=info` to see
    /// why events were refused or soft-failed).
    fn b_log_about(&self, event_id: &str) -> String {
        self.b
            .log()
            .lines()
            .filter(|line| line.contains(event_id))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn refused(result: &Value) -> bool {
    result["error"].is_string()
}

/// (a) An event claiming to be Alice's (a user of A) but signed only by the fake server:
/// A's signature is missing, so B refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_of_another_servers_user_signed_only_by_the_sender_is_refused() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let since = scene.bob_since().await?;
    let marker = "forged: Alice never said this";
    let event = scene.room.event(
        &scene.alice_id(),
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": marker }),
    );
    let (forged_id, forged) = scene.fake.sign_event(&scene.room.version, event)?;
    let result = scene.send_to_b(&forged_id, &forged).await?;
    ensure!(refused(&result), "B did not refuse the forgery: {result}");

    let timeline = scene.send_genuine("genuine, after (a)", &since).await?;
    scene
        .assert_never_served(&forged_id, marker, &timeline)
        .await?;
    eprintln!("(a) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (b) An event whose content was altered after signing (its content hash no longer
/// matches): B keeps only the redacted form, so the altered body is never served; and an
/// altered copy of an event B already has does not replace it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_altered_after_signing_is_kept_only_redacted() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let since = scene.bob_since().await?;
    let marker = "altered after signing";
    let (altered_id, mut altered) = scene.message("as signed")?;
    altered["content"]["body"] = json!(marker);
    // Per the spec the event is redacted, then processed as usual: a redacted message
    // passes the auth rules.
    let result = scene.send_to_b(&altered_id, &altered).await?;
    ensure!(
        !refused(&result),
        "B refused the altered event instead of redacting it: {result}"
    );
    scene.room.advance(&altered_id, &altered);

    let timeline = scene.send_genuine("genuine, after (b)", &since).await?;
    let carries_body = |event: &Value| {
        let content = event["content"].to_string();
        content.contains(marker) || content.contains("as signed")
    };
    if let Some(event) = timeline.iter().find(|event| carries_body(event)) {
        bail!("a body of the altered event reached Bob's sync: {event}");
    }
    if let Some(event) = scene
        .bob_messages()
        .await?
        .iter()
        .find(|event| carries_body(event))
    {
        bail!("a body of the altered event is in Bob's /messages: {event}");
    }
    // What B stored is the redacted event: no content, over both APIs.
    let (status, served) = scene.bob_get_event(&altered_id).await?;
    ensure!(
        status == 200 && served["content"] == json!({}),
        "GET /event did not serve the redacted event: {status} {served}"
    );
    let (status, pdu) = scene
        .fake
        .get_event(scene.b.server_name(), &altered_id)
        .await?;
    ensure!(
        status == 200 && pdu["content"] == json!({}) && pdu["hashes"] == altered["hashes"],
        "the federation /event did not serve the redacted event: {status} {pdu}"
    );

    // An altered copy of a genuine event B has already accepted changes nothing.
    let body = "genuine, then altered";
    let later = scene.bob_since().await?;
    let (genuine_id, genuine) = scene.message(body)?;
    let result = scene.send_to_b(&genuine_id, &genuine).await?;
    ensure!(!refused(&result), "B refused a genuine event: {result}");
    scene.room.advance(&genuine_id, &genuine);
    scene.bob_timeline_until(&later, &genuine_id).await?;
    let mut copy = genuine.clone();
    copy["content"]["body"] = json!(marker);
    scene.send_to_b(&genuine_id, &copy).await?;
    let (status, served) = scene.bob_get_event(&genuine_id).await?;
    ensure!(
        status == 200 && served["content"]["body"] == body,
        "the altered copy replaced the genuine event: {status} {served}"
    );
    eprintln!("(b) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (c) Correctly signed events of Mallory's that the auth rules forbid: raising her own
/// power level without the power to, and making a user of A join. B refuses both and
/// its room state does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_the_auth_rules_forbid_are_refused() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let since = scene.bob_since().await?;
    let mallory = scene.mallory();

    // Mallory (power 0) gives herself power 100.
    let (status, mut levels) = scene.bob_state("m.room.power_levels", "").await?;
    ensure!(status == 200, "no power levels: {levels}");
    let before = levels.clone();
    levels["users"][&mallory] = json!(100);
    let event = scene
        .room
        .event(&mallory, "m.room.power_levels", Some(""), levels);
    let (power_id, power) = scene.fake.sign_event(&scene.room.version, event)?;
    let result = scene.send_to_b(&power_id, &power).await?;
    ensure!(refused(&result), "B accepted the power grab: {result}");

    // Mallory makes Carol, a user of A who never asked, join.
    let carol = format!("@carol:{}", scene.a.server_name());
    let event = scene.room.event(
        &mallory,
        "m.room.member",
        Some(&carol),
        json!({ "membership": "join", "displayname": "forged carol" }),
    );
    let (join_id, join) = scene.fake.sign_event(&scene.room.version, event)?;
    let result = scene.send_to_b(&join_id, &join).await?;
    ensure!(refused(&result), "B accepted the forced join: {result}");

    let timeline = scene.send_genuine("genuine, after (c)", &since).await?;
    scene
        .assert_never_served(&power_id, &format!("\"{mallory}\":100"), &timeline)
        .await?;
    scene
        .assert_never_served(&join_id, "forged carol", &timeline)
        .await?;
    let (_, after) = scene.bob_state("m.room.power_levels", "").await?;
    ensure!(after == before, "the power levels changed: {after}");
    let (status, carol_state) = scene.bob_state("m.room.member", &carol).await?;
    ensure!(
        status == 404,
        "Carol has a membership on B: {status} {carol_state}"
    );
    eprintln!("(c) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (d) Transactions whose authentication is forged: the `X-Matrix` header signed with a
/// key that is not the fake server's published one, a header claiming to be A, and a
/// body whose `origin` (A) is not the signer. B answers 401 or 403 and stores none of
/// the (otherwise genuine) events they carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_with_forged_authentication_are_refused() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let since = scene.bob_since().await?;
    let b_name = scene.b.server_name().to_owned();
    let fake_name = scene.fake.server_name().to_owned();
    let a_name = scene.a.server_name().to_owned();
    // Same key id as the published key, another key pair.
    let impostor_key = new_key("fake")?;

    let cases: [(&str, &str, &str, bool); 3] = [
        (
            "signed with another key",
            fake_name.as_str(),
            fake_name.as_str(),
            false,
        ),
        (
            "header claims to be A",
            a_name.as_str(),
            a_name.as_str(),
            true,
        ),
        (
            "body origin is A",
            fake_name.as_str(),
            a_name.as_str(),
            true,
        ),
    ];
    let mut forged_ids = Vec::new();
    for (n, (what, header_origin, body_origin, own_key)) in cases.into_iter().enumerate() {
        let marker = format!("carried by a forged transaction {n}");
        let (event_id, pdu) = scene.message(&marker)?;
        let mut body = scene.fake.transaction(&[pdu], &[]);
        body["origin"] = json!(body_origin);
        let key = if own_key {
            scene.fake.key()
        } else {
            &impostor_key
        };
        let (status, answer) = scene
            .fake
            .request_as(
                header_origin,
                key,
                "PUT",
                &b_name,
                &scene.fake.transaction_path(),
                Some(&body),
            )
            .await?;
        eprintln!("(d) {what}: {status} {answer}");
        ensure!(
            status == 401 || status == 403,
            "{what}: B answered {status}: {answer}"
        );
        forged_ids.push((event_id, marker));
    }

    let timeline = scene.send_genuine("genuine, after (d)", &since).await?;
    for (event_id, marker) in &forged_ids {
        scene
            .assert_never_served(event_id, marker, &timeline)
            .await?;
    }
    eprintln!("(d) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (e) An event on prev events B has never seen, with a bad signature (made with another
/// key under the fake server's key id): refused before B asks the fake server for the
/// missing events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_badly_signed_event_on_unknown_prev_events_is_refused() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let since = scene.bob_since().await?;
    let mallory = scene.mallory();
    // A genuine message B never receives: the forgery's prev event.
    let (unknown_id, _) = scene.message("never sent")?;
    let marker = "signed with the wrong key";
    let mut event = scene.room.event(
        &mallory,
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": marker }),
    );
    event["prev_events"] = json!([unknown_id]);
    event["depth"] = json!(event["depth"].as_u64().unwrap_or(0) + 1);
    let (forged_id, forged) =
        scene
            .fake
            .sign_event_with(&new_key("fake")?, &scene.room.version, event)?;
    let requests_before = scene.fake.requests().len();
    let result = scene.send_to_b(&forged_id, &forged).await?;
    ensure!(
        refused(&result),
        "B accepted the badly signed event: {result}"
    );
    // Fetching its keys is fair; asking for the event's ancestors or state is not.
    let asked: Vec<String> = scene.fake.requests()[requests_before..]
        .iter()
        .filter(|request| {
            [
                "get_missing_events",
                "state_ids",
                "/state/",
                "event_auth",
                "/event/",
                "backfill",
            ]
            .iter()
            .any(|endpoint| request.contains(endpoint))
        })
        .cloned()
        .collect();
    ensure!(
        asked.is_empty(),
        "B went after the badly signed event's ancestors: {asked:?}"
    );

    let timeline = scene.send_genuine("genuine, after (e)", &since).await?;
    scene
        .assert_never_served(&forged_id, marker, &timeline)
        .await?;
    let (status, _) = scene.bob_get_event(&unknown_id).await?;
    ensure!(status == 404, "B fetched the unknown prev event");
    eprintln!("(e) done in {:?}", scene.started.elapsed());
    Ok(())
}

/// (f) A message of Mallory's built on the room as it was before Alice banned her: its
/// own past authorises it, the room as it is now does not, so B soft-fails it, and a
/// soft-failed event is not shown to clients. Eve, who joins from the fake server after
/// the ban, proves the path still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_of_a_member_banned_meanwhile_is_not_served() -> Result<()> {
    let ca = TestCa::new();
    let mut scene = Scene::start(&ca).await?;
    let since = scene.bob_since().await?;
    let mallory = scene.mallory();
    let (status, body) = scene
        .a
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/ban", scene.room_id),
            Some(&token(&scene.alice)),
            Some(json!({ "user_id": mallory, "reason": "forger" })),
        )
        .await?;
    ensure!(status == 200, "the ban answered {status}: {body}");
    eventually("B never learnt of the ban", async || {
        let (_, member) = scene.bob_state("m.room.member", &mallory).await?;
        Ok((member["membership"] == "ban").then_some(()))
    })
    .await?;

    // The fake server's view of the room predates the ban.
    let marker = "sent after the ban, dated before it";
    let (stale_id, stale) = scene.message(marker)?;
    scene.send_to_b(&stale_id, &stale).await?;

    let eve = scene.fake.user_id("eve");
    scene.room = scene
        .fake
        .join(scene.a.server_name(), scene.room_id.as_str(), &eve)
        .await?;
    scene.member = eve.clone();
    scene.wait_for_join_on_b(&eve).await?;
    let timeline = scene.send_genuine("genuine, after (f)", &since).await?;
    scene
        .assert_never_served(&stale_id, marker, &timeline)
        .await?;
    eprintln!("(f) done in {:?}", scene.started.elapsed());
    Ok(())
}
