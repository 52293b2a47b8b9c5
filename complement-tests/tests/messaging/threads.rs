//! Threads, edits, reactions and references as Element shows them: bundled aggregations,
//! `/relations`, `/threads`, redactions undoing relations, thread-aware unread counts.

use complement_tests::raw_sync_filtered;
use matrix_sdk::{
    Room,
    room::{IncludeRelations, ListThreadsOptions, RelationsOptions},
    ruma::{
        OwnedEventId, api::Direction, api::client::threads::get_threads::v1::IncludeThreads,
        events::relation::RelationType,
    },
};

use super::*;

/// Sends through matrix-sdk; returns the event id.
async fn sdk_send(room: &Room, kind: &str, content: Value) -> anyhow::Result<OwnedEventId> {
    Ok(room.send_raw(kind, content).await?.response.event_id)
}

fn thread_reply(root: &OwnedEventId, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": true,
            "m.in_reply_to": { "event_id": root },
        },
    })
}

/// The event's JSON as the client got it.
fn json_of(event: &matrix_sdk::deserialized_responses::TimelineEvent) -> Value {
    serde_json::from_str(event.raw().json().get()).unwrap()
}

fn ids_of(events: &[matrix_sdk::deserialized_responses::TimelineEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| json_of(event)["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn threads_edits_and_reactions_bundle_page_and_undo() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let at_alice = alice.get_room(&room_id).expect("alice's room");
    let at_bob = bob.get_room(&room_id).expect("bob's room");

    let root = sdk_send(&at_alice, "m.room.message", text("Which day?")).await?;
    let monday = sdk_send(&at_bob, "m.room.message", thread_reply(&root, "Monday")).await?;
    let tuesday = sdk_send(&at_alice, "m.room.message", thread_reply(&root, "Tuesday")).await?;
    let edit = sdk_send(
        &at_alice,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "* Which day works?",
            "m.new_content": { "msgtype": "m.text", "body": "Which day works?" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": root },
        }),
    )
    .await?;
    let thumbs = sdk_send(
        &at_bob,
        "m.reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } }),
    )
    .await?;
    // An edit by someone else is a relation, never the root's edit.
    let forged_edit = sdk_send(
        &at_bob,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "* Never",
            "m.new_content": { "msgtype": "m.text", "body": "Never" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": root },
        }),
    )
    .await?;

    // The root, as Bob fetches it, carries the thread's summary and Alice's edit.
    let fetched = json_of(&at_bob.event(&root, None).await?);
    let relations = &fetched["unsigned"]["m.relations"];
    assert_eq!(relations["m.thread"]["count"], 2, "{fetched}");
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        tuesday.as_str()
    );
    assert_eq!(
        relations["m.thread"]["latest_event"]["content"]["body"],
        "Tuesday"
    );
    assert_eq!(relations["m.thread"]["current_user_participated"], true);
    assert_eq!(relations["m.replace"]["event_id"], edit.as_str());
    assert_eq!(
        relations["m.replace"]["content"]["m.new_content"]["body"],
        "Which day works?"
    );
    // And the same in /messages.
    let messages = at_bob
        .messages(matrix_sdk::room::MessagesOptions::backward())
        .await?;
    let in_messages = messages
        .chunk
        .iter()
        .map(json_of)
        .find(|event| event["event_id"] == root.as_str())
        .expect("the root in /messages");
    assert_eq!(
        in_messages["unsigned"]["m.relations"]["m.thread"]["count"],
        2
    );

    // `/relations`: everything, newest first; by type; paged; forwards.
    let all = at_bob
        .relations(root.clone(), RelationsOptions::default())
        .await?;
    assert_eq!(
        ids_of(&all.chunk),
        [&forged_edit, &thumbs, &edit, &tuesday, &monday].map(|id| id.to_string())
    );
    let reactions = at_bob
        .relations(
            root.clone(),
            RelationsOptions {
                include_relations: IncludeRelations::RelationsOfType(RelationType::Annotation),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(ids_of(&reactions.chunk), [thumbs.to_string()]);
    let first_page = at_bob
        .relations(
            root.clone(),
            RelationsOptions {
                include_relations: IncludeRelations::RelationsOfType(RelationType::Thread),
                limit: Some(1u32.into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(ids_of(&first_page.chunk), [tuesday.to_string()]);
    let next = first_page.next_batch_token.clone().expect("a second page");
    let second_page = at_bob
        .relations(
            root.clone(),
            RelationsOptions {
                from: Some(next),
                include_relations: IncludeRelations::RelationsOfType(RelationType::Thread),
                limit: Some(1u32.into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(ids_of(&second_page.chunk), [monday.to_string()]);
    assert!(second_page.next_batch_token.is_none());
    let forwards = at_bob
        .relations(
            root.clone(),
            RelationsOptions {
                dir: Direction::Forward,
                include_relations: IncludeRelations::RelationsOfType(RelationType::Thread),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(
        ids_of(&forwards.chunk),
        [monday.to_string(), tuesday.to_string()]
    );

    // Redacting the reaction removes it; redacting the edit unbundles it.
    at_bob.redact(&thumbs, None, None).await?;
    at_alice.redact(&edit, None, None).await?;
    let reactions = at_bob
        .relations(
            root.clone(),
            RelationsOptions {
                include_relations: IncludeRelations::RelationsOfType(RelationType::Annotation),
                ..Default::default()
            },
        )
        .await?;
    assert!(reactions.chunk.is_empty(), "the redacted reaction is gone");
    let fetched = json_of(&at_bob.event(&root, None).await?);
    assert!(
        fetched["unsigned"]["m.relations"]
            .get("m.replace")
            .is_none(),
        "{fetched}"
    );
    assert_eq!(fetched["unsigned"]["m.relations"]["m.thread"]["count"], 2);

    // `/threads`: most recent activity first; `participated` only those Bob took part in.
    let other_root = sdk_send(&at_alice, "m.room.message", text("Pizza or pasta?")).await?;
    sdk_send(
        &at_alice,
        "m.room.message",
        thread_reply(&other_root, "I say pizza"),
    )
    .await?;
    let listed = at_bob.list_threads(ListThreadsOptions::default()).await?;
    assert_eq!(
        ids_of(&listed.chunk),
        [other_root.to_string(), root.to_string()]
    );
    let participated = at_bob
        .list_threads(ListThreadsOptions {
            include_threads: IncludeThreads::Participated,
            ..Default::default()
        })
        .await?;
    assert_eq!(ids_of(&participated.chunk), [root.to_string()]);
    let paged = at_bob
        .list_threads(ListThreadsOptions {
            limit: Some(1u32.into()),
            ..Default::default()
        })
        .await?;
    assert_eq!(ids_of(&paged.chunk), [other_root.to_string()]);
    let rest = at_bob
        .list_threads(ListThreadsOptions {
            from: paged.prev_batch_token.clone(),
            ..Default::default()
        })
        .await?;
    assert_eq!(ids_of(&rest.chunk), [root.to_string()]);
    Ok(())
}

#[tokio::test]
async fn unread_counts_are_kept_per_thread_and_threaded_receipts_clear_them() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let root = send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        text("Which day?"),
    )
    .await?;
    let root_id: OwnedEventId = root.clone().try_into()?;
    let reply = send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        thread_reply(&root_id, "Monday?"),
    )
    .await?;
    send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        thread_reply(&root_id, "Or Tuesday?"),
    )
    .await?;
    let later = send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        text("Also: lunch"),
    )
    .await?;

    let by_thread = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let t = token(&bob);
    let counts = async |filter: Option<&Value>| -> anyhow::Result<(Value, Value)> {
        let sync = raw_sync_filtered(&server, &t, None, 0, filter).await?;
        let room = &sync["rooms"]["join"][room_id.as_str()];
        Ok((
            room["unread_notifications"].clone(),
            room["unread_thread_notifications"].clone(),
        ))
    };
    let (main, threads) = counts(Some(&by_thread)).await?;
    assert_eq!(
        main,
        json!({ "notification_count": 2, "highlight_count": 0 })
    );
    assert_eq!(
        threads,
        json!({ root.as_str(): { "notification_count": 2, "highlight_count": 0 } })
    );
    let (all, threads) = counts(None).await?;
    assert_eq!(
        all["notification_count"], 4,
        "without the filter, threads count too"
    );
    assert!(threads.is_null() || threads == json!({}), "{threads}");

    // A receipt in the thread reads the thread up to it, not the main timeline.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{reply}");
    let (status, body) = server
        .request("POST", &path, Some(&t), Some(json!({ "thread_id": root })))
        .await?;
    assert_eq!(status, 200, "{body}");
    let (main, threads) = counts(Some(&by_thread)).await?;
    assert_eq!(main["notification_count"], 2);
    assert_eq!(threads[root.as_str()]["notification_count"], 1);

    // A main-timeline receipt reads the main timeline only.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{later}");
    server
        .request(
            "POST",
            &path,
            Some(&t),
            Some(json!({ "thread_id": "main" })),
        )
        .await?;
    let (main, threads) = counts(Some(&by_thread)).await?;
    assert_eq!(main["notification_count"], 0);
    assert_eq!(threads[root.as_str()]["notification_count"], 1);

    // An unthreaded receipt reads everything before it.
    server
        .request("POST", &path, Some(&t), Some(json!({})))
        .await?;
    let (all, _) = counts(None).await?;
    assert_eq!(
        all,
        json!({ "notification_count": 0, "highlight_count": 0 })
    );
    Ok(())
}

/// What matrix-sdk sees when the server refuses an event: its status and error kind.
async fn refused(
    room: &Room,
    kind: &str,
    content: Value,
) -> anyhow::Result<(u16, matrix_sdk::ruma::api::error::ErrorKind)> {
    let error = match room.send_raw(kind, content).await {
        Ok(sent) => anyhow::bail!("sent as {}", sent.response.event_id),
        Err(error) => error,
    };
    let kind = error
        .client_api_error_kind()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("not a Matrix error: {error}"))?;
    let status = error
        .as_client_api_error()
        .map(|error| error.status_code.as_u16())
        .unwrap_or_default();
    Ok((status, kind))
}

#[tokio::test]
async fn a_second_identical_reaction_and_a_thread_off_a_relation_are_refused() -> anyhow::Result<()>
{
    use matrix_sdk::ruma::api::error::ErrorKind;
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let at_alice = alice.get_room(&room_id).expect("alice's room");
    let at_bob = bob.get_room(&room_id).expect("bob's room");
    let root = sdk_send(&at_alice, "m.room.message", text("Lunch?")).await?;
    let thumbs =
        || json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "👍" } });

    let first = sdk_send(&at_bob, "m.reaction", thumbs()).await?;
    assert_eq!(
        refused(&at_bob, "m.reaction", thumbs()).await?,
        (400, ErrorKind::DuplicateAnnotation)
    );
    // Someone else's, and another key, are not duplicates.
    sdk_send(&at_alice, "m.reaction", thumbs()).await?;
    sdk_send(
        &at_bob,
        "m.reaction",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": root, "key": "🍕" } }),
    )
    .await?;
    // Once the first is redacted, the same reaction may be sent again.
    at_bob.redact(&first, None, None).await?;
    sdk_send(&at_bob, "m.reaction", thumbs()).await?;

    // A thread starts from a plain event, not from a reply in a thread or a reaction.
    let reply = sdk_send(&at_bob, "m.room.message", thread_reply(&root, "Yes")).await?;
    assert_eq!(
        refused(&at_alice, "m.room.message", thread_reply(&reply, "Where?")).await?,
        (400, ErrorKind::InvalidParam)
    );
    sdk_send(&at_alice, "m.room.message", thread_reply(&root, "Where?")).await?;
    Ok(())
}
