//! Devices coming, renamed and going, before any of them has keys: the user's other
//! devices and the people they share a room with see the user in `device_lists.changed`
//! each time, as on Synapse, so their clients fetch the device list again.

use anyhow::Result;
use complement_tests::{TestServer, next_batch, raw_sync, room_of_two, token};
use serde_json::json;

#[tokio::test]
async fn a_new_renamed_or_deleted_device_is_a_device_list_change() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    room_of_two(&alice, &bob).await?;

    let changed_for = async |client: &matrix_sdk::Client, since: &str| -> Result<bool> {
        let sync = raw_sync(&server, client, Some(since), 0).await?;
        let changed = &sync["device_lists"]["changed"];
        Ok(changed
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u == "@alice:localhost")))
    };
    let (mine, bobs) = (
        next_batch(&server, &alice).await?,
        next_batch(&server, &bob).await?,
    );
    let phone = server.login("alice", "phone").await?;
    assert!(
        changed_for(&alice, &mine).await?,
        "alice's first device missed her new one"
    );
    assert!(
        changed_for(&bob, &bobs).await?,
        "bob missed alice's new device"
    );

    let phone_id = phone.device_id().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/devices/{phone_id}");
    let (mine, bobs) = (
        next_batch(&server, &alice).await?,
        next_batch(&server, &bob).await?,
    );
    let (status, _) = server
        .request(
            "PUT",
            &path,
            Some(&token(&alice)),
            Some(json!({ "display_name": "Phone" })),
        )
        .await?;
    assert_eq!(status, 200);
    assert!(
        changed_for(&alice, &mine).await?,
        "a rename was not a change for alice"
    );
    assert!(
        changed_for(&bob, &bobs).await?,
        "a rename was not a change for bob"
    );

    let (mine, bobs) = (
        next_batch(&server, &alice).await?,
        next_batch(&server, &bob).await?,
    );
    let (_, challenge) = server
        .request("DELETE", &path, Some(&token(&alice)), Some(json!({})))
        .await?;
    let auth = json!({ "auth": complement_tests::password_stage("alice", &complement_tests::password("alice"), &challenge["session"]) });
    let (status, body) = server
        .request("DELETE", &path, Some(&token(&alice)), Some(auth))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        changed_for(&alice, &mine).await?,
        "a deletion was not a change for alice"
    );
    assert!(
        changed_for(&bob, &bobs).await?,
        "a deletion was not a change for bob"
    );
    Ok(())
}
