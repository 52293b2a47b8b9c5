//! Who may talk to a room and how it is found: server ACLs, the room directory,
//! delegation.

use super::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alias_of_another_server_is_looked_up_there() -> Result<()> {
    let ca = TestCa::new();
    let pair = Pair::start(&ca).await?;
    // A non-ASCII alias must survive the percent-encoding of the federation query.
    let coffee = format!("#☕:{}", pair.a.server_name());
    let coffee_alias: &matrix_sdk::ruma::RoomAliasId = coffee.as_str().try_into()?;
    pair.alice
        .create_room_alias(coffee_alias, &pair.room_id)
        .await?;
    for alias in [format!("#lobby:{}", pair.a.server_name()), coffee.clone()] {
        let alias: &matrix_sdk::ruma::RoomAliasId = alias.as_str().try_into()?;
        let resolved = pair.bob.resolve_room_alias(alias).await?;
        assert_eq!(resolved.room_id, pair.room_id, "{alias}");
        assert!(
            resolved
                .servers
                .iter()
                .any(|s| s.as_str() == pair.a.server_name()),
            "{alias}: {:?}",
            resolved.servers
        );
    }
    let path = format!(
        "/_matrix/client/v3/directory/room/{}",
        complement_tests::fake_server::encode(&format!("#nosuch:{}", pair.a.server_name()))
    );
    let (status, body) = pair
        .b
        .request("GET", &path, Some(&pair.token(Side::B)), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    Ok(())
}

/// A room of Alice's on A, public or private, a space or not, listed in `parent` if
/// given; returns its id.
async fn room_on(
    server: &TestServer,
    alice: &Client,
    name: &str,
    public: bool,
    space: bool,
    parent: Option<&OwnedRoomId>,
) -> Result<OwnedRoomId> {
    let room_id = complement_tests::named_room(alice, name, public, space).await?;
    if let Some(parent) = parent {
        let path = format!("/_matrix/client/v3/rooms/{parent}/state/m.space.child/{room_id}");
        let via = json!({ "via": [server.server_name()] });
        let (status, body) = server
            .request("PUT", &path, Some(&token(alice)), Some(via))
            .await?;
        ensure!(status == 200, "{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(room_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_space_and_a_room_preview_on_another_server_are_asked_of_it() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let bob = b.register("bob").await?;
    let guild = room_on(&a, &alice, "Guild", true, true, None).await?;
    let hall = room_on(&a, &alice, "Hall", true, false, Some(&guild)).await?;
    let vault = room_on(&a, &alice, "Vault", false, false, Some(&guild)).await?;
    let wing = room_on(&a, &alice, "Wing", true, true, Some(&guild)).await?;
    room_on(&a, &alice, "Attic", true, false, Some(&wing)).await?;

    // B is in none of these rooms: it asks A, a space at a time, and leaves out what
    // Bob may not preview.
    let path = format!("/_matrix/client/v1/rooms/{guild}/hierarchy");
    let (status, body) = b.request("GET", &path, Some(&token(&bob)), None).await?;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["rooms"]
        .as_array()
        .context("rooms")?
        .iter()
        .filter_map(|room| room["name"].as_str())
        .collect();
    assert_eq!(names, ["Guild", "Hall", "Wing", "Attic"], "{body}");
    assert_eq!(
        body["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(3)
    );

    // The preview of a room B is not in, asked of the server named in `via`; a private
    // room is not found.
    let path = format!(
        "/_matrix/client/v1/room_summary/{hall}?via={}",
        a.server_name()
    );
    let (status, body) = b.request("GET", &path, Some(&token(&bob)), None).await?;
    assert_eq!(
        (
            status,
            body["name"].as_str(),
            body["num_joined_members"].as_u64()
        ),
        (200, Some("Hall"), Some(1)),
        "{body}"
    );
    let path = format!(
        "/_matrix/client/v1/room_summary/{vault}?via={}",
        a.server_name()
    );
    let (status, body) = b.request("GET", &path, Some(&token(&bob)), None).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    Ok(())
}
