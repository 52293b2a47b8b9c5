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
        ("POST", "/_matrix/client/v3/login", None, Some(json!({})), 400, "M_BAD_JSON"),
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
