//! The spec's error answers to bad input.

use super::*;

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
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("GET", "/_matrix/client/v3/no/such/endpoint", None, None, 404, "M_UNRECOGNIZED"),
        ("DELETE", "/_matrix/client/v3/login", None, None, 405, "M_UNRECOGNIZED"),
        ("GET", "/_matrix/client/v3/account/whoami", None, None, 401, "M_MISSING_TOKEN"),
        ("GET", "/_matrix/client/v3/account/whoami", Some("not-a-token"), None, 401, "M_UNKNOWN_TOKEN"),
        ("POST", "/_matrix/client/v3/createRoom", Some(&token), Some(json!({"room_version": "999"})), 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ("POST", "/_matrix/client/v3/createRoom", Some(&token), Some(json!({"preset": 7})), 400, "M_BAD_JSON"),
        ("GET", "/_matrix/client/v3/register/available?username=alice", None, None, 400, "M_USER_IN_USE"),
        ("GET", "/_matrix/client/v3/register/available?username=Not%20Valid", None, None, 400, "M_INVALID_USERNAME"),
        ("POST", "/_matrix/client/v3/login", None, Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"})), 403, "M_FORBIDDEN"),
        ("GET", "/_matrix/client/v3/rooms/!nowhere:localhost/event/$nothing", Some(&token), None, 404, "M_NOT_FOUND"),
        ("PUT", "/_matrix/client/v3/rooms/!nowhere:localhost/send/m.room.message/1", Some(&token), Some(json!({"body": "x"})), 403, "M_FORBIDDEN"),
        ("GET", "/_matrix/client/v3/sync?since=garbage", Some(&token), None, 400, "M_INVALID_PARAM"),
        ("GET", "/_matrix/client/v3/profile/@nobody:localhost", None, None, 404, "M_NOT_FOUND"),
        ("POST", "/_matrix/client/v3/login", None, Some(json!({})), 400, "M_MISSING_PARAM"),
        ("POST", "/_matrix/client/v3/login", None, Some(json!({"type": 7})), 400, "M_BAD_JSON"),
        ("GET", "/_matrix/client/v3/thirdparty/protocol/irc", Some(&token), None, 404, "M_NOT_FOUND"),
        // No third-party identifier is bound to any account: such a login fails as a
        // wrong password does. M_UNRECOGNIZED is only for unknown endpoints.
        ("POST", "/_matrix/client/v3/login", None, Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org"}, "password": "x"})), 403, "M_FORBIDDEN"),
        ("POST", "/_matrix/client/v3/login", None, Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "GB", "phone": "07700900001"}, "password": "x"})), 403, "M_FORBIDDEN"),
        ("POST", "/_matrix/client/v3/login", None, Some(json!({"type": "m.login.password", "identifier": {"type": "org.example.id"}, "password": "x"})), 400, "M_UNKNOWN"),
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
    // Bad input is answered, never a panic caught on the way.
    assert!(!server.log().contains("panicked"), "{}", server.log());

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
async fn fields_clients_read_are_always_there_and_bad_push_rule_paths_are_400() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let pat = server.register("pat").await?;
    let t = token(&pat);

    // matrix-sdk reads the capabilities; `m.change_password` is there though it is the default.
    use matrix_sdk::ruma::api::client::discovery::get_capabilities;
    let answer = pat.send(get_capabilities::v3::Request::new()).await?;
    assert!(answer.capabilities.change_password.enabled);
    let (_, raw) = server
        .request("GET", "/_matrix/client/v3/capabilities", Some(&t), None)
        .await?;
    assert_eq!(
        raw["capabilities"]["m.change_password"]["enabled"], true,
        "{raw}"
    );

    // Every UIA 401 says what is completed, an empty list included.
    let (status, challenge) = server
        .request(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&t),
            Some(json!({ "new_password": "another long one" })),
        )
        .await?;
    assert_eq!(
        (status, &challenge["completed"]),
        (401, &json!([])),
        "{challenge}"
    );

    // Every timeline says whether it is limited, `false` included.
    let room_id = complement_tests::room_alone(&pat).await?;
    let sync = complement_tests::raw_sync(&server, &pat, None, 0).await?;
    let timeline = &sync["rooms"]["join"][room_id.as_str()]["timeline"];
    assert_eq!(timeline["limited"], false, "{timeline}");

    // Push rules: one kind listed; an unknown kind or scope is a malformed path.
    let (status, content) = server
        .request(
            "GET",
            "/_matrix/client/v3/pushrules/global/override/",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{content}");
    assert!(
        content
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| r["rule_id"] == ".m.rule.master")),
        "{content}"
    );
    for path in [
        "/_matrix/client/v3/pushrules/global/bogus/x",
        "/_matrix/client/v3/pushrules/nope/content/x",
        "/_matrix/client/v3/pushrules/global/bogus/x/enabled",
    ] {
        let (status, body) = server.request("GET", path, Some(&t), None).await?;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{path}: {body}"
        );
    }
    let (status, _) = server
        .request(
            "GET",
            "/_matrix/client/v3/pushrules/global/content/nosuch",
            Some(&t),
            None,
        )
        .await?;
    assert_eq!(status, 404, "a missing rule of a known kind");
    Ok(())
}
