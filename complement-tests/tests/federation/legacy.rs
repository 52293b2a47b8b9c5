//! What older servers and tools still ask for: keys under the deprecated paths with a
//! key id, and the `/v1/` `send_join`, `send_leave` and `invite`, whose bodies are the
//! bare event and whose answers are `[200, {...}]`. The asking server is the harness's
//! fake server.

use complement_tests::fake_server::{FakeServer, encode};
use ruma17::RoomVersionId;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_served_under_the_deprecated_key_id_paths() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let fake = FakeServer::start(&ca).await?;
    let (status, current) = fake
        .request("GET", a.server_name(), "/_matrix/key/v2/server", None)
        .await?;
    assert_eq!(status, 200, "{current}");
    let key_id = current["verify_keys"]
        .as_object()
        .and_then(|keys| keys.keys().next().cloned())
        .context("no verify key")?;
    let path = format!("/_matrix/key/v2/server/{}", encode(&key_id));
    let (status, by_id) = fake.request("GET", a.server_name(), &path, None).await?;
    assert_eq!(status, 200, "{by_id}");
    assert_eq!(by_id["server_name"], a.server_name());
    assert_eq!(by_id["verify_keys"], current["verify_keys"]);
    // The notary path with a key id, asking A about itself.
    let path = format!(
        "/_matrix/key/v2/query/{}/{}",
        encode(a.server_name()),
        encode(&key_id)
    );
    let (status, notarised) = fake.request("GET", a.server_name(), &path, None).await?;
    assert_eq!(status, 200, "{notarised}");
    assert_eq!(
        notarised["server_keys"][0]["verify_keys"], current["verify_keys"],
        "{notarised}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_may_join_and_leave_through_the_v1_endpoints() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let fake = FakeServer::start(&ca).await?;
    let mallory = fake.user_id("mallory");
    let room = encode(room_id.as_str());
    let member_path = format!(
        "/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{}",
        encode(&mallory)
    );

    let (version, mut template) = fake
        .make_join(a.server_name(), room_id.as_str(), &mallory)
        .await?;
    template["origin_server_ts"] = json!(now_ms());
    let (join_id, join) = fake.sign_event(&version, template)?;
    let path = format!(
        "/_matrix/federation/v1/send_join/{room}/{}",
        encode(&join_id)
    );
    let (status, answer) = fake
        .request("PUT", a.server_name(), &path, Some(&join))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0], 200, "a v1 answer is [200, {{...}}]: {answer}");
    let state = answer[1]["state"].as_array().context("no state")?;
    assert!(
        state.iter().any(|e| e["type"] == "m.room.create"),
        "{answer}"
    );
    assert!(answer[1]["auth_chain"].is_array(), "{answer}");
    let (_, member) = a
        .request("GET", &member_path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(member["membership"], "join", "{member}");

    let path = format!(
        "/_matrix/federation/v1/make_leave/{room}/{}",
        encode(&mallory)
    );
    let (status, made) = fake.request("GET", a.server_name(), &path, None).await?;
    assert_eq!(status, 200, "{made}");
    let mut template = made["event"].clone();
    template["origin_server_ts"] = json!(now_ms());
    let (leave_id, leave) = fake.sign_event(&version, template)?;
    let path = format!(
        "/_matrix/federation/v1/send_leave/{room}/{}",
        encode(&leave_id)
    );
    let (status, answer) = fake
        .request("PUT", a.server_name(), &path, Some(&leave))
        .await?;
    assert_eq!(
        (status, answer.clone()),
        (200, json!([200, {}])),
        "{answer}"
    );
    let (_, member) = a
        .request("GET", &member_path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(member["membership"], "leave", "{member}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invite_into_a_version_1_room_comes_through_the_v1_endpoint() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let alice = a.register("alice").await?;
    let alice_id = format!("@alice:{}", a.server_name());
    let fake = FakeServer::start(&ca).await?;
    let mallory = fake.user_id("mallory");
    let room_id = format!("!old:{}", fake.server_name());
    // Room version 1 events carry their id.
    let event_id = format!("$invite1:{}", fake.server_name());
    let event = json!({
        "event_id": event_id,
        "room_id": room_id,
        "sender": mallory,
        "origin": fake.server_name(),
        "origin_server_ts": now_ms(),
        "type": "m.room.member",
        "state_key": alice_id,
        "content": { "membership": "invite" },
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
        "unsigned": { "invite_room_state": [
            { "type": "m.room.name", "state_key": "", "sender": mallory, "content": { "name": "Old times" } },
        ] },
    });
    let (_, signed) = fake.sign_event(&RoomVersionId::V1, event)?;
    let path = format!(
        "/_matrix/federation/v1/invite/{}/{}",
        encode(&room_id),
        encode(&event_id)
    );
    let (status, answer) = fake
        .request("PUT", a.server_name(), &path, Some(&signed))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0], 200, "{answer}");
    let countersigned = &answer[1]["event"];
    assert_eq!(countersigned["event_id"], event_id.as_str(), "{answer}");
    assert!(
        countersigned["signatures"][a.server_name()].is_object(),
        "{answer}"
    );
    let sync = complement_tests::raw_sync(&a, &alice, None, 0).await?;
    let invite = sync
        .pointer(&format!("/rooms/invite/{room_id}/invite_state/events"))
        .context("no invite in sync")?;
    assert!(invite.to_string().contains("Old times"), "{sync}");
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
