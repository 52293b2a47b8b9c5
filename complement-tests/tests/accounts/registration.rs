//! Registration through matrix-sdk and raw HTTP against the real binary: open, by
//! token, by Synapse's shared secret, one-shot, and the user ids an application
//! service claims.

use complement_tests::{TestServer, password, password_stage, token};
use hmac::{Hmac, Mac};
use matrix_sdk::ruma::api::{client::account::register, error::ErrorKind};
use serde_json::json;

#[tokio::test]
async fn register_and_log_in_on_two_devices() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let first = server.register("alice").await?;
    assert_eq!(first.user_id().unwrap().as_str(), "@alice:localhost");
    let second = server.login("alice", "laptop").await?;
    assert_ne!(first.device_id(), second.device_id());

    let whoami = second.whoami().await?;
    assert_eq!(whoami.user_id.as_str(), "@alice:localhost");
    assert_eq!(whoami.device_id.as_deref(), second.device_id());

    let devices = first.devices().await?.devices;
    assert_eq!(devices.len(), 2);
    let laptop = devices
        .iter()
        .find(|d| Some(d.device_id.as_ref()) == second.device_id())
        .unwrap();
    assert_eq!(laptop.display_name.as_deref(), Some("laptop"));

    // Deleting a device needs the password (UIA), then its token stops working.
    let path = format!("/_matrix/client/v3/devices/{}", second.device_id().unwrap());
    let (status, challenge) = server
        .request("DELETE", &path, Some(&token(&first)), Some(json!({})))
        .await?;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"][0]["stages"][0], "m.login.password");
    let auth =
        json!({ "auth": password_stage("alice", &password("alice"), &challenge["session"]) });
    let (status, _) = server
        .request("DELETE", &path, Some(&token(&first)), Some(auth))
        .await?;
    assert_eq!(status, 200);
    let (status, body) = server
        .request(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token(&second)),
            None,
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
    Ok(())
}

#[tokio::test]
async fn registration_is_refused_when_closed_and_needs_the_token_when_set() -> anyhow::Result<()> {
    let server =
        TestServer::start_with("allow_registration = false\nregistration_token = \"letmein\"")
            .await?;
    let (status, body) = server
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "bob", "password": "pw" })),
        )
        .await?;
    assert_eq!(status, 401);
    assert_eq!(
        body["flows"],
        json!([{ "stages": ["m.login.registration_token"] }])
    );
    let session = body["session"].clone();
    let wrong = json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "nope", "session": session } });
    let (status, body) = server
        .request("POST", "/_matrix/client/v3/register", None, Some(wrong))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_FORBIDDEN"))
    );
    let dummy = json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.dummy", "session": session } });
    let (status, _) = server
        .request("POST", "/_matrix/client/v3/register", None, Some(dummy))
        .await?;
    assert_eq!(
        status, 401,
        "dummy is not offered when registration is closed"
    );
    let right = json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "letmein", "session": session } });
    let (status, body) = server
        .request("POST", "/_matrix/client/v3/register", None, Some(right))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bob:localhost");
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));

    let (status, body) = server
        .request(
            "GET",
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein",
            None,
            None,
        )
        .await?;
    assert_eq!((status, body["valid"].as_bool()), (200, Some(true)));

    let closed = TestServer::start_with("allow_registration = false").await?;
    let (status, body) = closed
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "x" })),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    Ok(())
}

