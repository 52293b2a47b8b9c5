//! The key plumbing end-to-end encryption rests on, across servers, spoken over the raw
//! client API so each step is checked exactly: Alice on this server, Bob on another
//! instance of it or on Synapse, sharing a room.
//!
//! Bob's device keys, signed by his device, reach Alice's queries intact after his
//! server's `m.device_list_update` put him in her sync's `device_lists.changed`, and
//! hers reach him the same way; his
//! one-time keys are claimed once each, oldest first, then his fallback key; a
//! to-device message goes both ways; his cross-signing keys arrive through
//! `m.signing_key_update`; a second device of his appears and, once logged out,
//! disappears; `/keys/changes` names him; an unreachable server is named in `failures`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use complement_tests::{PATIENCE, TestServer, eventually, password, synapse::Synapse, tls::TestCa};
use ruma17::{
    CanonicalJsonObject, CanonicalJsonValue,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

/// One logged-in device, spoken to over the raw client API.
struct Device {
    base_url: String,
    token: String,
    user_id: String,
    device_id: String,
}

impl Device {
    async fn login(base_url: &str, user_id: &str, password: &str) -> Result<Self> {
        let (status, body) = raw(
            base_url,
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user_id },
                "password": password,
            })),
        )
        .await?;
        ensure!(status == 200, "login answered {status}: {body}");
        Ok(Self {
            base_url: base_url.to_owned(),
            token: body["access_token"].as_str().context("token")?.to_owned(),
            user_id: body["user_id"].as_str().context("user id")?.to_owned(),
            device_id: body["device_id"].as_str().context("device id")?.to_owned(),
        })
    }

    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        raw(&self.base_url, method, path, Some(&self.token), body).await
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let (status, answer) = self.request(method, path, Some(body)).await?;
        ensure!(status == 200, "{method} {path} answered {status}: {answer}");
        Ok(answer)
    }

    async fn sync(&self, since: Option<&str>) -> Result<Value> {
        let mut path = "/_matrix/client/v3/sync?timeout=1000".to_owned();
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let (status, body) = self.request("GET", &path, None).await?;
        ensure!(status == 200, "sync answered {status}: {body}");
        Ok(body)
    }

    /// Syncs from `since` until `found` accepts a response; returns it.
    async fn sync_until(
        &self,
        since: &str,
        what: &str,
        found: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut since = since.to_owned();
        eventually(&format!("{} never saw {what}", self.user_id), async || {
            let sync = self.sync(Some(&since)).await?;
            if found(&sync) {
                return Ok(Some(sync));
            }
            since = sync["next_batch"]
                .as_str()
                .context("next_batch")?
                .to_owned();
            Ok(None)
        })
        .await
    }

    async fn next_batch(&self) -> Result<String> {
        Ok(self.sync(None).await?["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned())
    }

    async fn query(&self, user: &str) -> Result<Value> {
        self.ok(
            "POST",
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { user: [] }, "timeout": 20000 }),
        )
        .await
    }

    /// Signs and uploads this device's identity keys, two one-time keys and a fallback
    /// key; returns the device keys as uploaded.
    async fn upload_keys(&self) -> Result<(Value, Ed25519KeyPair)> {
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), self.device_id.clone())?;
        let mut device_keys = json!({
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{}", self.device_id): STANDARD_NO_PAD.encode([1u8; 32]),
                format!("ed25519:{}", self.device_id): STANDARD_NO_PAD.encode(key.public_key()),
            },
        });
        sign(&self.user_id, &key, &mut device_keys)?;
        let mut one_time = serde_json::Map::new();
        for (id, fill) in [("AAAAAQ", 2u8), ("AAAAAg", 3)] {
            let mut otk = json!({ "key": STANDARD_NO_PAD.encode([fill; 32]) });
            sign(&self.user_id, &key, &mut otk)?;
            one_time.insert(format!("signed_curve25519:{id}"), otk);
        }
        let mut fallback = json!({ "key": STANDARD_NO_PAD.encode([9u8; 32]), "fallback": true });
        sign(&self.user_id, &key, &mut fallback)?;
        let answer = self
            .ok(
                "POST",
                "/_matrix/client/v3/keys/upload",
                json!({
                    "device_keys": device_keys,
                    "one_time_keys": one_time,
                    "fallback_keys": { "signed_curve25519:AAAAAw": fallback },
                }),
            )
            .await?;
        ensure!(
            answer["one_time_key_counts"]["signed_curve25519"] == 2,
            "two one-time keys counted: {answer}"
        );
        Ok((device_keys, key))
    }
}

