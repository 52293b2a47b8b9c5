//! Malformed federation requests get the error that names what is wrong with them:
//! credentials that do not parse are a 400, not a failed signature, and a body that
//! cannot be canonical JSON is `M_BAD_JSON`, not `M_UNAUTHORIZED`.

use complement_tests::fake_server::FakeServer;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_credentials_and_bodies_are_bad_requests() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let fake = FakeServer::start(&ca).await?;
    let destination = a.server_name();
    let profile = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Alocalhost";

    // An origin whose port is not a number.
    let header = format!(
        "X-Matrix origin=\"localhost:http\",destination=\"{destination}\",key=\"ed25519:a\",sig=\"c2ln\""
    );
    let (status, body) = fake
        .request_raw("GET", destination, profile, &header, Vec::new())
        .await?;
    assert_eq!(status, 400, "{body}");

    // No credentials at all stay a 401.
    let (status, body) = fake
        .request_raw("GET", destination, profile, "Bearer nothing", Vec::new())
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "{body}"
    );

    // A transaction whose event holds a float.
    let header = format!(
        "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"ed25519:a\",sig=\"c2ln\"",
        fake.server_name()
    );
    let transaction = format!(
        r#"{{"origin":"{}","origin_server_ts":1,"pdus":[{{"type":"m.room.message","content":{{"body":"x","weight":1.5}}}}],"edus":[]}}"#,
        fake.server_name()
    );
    let (status, body) = fake
        .request_raw(
            "PUT",
            destination,
            &fake.transaction_path(),
            &header,
            transaction.into_bytes(),
        )
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );
    Ok(())
}
