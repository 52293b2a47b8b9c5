//! The same first-day steps against this server and against Synapse, side by side: what
//! clients read from the answers must agree (an invite carrying the invitee's profile, a
//! name change saying which state it replaces, the legacy mention rules in Synapse's
//! order, a message naming the user highlighting it).

use complement_tests::{TestServer, synapse::Synapse, tls::TestCa, token};
use matrix_sdk::Client;
use serde_json::{Value, json};

/// One client API request as `client`, to the server at `base`.
async fn call(
    base: &str,
    client: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let mut request = http
        .request(method.parse()?, format!("{base}{path}"))
        .bearer_auth(token(client));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
    Ok(body)
}

/// What a client sees of the steps on one server.
#[derive(Debug, PartialEq)]
struct Seen {
    invite_displayname: Value,
    change_replaces_state: bool,
    change_prev_displayname: Value,
    legacy_rules: Vec<String>,
    highlights: Value,
}

async fn first_day(base: &str, alice: &Client, carol: &Client) -> anyhow::Result<Seen> {
    let carol_id = carol.user_id().unwrap().to_string();
    let alice_id = alice.user_id().unwrap().to_string();
    call(
        base,
        carol,
        "PUT",
        &format!("/_matrix/client/v3/profile/{carol_id}/displayname"),
        Some(json!({ "displayname": "Carol Danvers" })),
    )
    .await?;
    call(
        base,
        alice,
        "PUT",
        &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
        Some(json!({ "displayname": "Alice" })),
    )
    .await?;
    let created = call(
        base,
        alice,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(json!({
            "preset": "trusted_private_chat", "is_direct": true, "invite": [carol_id],
        })),
    )
    .await?;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let member = call(
        base,
        alice,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{carol_id}"),
        None,
    )
    .await?;
    call(
        base,
        carol,
        "POST",
        &format!("/_matrix/client/v3/join/{room}"),
        Some(json!({})),
    )
    .await?;
    call(
        base,
        carol,
        "PUT",
        &format!("/_matrix/client/v3/profile/{carol_id}/displayname"),
        Some(json!({ "displayname": "Captain Marvel" })),
    )
    .await?;
    // Synapse writes the name change into rooms in the background: wait for it.
    let mut change = Value::Null;
    for _ in 0..50 {
        let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10");
        let messages = call(base, alice, "GET", &path, None).await?;
        if let Some(found) = messages["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|event| {
                event["type"] == "m.room.member"
                    && event["content"]["displayname"] == "Captain Marvel"
            })
        {
            change = found.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rules = call(base, alice, "GET", "/_matrix/client/v3/pushrules/", None).await?;
    let legacy_rules = ["override", "content", "underride"]
        .iter()
        .flat_map(|kind| {
            rules["global"][kind]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|rule| rule["rule_id"].as_str().map(str::to_owned))
        .filter(|id| {
            [
                ".m.rule.contains_display_name",
                ".m.rule.roomnotif",
                ".m.rule.contains_user_name",
            ]
            .contains(&id.as_str())
        })
        .collect();
    call(
        base,
        carol,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
        Some(json!({ "msgtype": "m.text", "body": "alice, are you coming?" })),
    )
    .await?;
    let mut highlights = Value::Null;
    for _ in 0..50 {
        let sync = call(
            base,
            alice,
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            None,
        )
        .await?;
        highlights =
            sync["rooms"]["join"][&room]["unread_notifications"]["highlight_count"].clone();
        if highlights.as_u64().is_some_and(|count| count > 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(Seen {
        invite_displayname: member["displayname"].clone(),
        change_replaces_state: change["unsigned"]["replaces_state"].is_string(),
        change_prev_displayname: change["unsigned"]["prev_content"]["displayname"].clone(),
        legacy_rules,
        highlights,
    })
}

#[tokio::test]
async fn first_day_steps_look_the_same_here_and_on_synapse() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let (ours, synapse) = tokio::try_join!(TestServer::start(), Synapse::start(&ca))?;
    let here = first_day(
        &ours.base_url(),
        &ours.register("alice").await?,
        &ours.register("carol").await?,
    )
    .await?;
    let there = first_day(
        &synapse.client_url(),
        &synapse.matrix_sdk_client("alice").await?,
        &synapse.matrix_sdk_client("carol").await?,
    )
    .await?;
    assert_eq!(here, there, "this server (left) and Synapse (right) differ");
    assert_eq!(here.invite_displayname, "Carol Danvers");
    assert!(here.change_replaces_state);
    assert_eq!(here.change_prev_displayname, "Carol Danvers");
    assert_eq!(here.legacy_rules.len(), 3, "{:?}", here.legacy_rules);
    assert_eq!(here.highlights, 1);
    Ok(())
}
