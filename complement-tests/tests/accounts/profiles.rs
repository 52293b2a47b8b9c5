//! What an account keeps: account data, filters, push rules, profiles, devices.

use super::*;

#[tokio::test]
async fn push_rules_and_pushers_are_kept() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let frank = server.register("frank").await?;
    let t = token(&frank);

    let (status, rules) = server
        .request("GET", "/_matrix/client/v3/pushrules/", Some(&t), None)
        .await?;
    assert_eq!(status, 200);
    let overrides: Vec<&str> = rules["global"]["override"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule_id"].as_str())
        .collect();
    assert!(
        overrides.contains(&".m.rule.master") && overrides.contains(&".m.rule.suppress_notices")
    );
    let rule = json!({ "actions": ["notify"], "pattern": "lunch" });
    let (status, _) = server
        .request(
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/lunch",
            Some(&t),
            Some(rule),
        )
        .await?;
    assert_eq!(status, 200);
    let (status, enabled) = server
        .request(
            "GET",
            "/_matrix/client/v3/pushrules/global/content/lunch/enabled",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!((status, enabled["enabled"].as_bool()), (200, Some(true)));
    let (status, _) = server
        .request(
            "PUT",
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            Some(&t),
            Some(json!({ "enabled": true })),
        )
        .await?;
    assert_eq!(status, 200);
    let (status, _) = server
        .request(
            "DELETE",
            "/_matrix/client/v3/pushrules/global/content/nosuch",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(status, 404);

    let pusher = json!({ "pushkey": "abc", "kind": "http", "app_id": "com.example.app", "app_display_name": "App", "device_display_name": "Phone", "lang": "en", "data": { "url": "https://push.example.org/_matrix/push/v1/notify" } });
    let (status, _) = server
        .request(
            "POST",
            "/_matrix/client/v3/pushers/set",
            Some(&t),
            Some(pusher),
        )
        .await?;
    assert_eq!(status, 200);
    let (_, pushers) = server
        .request("GET", "/_matrix/client/v3/pushers", Some(&t), None)
        .await?;
    assert_eq!(pushers["pushers"][0]["pushkey"], "abc");
    Ok(())
}

#[tokio::test]
async fn account_data_and_filters_read_back_as_written() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let frank = server.register("frank").await?;
    let t = token(&frank);

    let path = "/_matrix/client/v3/user/@frank:localhost/account_data/org.example.settings";
    let (status, _) = server
        .request("PUT", path, Some(&t), Some(json!({ "theme": "dark" })))
        .await?;
    assert_eq!(status, 200);
    let (_, data) = server.request("GET", path, Some(&t), None).await?;
    assert_eq!(data, json!({ "theme": "dark" }));

    let filter = json!({ "room": { "timeline": { "limit": 5 } } });
    let (status, created) = server
        .request(
            "POST",
            "/_matrix/client/v3/user/@frank:localhost/filter",
            Some(&t),
            Some(filter),
        )
        .await?;
    assert_eq!(status, 200);
    let (_, read) = server
        .request(
            "GET",
            &format!(
                "/_matrix/client/v3/user/@frank:localhost/filter/{}",
                created["filter_id"].as_str().unwrap()
            ),
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(read["room"]["timeline"]["limit"], 5);
    Ok(())
}

#[tokio::test]
async fn a_display_name_is_public_in_the_profile() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let frank = server.register("frank").await?;
    frank
        .account()
        .set_display_name(Some("Frank Ocean"))
        .await?;
    let (_, profile) = server
        .request(
            "GET",
            "/_matrix/client/v3/profile/@frank:localhost",
            None,
            None,
        )
        .await?;
    assert_eq!(profile["displayname"], "Frank Ocean");
    let (_, name) = server
        .request(
            "GET",
            "/_matrix/client/v3/profile/@frank:localhost/displayname",
            None,
            None,
        )
        .await?;
    assert_eq!(name["displayname"], "Frank Ocean");
    Ok(())
}

#[tokio::test]
async fn devices_leave_out_unset_fields_and_keep_their_name_unless_given_one() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let grace = server.register("grace").await?;
    let t = token(&grace);
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "grace" }, "password": password("grace") });
    let (status, unnamed) = server
        .request("POST", "/_matrix/client/v3/login", None, Some(login))
        .await?;
    assert_eq!(status, 200, "{unnamed}");
    let unnamed = unnamed["device_id"].as_str().unwrap().to_owned();

    let (status, list) = server
        .request("GET", "/_matrix/client/v3/devices", Some(&t), None)
        .await?;
    assert_eq!(status, 200);
    let listed = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == unnamed.as_str())
        .expect("the new device is listed");
    assert!(listed.get("display_name").is_none(), "{listed}");
    let path = format!("/_matrix/client/v3/devices/{unnamed}");
    let (status, device) = server.request("GET", &path, Some(&t), None).await?;
    assert_eq!(status, 200);
    assert!(device.get("display_name").is_none(), "{device}");
    assert!(device["last_seen_ts"].is_u64(), "{device}");

    // A body without `display_name` leaves the name as it is.
    let first = format!("/_matrix/client/v3/devices/{}", grace.device_id().unwrap());
    let (status, _) = server
        .request("PUT", &first, Some(&t), Some(json!({})))
        .await?;
    assert_eq!(status, 200);
    let (_, device) = server.request("GET", &first, Some(&t), None).await?;
    assert_eq!(device["display_name"], "grace's first device");
    let (status, _) = server
        .request(
            "PUT",
            &first,
            Some(&t),
            Some(json!({ "display_name": "desk" })),
        )
        .await?;
    assert_eq!(status, 200);
    let (_, device) = server.request("GET", &first, Some(&t), None).await?;
    assert_eq!(device["display_name"], "desk");
    let (status, body) = server
        .request(
            "PUT",
            "/_matrix/client/v3/devices/NOSUCHDEVICE",
            Some(&t),
            Some(json!({})),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    Ok(())
}

