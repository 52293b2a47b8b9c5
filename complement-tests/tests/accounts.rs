//! Accounts, devices, sessions and the spec's error answers, through matrix-sdk and raw
//! HTTP against the real binary.

use complement_tests::{TestServer, password, password_stage, token};
use serde_json::{Value, json};

#[tokio::test]
async fn bad_input_gets_the_specs_errors() -> anyhow::Result<()> {
    let server = TestServer::start_with("max_request_size = 4096").await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<Value>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/_matrix/client/v3/no/such/endpoint",
            None,
            None,
            404,
            "M_UNRECOGNIZED",
        ),
        (
            "DELETE",
            "/_matrix/client/v3/login",
            None,
            None,
            405,
            "M_UNRECOGNIZED",
        ),
        (
            "GET",
            "/_matrix/client/v3/account/whoami",
            None,
            None,
            401,
            "M_MISSING_TOKEN",
        ),
        (
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some("not-a-token"),
            None,
            401,
            "M_UNKNOWN_TOKEN",
        ),
        (
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({ "room_version": "999" })),
            400,
            "M_UNSUPPORTED_ROOM_VERSION",
        ),
        (
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({ "preset": 7 })),
            400,
            "M_BAD_JSON",
        ),
        (
            "GET",
            "/_matrix/client/v3/register/available?username=alice",
            None,
            None,
            400,
            "M_USER_IN_USE",
        ),
        (
            "GET",
            "/_matrix/client/v3/register/available?username=Not%20Valid",
            None,
            None,
            400,
            "M_INVALID_USERNAME",
        ),
        (
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "wrong" }),
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "GET",
            "/_matrix/client/v3/rooms/!nowhere:localhost/event/$nothing",
            Some(&token),
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            "PUT",
            "/_matrix/client/v3/rooms/!nowhere:localhost/send/m.room.message/1",
            Some(&token),
            Some(json!({ "body": "x" })),
            403,
            "M_FORBIDDEN",
        ),
        (
            "GET",
            "/_matrix/client/v3/sync?since=garbage",
            Some(&token),
            None,
            400,
            "M_INVALID_PARAM",
        ),
        (
            "GET",
            "/_matrix/client/v3/profile/@nobody:localhost",
            None,
            None,
            404,
            "M_NOT_FOUND",
        ),
        (
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({})),
            400,
            "M_BAD_JSON",
        ),
        (
            "GET",
            "/_matrix/client/v3/thirdparty/protocol/irc",
            Some(&token),
            None,
            404,
            "M_NOT_FOUND",
        ),
        // No third-party identifier is bound to any account: such a login fails as a
        // wrong password does. M_UNRECOGNIZED is only for unknown endpoints.
        (
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org" }, "password": "x" }),
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.phone", "country": "GB", "phone": "07700900001" }, "password": "x" }),
            ),
            403,
            "M_FORBIDDEN",
        ),
        (
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(
                json!({ "type": "m.login.password", "identifier": { "type": "org.example.id" }, "password": "x" }),
            ),
            400,
            "M_UNKNOWN",
        ),
    ];
    for (method, path, token, body, status, errcode) in cases {
        let (got_status, got) = server.request(method, path, token, body).await?;
        assert_eq!(
            (got_status, got["errcode"].as_str()),
            (status, Some(errcode)),
            "{method} {path}: {got}"
        );
        assert!(
            got["error"].is_string(),
            "{method} {path}: an error message"
        );
    }

    let (status, protocols) = server
        .request(
            "GET",
            "/_matrix/client/v3/thirdparty/protocols",
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(
        (status, protocols),
        (200, json!({})),
        "no bridges, no protocols"
    );

    let http = reqwest::Client::new();
    let not_json = http
        .post(format!("{}/_matrix/client/v3/login", server.base_url()))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(not_json.status(), 400);
    assert_eq!(not_json.json::<Value>().await?["errcode"], "M_NOT_JSON");

    // Over the limit, yet small enough to be written whole before the server answers.
    let huge = "x".repeat(8_000);
    let too_large = http
        .post(format!(
            "{}/_matrix/client/v3/createRoom",
            server.base_url()
        ))
        .bearer_auth(&token)
        .body(format!("{{\"name\":\"{huge}\"}}"))
        .send()
        .await?;
    assert_eq!(too_large.status(), 413);
    assert_eq!(too_large.json::<Value>().await?["errcode"], "M_TOO_LARGE");

    let cors = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/_matrix/client/v3/login", server.base_url()),
        )
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await?;
    assert!(cors.status().is_success());
    assert_eq!(cors.headers()["access-control-allow-origin"], "*");
    Ok(())
}

