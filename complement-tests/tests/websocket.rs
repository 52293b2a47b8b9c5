//! The WebSocket transport (`docs/websocket.md`) driven by a plain WebSocket client
//! (tokio-tungstenite): the sync stream pushed, requests answered on the socket, a
//! resume after `kill -9` with nothing lost or repeated, and a client that stops reading
//! disconnected while the server's memory stays flat.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use complement_tests::{PATIENCE, TestServer, all_messages, room_of_two, token};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const PATH: &str = "/_matrix/client/unstable/org.palisade.websocket";

/// Opens a socket as the holder of `token`, with the sync stream from `since`.
async fn open(server: &TestServer, token: &str, since: Option<&str>) -> Result<Socket> {
    let base = server.base_url().replacen("http", "ws", 1);
    let mut url = format!("{base}{PATH}?sync=v3");
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (socket, _) = connect_async(request).await?;
    Ok(socket)
}

/// The next JSON frame (pings are answered by the library as frames are read).
async fn next_frame(socket: &mut Socket) -> Result<Value> {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .context("no frame in time")?
            .context("the socket closed")??;
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Close(_) => bail!("the server closed the socket"),
            _ => continue,
        }
    }
}

/// What one sync frame says of a room: the message bodies of its timeline.
fn bodies(sync: &Value, room_id: &str) -> Vec<String> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Counts the messages of a sync frame as received and moves `since` past it.
fn take(received: &mut BTreeMap<String, usize>, sync: &Value, room_id: &str, since: &mut String) {
    for body in bodies(sync, room_id) {
        *received.entry(body).or_default() += 1;
    }
    if let Some(next) = sync["next_batch"].as_str() {
        *since = next.to_owned();
    }
}

/// Sends a request frame and waits for its answer (sync frames meanwhile are kept).
async fn request(
    socket: &mut Socket,
    id: &str,
    method: &str,
    path: &str,
    body: Value,
    synced: &mut Vec<Value>,
) -> Result<Value> {
    let frame = json!({ "id": id, "method": method, "path": path, "body": body });
    socket.send(Message::Text(frame.to_string().into())).await?;
    loop {
        let frame = next_frame(socket).await?;
        match frame["type"].as_str() {
            Some("response") if frame["id"] == id => return Ok(frame),
            Some("sync") => synced.push(frame["body"].clone()),
            _ => {}
        }
    }
}

