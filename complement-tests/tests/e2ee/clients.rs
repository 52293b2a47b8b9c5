//! End-to-end encryption across servers, with real clients: matrix-js-sdk and its Rust
//! crypto stack (as Element Web runs them), driven by `js/e2ee/chat.mjs` under Node. Each
//! run logs a fresh device in on each side; the device keys, one-time key claims and room
//! keys (as to-device messages) cross between the servers, and the run passes only when
//! each side decrypted the other's exact message. Then each side signs in a second device,
//! which the other side's client must learn of through a device list update (the
//! `m.device_list_update` EDU between the servers) and encrypt its next message for; a
//! to-device message to all of the user's devices (`*`) must reach both; once the second
//! device signs out the other side's client must drop it. Last, each side makes new
//! cross-signing keys, which the other side's client must see its device signed by.
//!
//! Two instances of this server, then this server and Synapse (from PyPI).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use complement_tests::{TestServer, password, synapse::Synapse, tls::TestCa};
use matrix_sdk::ruma::{OwnedRoomId, RoomOrAliasId, api::client::room::create_room};
use serde_json::{Value, json};

/// The budget of each step of the driver (signing in, a join, a decryption).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// The budget of one whole run of the driver.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

/// One account the driver signs in to with a password, on a fresh device.
struct Account {
    base_url: String,
    user_id: String,
    password: String,
}

impl Account {
    fn json(&self) -> Value {
        json!({
            "base_url": self.base_url,
            "user_id": self.user_id,
            "password": self.password,
        })
    }
}

/// A user registered on one of this server's instances.
async fn ours(server: &TestServer, localpart: &str) -> Result<Account> {
    let client = server.register(localpart).await?;
    Ok(Account {
        base_url: server.base_url(),
        user_id: client.user_id().context("registered")?.to_string(),
        password: password(localpart),
    })
}