#[tokio::test]
async fn login_is_rate_limited_with_retry_after() -> anyhow::Result<()> {
    let server = TestServer::start_with("[global.rate_limits.login]\nper_second = 0.1\nburst = 3\n[global.rate_limits.registration]\nper_second = 100.0\nburst = 100\n[global.rate_limits.message]\nper_second = 100.0\nburst = 100").await?;
    let wrong = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "wrong" });
    for _ in 0..3 {
        let (status, _) = server
            .request(
                "POST",
                "/_matrix/client/v3/login",
                None,
                Some(wrong.clone()),
            )
            .await?;
        assert_eq!(status, 403);
    }
    let (status, body) = server
        .request("POST", "/_matrix/client/v3/login", None, Some(wrong))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );
    assert!(body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 1000));
    Ok(())
}

#[tokio::test]
async fn refresh_tokens_rotate_and_logout_all_ends_every_session() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    server.register("carol").await?;
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": password("carol"), "refresh_token": true });
    let (status, session) = server
        .request("POST", "/_matrix/client/v3/login", None, Some(login))
        .await?;
    assert_eq!(status, 200);
    assert!(session["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0));
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let (status, renewed) = server
        .request(
            "POST",
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await?;
    assert_eq!(status, 200);
    assert_ne!(renewed["access_token"], session["access_token"]);
    let status = server
        .whoami_status(session["access_token"].as_str().unwrap())
        .await?;
    assert_eq!(status, 401, "the old access token no longer works");
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "a refresh token is single use"
    );

    let new_token = renewed["access_token"].as_str().unwrap();
    let (status, _) = server
        .request(
            "POST",
            "/_matrix/client/v3/logout/all",
            Some(new_token),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 200);
    let status = server.whoami_status(new_token).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn login_tokens_log_in_once() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let dave = server.register("dave").await?;
    let (status, challenge) = server
        .request(
            "POST",
            "/_matrix/client/v1/login/get_token",
            Some(&token(&dave)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 401);
    let auth = json!({ "auth": password_stage("dave", &password("dave"), &challenge["session"]) });
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v1/login/get_token",
            Some(&token(&dave)),
            Some(auth),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let login = json!({ "type": "m.login.token", "token": body["login_token"] });
    let (status, session) = server
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(login.clone()),
        )
        .await?;
    assert_eq!(
        (status, session["user_id"].as_str()),
        (200, Some("@dave:localhost"))
    );
    let (status, _) = server
        .request("POST", "/_matrix/client/v3/login", None, Some(login))
        .await?;
    assert_eq!(status, 403);
    Ok(())
}

#[tokio::test]
async fn password_change_and_deactivation() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let erin = server.register("erin").await?;
    let other_device = server.login("erin", "phone").await?;
    let path = "/_matrix/client/v3/account/password";
    let (_, challenge) = server
        .request(
            "POST",
            path,
            Some(&token(&erin)),
            Some(json!({ "new_password": "new-secret" })),
        )
        .await?;
    let body = json!({ "new_password": "new-secret", "auth": password_stage("erin", &password("erin"), &challenge["session"]) });
    let (status, _) = server
        .request("POST", path, Some(&token(&erin)), Some(body))
        .await?;
    assert_eq!(status, 200);
    let status = server.whoami_status(&token(&other_device)).await?;
    assert_eq!(status, 401, "other devices are logged out");
    let status = server.whoami_status(&token(&erin)).await?;
    assert_eq!(status, 200, "the current device stays");

    let (_, challenge) = server
        .request(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&token(&erin)),
            Some(json!({})),
        )
        .await?;
    let body = json!({ "auth": password_stage("erin", "new-secret", &challenge["session"]) });
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&token(&erin)),
            Some(body),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let login = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "erin" }, "password": "new-secret" });
    let (status, _) = server
        .request("POST", "/_matrix/client/v3/login", None, Some(login))
        .await?;
    assert_eq!(status, 403);
    Ok(())
}

#[tokio::test]
async fn account_data_filters_push_rules_and_profiles() -> anyhow::Result<()> {
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
