//! Looking things up: jumping to a date, an event by its id alone, the rooms one shares
//! with someone, and whom to ask for help.

use super::*;
use matrix_sdk::ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{Direction, client::room::get_event_by_timestamp},
};

#[tokio::test]
async fn jumping_to_a_date_finds_the_nearest_event_in_either_direction() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let mut sent = Vec::new();
    for n in 0..5 {
        let id = server
            .send_text(
                &token(&alice),
                room_id.as_str(),
                &format!("d{n}"),
                &format!("day {n}"),
            )
            .await?;
        let (_, event) = server
            .request(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room_id}/event/{id}"),
                Some(&token(&alice)),
                None,
            )
            .await?;
        sent.push((id, event["origin_server_ts"].as_u64().unwrap()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ts = |ms: u64| MilliSecondsSinceUnixEpoch(UInt::try_from(ms).unwrap());
    // Between day 2 and day 3: forwards is day 3, backwards day 2.
    let between = sent[2].1 + (sent[3].1 - sent[2].1) / 2;
    let ask = |dir| get_event_by_timestamp::v1::Request::new(room_id.clone(), ts(between), dir);
    let forwards = bob.send(ask(Direction::Forward)).await?;
    assert_eq!(forwards.event_id.as_str(), sent[3].0);
    assert_eq!(u64::from(forwards.origin_server_ts.0), sent[3].1);
    let backwards = bob.send(ask(Direction::Backward)).await?;
    assert_eq!(backwards.event_id.as_str(), sent[2].0);
    // Exactly at an event's time, that event either way.
    let exact = get_event_by_timestamp::v1::Request::new(
        room_id.clone(),
        ts(sent[1].1),
        Direction::Forward,
    );
    assert_eq!(bob.send(exact).await?.event_id.as_str(), sent[1].0);
    // Nothing after the last message: not found; a stranger may not look.
    let path = format!(
        "/_matrix/client/v1/rooms/{room_id}/timestamp_to_event?ts={}&dir=f",
        sent[4].1 + 60_000
    );
    let (status, body) = server
        .request("GET", &path, Some(&token(&bob)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let carol = server.register("carol").await?;
    let (status, body) = server
        .request("GET", &path, Some(&token(&carol)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // The deprecated lookup of an event by its id alone, as older clients do it.
    let path = format!("/_matrix/client/v3/events/{}", sent[0].0);
    let (status, event) = server
        .request("GET", &path, Some(&token(&bob)), None)
        .await?;
    assert_eq!(
        (status, &event["content"]["body"]),
        (200, &json!("day 0")),
        "{event}"
    );
    assert_eq!(event["room_id"], room_id.as_str());
    let (status, body) = server
        .request("GET", &path, Some(&token(&carol)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn the_rooms_two_users_share_are_listed_on_both_paths() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, dm) = two_in_a_dm(&server).await?;
    let group = complement_tests::room_of_two(&alice, &bob).await?;
    room_alone(&alice).await?;
    let carol = server.register("carol").await?;
    complement_tests::room_of_two(&carol, &alice).await?;

    // (matrix-sdk 0.18 has no type for it: as Element Web asks, over HTTP.)
    let mut expected = vec![dm.to_string(), group.to_string()];
    expected.sort();
    let rooms_of = |body: &Value| {
        let mut rooms: Vec<String> = body["joined"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|room| room.as_str().map(str::to_owned))
            .collect();
        rooms.sort();
        rooms
    };
    let path = "/_matrix/client/v1/mutual_rooms?user_id=@bob:localhost";
    let (status, stable) = server
        .request("GET", path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(status, 200, "{stable}");
    assert_eq!(rooms_of(&stable), expected);
    assert_eq!(
        (&stable["count"], &stable["next_batch"]),
        (&json!(2), &Value::Null)
    );
    let path =
        "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id=@bob:localhost";
    let (status, unstable) = server
        .request("GET", path, Some(&token(&alice)), None)
        .await?;
    assert_eq!(status, 200, "{unstable}");
    assert_eq!(rooms_of(&unstable), expected);
    // Clients look for the flag before they ask.
    let (_, versions) = server
        .request("GET", "/_matrix/client/versions", None, None)
        .await?;
    assert_eq!(
        versions["unstable_features"]["uk.half-shot.msc2666.query_mutual_rooms"],
        true
    );
    assert_eq!(
        versions["unstable_features"]["uk.half-shot.msc2666.query_mutual_rooms.stable"],
        true
    );

    for query in [
        "user_id=@alice:localhost",
        "user_id=@bob:localhost&from=x",
        "user_id=nonsense",
    ] {
        let path = format!("/_matrix/client/v1/mutual_rooms?{query}");
        let (status, body) = server
            .request("GET", &path, Some(&token(&alice)), None)
            .await?;
        assert_eq!(status, 400, "{query}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn the_support_contacts_are_served_when_configured() -> anyhow::Result<()> {
    let plain = TestServer::start().await?;
    let (status, body) = plain
        .request("GET", "/.well-known/matrix/support", None, None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let server = TestServer::start_with(
        "support_page = \"https://example.org/help\"\n\
         support_contacts = [{ role = \"m.role.admin\", matrix_id = \"@admin:localhost\", email_address = \"admin@example.org\" }, { role = \"m.role.security\", email_address = \"security@example.org\" }]",
    )
    .await?;
    let (status, body) = server
        .request("GET", "/.well-known/matrix/support", None, None)
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "support_page": "https://example.org/help",
            "contacts": [
                { "role": "m.role.admin", "matrix_id": "@admin:localhost", "email_address": "admin@example.org" },
                { "role": "m.role.security", "email_address": "security@example.org" },
            ],
        })
    );
    Ok(())
}