async fn raw(
    base_url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let http = reqwest::Client::new();
    let mut request = http
        .request(
            reqwest::Method::from_bytes(method.as_bytes())?,
            format!("{base_url}{path}"),
        )
        .timeout(PATIENCE);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Signs a JSON object as `entity` with `key` (key id `ed25519:<key version>`).
fn sign(entity: &str, key: &Ed25519KeyPair, object: &mut Value) -> Result<()> {
    let CanonicalJsonValue::Object(mut canonical) = CanonicalJsonValue::try_from(object.clone())?
    else {
        bail!("not an object");
    };
    sign_json(entity, key, &mut canonical)?;
    *object = serde_json::to_value(CanonicalJsonObject::from(canonical))?;
    Ok(())
}

/// Sends `{"hello": hello}` from `from` to `to`'s `device` (or `*`) and waits until
/// `to` syncs it; returns the event as delivered.
async fn to_device(
    from: &Device,
    to: &Device,
    device: &str,
    txn: &str,
    hello: &str,
) -> Result<Value> {
    let since = to.next_batch().await?;
    from.ok(
        "PUT",
        &format!("/_matrix/client/v3/sendToDevice/m.palisade.test/{txn}"),
        json!({ "messages": { &to.user_id: { device: { "hello": hello } } } }),
    )
    .await?;
    let sync = to
        .sync_until(&since, "a to-device message", |sync| {
            sync["to_device"]["events"]
                .as_array()
                .is_some_and(|events| !events.is_empty())
        })
        .await?;
    let event = sync["to_device"]["events"][0].clone();
    ensure!(event["content"]["hello"] == hello, "delivered {event}");
    Ok(event)
}

fn changed(sync: &Value, user: &str) -> bool {
    sync["device_lists"]["changed"]
        .as_array()
        .is_some_and(|users| users.iter().any(|u| u == user))
}

/// Alice on this server (server A), Bob on the other, in a room of Alice's that Bob
/// joined by alias.
async fn shared_room(
    a: &TestServer,
    other_url: &str,
    bob_id: &str,
    bob_password: &str,
) -> Result<(Device, Device)> {
    let alice_client = a.register("alice").await?;
    let alice = Device::login(&a.base_url(), "alice", &password("alice")).await?;
    drop(alice_client);
    let bob = Device::login(other_url, bob_id, bob_password).await?;
    let created = alice
        .ok(
            "POST",
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "keys", "preset": "public_chat" }),
        )
        .await?;
    let room_id = created["room_id"].as_str().context("room id")?.to_owned();
    let alias = format!("#keys:{}", a.server_name());
    let encoded = alias.replace('#', "%23");
    bob.ok(
        "POST",
        &format!("/_matrix/client/v3/join/{encoded}"),
        json!({}),
    )
    .await?;
    eventually("Alice's server never saw Bob join", async || {
        let (status, member) = alice
            .request(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{bob_id}"),
                None,
            )
            .await?;
        Ok((status == 200 && member["membership"] == "join").then_some(()))
    })
    .await?;
    Ok((alice, bob))
}

/// The whole exchange between Alice (on this server) and Bob (on the other server).
async fn exchange(alice: Device, bob: Device, other_url: &str, bob_password: &str) -> Result<()> {
    let start = alice.next_batch().await?;
    device_keys_both_ways(&alice, &bob, &start).await?;
    one_time_keys_once_each(&alice, &bob).await?;
    to_device_both_ways(&alice, &bob).await?;
    cross_signing_keys(&alice, &bob, bob_password).await?;
    let end = second_device_comes_and_goes(&alice, &bob, other_url, bob_password).await?;
    changes_and_failures(&alice, &bob, &start, &end).await
}