#[tokio::test]
async fn messages_both_ways_and_a_resume_after_kill9_loses_and_repeats_nothing() -> Result<()> {
    let mut server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?.to_string();
    let (alice_token, bob_token) = (token(&alice), token(&bob));

    let mut socket = open(&server, &alice_token, None).await?;
    let initial = next_frame(&mut socket).await?;
    ensure!(
        initial["type"] == "sync",
        "the first frame is the initial sync: {initial}"
    );
    let mut since = initial["body"]["next_batch"]
        .as_str()
        .context("next_batch")?
        .to_owned();
    // Every message body Alice's client received, with how often.
    let mut received: BTreeMap<String, usize> = BTreeMap::new();

    // Bob → Alice: pushed on the socket.
    server
        .send_text(&bob_token, &room_id, "b1", "bob 1")
        .await?;
    let frame = next_frame(&mut socket).await?;
    ensure!(frame["type"] == "sync", "{frame}");
    take(&mut received, &frame["body"], &room_id, &mut since);
    ensure!(
        received.contains_key("bob 1"),
        "bob's message pushed: {frame}"
    );

    // Alice → Bob: a send over the socket, answered on it, then typing and a receipt.
    let mut synced = Vec::new();
    let send = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a1");
    let answer = request(
        &mut socket,
        "send-1",
        "PUT",
        &send,
        json!({ "msgtype": "m.text", "body": "alice 1" }),
        &mut synced,
    )
    .await?;
    ensure!(answer["status"] == 200, "send answered {answer}");
    let event_id = answer["body"]["event_id"]
        .as_str()
        .context("event id")?
        .to_owned();
    let typing = format!(
        "/_matrix/client/v3/rooms/{room_id}/typing/{}",
        alice.user_id().context("alice")?
    );
    let answer = request(
        &mut socket,
        "typing-1",
        "PUT",
        &typing,
        json!({ "typing": true, "timeout": 10000 }),
        &mut synced,
    )
    .await?;
    ensure!(answer["status"] == 200, "typing answered {answer}");
    let receipt = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}");
    let answer = request(
        &mut socket,
        "receipt-1",
        "POST",
        &receipt,
        json!({}),
        &mut synced,
    )
    .await?;
    ensure!(answer["status"] == 200, "receipt answered {answer}");
    // The same transaction id again: the same event, not a second one.
    let answer = request(
        &mut socket,
        "send-again",
        "PUT",
        &send,
        json!({ "msgtype": "m.text", "body": "alice 1" }),
        &mut synced,
    )
    .await?;
    ensure!(answer["body"]["event_id"] == event_id.as_str(), "{answer}");
    // A request for something that does not exist gets the HTTP API's error.
    let answer = request(
        &mut socket,
        "missing",
        "GET",
        "/_matrix/client/v3/rooms/!nowhere:localhost/state",
        Value::Null,
        &mut synced,
    )
    .await?;
    ensure!(answer["status"] == 403, "unknown room answered {answer}");
    for sync in &synced {
        take(&mut received, sync, &room_id, &mut since);
    }
    let bob_sees = all_messages(&server, &bob_token, &room_id).await?;
    ensure!(
        bob_sees
            .iter()
            .filter(|event| event["content"]["body"] == "alice 1")
            .count()
            == 1,
        "Bob sees Alice's message once"
    );

    // Bob sends more; the server is killed while Alice may or may not have them all.
    for n in 2..=4 {
        server
            .send_text(&bob_token, &room_id, &format!("b{n}"), &format!("bob {n}"))
            .await?;
    }
    if let Ok(Ok(frame)) =
        tokio::time::timeout(Duration::from_millis(200), next_frame(&mut socket)).await
        && frame["type"] == "sync"
    {
        take(&mut received, &frame["body"], &room_id, &mut since);
    }
    server.kill9()?;
    drop(socket);
    server.restart().await?;
    for n in 5..=6 {
        server
            .send_text(&bob_token, &room_id, &format!("b{n}"), &format!("bob {n}"))
            .await?;
    }

    // Reconnect from the last token received: the rest arrives, nothing twice.
    let mut socket = open(&server, &alice_token, Some(&since)).await?;
    let wanted: Vec<String> = (1..=6)
        .map(|n| format!("bob {n}"))
        .chain(["alice 1".to_owned()])
        .collect();
    while !wanted.iter().all(|body| received.contains_key(body)) {
        let frame = next_frame(&mut socket).await?;
        if frame["type"] == "sync" {
            take(&mut received, &frame["body"], &room_id, &mut since);
        }
    }
    ensure!(
        received.values().all(|count| *count == 1),
        "a message was received twice: {received:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_memory_stays_flat() -> Result<()> {
    let server = TestServer::start_with(
        "[global.websocket]\nwrite_timeout_secs = 2\nping_interval_secs = 600\n",
    )
    .await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?.to_string();
    let bob_token = token(&bob);
    let filler = "x".repeat(60_000);
    // Big messages first, before the sockets open: what the server sets up once for
    // the first ones (caches, the search index's writer) is not counted below.
    for n in 0..50 {
        server
            .send_text(&bob_token, &room_id, &format!("warm{n}"), &filler)
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Alice on several devices, each with a socket that reads its first frame and then
    // nothing more. Every message is pushed to each of them, so a server that kept what
    // it could not write would grow by several times what it stores.
    const DEVICES: usize = 6;
    let mut sockets = vec![open(&server, &token(&alice), None).await?];
    for n in 1..DEVICES {
        let device = server.login("alice", &format!("phone{n}")).await?;
        sockets.push(open(&server, &token(&device), None).await?);
    }
    for socket in &mut sockets {
        next_frame(socket).await?;
    }
    let before = rss_kib(&server)?;
    // About 24 MB of messages, pushed to every socket: 144 MB that nobody reads.
    let stored_kib = 400 * 60_000 / 1024;
    for n in 0..400 {
        server
            .send_text(
                &bob_token,
                &room_id,
                &format!("big{n}"),
                &format!("{n} {filler}"),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = rss_kib(&server)?;
    let pushed_kib = stored_kib * DEVICES as u64;
    eprintln!(
        "server RSS {before} KiB before, {after} KiB after {stored_kib} KiB stored and \
         {pushed_kib} KiB pushed to sockets that do not read"
    );
    // Storing the messages may take memory (memtables, the search queue); keeping what
    // was pushed would take at least as much again per socket.
    ensure!(
        after < before + pushed_kib / 2,
        "server RSS grew from {before} KiB to {after} KiB, in the order of what was pushed \
         to clients that do not read"
    );
    // The server gave up on the sockets: reading drains what the kernel buffered, then
    // each socket ends.
    for mut socket in sockets {
        let ended = tokio::time::timeout(PATIENCE, async {
            loop {
                match socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        ensure!(ended.is_ok(), "a slow socket was never closed");
    }
    // The server is fine: a new socket syncs.
    let mut socket = open(&server, &token(&alice), None).await?;
    ensure!(next_frame(&mut socket).await?["type"] == "sync");
    Ok(())
}

/// The server process's resident memory, in KiB.
fn rss_kib(server: &TestServer) -> Result<u64> {
    let pid = server.pid().context("running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("VmRSS")
}
