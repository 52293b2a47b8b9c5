//! OpenID: a token the client asks for tells a third party who the user is, through the
//! federation listener's `/openid/userinfo`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_token_tells_a_third_party_who_the_user_is() -> Result<()> {
    let ca = TestCa::new();
    let server = TestServer::start_federated(&ca).await?;
    let alice = server.register("alice").await?;
    let alice_id = format!("@alice:{}", server.server_name());
    let path = format!("/_matrix/client/v3/user/{alice_id}/openid/request_token");
    let (status, granted) = server
        .request("POST", &path, Some(&token(&alice)), Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["matrix_server_name"], server.server_name());
    assert!(
        granted["expires_in"].as_u64().is_some_and(|secs| secs > 0),
        "{granted}"
    );

    // The third party asks the server the token names, over its federation listener.
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem().as_bytes())?])
        .build()?;
    let userinfo = |access_token: &str| {
        https
            .get(format!(
                "https://{}/_matrix/federation/v1/openid/userinfo?access_token={access_token}",
                server.server_name()
            ))
            .send()
    };
    let answer = userinfo(granted["access_token"].as_str().context("a token")?).await?;
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await?;
    assert_eq!(body, json!({ "sub": alice_id }));
    let answer = userinfo("not-a-token").await?;
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await?;
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body}");

    // Only for oneself.
    let bob = server.register("bob").await?;
    let (status, body) = server
        .request("POST", &path, Some(&token(&bob)), Some(json!({})))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    Ok(())
}
