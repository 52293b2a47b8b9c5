//! How this server sends to another: a transaction answered 200 is delivered, whatever
//! its body says, and the queue moves on without sending it again.

use complement_tests::fake_server::FakeServer;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_answered_200_with_an_empty_object_is_not_sent_again() -> Result<()> {
    let ca = TestCa::new();
    let a = TestServer::start_federated(&ca).await?;
    let alice = a.register("alice").await?;
    let mut request = create_room::v3::Request::new();
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await?.room_id().to_owned();
    // The fake server answers every transaction with `{}`.
    let fake = FakeServer::start(&ca).await?;
    let room = fake
        .join(a.server_name(), room_id.as_str(), &fake.user_id("mallory"))
        .await?;
    let mut sent = Vec::new();
    for n in 0..3 {
        let body = format!("message {n}");
        sent.push(
            a.send_text(&token(&alice), room_id.as_str(), &format!("t{n}"), &body)
                .await?,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let times_received = |event_id: &str| {
        fake.received_pdus()
            .iter()
            .filter(|pdu| {
                complement_tests::fake_server::event_id(&room.version, pdu)
                    .is_ok_and(|id| id == event_id)
            })
            .count()
    };
    eventually("the fake server never got all three messages", async || {
        Ok(sent.iter().all(|id| times_received(id) > 0).then_some(()))
    })
    .await?;
    // A retry would come within a second or two of backoff.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in &sent {
        assert_eq!(times_received(id), 1, "{id} was sent more than once");
    }
    Ok(())
}
