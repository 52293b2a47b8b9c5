//! Durability: acknowledged events survive `kill -9`, and sync tokens issued before a
//! restart resume exactly, without a gap or a repeat.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use complement_tests::{TestServer, raw_sync_filtered, room_of_two, token};
use serde_json::{Value, json};

fn everything() -> Value {
    json!({ "room": { "timeline": { "limit": 500 } } })
}

fn message_bodies(sync: &Value, room_id: &str) -> Vec<String> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn sync_resumes_exactly_after_a_restart() -> anyhow::Result<()> {
    let mut server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?.to_string();
    let (alice_token, bob_token) = (token(&alice), token(&bob));
    let filter = everything();

    let t0 = raw_sync_filtered(&server, &bob_token, None, 0, Some(&filter)).await?["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..10 {
        server
            .send_text(&alice_token, &room_id, &format!("a{i}"), &format!("m{i}"))
            .await?;
    }
    let first = raw_sync_filtered(&server, &bob_token, Some(&t0), 0, Some(&filter)).await?;
    assert_eq!(
        message_bodies(&first, &room_id),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let t1 = first["next_batch"].as_str().unwrap().to_owned();
    for i in 10..20 {
        server
            .send_text(&alice_token, &room_id, &format!("a{i}"), &format!("m{i}"))
            .await?;
    }

    server.restart().await?;

    let resumed = raw_sync_filtered(&server, &bob_token, Some(&t1), 0, Some(&filter)).await?;
    assert_eq!(
        message_bodies(&resumed, &room_id),
        (10..20).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let from_start = raw_sync_filtered(&server, &bob_token, Some(&t0), 0, Some(&filter)).await?;
    assert_eq!(
        message_bodies(&from_start, &room_id),
        (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );

    let t2 = resumed["next_batch"].as_str().unwrap().to_owned();
    server
        .send_text(&alice_token, &room_id, "after", "m20")
        .await?;
    let after = raw_sync_filtered(&server, &bob_token, Some(&t2), 5000, Some(&filter)).await?;
    assert_eq!(message_bodies(&after, &room_id), vec!["m20"]);

    // A retried transaction after the restart answers the same event, without a duplicate.
    let again = server.send_text(&alice_token, &room_id, "a5", "m5").await?;
    let original = first["rooms"]["join"][room_id.as_str()]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["body"] == "m5")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(again, original);
    let quiet = raw_sync_filtered(
        &server,
        &bob_token,
        Some(after["next_batch"].as_str().unwrap()),
        300,
        Some(&filter),
    )
    .await?;
    assert!(message_bodies(&quiet, &room_id).is_empty());
    Ok(())
}

/// The room's `m.room.message` ids, oldest first, read back through `/messages`.
async fn history(server: &TestServer, token: &str, room_id: &str) -> anyhow::Result<Vec<String>> {
    let mut history = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=500");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let (status, page) = server.request("GET", &path, Some(token), None).await?;
        anyhow::ensure!(status == 200, "/messages answered {status}: {page}");
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        history.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned)),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    history.reverse();
    Ok(history)
}

/// A reader following the room with incremental syncs: every token it was handed, with
/// how many of the room's messages it had received when it got it.
#[derive(Default)]
struct Reader {
    received: Vec<String>,
    tokens: Vec<(String, usize)>,
}

fn messages_filter() -> Value {
    json!({ "room": { "timeline": { "limit": 500, "types": ["m.room.message"] } } })
}

/// Syncs from the reader's last token until the server goes away.
async fn follow(base_url: String, token: String, room_id: String, reader: Arc<Mutex<Reader>>) {
    let http = reqwest::Client::new();
    let filter: String =
        url::form_urlencoded::byte_serialize(messages_filter().to_string().as_bytes()).collect();
    loop {
        let since = reader.lock().unwrap().tokens.last().map(|(t, _)| t.clone());
        let mut url = format!("{base_url}/_matrix/client/v3/sync?timeout=100&filter={filter}");
        if let Some(since) = since {
            url.push_str(&format!("&since={since}"));
        }
        let Ok(response) = http.get(url).bearer_auth(&token).send().await else {
            return;
        };
        let Ok(sync) = response.json::<Value>().await else {
            return;
        };
        let Some(next) = sync["next_batch"].as_str() else {
            return;
        };
        let timeline = &sync["rooms"]["join"][room_id.as_str()]["timeline"];
        assert_ne!(
            timeline["limited"], true,
            "the reader fell behind by 500 events"
        );
        let mut reader = reader.lock().unwrap();
        for event in timeline["events"].as_array().into_iter().flatten() {
            reader
                .received
                .push(event["event_id"].as_str().unwrap().to_owned());
        }
        let count = reader.received.len();
        reader.tokens.push((next.to_owned(), count));
    }
}

