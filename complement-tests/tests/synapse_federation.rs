//! This server federating with Synapse (from PyPI) on loopback over TLS, both with
//! certificates from one test CA: rooms on either side joined by alias from the other,
//! messages, edits, typing and read receipts both ways.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use complement_tests::{PATIENCE, TestServer, eventually, synapse::Synapse, tls::TestCa, token};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, RoomOrAliasId, api::client::room::create_room},
};
use serde_json::{Value, json};

/// One user on one server, spoken to over the raw client API.
struct User {
    base_url: String,
    token: String,
    user_id: String,
}

impl User {
    fn of(base_url: String, client: &Client) -> Self {
        Self {
            base_url,
            token: token(client),
            user_id: client.user_id().expect("logged in").to_string(),
        }
    }

    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let http = reqwest::Client::new();
        let mut request = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("{}{path}", self.base_url),
            )
            .bearer_auth(&self.token)
            .timeout(PATIENCE);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn send(&self, room_id: &OwnedRoomId, txn: &str, content: Value) -> Result<String> {
        let (status, body) = self
            .request(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}"),
                Some(content),
            )
            .await?;
        ensure!(status == 200, "send answered {status}: {body}");
        Ok(body["event_id"].as_str().context("no event id")?.to_owned())
    }

    /// Syncs until `found` accepts an event of the room's `section`.
    async fn wait_in_sync(
        &self,
        room_id: &OwnedRoomId,
        section: &str,
        found: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut since: Option<String> = None;
        let what = format!("nothing matching arrived in {section} for {}", self.user_id);
        eventually(&what, async || {
            let mut path = "/_matrix/client/v3/sync?timeout=1000".to_owned();
            if let Some(since) = &since {
                path.push_str(&format!("&since={since}"));
            }
            let (status, sync) = self.request("GET", &path, None).await?;
            ensure!(status == 200, "sync answered {status}: {sync}");
            let events = sync
                .pointer(&format!("/rooms/join/{room_id}/{section}/events"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            since = sync["next_batch"].as_str().map(str::to_owned);
            Ok(events.into_iter().find(|event| found(event)))
        })
        .await
    }

    async fn typing(&self, room_id: &OwnedRoomId) -> Result<()> {
        let (status, body) = self
            .request(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room_id}/typing/{}", self.user_id),
                Some(json!({ "typing": true, "timeout": 20000 })),
            )
            .await?;
        ensure!(status == 200, "typing answered {status}: {body}");
        Ok(())
    }

    async fn receipt(&self, room_id: &OwnedRoomId, event_id: &str) -> Result<()> {
        let (status, body) = self
            .request(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}"),
                Some(json!({})),
            )
            .await?;
        ensure!(status == 200, "receipt answered {status}: {body}");
        Ok(())
    }
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// Creates a public room with an alias as `owner`; returns its id and alias.
async fn public_room(
    owner: &Client,
    alias_localpart: &str,
    server_name: &str,
) -> Result<(OwnedRoomId, String)> {
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some(alias_localpart.to_owned());
    request.name = Some(format!("Room {alias_localpart}"));
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = owner.create_room(request).await?.room_id().to_owned();
    Ok((room_id, format!("#{alias_localpart}:{server_name}")))
}

async fn join_by_alias(client: &Client, alias: &str) -> Result<OwnedRoomId> {
    let started = Instant::now();
    let room = tokio::time::timeout(
        PATIENCE,
        client.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias)?, &[]),
    )
    .await
    .context("the join took too long")??;
    eprintln!("joined {alias} in {:?}", started.elapsed());
    Ok(room.room_id().to_owned())
}

