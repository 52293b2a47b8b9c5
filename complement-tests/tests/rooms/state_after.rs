//! `use_state_after` (MSC4222, Matrix 1.16): rooms carry the state at the end of their
//! timeline as `state_after` (under the unstable name when asked by it), and no `state`.

use super::*;

async fn sync_with(
    server: &TestServer,
    client: &matrix_sdk::Client,
    query: &str,
) -> anyhow::Result<Value> {
    let (status, body) = server
        .request(
            "GET",
            &format!("/_matrix/client/v3/sync?timeout=0&{query}"),
            Some(&token(client)),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "sync answered {status}: {body}");
    Ok(body)
}

fn state_types(section: &Value) -> Vec<String> {
    section["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["type"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn state_after_carries_the_state_at_the_end_of_the_timeline() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;

    // An initial sync: the whole state at the end, under the name asked by.
    let initial = sync_with(&server, &bob, "use_state_after=true").await?;
    let room = &initial["rooms"]["join"][room_id.as_str()];
    assert!(room.get("state").is_none(), "{room}");
    let types = state_types(&room["state_after"]);
    assert!(types.contains(&"m.room.create".to_owned()), "{types:?}");
    assert!(types.contains(&"m.room.member".to_owned()), "{types:?}");
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    // The room is renamed: the name is in the timeline and in state_after.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/");
    let (status, body) = server
        .request(
            "PUT",
            &path,
            Some(&token(&alice)),
            Some(json!({ "name": "Renamed" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let unstable = sync_with(
        &server,
        &bob,
        &format!("since={since}&org.matrix.msc4222.use_state_after=true"),
    )
    .await?;
    let room = &unstable["rooms"]["join"][room_id.as_str()];
    assert!(room.get("state").is_none(), "{room}");
    assert!(room.get("state_after").is_none(), "{room}");
    let after = &room["org.matrix.msc4222.state_after"]["events"];
    assert_eq!(after.as_array().map(Vec::len), Some(1), "{room}");
    assert_eq!(after[0]["content"]["name"], "Renamed");
    assert_eq!(room["timeline"]["events"][0]["type"], "m.room.name");

    // Without the parameter, the state before the timeline, as ever.
    let plain = sync_with(&server, &bob, &format!("since={since}")).await?;
    let room = &plain["rooms"]["join"][room_id.as_str()];
    assert!(room.get("state_after").is_none(), "{room}");
    assert!(
        room["state"]["events"].as_array().is_none_or(Vec::is_empty),
        "{room}"
    );
    Ok(())
}