#[tokio::test]
async fn synapse_shared_secret_registration_makes_an_administrator() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (status, body) = server
        .request("GET", "/_synapse/admin/v1/register", None, None)
        .await?;
    assert_eq!(status, 200);
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"test-shared-secret")?;
    mac.update(format!("{nonce}\0admin1\0pw-admin\0admin").as_bytes());
    let mac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = json!({ "nonce": nonce, "username": "admin1", "password": "pw-admin", "admin": true, "mac": mac });
    let (status, registered) = server
        .request(
            "POST",
            "/_synapse/admin/v1/register",
            None,
            Some(body.clone()),
        )
        .await?;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["user_id"], "@admin1:localhost");
    let (status, _) = server
        .request("POST", "/_synapse/admin/v1/register", None, Some(body))
        .await?;
    assert_eq!(status, 400, "a nonce is single use");
    let admin_token = registered["access_token"].as_str().unwrap().to_owned();
    let status = server.whoami_status(&admin_token).await?;
    assert_eq!(status, 200);

    // The administrator may see where a user is connected from; the user only themselves.
    let bob = server.register("bob").await?;
    let bob_device = bob.device_id().unwrap().to_string();
    let path = "/_matrix/client/v3/admin/whois/@bob:localhost";
    let (status, whois) = server
        .request("GET", path, Some(&admin_token), None)
        .await?;
    assert_eq!(
        (status, &whois["user_id"]),
        (200, &json!("@bob:localhost")),
        "{whois}"
    );
    let connection = &whois["devices"][&bob_device]["sessions"][0]["connections"][0];
    assert_eq!(connection["ip"], "127.0.0.1", "{whois}");
    assert!(connection["last_seen"].is_u64(), "{whois}");
    let own = bob
        .send(
            matrix_sdk::ruma::api::client::admin::get_user_info::v3::Request::new(
                bob.user_id().unwrap().to_owned(),
            ),
        )
        .await?;
    assert!(own.devices.contains_key(&bob_device), "{:?}", own.devices);
    let path = "/_matrix/client/v3/admin/whois/@admin1:localhost";
    let (status, body) = server
        .request("GET", path, Some(&bob.access_token().unwrap()), None)
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn one_shot_dummy_registration_and_bodyless_posts_work_as_on_synapse() -> anyhow::Result<()> {
    // matrix-nio registers with `auth: {type: m.login.dummy}` and no session, and joins
    // with an empty POST body.
    let server = TestServer::start().await?;
    let body = json!({ "username": "nio", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let (status, registered) = server
        .request("POST", "/_matrix/client/v3/register", None, Some(body))
        .await?;
    assert_eq!(status, 200, "{registered}");
    let token = registered["access_token"].as_str().unwrap();
    let (_, room) = server
        .request(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(token),
            Some(json!({ "preset": "public_chat" })),
        )
        .await?;
    let room_id = room["room_id"].as_str().unwrap();
    let second = server.register("second").await?;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/client/v3/join/{room_id}",
            server.base_url()
        ))
        .bearer_auth(complement_tests::token(&second))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

/// A bridge's registration file with an exclusive user namespace.
const BRIDGE: &str = r#"
id: whatsapp
url: http://127.0.0.1:29318
as_token: as-secret-token
hs_token: hs-secret-token
sender_localpart: whatsappbot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@whatsapp_.*:localhost'
  aliases: []
  rooms: []
"#;

#[tokio::test]
async fn user_ids_an_application_service_claims_cannot_be_registered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registration = dir.path().join("whatsapp.yaml");
    std::fs::write(&registration, BRIDGE)?;
    let server = TestServer::start_with(&format!(
        "app_service_config_files = [{:?}]",
        registration.display().to_string()
    ))
    .await?;

    // matrix-sdk hears M_EXCLUSIVE for the namespace and for the bridge's own user.
    for username in ["whatsapp_4915112345678", "whatsappbot"] {
        let client = matrix_sdk::Client::builder()
            .homeserver_url(server.base_url())
            .build()
            .await?;
        let mut request = register::v3::Request::new();
        request.username = Some(username.to_owned());
        request.password = Some(password(username));
        let error = client
            .matrix_auth()
            .register(request)
            .await
            .expect_err("a claimed user id was registered");
        assert_eq!(
            error.client_api_error_kind(),
            Some(&ErrorKind::Exclusive),
            "{username}: {error}"
        );
        let (status, body) = server
            .request(
                "GET",
                &format!("/_matrix/client/v3/register/available?username={username}"),
                None,
                None,
            )
            .await?;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_EXCLUSIVE")),
            "{body}"
        );
    }

    // The bridge's own user exists from the start, with its localpart as its name.
    let (status, profile) = server
        .request(
            "GET",
            "/_matrix/client/v3/profile/@whatsappbot:localhost",
            None,
            None,
        )
        .await?;
    assert_eq!(
        (status, profile["displayname"].as_str()),
        (200, Some("whatsappbot")),
        "{profile}"
    );

    // Ids outside the namespace are anyone's.
    let alice = server.register("alice").await?;
    assert_eq!(
        alice.user_id().map(|id| id.as_str()),
        Some("@alice:localhost")
    );
    let (status, body) = server
        .request(
            "GET",
            "/_matrix/client/v3/register/available?username=whatsapp",
            None,
            None,
        )
        .await?;
    assert_eq!((status, &body["available"]), (200, &json!(true)), "{body}");
    assert!(!token(&alice).is_empty());
    Ok(())
}