/// Messages, an edit, typing and a receipt from `from` to `to` and back.
async fn converse(room_id: &OwnedRoomId, one: &User, other: &User) -> Result<()> {
    one.send(
        room_id,
        "hello-1",
        text(&format!("hello from {}", one.user_id)),
    )
    .await?;
    let hello = other
        .wait_in_sync(room_id, "timeline", |event| {
            event["content"]["body"].as_str().is_some_and(|body| {
                body.starts_with("hello from") && event["sender"] == one.user_id.as_str()
            })
        })
        .await?;
    let hello_id = hello["event_id"]
        .as_str()
        .context("no event id")?
        .to_owned();
    let reply = other
        .send(
            room_id,
            "reply-1",
            text(&format!("hello back from {}", other.user_id)),
        )
        .await?;
    one.wait_in_sync(room_id, "timeline", |event| {
        event["event_id"] == reply.as_str()
    })
    .await?;

    // An edit keeps its relation.
    other
        .send(
            room_id,
            "edit-1",
            json!({
                "msgtype": "m.text",
                "body": "* edited",
                "m.new_content": { "msgtype": "m.text", "body": "edited" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": reply },
            }),
        )
        .await?;
    one.wait_in_sync(room_id, "timeline", |event| {
        event["content"]["m.relates_to"]["event_id"] == reply.as_str()
    })
    .await?;

    // Typing and a read receipt, each way.
    one.typing(room_id).await?;
    other
        .wait_in_sync(room_id, "ephemeral", |event| {
            event["type"] == "m.typing"
                && event["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|users| users.iter().any(|u| u == one.user_id.as_str()))
        })
        .await?;
    other.receipt(room_id, &hello_id).await?;
    one.wait_in_sync(room_id, "ephemeral", |event| {
        event["type"] == "m.receipt"
            && event["content"][&hello_id]["m.read"][&other.user_id].is_object()
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synapse_users_join_our_room_and_we_join_theirs() -> Result<()> {
    let ca = TestCa::new();
    let (ours, synapse) = tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let alice = ours.register("alice").await?;
    let sam = synapse.matrix_sdk_client("sam").await?;
    let alice_user = User::of(ours.base_url(), &alice);
    let sam_user = User::of(synapse.client_url(), &sam);

    // Sam, on Synapse, joins Alice's room here by its alias.
    let (room_id, alias) = public_room(&alice, "ours", ours.server_name()).await?;
    let joined = join_by_alias(&sam, &alias).await?;
    assert_eq!(joined, room_id);
    converse(&room_id, &alice_user, &sam_user).await?;

    presence_both_ways(&alice_user, &sam_user).await?;

    // Alice joins Sam's room on Synapse by its alias.
    let (room_id, alias) = public_room(&sam, "theirs", &synapse.server_name()).await?;
    let joined = join_by_alias(&alice, &alias)
        .await
        .with_context(|| ours.log())?;
    assert_eq!(joined, room_id);
    converse(&room_id, &sam_user, &alice_user).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invites_cross_between_synapse_and_us() -> Result<()> {
    let ca = TestCa::new();
    let (ours, synapse) = tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let alice = ours.register("alice").await?;
    let sam = synapse.matrix_sdk_client("sam").await?;
    let alice_user = User::of(ours.base_url(), &alice);
    let sam_user = User::of(synapse.client_url(), &sam);

    // Alice invites Sam into a private room here; Sam accepts on Synapse.
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.invite = vec![sam.user_id().expect("logged in").to_owned()];
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    accept_invite(&sam_user, &room_id).await?;
    converse(&room_id, &alice_user, &sam_user).await?;

    // Sam invites Alice into a private room on Synapse; Alice accepts here.
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.invite = vec![alice.user_id().expect("logged in").to_owned()];
    let room_id = sam.create_room(request).await?.room_id().to_owned();
    accept_invite(&alice_user, &room_id)
        .await
        .with_context(|| ours.log())?;
    converse(&room_id, &sam_user, &alice_user).await?;
    Ok(())
}

/// Waits for the user's sync to offer the invite, then joins.
async fn accept_invite(user: &User, room_id: &OwnedRoomId) -> Result<()> {
    let what = format!("the invite never arrived for {}", user.user_id);
    eventually(&what, async || {
        let (status, sync) = user
            .request("GET", "/_matrix/client/v3/sync?timeout=1000", None)
            .await?;
        ensure!(status == 200, "sync answered {status}: {sync}");
        let path = format!("/rooms/invite/{room_id}");
        Ok(sync.pointer(&path).is_some().then_some(()))
    })
    .await?;
    let (status, body) = user
        .request(
            "POST",
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(json!({})),
        )
        .await?;
    ensure!(status == 200, "join answered {status}: {body}");
    Ok(())
}

/// Each sets a status message; the other's server answers with it.
async fn presence_both_ways(one: &User, other: &User) -> Result<()> {
    for (setter, reader) in [(one, other), (other, one)] {
        let status_msg = format!("status of {}", setter.user_id);
        let (status, body) = setter
            .request(
                "PUT",
                &format!("/_matrix/client/v3/presence/{}/status", setter.user_id),
                Some(json!({ "presence": "online", "status_msg": status_msg })),
            )
            .await?;
        ensure!(status == 200, "presence answered {status}: {body}");
        let what = format!(
            "{}'s presence never reached {}",
            setter.user_id, reader.user_id
        );
        eventually(&what, async || {
            let (status, body) = reader
                .request(
                    "GET",
                    &format!("/_matrix/client/v3/presence/{}/status", setter.user_id),
                    None,
                )
                .await?;
            Ok((status == 200 && body["status_msg"] == status_msg.as_str()).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// A Synapse alias looked up from here, then the room joined late and scrolled back to
/// its creation: its history comes from Synapse's `/backfill`, in order, below the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synapse_room_joined_late_is_scrolled_back_to_its_creation() -> Result<()> {
    const EARLIER: usize = 500;
    let ca = TestCa::new();
    let (ours, synapse) = tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let alice = ours.register("alice").await?;
    let sam = synapse.matrix_sdk_client("sam").await?;
    let sam_user = User::of(synapse.client_url(), &sam);
    let (room_id, alias) = public_room(&sam, "archive", &synapse.server_name()).await?;
    for n in 0..EARLIER {
        sam_user
            .send(&room_id, &format!("m{n}"), text(&format!("earlier {n}")))
            .await?;
    }

    // The alias, asked of Synapse over federation.
    let alias_id: &matrix_sdk::ruma::RoomAliasId = alias.as_str().try_into()?;
    let resolved = alice.resolve_room_alias(alias_id).await?;
    assert_eq!(resolved.room_id, room_id);
    assert!(
        resolved
            .servers
            .iter()
            .any(|s| s.as_str() == synapse.server_name())
    );

    join_by_alias(&alice, &alias)
        .await
        .with_context(|| ours.log())?;
    alice
        .sync_once(matrix_sdk::config::SyncSettings::default())
        .await?;
    let room = alice.get_room(&room_id).context("alice's room")?;
    let mut seen: Vec<Value> = Vec::new();
    let mut from: Option<String> = None;
    let started = Instant::now();
    loop {
        let mut options = matrix_sdk::room::MessagesOptions::backward().from(from.as_deref());
        options.limit = 100u32.into();
        let page = room.messages(options).await.with_context(|| ours.log())?;
        for event in &page.chunk {
            seen.push(event.raw().deserialize_as::<Value>()?);
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    eprintln!(
        "scrolled back {} events in {:?}",
        seen.len(),
        started.elapsed()
    );
    let bodies: Vec<&str> = seen
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let expected: Vec<String> = (0..EARLIER).rev().map(|n| format!("earlier {n}")).collect();
    assert_eq!(bodies, expected);
    assert_eq!(
        seen.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create"))
    );
    Ok(())
}

/// A JPEG of `width`×`height` with a gradient.
fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 60])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .expect("encodes");
    bytes
}

impl User {
    /// Uploads `bytes` as a JPEG named `name`; returns the `mxc://` URI.
    async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<String> {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/_matrix/media/v3/upload?filename={name}",
                self.base_url
            ))
            .bearer_auth(&self.token)
            .header("Content-Type", "image/jpeg")
            .body(bytes)
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "upload answered {}",
            response.status()
        );
        let body: Value = response.json().await?;
        Ok(body["content_uri"]
            .as_str()
            .context("no content_uri")?
            .to_owned())
    }

    /// `GET` an authenticated media path of an `mxc://` URI (`download` or `thumbnail`).
    async fn media(&self, kind: &str, uri: &str, query: &str) -> Result<(u16, Vec<u8>)> {
        let path = uri.strip_prefix("mxc://").context("not an mxc URI")?;
        let response = reqwest::Client::new()
            .get(format!(
                "{}/_matrix/client/v1/media/{kind}/{path}{query}",
                self.base_url
            ))
            .bearer_auth(&self.token)
            .timeout(PATIENCE)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.bytes().await?.to_vec()))
    }
}

/// A photo uploaded on one side is downloaded byte for byte on the other, twice (the
/// second from the other side's cache), and thumbnailed there: Synapse fetching from
/// this server's federation media endpoints, and this server from Synapse's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_crosses_between_synapse_and_us_both_ways() -> Result<()> {
    let ca = TestCa::new();
    let (ours, synapse) = tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let alice = ours.register("alice").await?;
    let sam = synapse.matrix_sdk_client("sam").await?;
    let alice = User::of(ours.base_url(), &alice);
    let sam = User::of(synapse.client_url(), &sam);

    for (uploader, reader, photo) in [
        (&alice, &sam, jpeg(1024, 768)),
        (&sam, &alice, jpeg(900, 700)),
    ] {
        let uri = uploader.upload("photo.jpg", photo.clone()).await?;
        for attempt in ["first", "second"] {
            let (status, body) = reader.media("download", &uri, "").await?;
            ensure!(
                status == 200 && body == photo,
                "{attempt} download of {uri} by {}: {status}\n{}\n{}",
                reader.user_id,
                ours.log(),
                synapse.log_tail(30)
            );
        }
        let (status, body) = reader
            .media("thumbnail", &uri, "?width=96&height=96&method=crop")
            .await?;
        ensure!(status == 200, "thumbnail of {uri}: {status}");
        let thumbnail = image::load_from_memory(&body)?;
        ensure!(
            thumbnail.width() >= 96 && thumbnail.height() >= 96,
            "thumbnail of {uri}: {}x{}",
            thumbnail.width(),
            thumbnail.height()
        );
    }

    // A thumbnail of Synapse's media asked before any download: fetched as Synapse made it.
    let uri = sam.upload("other.jpg", jpeg(640, 480)).await?;
    let (status, body) = alice
        .media("thumbnail", &uri, "?width=96&height=96&method=crop")
        .await?;
    ensure!(
        status == 200,
        "thumbnail of {uri} alone: {status}\n{}",
        ours.log()
    );
    let thumbnail = image::load_from_memory(&body)?;
    ensure!(thumbnail.width() >= 96 && thumbnail.height() >= 96);
    Ok(())
}

/// A story (a room of type `org.palisade.story` with a 4-second `m.room.retention`)
/// whose audience is on Synapse: the Synapse user sees the story, may react but not
/// post, and once the lifetime is over neither server serves the story any more
/// (Synapse by its retention policy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_story_expires_on_synapse_too() -> Result<()> {
    let ca = TestCa::new();
    let (ours, synapse) = tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let alice = ours.register("alice").await?;
    let sam = synapse.matrix_sdk_client("sam").await?;
    let alice_user = User::of(ours.base_url(), &alice);
    let sam_user = User::of(synapse.client_url(), &sam);

    let (status, created) = alice_user
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(json!({
                "creation_content": { "type": "org.palisade.story" },
                "preset": "private_chat",
                "invite": [sam_user.user_id],
                "initial_state": [{
                    "type": "m.room.retention",
                    "state_key": "",
                    "content": { "max_lifetime": 4000 },
                }],
            })),
        )
        .await?;
    ensure!(status == 200, "createRoom answered {status}: {created}");
    let room_id: OwnedRoomId = created["room_id"]
        .as_str()
        .context("no room id")?
        .try_into()?;
    accept_invite(&sam_user, &room_id)
        .await
        .with_context(|| ours.log())?;
    let story = alice_user
        .send(&room_id, "story", text("the lake at dawn"))
        .await?;
    let sent_at = Instant::now();
    sam_user
        .wait_in_sync(&room_id, "timeline", |event| {
            event["event_id"] == story.as_str()
        })
        .await
        .with_context(|| synapse.log_tail(30))?;
    let (status, body) = sam_user
        .request(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/reply"),
            Some(text("nice")),
        )
        .await?;
    ensure!(
        status == 403,
        "Synapse let the audience post: {status} {body}"
    );

    let has_story = |chunk: &[Value]| {
        chunk
            .iter()
            .any(|event| event["event_id"] == story.as_str())
    };
    ensure!(
        has_story(&messages(&sam_user, &room_id).await?),
        "Sam does not see the story"
    );

    tokio::time::sleep(std::time::Duration::from_millis(4500).saturating_sub(sent_at.elapsed()))
        .await;
    ensure!(
        !has_story(&messages(&alice_user, &room_id).await?),
        "the story outlived its lifetime here"
    );
    ensure!(
        !has_story(&messages(&sam_user, &room_id).await?),
        "the story outlived its lifetime on Synapse"
    );
    let (status, _) = alice_user
        .request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room_id}/event/{story}"),
            None,
        )
        .await?;
    ensure!(
        status == 404,
        "the expired story is still served here: {status}"
    );
    Ok(())
}

/// The newest events of a room, as `/messages` pages them back for `user`.
async fn messages(user: &User, room_id: &OwnedRoomId) -> Result<Vec<Value>> {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50");
    let (status, page) = user.request("GET", &path, None).await?;
    ensure!(
        status == 200,
        "messages for {} answered {status}: {page}",
        user.user_id
    );
    Ok(page["chunk"].as_array().cloned().unwrap_or_default())
}