/// A little xorshift generator: the kill moments differ between runs, and the seed in
/// the output replays a failing run (`DURABILITY_SEED=...`).
fn kill_moments(rounds: usize) -> (u64, Vec<Duration>) {
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut state = seed;
    let moments = (0..rounds)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_millis(30 + state % 700)
        })
        .collect();
    (seed, moments)
}

const SENDERS: usize = 4;

/// What each sender had acknowledged, in order.
type Acknowledged = Arc<Mutex<Vec<Vec<String>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sends_and_sync_tokens_survive_20_kill_9() -> anyhow::Result<()> {
    let mut server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?.to_string();
    let (alice_token, bob_token) = (token(&alice), token(&bob));
    const KILLS: usize = 20;
    let (seed, moments) = kill_moments(KILLS);
    println!("DURABILITY_SEED={seed}");
    let acknowledged: Acknowledged = Arc::new(Mutex::new(vec![Vec::new(); SENDERS]));
    let reader = Arc::new(Mutex::new(Reader::default()));

    for (round, moment) in moments.iter().enumerate() {
        let base_url = server.base_url();
        let tokens_before = reader.lock().unwrap().tokens.len();
        let mut tasks = spawn_senders(&base_url, &alice_token, &room_id, round, &acknowledged);
        tasks.push(tokio::spawn(follow(
            base_url,
            bob_token.clone(),
            room_id.clone(),
            reader.clone(),
        )));
        tokio::time::sleep(*moment).await;
        server.kill9()?;
        for task in tasks {
            task.await?;
        }
        server.restart().await?;

        // Every token handed out before this kill resumes with exactly what followed it.
        let history = history(&server, &alice_token, &room_id).await?;
        let (received, tokens) = {
            let reader = reader.lock().unwrap();
            (
                reader.received.clone(),
                reader.tokens[tokens_before..].to_vec(),
            )
        };
        assert_eq!(
            received[..],
            history[..received.len()],
            "round {round}: the reader's sync chain skipped or repeated an event (seed {seed})"
        );
        for (since, seen) in &tokens {
            let resumed = resumed_ids(&server, &bob_token, &room_id, since).await?;
            assert_eq!(
                resumed,
                history[*seen..],
                "round {round}: token {since} resumed with a gap or a repeat (seed {seed})"
            );
        }
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(total > 100, "only {total} sends were acknowledged");
    all_served_in_order(&server, &alice_token, &room_id, &acknowledged, seed).await?;
    let tokens = reader.lock().unwrap().tokens.len();
    println!(
        "{KILLS} kills, {total} acknowledged sends served in order, {tokens} sync tokens resumed exactly"
    );
    Ok(())
}

/// Senders that send as fast as they are answered until the server goes away, each
/// noting the event ids it was given.
fn spawn_senders(
    base_url: &str,
    token: &str,
    room_id: &str,
    round: usize,
    acknowledged: &Acknowledged,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..SENDERS)
        .map(|sender| {
            let (base_url, token, room_id, acknowledged) = (
                base_url.to_owned(),
                token.to_owned(),
                room_id.to_owned(),
                acknowledged.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..100_000 {
                    let url = format!("{base_url}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/r{round}s{sender}n{i}");
                    let body = json!({ "msgtype": "m.text", "body": format!("{round}/{sender}/{i}") });
                    let Ok(response) = http.put(url).bearer_auth(&token).json(&body).send().await else { return };
                    let Ok(value) = response.json::<Value>().await else { return };
                    let Some(event_id) = value["event_id"].as_str() else { return };
                    acknowledged.lock().unwrap()[sender].push(event_id.to_owned());
                }
            })
        })
        .collect()
}

/// The message ids an incremental sync from `since` returns.
async fn resumed_ids(
    server: &TestServer,
    token: &str,
    room_id: &str,
    since: &str,
) -> anyhow::Result<Vec<String>> {
    let resumed =
        raw_sync_filtered(server, token, Some(since), 0, Some(&messages_filter())).await?;
    let timeline = &resumed["rooms"]["join"][room_id]["timeline"];
    Ok(timeline["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect())
}

/// Every acknowledged event is in the room's history, each sender's in the order they
/// were acknowledged, and a sample of them is served by `/event`.
async fn all_served_in_order(
    server: &TestServer,
    token: &str,
    room_id: &str,
    acknowledged: &[Vec<String>],
    seed: u64,
) -> anyhow::Result<()> {
    let history = history(server, token, room_id).await?;
    for ids in acknowledged {
        let positions: Vec<usize> = ids
            .iter()
            .map(|id| {
                history
                    .iter()
                    .position(|h| h == id)
                    .unwrap_or_else(|| panic!("acknowledged event {id} was lost (seed {seed})"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a sender's events are out of order (seed {seed})"
        );
        for id in ids.iter().step_by(25) {
            let (status, event) = server
                .request(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{room_id}/event/{id}"),
                    Some(token),
                    None,
                )
                .await?;
            assert_eq!(status, 200, "acknowledged event {id} not served: {event}");
        }
    }
    Ok(())
}
