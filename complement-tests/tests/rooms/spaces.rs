//! Spaces: the hierarchy of a space, depth first, in the spec's order, a page at a time,
//! with what the asker may not preview left out.

use super::*;
use complement_tests::named_room;
use matrix_sdk::ruma::api::client::space::get_hierarchy;

/// Lists `child` in `space` with the given extra content.
async fn add_child(
    server: &TestServer,
    owner: &matrix_sdk::Client,
    space: &OwnedRoomId,
    child: &OwnedRoomId,
    extra: Value,
) -> anyhow::Result<()> {
    let mut content = json!({ "via": ["localhost"] });
    content
        .as_object_mut()
        .expect("an object")
        .extend(extra.as_object().cloned().unwrap_or_default());
    let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}");
    let (status, body) = server
        .request("PUT", &path, Some(&token(owner)), Some(content))
        .await?;
    anyhow::ensure!(status == 200, "{body}");
    // Children without `order` go by their events' age: keep the milliseconds apart.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(())
}

/// The names of the rooms of one hierarchy page, and its `next_batch`.
async fn page(
    server: &TestServer,
    asker: &matrix_sdk::Client,
    space: &OwnedRoomId,
    query: &str,
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let path = format!("/_matrix/client/v1/rooms/{space}/hierarchy?{query}");
    let (status, body) = server
        .request("GET", &path, Some(&token(asker)), None)
        .await?;
    anyhow::ensure!(status == 200, "{status} {body}");
    let names = body["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|room| room["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    Ok((names, body["next_batch"].as_str().map(str::to_owned)))
}

#[tokio::test]
async fn a_space_hierarchy_is_walked_depth_first_in_order_and_a_page_at_a_time()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let company = named_room(&alice, "Company", true, true).await?;
    let general = named_room(&alice, "General", true, false).await?;
    let secret = named_room(&alice, "Secret", false, false).await?;
    let teams = named_room(&alice, "Teams", true, true).await?;
    let team_a = named_room(&alice, "Team A", true, false).await?;
    let random = named_room(&alice, "Random", true, false).await?;
    add_child(
        &server,
        &alice,
        &company,
        &general,
        json!({ "suggested": true }),
    )
    .await?;
    add_child(&server, &alice, &company, &secret, json!({})).await?;
    add_child(&server, &alice, &company, &teams, json!({})).await?;
    // An `order` puts Random first, although it was added last.
    add_child(&server, &alice, &company, &random, json!({ "order": "a" })).await?;
    add_child(&server, &alice, &teams, &team_a, json!({})).await?;
    // A child without `via` is no child.
    let path = format!("/_matrix/client/v3/rooms/{company}/state/m.space.child/{team_a}");
    server
        .request("PUT", &path, Some(&token(&alice)), Some(json!({})))
        .await?;

    // Through matrix-sdk: Bob, a stranger, sees every room he could join, depth first.
    let answer = bob
        .send(get_hierarchy::v1::Request::new(company.clone()))
        .await?;
    let names: Vec<_> = answer
        .rooms
        .iter()
        .map(|room| room.summary.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["Company", "Random", "General", "Teams", "Team A"]);
    assert_eq!(answer.next_batch, None);
    let top = &answer.rooms[0];
    assert_eq!(
        top.summary.room_type,
        Some(matrix_sdk::ruma::room::RoomType::Space)
    );
    let listed: Vec<String> = top
        .children_state
        .iter()
        .map(|event| event.get_field::<String>("state_key").unwrap().unwrap())
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    for child in [&random, &general, &secret, &teams] {
        assert!(
            listed.contains(&child.to_string()),
            "{child} not in {listed:?}"
        );
    }
    assert!(
        answer.rooms[1].children_state.is_empty(),
        "a plain room lists no children"
    );

    // Alice, a member of the private room, sees it too.
    let (names, _) = page(&server, &alice, &company, "").await?;
    assert_eq!(
        names,
        ["Company", "Random", "General", "Secret", "Teams", "Team A"]
    );

    // Two at a time, through next_batch.
    let (first, next) = page(&server, &bob, &company, "limit=2").await?;
    assert_eq!(first, ["Company", "Random"]);
    let next = next.expect("a next_batch after the first page");
    let (second, next) = page(&server, &bob, &company, &format!("limit=2&from={next}")).await?;
    assert_eq!(second, ["General", "Teams"]);
    let next = next.expect("a next_batch after the second page");
    let (third, last) = page(&server, &bob, &company, &format!("limit=2&from={next}")).await?;
    assert_eq!((third, last), (vec!["Team A".to_owned()], None));

    // The walk's settings cannot change between pages; an unknown token is refused.
    for query in [
        format!("limit=2&from={next}&suggested_only=true"),
        format!("limit=2&from={next}&max_depth=1"),
        "from=nonsense".to_owned(),
        "limit=0".to_owned(),
    ] {
        let path = format!("/_matrix/client/v1/rooms/{company}/hierarchy?{query}");
        let (status, body) = server
            .request("GET", &path, Some(&token(&bob)), None)
            .await?;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{query}: {body}"
        );
    }

    // max_depth=1 stops below the space's own children; suggested_only keeps only those.
    let (names, _) = page(&server, &bob, &company, "max_depth=1").await?;
    assert_eq!(names, ["Company", "Random", "General", "Teams"]);
    let (names, _) = page(&server, &bob, &company, "suggested_only=true").await?;
    assert_eq!(names, ["Company", "General"]);

    // A private space is not Bob's to walk.
    let hidden = named_room(&alice, "Hidden", false, true).await?;
    let path = format!("/_matrix/client/v1/rooms/{hidden}/hierarchy");
    let (status, body) = server
        .request("GET", &path, Some(&token(&bob)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // The room summary says it is a space.
    let path = format!("/_matrix/client/v1/room_summary/{company}");
    let (status, body) = server
        .request("GET", &path, Some(&token(&bob)), None)
        .await?;
    assert_eq!(
        (status, body["room_type"].as_str()),
        (200, Some("m.space")),
        "{body}"
    );
    Ok(())
}
