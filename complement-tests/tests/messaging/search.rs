//! Message search: words and their beginnings (also inside Chinese or Japanese text)
//! found in the rooms the user is or was in,
//! never what they may not see; ranked or recent order, highlights, context with
//! profiles, groupings, paging; redactions forgotten; the index kept across a crash
//! and rebuilt from the rooms when it is gone.

use complement_tests::eventually;
use matrix_sdk::ruma::{
    api::client::search::search_events::v3 as search_events, events::AnyTimelineEvent,
};

use super::*;

/// `/search` over the raw API: the room events category.
async fn search_raw(
    server: &TestServer,
    client: &Client,
    criteria: Value,
    next_batch: Option<&str>,
) -> anyhow::Result<Value> {
    let mut path = "/_matrix/client/v3/search".to_owned();
    if let Some(token) = next_batch {
        path.push_str(&format!("?next_batch={token}"));
    }
    let (status, body) = server
        .request(
            "POST",
            &path,
            Some(&token(client)),
            Some(json!({ "search_categories": { "room_events": criteria } })),
        )
        .await?;
    anyhow::ensure!(status == 200, "search answered {status}: {body}");
    Ok(body["search_categories"]["room_events"].clone())
}

fn bodies(events: &Value) -> Vec<String> {
    events["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|result| result["result"]["content"]["body"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Searches until the hits have exactly `expected` bodies (the index takes new
/// messages a moment after they are written).
async fn search_until(
    server: &TestServer,
    client: &Client,
    term: &str,
    expected: &[&str],
) -> anyhow::Result<Value> {
    let criteria = json!({ "search_term": term, "order_by": "recent" });
    eventually(
        &format!("search for {term:?} never gave {expected:?}"),
        async || {
            let found = search_raw(server, client, criteria.clone(), None).await?;
            Ok((bodies(&found) == expected).then_some(found))
        },
    )
    .await
}

#[tokio::test]
async fn search_finds_what_the_user_may_see_ranked_paged_and_in_context() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let carol = server.register("carol").await?;
    for body in [
        "Before anything",
        "The quarterly meeting moves to Thursday",
        "After that",
    ] {
        send(&server, &alice, &room_id, "m.room.message", text(body)).await?;
    }

    // A word's beginning finds it; the highlights name the word found; the context
    // holds the neighbours and their senders' profiles; groupings by room and sender.
    let found = search_until(
        &server,
        &bob,
        "meet",
        &["The quarterly meeting moves to Thursday"],
    )
    .await?;
    let criteria = json!({
        "search_term": "MEET thursday",
        "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
        "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        "include_state": true,
    });
    let found_again = search_raw(&server, &bob, criteria, None).await?;
    assert_eq!(bodies(&found_again), bodies(&found));
    assert_eq!(found_again["count"], 1, "{found_again}");
    let highlights = found_again["highlights"].as_array().unwrap();
    assert!(highlights.contains(&json!("meeting")), "{highlights:?}");
    assert!(highlights.contains(&json!("thursday")), "{highlights:?}");
    let result = &found_again["results"][0];
    assert!(
        result["rank"].as_f64().is_some_and(|rank| rank > 0.0),
        "{result}"
    );
    let context = &result["context"];
    assert_eq!(
        context["events_before"][0]["content"]["body"],
        "Before anything"
    );
    assert_eq!(context["events_after"][0]["content"]["body"], "After that");
    assert_eq!(
        context["profile_info"]["@alice:localhost"]["displayname"], "alice",
        "{context}"
    );
    let event_id = result["result"]["event_id"].as_str().unwrap();
    let groups = &found_again["groups"];
    assert_eq!(groups["room_id"][room_id.as_str()]["results"][0], event_id);
    assert_eq!(groups["sender"]["@alice:localhost"]["results"][0], event_id);
    assert!(
        found_again["state"][room_id.as_str()]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );

    // Carol, in no room with it, finds nothing; with matrix-sdk's types the answer
    // parses as the spec has it.
    let mut categories = search_events::Categories::new();
    categories.room_events = Some(search_events::Criteria::new("meeting".to_owned()));
    let request = search_events::Request::new(categories);
    let response = carol.send(request.clone()).await?;
    assert!(response.search_categories.room_events.results.is_empty());
    let response = bob.send(request).await?;
    let results = &response.search_categories.room_events.results;
    assert_eq!(results.len(), 1);
    let event = results[0].result.as_ref().unwrap().deserialize()?;
    assert!(matches!(event, AnyTimelineEvent::MessageLike(_)));

    // A room Carol left: what was said while she was there is found, what was said
    // after she left is not.
    let lobby = {
        let (status, body) = server
            .request(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token(&alice)),
                Some(json!({ "preset": "public_chat", "name": "Lobby" })),
            )
            .await?;
        anyhow::ensure!(status == 200, "{body}");
        OwnedRoomId::try_from(body["room_id"].as_str().unwrap())?
    };
    carol.join_room_by_id(&lobby).await?;
    send(
        &server,
        &alice,
        &lobby,
        "m.room.message",
        text("Budget review in the lobby"),
    )
    .await?;
    carol.get_room(&lobby).unwrap().leave().await?;
    send(
        &server,
        &alice,
        &lobby,
        "m.room.message",
        text("Budget secrets after Carol left"),
    )
    .await?;
    search_until(
        &server,
        &alice,
        "budget",
        &[
            "Budget secrets after Carol left",
            "Budget review in the lobby",
        ],
    )
    .await?;
    let carols = search_raw(&server, &carol, json!({ "search_term": "budget" }), None).await?;
    assert_eq!(bodies(&carols), ["Budget review in the lobby"], "{carols}");
    // The filter narrows the rooms.
    let only_lobby = json!({ "search_term": "budget", "filter": { "rooms": [room_id] } });
    assert!(bodies(&search_raw(&server, &alice, only_lobby, None).await?).is_empty());

    // Text written without spaces (Chinese, Japanese) is found by a word inside it.
    for body in ["我们明天去北京开会", "東京で会いましょう"] {
        send(&server, &alice, &lobby, "m.room.message", text(body)).await?;
    }
    search_until(&server, &alice, "北京", &["我们明天去北京开会"]).await?;
    search_until(&server, &alice, "東京", &["東京で会いましょう"]).await?;

    // Paging: 15 hits, 10 a page; the second page ends the search.
    for n in 0..15 {
        send(
            &server,
            &bob,
            &room_id,
            "m.room.message",
            text(&format!("lunch order {n}")),
        )
        .await?;
    }
    let criteria =
        json!({ "search_term": "lunch", "order_by": "recent", "filter": { "limit": 10 } });
    let first = eventually("the lunch orders were never all found", async || {
        let page = search_raw(&server, &bob, criteria.clone(), None).await?;
        Ok((page["count"] == 15).then_some(page))
    })
    .await?;
    assert_eq!(bodies(&first).len(), 10);
    assert_eq!(bodies(&first)[0], "lunch order 14", "newest first");
    let next = first["next_batch"].as_str().expect("a next page");
    let second = search_raw(&server, &bob, criteria.clone(), Some(next)).await?;
    assert_eq!(bodies(&second).len(), 5);
    assert_eq!(bodies(&second)[4], "lunch order 0");
    assert!(
        second.get("next_batch").is_none_or(Value::is_null),
        "{second}"
    );

    // A redacted message is found no more.
    let redact = format!("/_matrix/client/v3/rooms/{room_id}/redact/{event_id}/r1");
    let (status, body) = server
        .request("PUT", &redact, Some(&token(&alice)), Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{body}");
    search_until(&server, &bob, "meeting", &[]).await?;
    Ok(())
}

#[tokio::test]
async fn the_index_survives_a_crash_and_is_rebuilt_when_gone() -> anyhow::Result<()> {
    let mut server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        text("Remember the elephant"),
    )
    .await?;
    search_until(&server, &bob, "elephant", &["Remember the elephant"]).await?;
    server.restart().await?;
    search_until(&server, &bob, "elephant", &["Remember the elephant"]).await?;

    // Without its directory, the index is made again from the rooms.
    server.kill9()?;
    std::fs::remove_dir_all(server.database_path().join("search"))?;
    server.restart().await?;
    search_until(&server, &bob, "elephant", &["Remember the elephant"]).await?;
    Ok(())
}
