//! What another server may ask of a room: a server the room's ACL denies gets 403 from
//! every federation endpoint that names the room, and a room this server has left is
//! not one it helps others join. The asking server is the harness's fake server, whose
//! requests are signed like any server's.

use complement_tests::fake_server::{FakeServer, encode};

use super::*;

/// `(method, path, body)` of each federation endpoint that names `room_id`, for the fake
/// server's `user` and an `event_id` of the room.
fn room_endpoints(
    room_id: &str,
    event_id: &str,
    user: &str,
) -> Vec<(&'static str, String, Option<Value>)> {
    let (room, event, user) = (encode(room_id), encode(event_id), encode(user));
    let missing = json!({ "earliest_events": [], "latest_events": [event_id], "limit": 10 });
    vec![
        ("GET", format!("/_matrix/federation/v1/event/{event}"), None),
        (
            "GET",
            format!("/_matrix/federation/v1/state/{room}?event_id={event}"),
            None,
        ),
        (
            "GET",
            format!("/_matrix/federation/v1/state_ids/{room}?event_id={event}"),
            None,
        ),
        (
            "GET",
            format!("/_matrix/federation/v1/backfill/{room}?v={event}&limit=10"),
            None,
        ),
        (
            "GET",
            format!("/_matrix/federation/v1/event_auth/{room}/{event}"),
            None,
        ),
        (
            "POST",
            format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(missing),
        ),
        (
            "GET",
            format!("/_matrix/federation/v1/make_join/{room}/{user}?ver=10&ver=11"),
            None,
        ),
        (
            "GET",
            format!("/_matrix/federation/v1/make_leave/{room}/{user}"),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_the_acl_denies_is_refused_by_every_room_endpoint() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let fake = FakeServer::start(&ca).await?;
    let mallory = fake.user_id("mallory");
    let mut room = fake
        .join(a.server_name(), room_id.as_str(), &mallory)
        .await?;
    let message = a
        .send_text(&token(&alice), room_id.as_str(), "m1", "before the ACL")
        .await?;

    // Joined and allowed, the fake server may read the room.
    for (method, path, body) in room_endpoints(room_id.as_str(), &message, &mallory) {
        if path.contains("make_join") {
            continue; // Mallory is joined already; a template would still be served.
        }
        let (status, answer) = fake
            .request(method, a.server_name(), &path, body.as_ref())
            .await?;
        assert_eq!(status, 200, "{method} {path} before the ACL: {answer}");
    }

    // Every server here is an IP literal: refusing IP literals denies the fake one.
    let acl = json!({ "allow": ["*"], "deny": [], "allow_ip_literals": false });
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/");
    let (status, body) = a
        .request("PUT", &path, Some(&token(&alice)), Some(acl))
        .await?;
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in room_endpoints(room_id.as_str(), &message, &mallory) {
        let (status, answer) = fake
            .request(method, a.server_name(), &path, body.as_ref())
            .await?;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{method} {path} after the ACL: {answer}"
        );
    }

    // A PDU and a typing notice it sends are dropped, though the transaction is taken.
    let event = room.event(
        &mallory,
        "m.room.message",
        None,
        json!({ "msgtype": "m.text", "body": "denied" }),
    );
    let (event_id, pdu) = fake.sign_event(&room.version, event)?;
    let typing = json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": mallory, "typing": true } });
    let (status, answer) = fake
        .send_transaction(a.server_name(), std::slice::from_ref(&pdu), &[typing])
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["pdus"][&event_id]["error"].is_string(), "{answer}");
    room.advance(&event_id, &pdu);
    let path = format!(
        "/_matrix/client/v3/rooms/{room_id}/event/{}",
        encode(&event_id)
    );
    let (status, _) = a.request("GET", &path, Some(&token(&alice)), None).await?;
    assert_eq!(status, 404, "the denied server's event was stored");
    let sync = complement_tests::raw_sync(&a, &alice, None, 0).await?;
    let typing = sync.pointer(&format!("/rooms/join/{room_id}/ephemeral/events"));
    assert!(
        !typing.is_some_and(|events| events.to_string().contains(&mallory)),
        "{sync}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_this_server_left_is_not_one_it_helps_others_join() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    let fake = FakeServer::start(&ca).await?;
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11",
        encode(room_id.as_str()),
        encode(&fake.user_id("mallory"))
    );
    let (status, answer) = fake.request("GET", a.server_name(), &path, None).await?;
    assert_eq!(status, 200, "while Alice is in the room: {answer}");
    alice
        .get_room(&room_id)
        .context("alice's room")?
        .leave()
        .await?;
    let (status, answer) = fake.request("GET", a.server_name(), &path, None).await?;
    assert_eq!(
        (status, answer["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "after the last local member left: {answer}"
    );
    Ok(())
}
