//! Two instances of this server federating over TLS on loopback (names `127.0.0.1:PORT`,
//! certificates from one test CA), in one test binary; `Pair` (here) is two servers
//! with a user each in a room joined by alias across them:
//! - `messages`: messages, edits, typing, receipts and presence both ways, a server
//!   that was down catching up in order, a crash in the middle of sending, state changed
//!   on both sides of a partition converging;
//! - `membership`: kicks and bans, invites accepted or declined, knocks, restricted
//!   joins vouched for by the resident server, a big room;
//! - `directory`: server ACLs, the room directory, delegation, spaces and room previews
//!   across servers;
//! - `acl`: a denied server refused by every room endpoint (against the fake server),
//!   and no join help for a room this server left;
//! - `sender`: a transaction answered 200 with `{}` is delivered, not sent again;
//! - `legacy`: deprecated key paths and the `/v1/` join, leave and invite;
//! - `bad_input`: malformed credentials and non-canonical bodies are 400s;
//! - `history`: a late joiner scrolls back to the room's creation (`/backfill`);
//! - `openid`: an OpenID token checked by a third party through `/openid/userinfo`;
//! - `resolution`: a remote event forking the room's state resolved as it arrives.

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

mod acl;
mod bad_input;
mod directory;
mod history;
mod legacy;
mod membership;
mod messages;
mod openid;
mod resolution;
mod sender;