/// A user registered on Synapse.
async fn synapses(synapse: &Synapse, localpart: &str) -> Result<Account> {
    let (user_id, _) = synapse.register(localpart, &password(localpart)).await?;
    Ok(Account {
        base_url: synapse.client_url(),
        user_id,
        password: password(localpart),
    })
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs the driver: `first` and `second` chat encrypted in `room_id`, or, without one, in
/// a room `first` creates and invites `second` to. Returns the driver's stdout, after
/// checking that it passed and that each side decrypted.
async fn encrypted_chat(
    first: &Account,
    second: &Account,
    room_id: Option<&OwnedRoomId>,
) -> Result<String> {
    ensure!(
        js_dir().join("node_modules/matrix-js-sdk").is_dir(),
        "matrix-js-sdk is not installed in {}: run scripts/install-deps.sh",
        js_dir().display()
    );
    let mut config = json!({
        "accounts": [first.json(), second.json()],
        "timeout_ms": STEP_TIMEOUT.as_millis() as u64,
    });
    if let Some(room_id) = room_id {
        config["room_id"] = json!(room_id);
    }
    let started = Instant::now();
    let child = tokio::process::Command::new("node")
        .arg("e2ee/chat.mjs")
        .arg(config.to_string())
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("the driver ran longer than {RUN_TIMEOUT:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "driver ({:?}, {}):\n{stdout}",
        started.elapsed(),
        output.status
    );
    if !output.status.success() || stdout.lines().last() != Some("ok") {
        bail!(
            "the encrypted chat failed ({}):\n{stdout}\nstderr, last lines:\n{}",
            output.status,
            tail(&stderr, 40)
        );
    }
    check_report(&stdout, first, second)?;
    Ok(stdout)
}

/// What the driver must have reported for each side: it decrypted the other's message,
/// saw the other's second device appear, cross-signed and then dropped, and its own
/// second device decrypted and got the to-device message.
fn check_report(stdout: &str, first: &Account, second: &Account) -> Result<()> {
    for (receiver, sender) in [(second, first), (first, second)] {
        let decrypted = stdout.lines().any(|line| {
            line.starts_with(&format!("{} decrypted ", receiver.user_id))
                && line.contains(&format!("from {}", sender.user_id))
        });
        ensure!(
            decrypted,
            "{} never reported decrypting {}'s message:\n{stdout}",
            receiver.user_id,
            sender.user_id
        );
    }
    for (owner, viewer) in [(first, second), (second, first)] {
        let listed = stdout.lines().any(|line| {
            line.starts_with(&format!(
                "{} sees {}'s new device ",
                viewer.user_id, owner.user_id
            ))
        });
        let on_both = stdout.lines().any(|line| {
            line.starts_with(&format!("{} decrypted ", owner.user_id))
                && line.contains(" on devices ")
        });
        let pinged = stdout.lines().any(|line| {
            line.starts_with(&format!("{}'s devices ", owner.user_id))
                && line.ends_with(" received the to-device message")
        });
        let dropped = stdout.lines().any(|line| {
            line.starts_with(&format!(
                "{} no longer lists {}'s signed-out device ",
                viewer.user_id, owner.user_id
            ))
        });
        ensure!(
            listed && on_both && pinged && dropped,
            "{}'s second device was not listed by {}, did not decrypt, missed the to-device \
             message or was not dropped after signing out:\n{stdout}",
            owner.user_id,
            viewer.user_id
        );
        let seen = stdout.lines().any(|line| {
            line.starts_with(&format!(
                "{} sees {}'s device ",
                viewer.user_id, owner.user_id
            )) && line.ends_with(" cross-signed")
        });
        ensure!(
            seen,
            "{} never reported {}'s device cross-signed:\n{stdout}",
            viewer.user_id,
            owner.user_id
        );
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The driver's failure followed by the end of each server's log.
fn with_logs(error: anyhow::Error, logs: &[(&str, String)]) -> anyhow::Error {
    let mut message = format!("{error:#}");
    for (name, log) in logs {
        message.push_str(&format!("\n\n{name} log, last lines:\n{}", tail(log, 60)));
    }
    anyhow::anyhow!(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_chat_between_two_of_our_servers() -> Result<()> {
    let ca = TestCa::new();
    let (a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = ours(&a, "alice").await?;
    let bob = ours(&b, "bob").await?;
    let logs = |a: &TestServer, b: &TestServer| [("server A", a.log()), ("server B", b.log())];

    // Alice creates an encrypted room on A and invites Bob, who joins through B.
    encrypted_chat(&alice, &bob, None)
        .await
        .map_err(|error| with_logs(error, &logs(&a, &b)))?;

    // A public room of Bob's on B, joined by Alice by its alias; the driver turns
    // encryption on. Both sign in on new devices, which the other side must learn of.
    let bob_client = b.login("bob", "room maker").await?;
    let mut request = create_room::v3::Request::new();
    request.room_alias_name = Some("e2ee".to_owned());
    request.preset = Some(create_room::v3::RoomPreset::PublicChat);
    let room_id = bob_client.create_room(request).await?.room_id().to_owned();
    let alice_client = a.login("alice", "room joiner").await?;
    let alias = format!("#e2ee:{}", b.server_name());
    tokio::time::timeout(
        STEP_TIMEOUT,
        alice_client.join_room_by_id_or_alias(<&RoomOrAliasId>::try_from(alias.as_str())?, &[]),
    )
    .await
    .context("the join took too long")??;
    encrypted_chat(&bob, &alice, Some(&room_id))
        .await
        .map_err(|error| with_logs(error, &logs(&a, &b)))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_chat_between_our_server_and_synapse() -> Result<()> {
    let ca = TestCa::new();
    let (ours_server, synapse) =
        tokio::try_join!(TestServer::start_federated(&ca), Synapse::start(&ca))?;
    let alice = ours(&ours_server, "alice").await?;
    let sam = synapses(&synapse, "sam").await?;
    let logs = |ours_server: &TestServer, synapse: &Synapse| {
        [
            ("our server", ours_server.log()),
            ("Synapse", synapse.log_tail(60)),
        ]
    };

    // The room on our server, Alice speaking first; then one on Synapse, Sam first.
    encrypted_chat(&alice, &sam, None)
        .await
        .map_err(|error| with_logs(error, &logs(&ours_server, &synapse)))?;
    encrypted_chat(&sam, &alice, None)
        .await
        .map_err(|error| with_logs(error, &logs(&ours_server, &synapse)))?;
    Ok(())
}
