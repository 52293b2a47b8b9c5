//! Thread subscriptions (MSC4306, MSC4308) as Element X uses them, through matrix-sdk's
//! `subscribe_thread`, `fetch_thread_subscription` and `unsubscribe_thread`: a message in
//! a thread notifies only those subscribed to it (and those it mentions); an automatic
//! subscription names an event in the thread and loses to a later unsubscription; the
//! changes page backwards and come with sliding sync.

use complement_tests::raw_sync_filtered;
use matrix_sdk::ruma::OwnedEventId;

use super::*;

fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true },
    })
}

const ENABLED: &str = "[global.push]\nthread_subscriptions = true\n\n\
    [global.rate_limits.message]\nper_second = 100000.0\nburst = 100000\n";

fn subscription_path(room_id: &OwnedRoomId, root: &str) -> String {
    format!(
        "/_matrix/client/unstable/io.element.msc4306/rooms/{room_id}/thread/{}/subscription",
        complement_tests::fake_server::encode(root)
    )
}

#[tokio::test]
async fn a_thread_notifies_its_subscribers_and_automatic_subscriptions_yield_to_unsubscribing()
-> anyhow::Result<()> {
    let server = TestServer::start_with(ENABLED).await?;
    let (_, body) = server
        .request("GET", "/_matrix/client/versions", None, None)
        .await?;
    assert_eq!(body["unstable_features"]["org.matrix.msc4306"], true);
    assert_eq!(body["unstable_features"]["org.matrix.msc4308"], true);

    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let at_alice = alice.get_room(&room_id).expect("alice's room");
    let (ta, tb) = (token(&alice), token(&bob));
    let (_, rules) = server
        .request("GET", "/_matrix/client/v3/pushrules/", Some(&ta), None)
        .await?;
    let postcontent: Vec<&str> = rules["global"]["postcontent"]
        .as_array()
        .map(|rules| rules.iter().filter_map(|r| r["rule_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        postcontent,
        [
            ".io.element.msc4306.rule.unsubscribed_thread",
            ".io.element.msc4306.rule.subscribed_thread"
        ]
    );

    let by_thread = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let thread_count = async |root: &str| -> anyhow::Result<u64> {
        let sync = raw_sync_filtered(&server, &ta, None, 0, Some(&by_thread)).await?;
        let room = &sync["rooms"]["join"][room_id.as_str()];
        Ok(
            room["unread_thread_notifications"][root]["notification_count"]
                .as_u64()
                .unwrap_or(0),
        )
    };

    let root = send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        text("Which day?"),
    )
    .await?;
    let root_id: OwnedEventId = root.clone().try_into()?;
    let monday = send(
        &server,
        &bob,
        &room_id,
        "m.room.message",
        thread_reply(&root, "Monday"),
    )
    .await?;
    assert_eq!(
        thread_count(&root).await?,
        0,
        "not subscribed: no notification"
    );

    at_alice.subscribe_thread(root_id.clone(), None).await?;
    let subscription = at_alice.fetch_thread_subscription(root_id.clone()).await?;
    assert_eq!(subscription.map(|s| s.automatic), Some(false));
    let tuesday = send(
        &server,
        &bob,
        &room_id,
        "m.room.message",
        thread_reply(&root, "Tuesday"),
    )
    .await?;
    assert_eq!(
        thread_count(&root).await?,
        1,
        "subscribed: the reply notifies"
    );

    // An automatic subscription must name an event of the thread.
    let elsewhere = send(&server, &bob, &room_id, "m.room.message", text("unrelated")).await?;
    let path = subscription_path(&room_id, &root);
    let (status, body) = server
        .request(
            "PUT",
            &path,
            Some(&ta),
            Some(json!({ "automatic": elsewhere })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("IO.ELEMENT.MSC4306.M_NOT_IN_THREAD"))
    );

    at_alice.unsubscribe_thread(root_id.clone()).await?;
    assert!(
        at_alice
            .fetch_thread_subscription(root_id.clone())
            .await?
            .is_none()
    );
    let (status, body) = server.request("GET", &path, Some(&ta), None).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    send(
        &server,
        &bob,
        &room_id,
        "m.room.message",
        thread_reply(&root, "Wednesday"),
    )
    .await?;
    assert_eq!(
        thread_count(&root).await?,
        1,
        "unsubscribed: no new notification"
    );

    // Another device of Alice's, behind, subscribes automatically for an event Alice had
    // seen when she unsubscribed: refused. For a newer event it goes through.
    let (status, body) = server
        .request(
            "PUT",
            &path,
            Some(&ta),
            Some(json!({ "automatic": tuesday })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (409, Some("IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION"))
    );
    let thursday = send(
        &server,
        &bob,
        &room_id,
        "m.room.message",
        thread_reply(&root, "Thursday"),
    )
    .await?;
    let (status, body) = server
        .request(
            "PUT",
            &path,
            Some(&ta),
            Some(json!({ "automatic": thursday })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let subscription = at_alice.fetch_thread_subscription(root_id.clone()).await?;
    assert_eq!(subscription.map(|s| s.automatic), Some(true));
    // An automatic subscription never downgrades a manual one, and a manual one upgrades.
    at_alice.subscribe_thread(root_id.clone(), None).await?;
    at_alice
        .subscribe_thread(root_id.clone(), Some(monday.clone().try_into()?))
        .await?;
    let subscription = at_alice.fetch_thread_subscription(root_id.clone()).await?;
    assert_eq!(subscription.map(|s| s.automatic), Some(false));

    // A mention in a thread notifies (and highlights) without a subscription.
    let other_root = send(&server, &alice, &room_id, "m.room.message", text("Lunch?")).await?;
    let mut mention = thread_reply(&other_root, "alice: pizza");
    mention["m.mentions"] = json!({ "user_ids": [alice.user_id().unwrap()] });
    send(&server, &bob, &room_id, "m.room.message", mention).await?;
    assert_eq!(thread_count(&other_root).await?, 1);

    // Roots nobody may see, or that do not exist, are not found.
    let carol = server.register("carol").await?;
    let (status, _) = server
        .request("PUT", &path, Some(&token(&carol)), Some(json!({})))
        .await?;
    assert_eq!(status, 404, "Carol is not in the room");
    let missing = subscription_path(&room_id, "$nonexistent:localhost");
    let (status, _) = server
        .request("PUT", &missing, Some(&tb), Some(json!({})))
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn subscription_changes_page_backwards_and_reach_sliding_sync() -> anyhow::Result<()> {
    let server = TestServer::start_with(ENABLED).await?;
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let at_bob = bob.get_room(&room_id).expect("bob's room");
    let tb = token(&bob);
    let mut roots = Vec::new();
    for body in ["first", "second", "third"] {
        let root = send(&server, &alice, &room_id, "m.room.message", text(body)).await?;
        at_bob
            .subscribe_thread(root.clone().try_into()?, None)
            .await?;
        roots.push(root);
    }
    at_bob
        .unsubscribe_thread(roots[0].clone().try_into()?)
        .await?;

    // Newest first, one change per thread: the first thread's unsubscription, then the
    // third and second threads' subscriptions.
    let changes = "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions";
    let (status, page) = server
        .request("GET", &format!("{changes}?dir=b&limit=2"), Some(&tb), None)
        .await?;
    assert_eq!(status, 200, "{page}");
    let unsubscribed = &page["unsubscribed"][room_id.as_str()];
    let subscribed = &page["subscribed"][room_id.as_str()];
    assert!(unsubscribed[&roots[0]]["bump_stamp"].is_u64(), "{page}");
    assert_eq!(subscribed[&roots[2]]["automatic"], false, "{page}");
    assert!(subscribed.get(&roots[1]).is_none(), "{page}");
    let end = page["end"].as_str().expect("more to come").to_owned();
    let (_, rest) = server
        .request(
            "GET",
            &format!("{changes}?dir=b&limit=2&from={end}"),
            Some(&tb),
            None,
        )
        .await?;
    let subscribed = rest["subscribed"][room_id.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(subscribed.keys().collect::<Vec<_>>(), [&roots[1]], "{rest}");
    assert!(rest.get("end").is_none(), "{rest}");

    // Sliding sync hands the newest changes and a token for the rest.
    let sliding = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let request = json!({
        "lists": {},
        "extensions": { "io.element.msc4308.thread_subscriptions": { "enabled": true, "limit": 1 } },
    });
    let (status, first) = server
        .request("POST", sliding, Some(&tb), Some(request.clone()))
        .await?;
    assert_eq!(status, 200, "{first}");
    let extension = &first["extensions"]["io.element.msc4308.thread_subscriptions"];
    assert!(
        extension["unsubscribed"][room_id.as_str()]
            .get(&roots[0])
            .is_some(),
        "{first}"
    );
    let prev_batch = extension["prev_batch"]
        .as_str()
        .expect("a token for the rest");
    let pos = first["pos"].as_str().expect("a position");
    let (_, older) = server
        .request(
            "GET",
            &format!("{changes}?dir=b&from={prev_batch}&to={pos}"),
            Some(&tb),
            None,
        )
        .await?;
    let older = older["subscribed"][room_id.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(older.len(), 2, "the two other threads: {older:?}");

    // A new subscription reaches the next sliding sync, and only it.
    at_bob
        .subscribe_thread(roots[0].clone().try_into()?, None)
        .await?;
    let (_, next) = server
        .request(
            "POST",
            &format!("{sliding}?pos={pos}&timeout=0"),
            Some(&tb),
            Some(request),
        )
        .await?;
    let extension = &next["extensions"]["io.element.msc4308.thread_subscriptions"];
    let subscribed = extension["subscribed"][room_id.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(subscribed.keys().collect::<Vec<_>>(), [&roots[0]], "{next}");
    assert!(extension.get("prev_batch").is_none(), "{next}");
    Ok(())
}

#[tokio::test]
async fn without_the_option_subscriptions_are_unknown_and_threads_notify_everyone()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (_, body) = server
        .request("GET", "/_matrix/client/versions", None, None)
        .await?;
    assert!(
        body["unstable_features"]
            .get("org.matrix.msc4306")
            .is_none()
    );
    let (alice, bob, room_id) = two_in_a_room(&server).await?;
    let root = send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        text("Which day?"),
    )
    .await?;
    let path = subscription_path(&room_id, &root);
    let (status, body) = server
        .request("PUT", &path, Some(&token(&bob)), Some(json!({})))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let (_, rules) = server
        .request(
            "GET",
            "/_matrix/client/v3/pushrules/",
            Some(&token(&bob)),
            None,
        )
        .await?;
    assert!(rules["global"].get("postcontent").is_none(), "{rules}");
    send(
        &server,
        &alice,
        &room_id,
        "m.room.message",
        thread_reply(&root, "Monday"),
    )
    .await?;
    let by_thread = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let sync = raw_sync_filtered(&server, &token(&bob), None, 0, Some(&by_thread)).await?;
    let room = &sync["rooms"]["join"][room_id.as_str()];
    assert_eq!(
        room["unread_thread_notifications"][&root]["notification_count"],
        1
    );
    Ok(())
}