/// Bob's device keys reach Alice (her sync names him, her query shows them signed), and
/// hers reach him; he claims one of her one-time keys.
async fn device_keys_both_ways(alice: &Device, bob: &Device, start: &str) -> Result<()> {
    let bob_id = bob.user_id.clone();
    let (bob_keys, _) = bob.upload_keys().await?;
    let started = Instant::now();
    alice
        .sync_until(start, "Bob in device_lists.changed", |sync| {
            changed(sync, &bob_id)
        })
        .await?;
    eprintln!("device-list update across servers: {:?}", started.elapsed());
    let answer = alice.query(&bob_id).await?;
    let shown = &answer["device_keys"][&bob_id][&bob.device_id];
    for field in ["user_id", "device_id", "algorithms", "keys", "signatures"] {
        ensure!(
            shown[field] == bob_keys[field],
            "{field} differs: {shown} against {bob_keys}"
        );
    }

    // And the other way: Alice's keys reach Bob through his server.
    let bob_start = bob.next_batch().await?;
    let (alice_keys, _) = alice.upload_keys().await?;
    bob.sync_until(&bob_start, "Alice in device_lists.changed", |sync| {
        changed(sync, &alice.user_id)
    })
    .await?;
    let answer = bob.query(&alice.user_id).await?;
    let shown = &answer["device_keys"][&alice.user_id][&alice.device_id];
    ensure!(
        shown["keys"] == alice_keys["keys"] && shown["signatures"] == alice_keys["signatures"],
        "Bob sees Alice's keys as {shown}"
    );
    let answer = bob
        .ok(
            "POST",
            "/_matrix/client/v3/keys/claim",
            json!({ "one_time_keys": { &alice.user_id: { &alice.device_id: "signed_curve25519" } } }),
        )
        .await?;
    ensure!(
        answer["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAAAQ"]
            .is_object(),
        "Bob claimed {answer}"
    );

    Ok(())
}

/// One-time keys: each handed out once, oldest first.
async fn one_time_keys_once_each(alice: &Device, bob: &Device) -> Result<()> {
    let bob_id = bob.user_id.clone();
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let answer = alice
            .ok(
                "POST",
                "/_matrix/client/v3/keys/claim",
                json!({ "one_time_keys": { &bob_id: { &bob.device_id: "signed_curve25519" } }, "timeout": 20000 }),
            )
            .await?;
        let keys = answer["one_time_keys"][&bob_id][&bob.device_id]
            .as_object()
            .with_context(|| format!("no key claimed: {answer}"))?;
        claimed.extend(keys.keys().cloned());
    }
    ensure!(
        claimed
            == [
                "signed_curve25519:AAAAAQ",
                "signed_curve25519:AAAAAg",
                "signed_curve25519:AAAAAw"
            ],
        "claims handed out {claimed:?}"
    );

    Ok(())
}

/// To-device messages, both ways.
async fn to_device_both_ways(alice: &Device, bob: &Device) -> Result<()> {
    let bob_id = bob.user_id.clone();
    let event = to_device(alice, bob, &bob.device_id, "t1", "bob").await?;
    ensure!(
        event["sender"] == alice.user_id && event["type"] == "m.palisade.test",
        "Bob got {event}"
    );
    let event = to_device(bob, alice, "*", "t2", "alice").await?;
    ensure!(event["sender"] == bob_id, "Alice got {event}");

    Ok(())
}

/// Cross-signing keys: a master key and a self-signing key signed by it, seen by Alice.
async fn cross_signing_keys(alice: &Device, bob: &Device, bob_password: &str) -> Result<()> {
    let bob_id = bob.user_id.clone();
    let before_cross_signing = alice.next_batch().await?;
    let (master, master_public) = key_named_by_itself()?;
    let master_key = json!({
        "user_id": bob_id,
        "usage": ["master"],
        "keys": { format!("ed25519:{master_public}"): master_public },
    });
    let (_, self_signing_public) = key_named_by_itself()?;
    let mut self_signing_key = json!({
        "user_id": bob_id,
        "usage": ["self_signing"],
        "keys": { format!("ed25519:{self_signing_public}"): self_signing_public },
    });
    sign(&bob_id, &master, &mut self_signing_key)?;
    let (status, body) = bob
        .request(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(json!({ "master_key": master_key, "self_signing_key": self_signing_key })),
        )
        .await?;
    let (status, body) = if status == 401 {
        // Synapse asks for the password even for the first upload of some versions.
        bob.request(
            "POST",
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(json!({
                "master_key": master_key,
                "self_signing_key": self_signing_key,
                "auth": {
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": bob_id },
                    "password": bob_password,
                    "session": body["session"],
                },
            })),
        )
        .await?
    } else {
        (status, body)
    };
    ensure!(
        status == 200,
        "cross-signing upload answered {status}: {body}"
    );
    alice
        .sync_until(
            &before_cross_signing,
            "Bob's cross-signing change",
            |sync| changed(sync, &bob_id),
        )
        .await?;
    let answer = alice.query(&bob_id).await?;
    ensure!(
        answer["master_keys"][&bob_id]["keys"] == master_key["keys"],
        "Bob's master key as Alice sees it: {answer}"
    );
    ensure!(
        answer["self_signing_keys"][&bob_id]["keys"] == self_signing_key["keys"],
        "Bob's self-signing key as Alice sees it: {answer}"
    );

    Ok(())
}

