//! Two instances of this server federating over TLS on loopback (names `127.0.0.1:PORT`,
//! certificates from one test CA): a room joined by alias across servers, messages,
//! edits, typing and receipts both ways, kicks and bans across servers, a server that
//! was down catching up in order, a crash in the middle of sending, and state changed
//! on both sides of a partition converging.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use complement_tests::{PATIENCE, TestServer, eventually, tls::TestCa, token};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, RoomOrAliasId, api::client::room::create_room},
};
use serde_json::{Value, json};

/// Two federating servers with a user each, and a public room of Alice's (on A) with
/// the alias `#lobby:A`, which Bob (on B) joined by that alias.
struct Pair {
    a: TestServer,
    b: TestServer,
    alice: Client,
    bob: Client,
    room_id: OwnedRoomId,
}

impl Pair {
    async fn start(ca: &TestCa) -> Result<Self> {
        let (a, b) = TestServer::start_federated_pair(ca).await?;
        let alice = a.register("alice").await?;
        let bob = b.register("bob").await?;
        let mut request = create_room::v3::Request::new();
        request.room_alias_name = Some("lobby".to_owned());
        request.name = Some("Lobby".to_owned());
        request.preset = Some(create_room::v3::RoomPreset::PublicChat);
        let room_id = alice.create_room(request).await?.room_id().to_owned();
        let alias = format!("#lobby:{}", a.server_name());
        let started = Instant::now();
        let joined = tokio::time::timeout(
            PATIENCE,
            bob.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[]),
        )
        .await
        .context("the join took too long")??;
        eprintln!("join by alias across servers: {:?}", started.elapsed());
        ensure!(joined.room_id() == room_id, "the alias led elsewhere");
        let pair = Self {
            a,
            b,
            alice,
            bob,
            room_id,
        };
        let bob_id = pair.bob_id();
        pair.wait_for_state(Side::A, "m.room.member", &bob_id, |content| {
            content["membership"] == "join"
        })
        .await?;
        Ok(pair)
    }

    fn server(&self, side: Side) -> &TestServer {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn token(&self, side: Side) -> String {
        match side {
            Side::A => token(&self.alice),
            Side::B => token(&self.bob),
        }
    }

    fn bob_id(&self) -> String {
        format!("@bob:{}", self.b.server_name())
    }

    fn alice_id(&self) -> String {
        format!("@alice:{}", self.a.server_name())
    }

    /// Sends an event as that side's user; returns its id.
    async fn send(&self, side: Side, kind: &str, txn: &str, content: Value) -> Result<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{kind}/{txn}",
            self.room_id
        );
        let (status, body) = self
            .server(side)
            .request("PUT", &path, Some(&self.token(side)), Some(content))
            .await?;
        ensure!(status == 200, "send answered {status}: {body}");
        Ok(body["event_id"].as_str().context("no event id")?.to_owned())
    }

    async fn put_state(
        &self,
        side: Side,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> Result<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{state_key}",
            self.room_id
        );
        let (status, body) = self
            .server(side)
            .request("PUT", &path, Some(&self.token(side)), Some(content))
            .await?;
        ensure!(status == 200, "state answered {status}: {body}");
        Ok(())
    }

    /// A state event's content as that side's user sees it now (`None` if unset).
    async fn state(&self, side: Side, kind: &str, state_key: &str) -> Result<Option<Value>> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{kind}/{state_key}",
            self.room_id
        );
        let (status, body) = self
            .server(side)
            .request("GET", &path, Some(&self.token(side)), None)
            .await?;
        Ok((status == 200).then_some(body))
    }

    async fn wait_for_state(
        &self,
        side: Side,
        kind: &str,
        state_key: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let what = format!("{kind}/{state_key} never arrived on {side:?}");
        eventually(&what, async || {
            let content = self.state(side, kind, state_key).await?;
            Ok(content.filter(|content| accept(content)))
        })
        .await
    }

    /// The room's message bodies as that side's user sees them, oldest first, paging
    /// back through `/messages` to the start.
    async fn bodies(&self, side: Side) -> Result<Vec<String>> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
                self.room_id
            );
            if let Some(from) = &from {
                path.push_str(&format!("&from={from}"));
            }
            let (status, page) = self
                .server(side)
                .request("GET", &path, Some(&self.token(side)), None)
                .await?;
            ensure!(status == 200, "messages answered {status}: {page}");
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            for event in &chunk {
                if event["type"] == "m.room.message"
                    && let Some(body) = event["content"]["body"].as_str()
                {
                    bodies.push(body.to_owned());
                }
            }
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        bodies.reverse();
        Ok(bodies)
    }

    /// Waits until that side's user has every one of `expected` in the room, in order
    /// among themselves.
    async fn wait_for_bodies(&self, side: Side, expected: &[String]) -> Result<()> {
        let mut last = (0, None);
        let what = format!("{side:?} never had all {} messages", expected.len());
        let seen = eventually(&what, async || {
            let bodies = self.bodies(side).await?;
            let seen: Vec<String> = bodies
                .iter()
                .filter(|b| expected.contains(b))
                .cloned()
                .collect();
            last = (seen.len(), bodies.last().cloned());
            Ok((seen.len() == expected.len()).then_some(seen))
        })
        .await
        .with_context(|| format!("it had {} of them; last: {:?}", last.0, last.1))?;
        ensure!(seen == expected, "{side:?} has the messages out of order");
        Ok(())
    }

    /// Syncs that side's user until `found` accepts something in the room's section
    /// (`timeline`, `ephemeral` or `state`) of a sync response.
    async fn wait_in_sync(
        &self,
        side: Side,
        section: &str,
        found: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut since: Option<String> = None;
        let token = self.token(side);
        let what = format!("nothing matching arrived in {section} on {side:?}");
        eventually(&what, async || {
            let sync = complement_tests::raw_sync_filtered(
                self.server(side),
                &token,
                since.as_deref(),
                1000,
                None,
            )
            .await?;
            let events = sync
                .pointer(&format!("/rooms/join/{}/{section}/events", self.room_id))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            since = sync["next_batch"].as_str().map(str::to_owned);
            Ok(events.into_iter().find(|event| found(event)))
        })
        .await
    }
}