#[tokio::test]
async fn optional_fields_of_push_rules_and_profile_bodies() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let heidi = server.register("heidi").await?;
    let t = token(&heidi);

    // `conditions` may be left out: such a rule always matches.
    for kind in ["override", "underride"] {
        let path = format!("/_matrix/client/v3/pushrules/global/{kind}/everything");
        let (status, body) = server
            .request(
                "PUT",
                &path,
                Some(&t),
                Some(json!({ "actions": ["notify"] })),
            )
            .await?;
        assert_eq!(status, 200, "{kind}: {body}");
        let (status, rule) = server.request("GET", &path, Some(&t), None).await?;
        assert_eq!(status, 200);
        assert_eq!(rule["conditions"], json!([]), "{kind}: {rule}");
        assert_eq!(rule["actions"], json!(["notify"]));
    }

    // The field named in the path may come anywhere in the body; without it the body is
    // missing a parameter (not malformed JSON).
    let path = "/_matrix/client/v3/profile/@heidi:localhost/displayname";
    let (status, body) = server
        .request(
            "PUT",
            path,
            Some(&t),
            Some(json!({ "avatar_url": "mxc://localhost/x", "displayname": "Heidi" })),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (_, field) = server.request("GET", path, Some(&t), None).await?;
    assert_eq!(field, json!({ "displayname": "Heidi" }));
    let (status, body) = server
        .request(
            "PUT",
            path,
            Some(&t),
            Some(json!({ "avatar_url": "mxc://localhost/x" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("displayname"));
    Ok(())
}

#[tokio::test]
async fn profile_sizes_follow_the_spec() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let ivan = server.register("ivan").await?;
    let token = token(&ivan);
    let put = |key: String, value: Value| {
        let server = &server;
        let token = token.clone();
        async move {
            server
                .request(
                    "PUT",
                    &format!("/_matrix/client/v3/profile/@ivan:localhost/{key}"),
                    Some(&token),
                    Some(json!({ key: value })),
                )
                .await
        }
    };

    // A custom field well above the display name limit is fine while the profile fits.
    let (status, body) = put("org.example.bio".into(), json!("b".repeat(10_000))).await?;
    assert_eq!(status, 200, "{body}");
    // Keys are at most 255 bytes.
    let (status, body) = put(format!("org.example.{}", "k".repeat(250)), json!("v")).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_KEY_TOO_LARGE"))
    );
    // The whole profile stays under 64 KiB.
    let (status, body) = put("org.example.a".into(), json!("a".repeat(40_000))).await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put("org.example.b".into(), json!("b".repeat(20_000))).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_PROFILE_TOO_LARGE"))
    );
    let (_, profile) = server
        .request(
            "GET",
            "/_matrix/client/v3/profile/@ivan:localhost",
            Some(&token),
            None,
        )
        .await?;
    assert!(
        profile.get("org.example.b").is_none(),
        "a refused field is not stored"
    );
    Ok(())
}

#[tokio::test]
async fn presence_is_offline_until_set_and_ones_own_comes_in_ones_sync() -> anyhow::Result<()> {
    use matrix_sdk::ruma::{api::client::presence::get_presence, presence::PresenceState};
    let server = TestServer::start().await?;
    let kim = server.register("kim").await?;
    let lee = server.register("lee").await?;
    let asked = kim
        .send(get_presence::v3::Request::new(
            lee.user_id().unwrap().to_owned(),
        ))
        .await?;
    assert_eq!(asked.presence, PresenceState::Offline);
    let (status, body) = server
        .request(
            "GET",
            "/_matrix/client/v3/presence/@nobody:localhost/status",
            Some(&token(&kim)),
            None,
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    // Kim shares no room with anyone, and still sees her own presence.
    let path = "/_matrix/client/v3/presence/@kim:localhost/status";
    let online = json!({ "presence": "online", "status_msg": "here" });
    let (status, _) = server
        .request("PUT", path, Some(&token(&kim)), Some(online))
        .await?;
    assert_eq!(status, 200);
    for since in [
        None,
        Some(complement_tests::next_batch(&server, &kim).await?),
    ] {
        if since.is_some() {
            let busy = json!({ "presence": "unavailable", "status_msg": "busy" });
            server
                .request("PUT", path, Some(&token(&kim)), Some(busy))
                .await?;
        }
        let sync = complement_tests::raw_sync(&server, &kim, since.as_deref(), 0).await?;
        let own = sync["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["sender"] == "@kim:localhost")
            .cloned();
        let expected = if since.is_none() { "here" } else { "busy" };
        assert_eq!(
            own.map(|e| e["content"]["status_msg"].clone()),
            Some(json!(expected)),
            "{sync}"
        );
    }
    Ok(())
}
