//! The black-box test harness: starts the real `palisade` binary on a free loopback port
//! with a fresh database, and hands tests real clients (the `matrix-sdk` crate, as
//! Element X uses it) plus a raw HTTP helper for checking exact status codes and bodies.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{
        RoomId,
        api::client::{
            account::register,
            uiaa::{AuthData, Dummy},
        },
    },
};
use serde_json::Value;

pub mod fake_server;
pub mod push_gateway;
pub mod synapse;
pub mod tls;

/// What a test server logs unless `PALISADE_TEST_LOG` says otherwise: warnings and
/// errors, and sliding sync's notes on connections (a client told to start over).
const DEFAULT_LOG: &str = "warn,palisade::service::sync::sliding=info";

/// A running homeserver owned by one test.
pub struct TestServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// The server name, `localhost` unless the server federates.
    server_name: String,
}

/// The options every test server gets: open registration, a shared secret for the admin
/// API, and rate limits high enough that the limiter does not get in the way.
/// How long a test waits for what another process does: a federated server, a
/// restarted one, a background worker.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Asks `probe` again, 100 ms apart, until it answers `Some`; fails saying `what` never
/// happened once [`PATIENCE`] is spent. An error from `probe` ends the wait at once.
pub async fn eventually<T>(
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what} (waited {PATIENCE:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const BASE_CONFIG: &str = r#"
allow_registration = true
registration_shared_secret = "test-shared-secret"
sync_timeout_max_ms = 30000

[global.rate_limits.login]
per_second = 1000.0
burst = 10000

[global.rate_limits.registration]
per_second = 1000.0
burst = 10000

[global.rate_limits.message]
per_second = 100000.0
burst = 100000
"#;

/// The test defaults with `extra` laid over them: a key or table in `extra` replaces the
/// default one.
fn compose_config(server_name: &str, port: u16, database: &std::path::Path, extra: &str) -> String {
    let (base_keys, base_tables) = BASE_CONFIG.split_once("\n[").unwrap_or((BASE_CONFIG, ""));
    // Tables begin at the first line that opens one (`[` inside a value is not one).
    let table_start = extra
        .match_indices('[')
        .map(|(at, _)| at)
        .find(|at| *at == 0 || extra[..*at].ends_with('\n'));
    let (extra_keys, extra_tables) = match table_start {
        Some(at) => (&extra[..at], extra[at..].to_owned()),
        None => (extra, String::new()),
    };
    let overridden = |line: &str| {
        let key = line.split('=').next().unwrap_or("").trim();
        !key.is_empty()
            && extra_keys
                .lines()
                .any(|l| l.split('=').next().unwrap_or("").trim() == key)
    };
    let mut config = format!(
        "[global]\nserver_name = \"{server_name}\"\nport = {port}\ndatabase_path = \"{}\"\n",
        database.display()
    );
    for line in base_keys.lines().filter(|line| !overridden(line)) {
        config.push_str(line);
        config.push('\n');
    }
    config.push_str(extra_keys);
    config.push('\n');
    if extra_tables.is_empty() {
        config.push('[');
        config.push_str(base_tables);
    } else {
        config.push_str(&extra_tables);
    }
    config
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("PALISADE_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps; the server binary one level up.
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("palisade")
}

/// The ports test servers listen on come from below the kernel's ephemeral range
/// (32768 and up on Linux), so neither an outgoing connection nor a listener bound to
/// port 0 can take one between this check and the server's own bind. Each process
/// starts at its own offset and never hands out the same port twice.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port no other test of this process has, free when asked.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + u16::try_from(offset).expect("offset within the range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

impl TestServer {
    /// Starts a server with the test defaults.
    pub async fn start() -> Result<Self> {
        Self::start_with("").await
    }

    /// Starts a server; `extra` is TOML appended to the `[global]` table (it may also
    /// replace the rate limit tables).
    pub async fn start_with(extra: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = compose_config("localhost", port, &dir.path().join("db"), extra);
        std::fs::write(dir.path().join("homeserver.toml"), config)?;
        let mut server = Self {
            dir,
            port,
            child: None,
            server_name: "localhost".to_owned(),
        };
        server.spawn().await?;
        Ok(server)
    }

    /// Starts a server that federates: its name is `127.0.0.1:<federation port>`, its
    /// federation listener has a certificate from `ca`, and it trusts only that CA.
    pub async fn start_federated(ca: &tls::TestCa) -> Result<Self> {
        Self::start_federated_with(ca, "", "").await
    }

    /// Two federating instances, started side by side.
    pub async fn start_federated_pair(ca: &tls::TestCa) -> Result<(Self, Self)> {
        tokio::try_join!(Self::start_federated(ca), Self::start_federated(ca))
    }

    /// As [`start_federated`](Self::start_federated), with `extra` as in
    /// [`start_with`](Self::start_with) and `federation` added to `[global.federation]`.
    pub async fn start_federated_with(
        ca: &tls::TestCa,
        extra: &str,
        federation: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let federation_port = free_port();
        let server_name = format!("127.0.0.1:{federation_port}");
        let files = ca.write_files(dir.path(), &["127.0.0.1"])?;
        let mut config = compose_config(&server_name, port, &dir.path().join("db"), extra);
        config.push_str(&format!(
            "\n[global.federation]\nenabled = true\nport = {federation_port}\n\
             tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n\
             trusted_ca_files = [\"{}\"]\nrequest_timeout_secs = 10\n{federation}\n",
            files.certificate_chain.display(),
            files.private_key.display(),
            files.ca.display(),
        ));
        std::fs::write(dir.path().join("homeserver.toml"), config)?;
        let mut server = Self {
            dir,
            port,
            child: None,
            server_name,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The server name in its user ids and aliases.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        let child = Command::new(binary())
            .arg("--config")
            .arg(self.dir.path().join("homeserver.toml"))
            .env(
                "RUST_LOG",
                std::env::var("PALISADE_TEST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_owned()),
            )
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", binary().display()))?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = http
                .get(format!("{}/_matrix/client/versions", self.base_url()))
                .send()
                .await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the server exited with {status}: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not come up: {}", self.log())
    }

    /// The directory of the server's database (media files are in its `media/`).
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The base URL of the client API.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server has logged so far: [`DEFAULT_LOG`], or what the
    /// `RUST_LOG`-style filter in the environment variable `PALISADE_TEST_LOG` selects.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and database.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn().await
    }

    /// A raw request; returns the status and the JSON body (`Null` if none).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let http = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = http.request(method, format!("{}{path}", self.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, value))
    }

    /// The status `/account/whoami` answers for an access token: 200 while it works.
    pub async fn whoami_status(&self, access_token: &str) -> Result<u16> {
        Ok(self
            .request(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(access_token),
                None,
            )
            .await?
            .0)
    }

    /// Sends an `m.text` message with transaction id `txn` over the raw API; fails
    /// unless the server answers 200, and returns the event id.
    pub async fn send_text(
        &self,
        access_token: &str,
        room_id: &str,
        txn: &str,
        body: &str,
    ) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}");
        let content = serde_json::json!({ "msgtype": "m.text", "body": body });
        let (status, response) = self
            .request("PUT", &path, Some(access_token), Some(content))
            .await?;
        anyhow::ensure!(status == 200, "send answered {status}: {response}");
        response["event_id"]
            .as_str()
            .map(str::to_owned)
            .context("the send answer has no event_id")
    }

    /// Registers `username` through the spec's UIA flow (`m.login.dummy`) with a real
    /// matrix-sdk client, which is then logged in.
    pub async fn register(&self, username: &str) -> Result<Client> {
        register_with_sdk(&self.base_url(), username).await
    }

    /// Registers `username` as a server administrator through Synapse's shared-secret
    /// registration; returns the access token.
    pub async fn register_admin(&self, username: &str) -> Result<String> {
        use hmac::Mac;
        let (_, body) = self
            .request("GET", "/_synapse/admin/v1/register", None, None)
            .await?;
        let nonce = body["nonce"].as_str().context("no nonce")?.to_owned();
        let password = password(username);
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"test-shared-secret")?;
        mac.update(format!("{nonce}\0{username}\0{password}\0admin").as_bytes());
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let body = serde_json::json!({
            "nonce": nonce, "username": username, "password": password, "admin": true, "mac": mac,
        });
        let (status, registered) = self
            .request("POST", "/_synapse/admin/v1/register", None, Some(body))
            .await?;
        anyhow::ensure!(
            status == 200,
            "admin registration answered {status}: {registered}"
        );
        registered["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access token")
    }

    /// Logs in as an existing user on a new device.
    pub async fn login(&self, username: &str, device_name: &str) -> Result<Client> {
        let client = sdk_client(&self.base_url()).await?;
        client
            .matrix_auth()
            .login_username(username, &password(username))
            .initial_device_display_name(device_name)
            .send()
            .await?;
        Ok(client)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// A matrix-sdk client for the homeserver at `base_url`, not logged in.
async fn sdk_client(base_url: &str) -> Result<Client> {
    Ok(Client::builder().homeserver_url(base_url).build().await?)
}

/// Registers `username` (password [`password`]) at the homeserver at `base_url` through
/// the spec's UIA flow (`m.login.dummy`) with a matrix-sdk client, which is then logged in.
pub(crate) async fn register_with_sdk(base_url: &str, username: &str) -> Result<Client> {
    let client = sdk_client(base_url).await?;
    let mut request = register::v3::Request::new();
    request.username = Some(username.to_owned());
    request.password = Some(password(username));
    request.initial_device_display_name = Some(format!("{username}'s first device"));
    let session = match client.matrix_auth().register(request.clone()).await {
        Ok(_) => bail!("registration succeeded without UIA"),
        Err(error) => error
            .as_uiaa_response()
            .and_then(|info| info.session.clone())
            .context("registration did not answer with a UIA session")?,
    };
    let mut dummy = Dummy::new();
    dummy.session = Some(session);
    request.auth = Some(AuthData::Dummy(dummy));
    client.matrix_auth().register(request).await?;
    Ok(client)
}

/// A new room of `owner`'s with `guest` invited and joined; returns its id.
pub async fn room_of_two(owner: &Client, guest: &Client) -> Result<matrix_sdk::ruma::OwnedRoomId> {
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.invite = vec![
        guest
            .user_id()
            .context("the guest is logged in")?
            .to_owned(),
    ];
    let room_id = owner.create_room(request).await?.room_id().to_owned();
    guest.join_room_by_id(&room_id).await?;
    Ok(room_id)
}

/// A new room with `owner` its only member; returns its id.
pub async fn room_alone(owner: &Client) -> Result<matrix_sdk::ruma::OwnedRoomId> {
    let request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    Ok(owner.create_room(request).await?.room_id().to_owned())
}

/// A new room of `owner`'s named `name`: public (else private), a space or a plain room;
/// returns its id.
pub async fn named_room(
    owner: &Client,
    name: &str,
    public: bool,
    space: bool,
) -> Result<matrix_sdk::ruma::OwnedRoomId> {
    use matrix_sdk::ruma::api::client::room::create_room::v3::{
        CreationContent, Request, RoomPreset,
    };
    let mut request = Request::new();
    request.name = Some(name.to_owned());
    request.preset = Some(if public {
        RoomPreset::PublicChat
    } else {
        RoomPreset::PrivateChat
    });
    if space {
        let mut content = CreationContent::new();
        content.room_type = Some(matrix_sdk::ruma::room::RoomType::Space);
        request.creation_content = Some(matrix_sdk::ruma::serde::Raw::new(&content)?);
    }
    Ok(owner.create_room(request).await?.room_id().to_owned())
}

/// The `auth` object of an `m.login.password` stage of user-interactive authentication.
pub fn password_stage(username: &str, password: &str, session: &Value) -> Value {
    serde_json::json!({
        "type": "m.login.password",
        "session": session,
        "identifier": { "type": "m.id.user", "user": username },
        "password": password,
    })
}

/// Each test user's password.
pub fn password(username: &str) -> String {
    format!("{username}-correct-horse-battery")
}

/// A client's access token.
pub fn token(client: &Client) -> String {
    client.access_token().expect("the client is logged in")
}

/// One sync from the given token (or an initial sync), returning the raw JSON body so
/// tests can check the wire format itself.
pub async fn raw_sync(
    server: &TestServer,
    client: &Client,
    since: Option<&str>,
    timeout_ms: u64,
) -> Result<Value> {
    raw_sync_filtered(server, &token(client), since, timeout_ms, None).await
}

/// A raw sync with an inline filter (JSON).
pub async fn raw_sync_filtered(
    server: &TestServer,
    access_token: &str,
    since: Option<&str>,
    timeout_ms: u64,
    filter: Option<&Value>,
) -> Result<Value> {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
    if let Some(filter) = filter {
        let encoded: String =
            url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
        path.push_str(&format!("&filter={encoded}"));
    }
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    let (status, body) = server
        .request("GET", &path, Some(access_token), None)
        .await?;
    if status != 200 {
        bail!("sync answered {status}: {body}");
    }
    Ok(body)
}

/// Syncs a matrix-sdk client until `done` accepts what it has seen, or fails after
/// `attempts` syncs.
pub async fn sync_until(
    client: &Client,
    attempts: usize,
    mut done: impl FnMut(&Client) -> bool,
) -> Result<()> {
    let settings = SyncSettings::default().timeout(Duration::from_millis(2000));
    for _ in 0..attempts {
        client.sync_once(settings.clone()).await?;
        if done(client) {
            return Ok(());
        }
    }
    bail!("the expected state never arrived")
}

/// Syncs a matrix-sdk client until a message with body `body` arrives in the timeline of
/// `room_id`, or fails after `attempts` syncs. Only syncs made here count: a message an
/// earlier sync of this client delivered is not seen again.
pub async fn sync_until_message(
    client: &Client,
    room_id: &RoomId,
    body: &str,
    attempts: usize,
) -> Result<()> {
    let settings = SyncSettings::default().timeout(Duration::from_millis(2000));
    for _ in 0..attempts {
        let response = client.sync_once(settings.clone()).await?;
        let arrived = response.rooms.joined.get(room_id).is_some_and(|room| {
            room.timeline.events.iter().any(|event| {
                event
                    .raw()
                    .get_field::<Value>("content")
                    .ok()
                    .flatten()
                    .is_some_and(|content| content["body"] == body)
            })
        });
        if arrived {
            return Ok(());
        }
    }
    bail!("the message {body:?} never arrived in {room_id}")
}

/// The `next_batch` of an initial sync of `client`: where a later sync starts.
pub async fn next_batch(server: &TestServer, client: &Client) -> Result<String> {
    raw_sync(server, client, None, 0).await?["next_batch"]
        .as_str()
        .map(str::to_owned)
        .context("a sync without next_batch")
}

/// Every event of a room that `/messages` gives the holder of `token`, paging back from
/// the newest (so newest first).
pub async fn all_messages(server: &TestServer, token: &str, room_id: &str) -> Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100");
        if let Some(from) = &from {
            let from =
                percent_encoding::utf8_percent_encode(from, percent_encoding::NON_ALPHANUMERIC);
            path.push_str(&format!("&from={from}"));
        }
        let (status, page) = server.request("GET", &path, Some(token), None).await?;
        if status != 200 {
            bail!("messages answered {status}: {page}");
        }
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        let end = page["end"].as_str().map(str::to_owned);
        let done = chunk.is_empty() || end.is_none();
        all.extend(chunk);
        if done {
            return Ok(all);
        }
        from = end;
    }
}

/// The timeline events of a room in a raw sync body.
pub fn timeline<'a>(sync: &'a Value, room_id: &str) -> Vec<&'a Value> {
    sync.pointer(&format!(
        "/rooms/join/{}/timeline/events",
        room_id.replace('~', "~0").replace('/', "~1")
    ))
    .and_then(Value::as_array)
    .map(|events| events.iter().collect())
    .unwrap_or_default()
}