#[derive(Clone, Copy, Debug)]
enum Side {
    A,
    B,
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_joined_by_alias_carries_messages_edits_typing_and_receipts_both_ways() -> Result<()>
{
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;

    // What Bob's server learnt with the join: the room's name and both members.
    let name = pair
        .wait_for_state(Side::B, "m.room.name", "", |_| true)
        .await?;
    assert_eq!(name["name"], "Lobby");
    let (_, members) = pair
        .b
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{}/joined_members", pair.room_id),
            Some(&pair.token(Side::B)),
            None,
        )
        .await?;
    assert!(members["joined"][pair.alice_id()].is_object(), "{members}");
    assert!(members["joined"][pair.bob_id()].is_object(), "{members}");

    // Alice's profile, asked of her server by Bob's.
    let (status, profile) = pair
        .b
        .request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", pair.alice_id()),
            Some(&pair.token(Side::B)),
            None,
        )
        .await?;
    assert_eq!(
        (status, &profile["displayname"]),
        (200, &json!("alice")),
        "{profile}"
    );
    let (status, name) = pair
        .b
        .request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}/displayname", pair.alice_id()),
            Some(&pair.token(Side::B)),
            None,
        )
        .await?;
    assert_eq!(
        (status, &name["displayname"]),
        (200, &json!("alice")),
        "{name}"
    );

    // Messages both ways, each seen by the other's sync.
    pair.send(Side::A, "m.room.message", "a1", text("hello bob"))
        .await?;
    let from_alice = pair
        .wait_in_sync(Side::B, "timeline", |event| {
            event["content"]["body"] == "hello bob"
        })
        .await?;
    assert_eq!(from_alice["sender"], pair.alice_id());
    let bobs = pair
        .send(Side::B, "m.room.message", "b1", text("hello alice"))
        .await?;
    pair.wait_in_sync(Side::A, "timeline", |event| {
        event["content"]["body"] == "hello alice"
    })
    .await?;

    // An edit keeps its relation across the servers.
    pair.send(
        Side::B,
        "m.room.message",
        "b2",
        json!({
            "msgtype": "m.text",
            "body": "* hello, alice",
            "m.new_content": { "msgtype": "m.text", "body": "hello, alice" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": bobs },
        }),
    )
    .await?;
    let edit = pair
        .wait_in_sync(Side::A, "timeline", |event| {
            event["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .await?;
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], bobs.as_str());
    assert_eq!(edit["content"]["m.new_content"]["body"], "hello, alice");

    // Typing, from B to A.
    let (status, _) = pair
        .b
        .request(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                pair.room_id,
                pair.bob_id()
            ),
            Some(&pair.token(Side::B)),
            Some(json!({ "typing": true, "timeout": 20000 })),
        )
        .await?;
    assert_eq!(status, 200);
    let bob_id = pair.bob_id();
    pair.wait_in_sync(Side::A, "ephemeral", |event| {
        event["type"] == "m.typing"
            && event["content"]["user_ids"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == bob_id.as_str()))
    })
    .await?;

    // A read receipt, from A to B.
    let (status, _) = pair
        .a
        .request(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{bobs}",
                pair.room_id
            ),
            Some(&pair.token(Side::A)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200);
    let alice_id = pair.alice_id();
    pair.wait_in_sync(Side::B, "ephemeral", |event| {
        event["type"] == "m.receipt" && event["content"][&bobs]["m.read"][&alice_id].is_object()
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kicks_and_bans_cross_servers() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    let bob_id = pair.bob_id();
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", pair.room_id);
    let (status, body) = pair
        .a
        .request(
            "POST",
            &kick,
            Some(&pair.token(Side::A)),
            Some(json!({ "user_id": bob_id, "reason": "out" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Bob's server applies the kick: Bob is out, and sending fails locally.
    let mut attempt = 0;
    eventually("Bob's server never learnt of the kick", async || {
        attempt += 1;
        let (status, _) = pair
            .b
            .request(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/probe{attempt}",
                    pair.room_id
                ),
                Some(&pair.token(Side::B)),
                Some(text("still here?")),
            )
            .await?;
        Ok((status == 403).then_some(()))
    })
    .await?;

    // Bob joins again by alias, then is banned: he cannot come back.
    let alias = format!("#lobby:{}", pair.a.server_name());
    pair.bob
        .join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[])
        .await?;
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "join"
    })
    .await?;
    let (status, body) = pair
        .a
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/ban", pair.room_id),
            Some(&pair.token(Side::A)),
            Some(json!({ "user_id": bob_id, "reason": "spam" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "ban"
    })
    .await?;
    let body = eventually("Bob's server never learnt of the ban", async || {
        let (status, body) = pair
            .b
            .request(
                "POST",
                &format!("/_matrix/client/v3/join/{}", alias.replace('#', "%23")),
                Some(&pair.token(Side::B)),
                Some(json!({})),
            )
            .await?;
        Ok((status == 403).then_some(body))
    })
    .await?;
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_was_down_gets_every_message_in_order() -> Result<()> {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca).await?;
    pair.b.kill9()?;
    let mut sent = Vec::new();
    for n in 0..500 {
        let body = format!("while B was down {n}");
        pair.send(Side::A, "m.room.message", &format!("down{n}"), text(&body))
            .await?;
        sent.push(body);
    }
    pair.b.restart().await?;
    // Bob speaks first: Alice's server hears from B and stops backing off.
    pair.send(Side::B, "m.room.message", "back", text("I am back"))
        .await?;
    let started = Instant::now();
    pair.wait_for_bodies(Side::B, &sent).await?;
    eprintln!("500 queued messages delivered in {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_while_sending_loses_nothing_acknowledged() -> Result<()> {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca).await?;
    // Alice sends while her server is killed part-way; what it acknowledged must reach
    // Bob after it restarts.
    let mut acknowledged = Vec::new();
    for n in 0..150 {
        let body = format!("before the crash {n}");
        pair.send(Side::A, "m.room.message", &format!("c{n}"), text(&body))
            .await?;
        acknowledged.push(body);
    }
    pair.a.kill9()?;
    pair.a.restart().await?;
    // And the receiving side crashes with transactions in flight.
    for n in 150..300 {
        let body = format!("around the receiver's crash {n}");
        pair.send(Side::A, "m.room.message", &format!("c{n}"), text(&body))
            .await?;
        acknowledged.push(body);
        if n == 200 {
            pair.b.kill9()?;
            pair.b.restart().await?;
            pair.send(Side::B, "m.room.message", "up", text("up again"))
                .await?;
        }
    }
    pair.wait_for_bodies(Side::B, &acknowledged).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_changed_on_both_sides_of_a_partition_converges() -> Result<()> {
    let ca = TestCa::new();
    let mut pair = Pair::start(&ca).await?;
    // Bob may change the topic too.
    let bob_id = pair.bob_id();
    let mut levels = pair
        .state(Side::A, "m.room.power_levels", "")
        .await?
        .context("no power levels")?;
    levels["users"][&bob_id] = json!(100);
    pair.put_state(Side::A, "m.room.power_levels", "", levels)
        .await?;
    pair.wait_for_state(Side::B, "m.room.power_levels", "", |c| {
        c["users"][&bob_id] == 100
    })
    .await?;

    // The partition: each side changes the topic while the other is down.
    pair.a.kill9()?;
    pair.put_state(Side::B, "m.room.topic", "", json!({ "topic": "from B" }))
        .await?;
    pair.b.kill9()?;
    pair.a.restart().await?;
    pair.put_state(Side::A, "m.room.topic", "", json!({ "topic": "from A" }))
        .await?;
    pair.b.restart().await?;
    pair.send(
        Side::B,
        "m.room.message",
        "m1",
        text("after the partition, from B"),
    )
    .await?;
    pair.send(
        Side::A,
        "m.room.message",
        "m2",
        text("after the partition, from A"),
    )
    .await?;
    pair.wait_for_bodies(Side::A, &["after the partition, from B".to_owned()])
        .await?;
    pair.wait_for_bodies(Side::B, &["after the partition, from A".to_owned()])
        .await?;

    // Both servers resolved the fork to the same state.
    let mut last = (None, None);
    eventually("both servers never agreed on the topic", async || {
        let on_a = pair.state(Side::A, "m.room.topic", "").await?;
        let on_b = pair.state(Side::B, "m.room.topic", "").await?;
        let agreed = on_a.is_some() && on_a == on_b;
        last = (on_a, on_b);
        Ok(agreed.then_some(()))
    })
    .await
    .with_context(|| format!("A has {:?}, B {:?}", last.0, last.1))?;
    let full = |side: Side| {
        let pair = &pair;
        async move {
            let (status, state) = pair
                .server(side)
                .request(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{}/state", pair.room_id),
                    Some(&pair.token(side)),
                    None,
                )
                .await?;
            ensure!(status == 200, "state answered {status}");
            let mut ids: Vec<String> = state
                .as_array()
                .context("state is a list")?
                .iter()
                .filter_map(|event| event["event_id"].as_str().map(str::to_owned))
                .collect();
            ids.sort();
            Ok::<_, anyhow::Error>(ids)
        }
    };
    assert_eq!(full(Side::A).await?, full(Side::B).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invites_cross_servers_and_can_be_accepted_or_declined() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let bob = b.register("bob").await?;
    let carol = b.register("carol").await?;
    let bob_id = format!("@bob:{}", b.server_name());
    let carol_id = format!("@carol:{}", b.server_name());

    // A private room: the only way in is an invite.
    let mut request = create_room::v3::Request::new();
    request.name = Some("Private".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    for user in [&bob_id, &carol_id] {
        let (status, body) = a
            .request(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
                Some(&token(&alice)),
                Some(json!({ "user_id": user })),
            )
            .await?;
        assert_eq!(status, 200, "{body}");
    }

    // Bob's sync shows the invite with the room's name, from the stripped state.
    let path = format!("/rooms/invite/{room_id}/invite_state/events");
    let invite = eventually("the invite never reached Bob", async || {
        let sync = complement_tests::raw_sync(&b, &bob, None, 0).await?;
        Ok(sync.pointer(&path).cloned())
    })
    .await?;
    let events = invite.as_array().context("a list")?;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Private"),
        "{invite}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob_id.as_str()
            && e["content"]["membership"] == "invite"),
        "{invite}"
    );

    // Bob accepts (through the inviter's server) and talks; Carol declines.
    bob.join_room_by_id(&room_id).await?;
    let (status, body) = b
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&token(&carol)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let pair = Pair {
        a,
        b,
        alice,
        bob,
        room_id,
    };
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "join"
    })
    .await?;
    pair.wait_for_state(Side::A, "m.room.member", &carol_id, |c| {
        c["membership"] == "leave"
    })
    .await?;
    pair.send(
        Side::B,
        "m.room.message",
        "hi",
        text("thanks for the invite"),
    )
    .await?;
    pair.wait_for_bodies(Side::A, &["thanks for the invite".to_owned()])
        .await?;
    // Carol's sync no longer offers the invite.
    let sync = complement_tests::raw_sync_filtered(&pair.b, &token(&carol), None, 0, None).await?;
    assert!(
        sync.pointer(&format!("/rooms/invite/{}", pair.room_id))
            .is_none(),
        "{sync}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_acl_shuts_a_server_out() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    // Every server here is an IP literal: refusing IP literals denies the other one.
    pair.put_state(
        Side::A,
        "m.room.server_acl",
        "",
        json!({ "allow": ["*"], "deny": [], "allow_ip_literals": false }),
    )
    .await?;
    pair.wait_for_state(Side::B, "m.room.server_acl", "", |c| {
        c["allow_ip_literals"] == false
    })
    .await?;
    pair.send(
        Side::B,
        "m.room.message",
        "denied",
        text("from a denied server"),
    )
    .await?;
    // A newcomer on the denied server joins there, but not in the room as A has it.
    let carol = pair.b.register("carol").await?;
    let carol_id = format!("@carol:{}", pair.b.server_name());
    let (status, body) = pair
        .b
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/join", pair.room_id),
            Some(&token(&carol)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies = pair.bodies(Side::A).await?;
    assert!(
        !bodies.iter().any(|b| b == "from a denied server"),
        "{bodies:?}"
    );
    assert_eq!(pair.state(Side::A, "m.room.member", &carol_id).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_room_directory_and_delegation_are_served() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = tokio::try_join!(
        TestServer::start_federated_with(&ca, "", "well_known_server = \"matrix.example.org:443\""),
        TestServer::start_federated(&ca)
    )?;
    // Delegation, where configured, is served on the client listener.
    let (status, body) = a
        .request("GET", "/.well-known/matrix/server", None, None)
        .await?;
    assert_eq!(
        (status, &body["m.server"]),
        (200, &json!("matrix.example.org:443"))
    );
    let (status, body) = b
        .request("GET", "/.well-known/matrix/server", None, None)
        .await?;
    assert_eq!((status, &body["errcode"]), (404, &json!("M_NOT_FOUND")));
    let alice = a.register("alice").await?;
    let bob = b.register("bob").await?;
    let mut request = create_room::v3::Request::new();
    request.name = Some("Town square".to_owned());
    request.visibility = matrix_sdk::ruma::api::client::room::Visibility::Public;
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let (status, body) = b
        .request(
            "GET",
            &format!("/_matrix/client/v3/publicRooms?server={}", a.server_name()),
            Some(&token(&bob)),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let chunk = body["chunk"].as_array().context("a chunk")?;
    assert!(
        chunk
            .iter()
            .any(|room| room["room_id"] == room_id.as_str() && room["name"] == "Town square"),
        "{body}"
    );
    let (status, body) = b
        .request(
            "POST",
            &format!("/_matrix/client/v3/publicRooms?server={}", a.server_name()),
            Some(&token(&bob)),
            Some(json!({ "filter": { "generic_search_term": "town" } })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"][0]["room_id"], room_id.as_str(), "{body}");
    Ok(())
}

/// How long joining a big room from another server takes: `BIG_ROOM_MEMBERS` members
/// (default 1000) and `BIG_ROOM_MESSAGES` messages (default 5000) on A, then a user of B
/// joins by alias. Run by hand: `cargo test -p complement-tests --test federation --
/// --ignored --nocapture joining_a_big_room`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn joining_a_big_room_across_servers() -> Result<()> {
    use futures::{StreamExt, stream};
    let members: usize = std::env::var("BIG_ROOM_MEMBERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let messages: usize = std::env::var("BIG_ROOM_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some("big".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let setup = Instant::now();
    let a_ref = &a;
    let room = room_id.to_string();
    let room_ref = &room;
    let tokens: Vec<String> = stream::iter(0..members)
        .map(|n| async move {
            let (status, body) = a_ref
                .request(
                    "POST",
                    "/_matrix/client/v3/register",
                    None,
                    Some(json!({
                        "username": format!("member{n}"),
                        "password": "a long enough password",
                        "auth": { "type": "m.login.dummy" },
                    })),
                )
                .await?;
            ensure!(status == 200, "register answered {status}: {body}");
            let token = body["access_token"].as_str().context("a token")?.to_owned();
            let (status, body) = a_ref
                .request(
                    "POST",
                    &format!("/_matrix/client/v3/rooms/{room_ref}/join"),
                    Some(&token),
                    Some(json!({})),
                )
                .await?;
            ensure!(status == 200, "join answered {status}: {body}");
            Ok::<_, anyhow::Error>(token)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let tokens_ref = &tokens;
    stream::iter(0..messages)
        .map(|n| async move {
            let token = &tokens_ref[n % tokens_ref.len()];
            let (status, body) = a_ref
                .request(
                    "PUT",
                    &format!("/_matrix/client/v3/rooms/{room_ref}/send/m.room.message/big{n}"),
                    Some(token),
                    Some(text(&format!("message {n}"))),
                )
                .await?;
            ensure!(status == 200, "send answered {status}: {body}");
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "room of {} members and {messages} messages made in {:?}",
        members + 1,
        setup.elapsed()
    );
    let bob = b.register("bob").await?;
    let alias = format!("#big:{}", a.server_name());
    let started = Instant::now();
    bob.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[])
        .await?;
    let joined = started.elapsed();
    let (_, body) = b
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&token(&bob)),
            None,
        )
        .await?;
    let count = body["joined"].as_object().map_or(0, |m| m.len());
    eprintln!("join of a room of {count} members from another server: {joined:?}");
    ensure!(count == members + 2, "B sees {count} members");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_knock_from_another_server_is_seen_and_answered_with_an_invite() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let carol = a.register("carol").await?;
    let bob = b.register("bob").await?;
    let bob_id = format!("@bob:{}", b.server_name());
    let (status, body) = a
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token(&alice)),
            Some(json!({
                "name": "Knock first",
                "room_alias_name": "knock",
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "state_key": "",
                    "content": { "join_rule": "knock" },
                }],
            })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let room_id: OwnedRoomId = body["room_id"].as_str().context("a room id")?.try_into()?;
    let alias = format!("#knock:{}", a.server_name()).replace('#', "%23");

    // A local knock and a remote one, by alias.
    for (server, user) in [(&a, &carol), (&b, &bob)] {
        let (status, body) = server
            .request(
                "POST",
                &format!("/_matrix/client/v3/knock/{alias}"),
                Some(&token(user)),
                Some(json!({ "reason": "let me in" })),
            )
            .await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["room_id"], room_id.as_str());
    }
    // Bob's sync shows the knock with the room's name.
    let sync = complement_tests::raw_sync(&b, &bob, None, 0).await?;
    let knock_state = sync
        .pointer(&format!("/rooms/knock/{room_id}/knock_state/events"))
        .and_then(Value::as_array)
        .with_context(|| format!("no knock in {sync}"))?;
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock first"),
        "{sync}"
    );
    let pair = Pair {
        a,
        b,
        alice,
        bob,
        room_id,
    };
    let knock = pair
        .wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
            c["membership"] == "knock"
        })
        .await?;
    assert_eq!(knock["reason"], "let me in");

    // Alice answers with an invite; Bob joins.
    let (status, body) = pair
        .a
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", pair.room_id),
            Some(&pair.token(Side::A)),
            Some(json!({ "user_id": bob_id })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    eventually("the invite never reached Bob", async || {
        let sync = complement_tests::raw_sync(&pair.b, &pair.bob, None, 0).await?;
        let path = format!("/rooms/invite/{}", pair.room_id);
        Ok(sync.pointer(&path).is_some().then_some(()))
    })
    .await?;
    pair.bob.join_room_by_id(&pair.room_id).await?;
    pair.wait_for_state(Side::A, "m.room.member", &bob_id, |c| {
        c["membership"] == "join"
    })
    .await?;
    pair.send(Side::B, "m.room.message", "in", text("I am in"))
        .await?;
    pair.wait_for_bodies(Side::A, &["I am in".to_owned()])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_crosses_servers() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    let bob_id = pair.bob_id();
    let (status, body) = pair
        .b
        .request(
            "PUT",
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            Some(&pair.token(Side::B)),
            Some(json!({ "presence": "online", "status_msg": "at lunch" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Alice's sync shows it, and her server answers for Bob.
    let mut since: Option<String> = None;
    eventually("Bob's presence never reached Alice", async || {
        let sync = complement_tests::raw_sync(&pair.a, &pair.alice, since.as_deref(), 1000).await?;
        let seen = sync["presence"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|event| {
                event["sender"] == bob_id.as_str()
                    && event["content"]["status_msg"] == "at lunch"
                    && event["content"]["presence"] == "online"
            })
        });
        since = sync["next_batch"].as_str().map(str::to_owned);
        Ok(seen.then_some(()))
    })
    .await?;
    let (status, body) = pair
        .a
        .request(
            "GET",
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            Some(&pair.token(Side::A)),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status_msg"], "at lunch");
    assert!(body["last_active_ago"].as_u64().is_some(), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invite_into_a_room_the_server_is_not_in_can_be_declined() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let carol = b.register("carol").await?;
    let carol_id = format!("@carol:{}", b.server_name());
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.invite = vec![carol_id.as_str().try_into()?];
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let first = complement_tests::raw_sync(&b, &carol, None, 0).await?;
    assert!(
        first.pointer(&format!("/rooms/invite/{room_id}")).is_some(),
        "{first}"
    );
    let since = first["next_batch"].as_str().context("a token")?.to_owned();
    let (status, body) = b
        .request(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&token(&carol)),
            Some(json!({ "reason": "no thanks" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // Carol's syncs go on working and no longer offer the invite.
    let later = complement_tests::raw_sync(&b, &carol, Some(&since), 0).await?;
    assert!(
        later.pointer(&format!("/rooms/invite/{room_id}")).is_none(),
        "{later}"
    );
    let fresh = complement_tests::raw_sync(&b, &carol, None, 0).await?;
    assert!(
        fresh.pointer(&format!("/rooms/invite/{room_id}")).is_none(),
        "{fresh}"
    );
    // Alice's room has Carol's refusal.
    let (status, member) = a
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{carol_id}"),
            Some(&token(&alice)),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "no thanks");
    Ok(())
}
