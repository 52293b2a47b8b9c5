//! Logging in and out: rate limits, refresh tokens, login tokens, password changes and
//! deactivation.

use super::*;

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
    // Used once before the refresh, so the server has resolved it already.
    let status = server
        .whoami_status(session["access_token"].as_str().unwrap())
        .await?;
    assert_eq!(status, 200);
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
async fn an_auth_session_serves_only_the_operation_that_opened_it() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let ivan = server.register("ivan").await?;
    let phone = server.login("ivan", "phone").await?;
    let tablet = server.login("ivan", "tablet").await?;
    let (phone_id, tablet_id) = (phone.device_id().unwrap(), tablet.device_id().unwrap());
    let delete = |device: &str| format!("/_matrix/client/v3/devices/{device}");

    // The session opened to delete the phone cannot delete the tablet.
    let (status, challenge) = server
        .request(
            "DELETE",
            &delete(phone_id.as_str()),
            Some(&token(&ivan)),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 401, "{challenge}");
    let auth = json!({ "auth": password_stage("ivan", &password("ivan"), &challenge["session"]) });
    let (status, body) = server
        .request(
            "DELETE",
            &delete(tablet_id.as_str()),
            Some(&token(&ivan)),
            Some(auth.clone()),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    assert_eq!(
        server.whoami_status(&token(&tablet)).await?,
        200,
        "the tablet was deleted"
    );

    // Confirming as someone else is refused outright, not a failed stage.
    server.register("judy").await?;
    let (_, judys) = server
        .request(
            "DELETE",
            &delete(tablet_id.as_str()),
            Some(&token(&ivan)),
            Some(json!({})),
        )
        .await?;
    let as_judy = json!({ "auth": password_stage("judy", &password("judy"), &judys["session"]) });
    let (status, body) = server
        .request(
            "DELETE",
            &delete(tablet_id.as_str()),
            Some(&token(&ivan)),
            Some(as_judy),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    assert_eq!(server.whoami_status(&token(&tablet)).await?, 200);
    // The session still serves what it was opened for.
    let (status, body) = server
        .request(
            "DELETE",
            &delete(phone_id.as_str()),
            Some(&token(&ivan)),
            Some(auth),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.whoami_status(&token(&phone)).await?, 401);

    // The flow as Element X runs it, through matrix-sdk: asked, then confirmed.
    use matrix_sdk::ruma::api::client::uiaa;
    let asked = ivan
        .delete_devices(&[tablet_id.to_owned()], None)
        .await
        .expect_err("deleting a device needs the password");
    let session = asked
        .as_uiaa_response()
        .and_then(|info| info.session.clone())
        .expect("a UIA session");
    let identifier = uiaa::UserIdentifier::from(ivan.user_id().unwrap().to_owned());
    let mut stage = uiaa::Password::new(identifier, password("ivan"));
    stage.session = Some(session);
    ivan.delete_devices(
        &[tablet_id.to_owned()],
        Some(uiaa::AuthData::Password(stage)),
    )
    .await?;
    assert_eq!(server.whoami_status(&token(&tablet)).await?, 401);
    Ok(())
}
