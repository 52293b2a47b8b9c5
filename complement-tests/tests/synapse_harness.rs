//! The Synapse side of the federation tests, checked on its own: its federation listener
//! speaks TLS with a certificate from the test CA, its users can talk through the client
//! API, and two of them federate with each other over loopback.

use complement_tests::{password, synapse::Synapse, sync_until, sync_until_message, tls::TestCa};
use matrix_sdk::{
    Client, RoomState,
    ruma::{
        OwnedRoomId, api::client::room::create_room, events::room::message::RoomMessageEventContent,
    },
};
use serde_json::Value;

/// An HTTPS client that trusts the test CA and nothing else.
fn trusting(ca: &TestCa) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem().as_bytes())?])
        .build()?)
}

/// Alice creates a private room inviting `bob`; Bob waits for the invite and joins.
async fn alice_invites_bob(alice: &Client, bob: &Client) -> anyhow::Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.invite = vec![bob.user_id().expect("logged in").to_owned()];
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    sync_until(bob, 30, |c| {
        c.get_room(&room_id)
            .is_some_and(|r| r.state() == RoomState::Invited)
    })
    .await?;
    bob.join_room_by_id(&room_id).await?;
    Ok(room_id)
}

#[tokio::test]
async fn federation_listener_serves_keys_over_tls_from_the_test_ca() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let synapse = Synapse::start(&ca).await?;
    let https = trusting(&ca)?;

    let keys: Value = https
        .get(format!(
            "{}/_matrix/key/v2/server",
            synapse.federation_url()
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(keys["server_name"], synapse.server_name().as_str());
    let verify_keys = keys["verify_keys"].as_object().expect("verify_keys");
    assert!(
        verify_keys.keys().any(|id| id.starts_with("ed25519:")),
        "{keys}"
    );

    let version: Value = https
        .get(format!(
            "{}/_matrix/federation/v1/version",
            synapse.federation_url()
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(version["server"]["name"], "Synapse", "{version}");

    // A client that does not trust the test CA refuses the certificate.
    let untrusting = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/key/v2/server",
            synapse.federation_url()
        ))
        .send()
        .await;
    assert!(untrusting.is_err());
    Ok(())
}

#[tokio::test]
async fn local_users_talk_through_the_client_api() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let synapse = Synapse::start(&ca).await?;

    let (user_id, access_token) = synapse.register("carol", &password("carol")).await?;
    assert_eq!(user_id, format!("@carol:{}", synapse.server_name()));
    let whoami: Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/account/whoami",
            synapse.client_url()
        ))
        .bearer_auth(&access_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(whoami["user_id"], user_id.as_str());

    let alice = synapse.matrix_sdk_client("alice").await?;
    let bob = synapse.matrix_sdk_client("bob").await?;
    let room_id = alice_invites_bob(&alice, &bob).await?;
    alice
        .get_room(&room_id)
        .expect("alice's room")
        .send(RoomMessageEventContent::text_plain("hello bob"))
        .await?;
    sync_until_message(&bob, &room_id, "hello bob", 10).await
}

#[tokio::test]
async fn two_synapses_federate_through_the_test_ca() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let (a, b) = tokio::try_join!(Synapse::start(&ca), Synapse::start(&ca))?;
    let alice = a.matrix_sdk_client("alice").await?;
    let bob = b.matrix_sdk_client("bob").await?;

    // The invite goes from A to B, the join from B to A.
    let room_id = alice_invites_bob(&alice, &bob).await?;
    alice
        .get_room(&room_id)
        .expect("alice's room")
        .send(RoomMessageEventContent::text_plain("hello from A"))
        .await?;
    sync_until_message(&bob, &room_id, "hello from A", 30).await?;

    sync_until(&alice, 10, |c| c.get_room(&room_id).is_some()).await?;
    bob.get_room(&room_id)
        .expect("bob's room")
        .send(RoomMessageEventContent::text_plain("hello from B"))
        .await?;
    sync_until_message(&alice, &room_id, "hello from B", 30).await
}
