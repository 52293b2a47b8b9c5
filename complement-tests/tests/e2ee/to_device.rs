//! To-device messages on one server: a backlog larger than one sync holds comes out over
//! several syncs, in order, each message once; an unacknowledged message survives a
//! `kill -9`; a repeated transaction id sends nothing more; `*` reaches every device.

use std::collections::HashSet;

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, raw_sync, token};
use serde_json::{Value, json};

fn numbers(sync: &Value) -> Vec<u64> {
    sync["to_device"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|event| event["content"]["n"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_comes_out_in_order_once_and_survives_a_crash() -> Result<()> {
    let mut server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let bob_device = bob.device_id().context("device")?.to_string();
    let bob_id = bob.user_id().context("user")?.to_string();
    let start = raw_sync(&server, &bob, None, 0).await?;
    let mut since = start["next_batch"]
        .as_str()
        .context("next_batch")?
        .to_owned();

    for n in 0..250u64 {
        let (status, body) = server
            .request(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/m.palisade.test/txn{n}"),
                Some(&token(&alice)),
                Some(json!({ "messages": { &bob_id: { &bob_device: { "n": n } } } })),
            )
            .await?;
        ensure!(status == 200, "send {n} answered {status}: {body}");
    }
    // The same transaction again sends nothing.
    let (status, _) = server
        .request(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.palisade.test/txn0",
            Some(&token(&alice)),
            Some(json!({ "messages": { &bob_id: { &bob_device: { "n": 0 } } } })),
        )
        .await?;
    ensure!(status == 200, "the repeated send answered {status}");

    let mut received = Vec::new();
    // The first page, then a crash before Bob syncs from its token: it comes again.
    let first = raw_sync(&server, &bob, Some(&since), 0).await?;
    ensure!(
        numbers(&first).len() == 100,
        "one sync holds 100, got {:?}",
        numbers(&first).len()
    );
    server.kill9()?;
    server.restart().await?;
    let again = raw_sync(&server, &bob, Some(&since), 0).await?;
    ensure!(
        numbers(&again) == numbers(&first),
        "the unacknowledged page differs after the crash"
    );
    loop {
        let sync = raw_sync(&server, &bob, Some(&since), 0).await?;
        let page = numbers(&sync);
        since = sync["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        if page.is_empty() {
            break;
        }
        ensure!(page.len() <= 100, "a sync held {} messages", page.len());
        received.extend(page);
    }
    ensure!(
        received == (0..250).collect::<Vec<_>>(),
        "received {} messages, not 0..250 in order once each",
        received.len()
    );

    // `*` reaches every device of the user.
    let phone = server.login("bob", "phone").await?;
    let phone_since = raw_sync(&server, &phone, None, 0).await?["next_batch"]
        .as_str()
        .context("next_batch")?
        .to_owned();
    let (status, _) = server
        .request(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.palisade.test/all",
            Some(&token(&alice)),
            Some(json!({ "messages": { &bob_id: { "*": { "n": 999 } } } })),
        )
        .await?;
    ensure!(status == 200, "send to all answered {status}");
    let mut devices_reached = HashSet::new();
    for (client, from) in [(&bob, since.as_str()), (&phone, phone_since.as_str())] {
        let sync = raw_sync(&server, client, Some(from), 10_000).await?;
        if numbers(&sync) == [999] {
            devices_reached.insert(client.device_id().context("device")?.to_string());
        }
    }
    ensure!(devices_reached.len() == 2, "reached {devices_reached:?}");
    Ok(())
}