/// A second device of Bob's appears, then disappears once logged out; the sync token
/// after it.
async fn second_device_comes_and_goes(
    alice: &Device,
    bob: &Device,
    other_url: &str,
    bob_password: &str,
) -> Result<String> {
    let bob_id = bob.user_id.clone();
    let before_phone = alice.next_batch().await?;
    let phone = Device::login(other_url, &bob_id, bob_password).await?;
    phone.upload_keys().await?;
    let devices_seen = |answer: &Value| -> Vec<String> {
        answer["device_keys"][&bob_id]
            .as_object()
            .map(|devices| devices.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut since = before_phone.clone();
    eventually("Bob's second device never showed", async || {
        let sync = alice.sync(Some(&since)).await?;
        since = sync["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        let shown = changed(&sync, &bob_id)
            && devices_seen(&alice.query(&bob_id).await?).contains(&phone.device_id);
        Ok(shown.then_some(()))
    })
    .await?;
    let (status, body) = phone
        .request("POST", "/_matrix/client/v3/logout", Some(json!({})))
        .await?;
    ensure!(status == 200, "logout answered {status}: {body}");
    eventually("Bob's logged-out device still shows", async || {
        let sync = alice.sync(Some(&since)).await?;
        since = sync["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        let gone = changed(&sync, &bob_id)
            && !devices_seen(&alice.query(&bob_id).await?).contains(&phone.device_id);
        Ok(gone.then_some(()))
    })
    .await?;
    ensure!(
        devices_seen(&alice.query(&bob_id).await?) == [bob.device_id.clone()],
        "Bob's first device is still there"
    );

    Ok(since)
}

/// `/keys/changes` over the whole exchange names Bob; a server that does not answer is
/// named in `failures`, within the timeout.
async fn changes_and_failures(
    alice: &Device,
    bob: &Device,
    start: &str,
    since: &str,
) -> Result<()> {
    let bob_id = bob.user_id.clone();
    let (status, answer) = alice
        .request(
            "GET",
            &format!("/_matrix/client/v3/keys/changes?from={start}&to={since}"),
            None,
        )
        .await?;
    ensure!(status == 200, "keys/changes answered {status}: {answer}");
    ensure!(
        answer["changed"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u == &bob_id)),
        "keys/changes: {answer}"
    );

    // A server that does not answer is named in `failures`, within the timeout.
    let started = Instant::now();
    let answer = alice
        .ok(
            "POST",
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { "@nobody:127.0.0.1:1": [] }, "timeout": 3000 }),
        )
        .await?;
    ensure!(
        answer["failures"]["127.0.0.1:1"].is_object(),
        "failures: {answer}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "the query waited {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A new cross-signing key pair, whose key id is its public key; and that public key.
fn key_named_by_itself() -> Result<(Ed25519KeyPair, String)> {
    let document = Ed25519KeyPair::generate();
    let public =
        STANDARD_NO_PAD.encode(Ed25519KeyPair::from_der(&document, String::new())?.public_key());
    Ok((Ed25519KeyPair::from_der(&document, public.clone())?, public))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_and_to_device_messages_cross_two_instances() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let bob_client = b.register("bob").await?;
    drop(bob_client);
    let bob_id = format!("@bob:{}", b.server_name());
    let (alice, bob) = shared_room(&a, &b.base_url(), &bob_id, &password("bob")).await?;
    exchange(alice, bob, &b.base_url(), &password("bob")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_and_to_device_messages_cross_to_synapse() -> Result<()> {
    let ca = TestCa::new();
    let (a, synapse) = tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let (bob_id, _) = synapse.register("bob", &password("bob")).await?;
    let (alice, bob) = shared_room(&a, &synapse.client_url(), &bob_id, &password("bob")).await?;
    exchange(alice, bob, &synapse.client_url(), &password("bob")).await
}