#[tokio::test]
async fn an_invalid_registration_file_stops_the_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registration = dir.path().join("broken.yaml");
    std::fs::write(
        &registration,
        BRIDGE.replace("hs-secret-token", "as-secret-token"),
    )?;
    let started = TestServer::start_with(&format!(
        "app_service_config_files = [{:?}]",
        registration.display().to_string()
    ))
    .await;
    let error = started
        .err()
        .expect("the server started with an invalid registration");
    assert!(
        error.to_string().contains("application service"),
        "{error:#}"
    );

    // Two valid registrations that share a token: a request could not tell them apart.
    let (first, second) = (dir.path().join("one.yaml"), dir.path().join("two.yaml"));
    std::fs::write(&first, BRIDGE)?;
    std::fs::write(
        &second,
        BRIDGE
            .replace("id: whatsapp", "id: signal")
            .replace(
                "sender_localpart: whatsappbot",
                "sender_localpart: signalbot",
            )
            .replace("hs-secret-token", "another-hs-token"),
    )?;
    let started = TestServer::start_with(&format!(
        "app_service_config_files = [{:?}, {:?}]",
        first.display().to_string(),
        second.display().to_string()
    ))
    .await;
    let error = started
        .err()
        .expect("the server started with two registrations sharing a token");
    assert!(
        error.to_string().contains("application service"),
        "{error:#}"
    );
    Ok(())
}

#[tokio::test]
async fn a_retried_registration_gets_the_same_user_and_the_options_are_honoured()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let path = "/_matrix/client/v3/register";
    let form =
        json!({ "username": "nina", "password": password("nina"), "device_id": "NINAPHONE" });
    let (status, challenge) = server
        .request("POST", path, None, Some(form.clone()))
        .await?;
    assert_eq!(status, 401, "{challenge}");
    let mut done = form.clone();
    done["auth"] = json!({ "type": "m.login.dummy", "session": challenge["session"] });
    let (status, first) = server
        .request("POST", path, None, Some(done.clone()))
        .await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["device_id"], "NINAPHONE",
        "the device id asked for: {first}"
    );

    // The answer was lost; the client sends the same request again.
    let (status, again) = server.request("POST", path, None, Some(done)).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user_id"], first["user_id"]);
    let token = again["access_token"].as_str().unwrap();
    assert_eq!(server.whoami_status(token).await?, 200);

    // `inhibit_login`: an account, no session.
    let form = json!({ "username": "omar", "password": password("omar"), "inhibit_login": true, "auth": { "type": "m.login.dummy" } });
    let (status, body) = server.request("POST", path, None, Some(form)).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@omar:localhost");
    assert!(
        body.get("access_token").is_none() && body.get("device_id").is_none(),
        "{body}"
    );
    Ok(())
}
