//! Reporting abuse: an event of a joined room, a room, a user; what may not be reported
//! is not found; the administrators list, read and close event reports.

use super::*;

#[tokio::test]
async fn events_rooms_and_users_are_reported_to_the_administrators() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (alice, bob, room_id) = two_in_a_dm(&server).await?;
    let event_id: matrix_sdk::ruma::OwnedEventId = server
        .send_text(&token(&bob), room_id.as_str(), "r1", "something nasty")
        .await?
        .try_into()?;
    let room = alice.get_room(&room_id).expect("alice is in the room");

    // Through matrix-sdk: the event, then the room.
    room.report_content(event_id.clone(), Some("abusive".to_owned()))
        .await?;
    room.report_room("a room for abuse".to_owned()).await?;
    // A user, by the spec's endpoint (a reason is required).
    let t = token(&alice);
    let path = "/_matrix/client/v3/users/@bob:localhost/report";
    let (status, body) = server
        .request(
            "POST",
            path,
            Some(&t),
            Some(json!({ "reason": "harasses me" })),
        )
        .await?;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, body) = server
        .request("POST", path, Some(&t), Some(json!({})))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );
    let log = server.log();
    for reported in [event_id.as_str(), room_id.as_str(), "@bob:localhost"] {
        assert!(
            log.contains(reported),
            "no report of {reported} in the log:\n{log}"
        );
    }

    // The administrators list the event report through Synapse's admin API, read it
    // with the event, and close it; others may not look.
    let admin = server.register_admin("admin").await?;
    let (status, body) = server
        .request("GET", "/_synapse/admin/v1/event_reports", Some(&t), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    let (status, list) = server
        .request(
            "GET",
            "/_synapse/admin/v1/event_reports",
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    let report = &list["event_reports"][0];
    assert_eq!(report["event_id"], event_id.as_str());
    assert_eq!(report["room_id"], room_id.as_str());
    assert_eq!(report["user_id"], "@alice:localhost");
    assert_eq!(report["sender"], "@bob:localhost");
    assert_eq!(report["reason"], "abusive");
    let id = report["id"].as_u64().expect("a numeric id");
    let one = format!("/_synapse/admin/v1/event_reports/{id}");
    let (status, detail) = server.request("GET", &one, Some(&admin), None).await?;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["event_json"]["content"]["body"], "something nasty");
    let (status, other) = server
        .request(
            "GET",
            "/_synapse/admin/v1/event_reports?room_id=!other:localhost",
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!((status, &other["total"]), (200, &json!(0)), "{other}");
    let (status, _) = server.request("DELETE", &one, Some(&admin), None).await?;
    assert_eq!(status, 200);
    let (status, body) = server.request("GET", &one, Some(&admin), None).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );

    // What may not be reported is not found: an unknown event, an event of a room the
    // reporter is not in, an unknown room, an unknown local user.
    let carol = server.register("carol").await?;
    let elsewhere = room_alone(&carol).await?;
    let theirs = server
        .send_text(&token(&carol), elsewhere.as_str(), "r2", "private")
        .await?;
    for path in [
        format!("/_matrix/client/v3/rooms/{room_id}/report/$nosuchevent"),
        format!("/_matrix/client/v3/rooms/{elsewhere}/report/{theirs}"),
        format!("/_matrix/client/v3/rooms/{room_id}/report/{theirs}"),
        "/_matrix/client/v3/rooms/!nosuchroom:localhost/report".to_owned(),
        "/_matrix/client/v3/users/@nobody:localhost/report".to_owned(),
    ] {
        let (status, body) = server
            .request("POST", &path, Some(&t), Some(json!({ "reason": "x" })))
            .await?;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}: {body}"
        );
    }
    Ok(())
}
