//! The few client-server calls the load phases make, over plain HTTP with `reqwest`.
//! Nothing here is specific to one homeserver: registration uses the spec's
//! `m.login.dummy` stage, everything else is the stable v3 API.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A registered user and its access token.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// A client-server API endpoint and the HTTP client that talks to it.
#[derive(Clone)]
pub struct Matrix {
    http: reqwest::Client,
    base: String,
}

/// How many requests were answered `429 M_LIMIT_EXCEEDED` and retried; a benchmark
/// that hits the limiter measures the limiter, so the report shows this count.
pub static RATE_LIMITED: AtomicU64 = AtomicU64::new(0);

impl Matrix {
    /// An HTTP/1.1 client for `base` (e.g. `http://127.0.0.1:8008`).
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self::with_client(base, http))
    }

    /// A client that speaks HTTP/2 without TLS (prior knowledge): every request it
    /// makes shares one connection.
    pub fn new_h2(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self::with_client(base, http))
    }

    fn with_client(base: &str, http: reqwest::Client) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// One request; a 429 is waited out (as clients do) and retried.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == StatusCode::TOO_MANY_REQUESTS {
                RATE_LIMITED.fetch_add(1, Ordering::Relaxed);
                let wait = body["retry_after_ms"].as_u64().unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(wait.min(5_000))).await;
                continue;
            }
            return Ok((status, body));
        }
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, value) = self.call(method.clone(), path, token, body).await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {value}");
        }
        Ok(value)
    }

    /// Registers `username` through the `m.login.dummy` stage (asking for a session
    /// first when the server wants one).
    pub async fn register(&self, username: &str, password: &str) -> Result<User> {
        let path = "/_matrix/client/v3/register";
        let mut body = json!({
            "username": username,
            "password": password,
            "initial_device_display_name": "loadtest",
        });
        let (status, first) = self.call(Method::POST, path, None, Some(&body)).await?;
        let done = if status == StatusCode::UNAUTHORIZED {
            body["auth"] = json!({"type": "m.login.dummy", "session": first["session"]});
            self.ok(Method::POST, path, None, Some(&body)).await?
        } else if status.is_success() {
            first
        } else {
            bail!("register {username}: {status} {first}");
        };
        Ok(User {
            user_id: done["user_id"].as_str().context("user_id")?.to_owned(),
            token: done["access_token"]
                .as_str()
                .context("access_token")?
                .to_owned(),
        })
    }

    pub async fn create_room(&self, user: &User, body: Value) -> Result<String> {
        let created = self
            .ok(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&user.token),
                Some(&body),
            )
            .await?;
        Ok(created["room_id"].as_str().context("room_id")?.to_owned())
    }

    pub async fn join(&self, user: &User, room_id: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/join/{}", encode(room_id));
        self.ok(Method::POST, &path, Some(&user.token), Some(&json!({})))
            .await?;
        Ok(())
    }

    /// Sends an `m.room.message` with `body`; returns the event id.
    pub async fn send_text(&self, user: &User, room_id: &str, body: &str) -> Result<String> {
        static TXN: AtomicU64 = AtomicU64::new(0);
        let txn = TXN.fetch_add(1, Ordering::Relaxed);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/lt{}x{txn}",
            encode(room_id),
            std::process::id()
        );
        let sent = self
            .ok(
                Method::PUT,
                &path,
                Some(&user.token),
                Some(&json!({"msgtype": "m.text", "body": body})),
            )
            .await?;
        Ok(sent["event_id"].as_str().context("event_id")?.to_owned())
    }

    /// `GET /sync`; `filter` is an inline JSON filter.
    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
        filter: &str,
    ) -> Result<Value> {
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
            encode(filter)
        );
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&encode(since));
        }
        self.ok(Method::GET, &path, Some(&user.token), None).await
    }

    /// A simplified sliding sync request (MSC4186) on connection `conn_id`, from `pos`
    /// (a new connection without one); returns the response.
    pub async fn sliding_sync(
        &self,
        user: &User,
        pos: Option<&str>,
        timeout_ms: u64,
        body: &Value,
    ) -> Result<Value> {
        let mut path = format!(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout={timeout_ms}"
        );
        if let Some(pos) = pos {
            path.push_str("&pos=");
            path.push_str(&encode(pos));
        }
        self.ok(Method::POST, &path, Some(&user.token), Some(body))
            .await
    }

    /// A WebSocket with the sync stream from `since` (`docs/websocket.md`), or `None`
    /// when the server offers none.
    pub async fn websocket(
        &self,
        user: &User,
        since: &str,
        filter: &str,
    ) -> Result<Option<WebSocket>> {
        use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest, http::HeaderValue};
        let url = format!(
            "{}/_matrix/client/unstable/org.palisade.websocket?sync=v3&since={}&filter={}",
            self.base.replacen("http", "ws", 1),
            encode(since),
            encode(filter)
        );
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", user.token))?,
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Some(socket)),
            Err(Error::Http(response)) if response.status().is_client_error() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// `GET /messages` backwards from `from` (or the end of the room).
    pub async fn messages_back(
        &self,
        user: &User,
        room_id: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<Value> {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
            encode(room_id)
        );
        if let Some(from) = from {
            path.push_str("&from=");
            path.push_str(&encode(from));
        }
        self.ok(Method::GET, &path, Some(&user.token), None).await
    }

    /// A `GET` timed from the request until its body is received, before it is parsed:
    /// the time measures the server and the transfer, not this client's JSON parser.
    pub async fn get_timed(&self, user: &User, path: &str) -> Result<(Duration, Value)> {
        let started = std::time::Instant::now();
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&user.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.bytes().await?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok((
            elapsed,
            serde_json::from_slice(&body).context(path.to_owned())?,
        ))
    }

    /// `POST /_matrix/media/v3/upload` of `bytes`; returns the `mxc://` URI.
    pub async fn upload(&self, user: &User, content_type: &str, bytes: Vec<u8>) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .bearer_auth(&user.token)
            .header("Content-Type", content_type)
            .body(bytes)
            .send()
            .await
            .context("upload")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("upload: {status} {body}");
        }
        Ok(body["content_uri"]
            .as_str()
            .context("content_uri")?
            .to_owned())
    }

    /// `GET /_matrix/client/v1/media/{kind}/{server}/{id}{query}` (`download` or
    /// `thumbnail`); returns the number of bytes received.
    pub async fn media(&self, user: &User, kind: &str, uri: &str, query: &str) -> Result<usize> {
        let path = uri.strip_prefix("mxc://").context("an mxc URI")?;
        let response = self
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/{kind}/{path}{query}",
                self.base
            ))
            .bearer_auth(&user.token)
            .send()
            .await
            .with_context(|| format!("media {kind}"))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("media {kind}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(body.len())
    }

    /// `GET /versions`: whether the server is up, and what it calls itself.
    pub async fn server_version(&self) -> Result<String> {
        let (status, _) = self
            .call(Method::GET, "/_matrix/client/versions", None, None)
            .await?;
        if !status.is_success() {
            bail!("versions: {status}");
        }
        let (_, version) = self
            .call(Method::GET, "/_matrix/federation/v1/version", None, None)
            .await
            .unwrap_or((StatusCode::NOT_FOUND, Value::Null));
        Ok(match &version["server"] {
            Value::Object(server) => format!(
                "{} {}",
                server.get("name").and_then(Value::as_str).unwrap_or("?"),
                server.get("version").and_then(Value::as_str).unwrap_or("?")
            ),
            _ => "unknown".to_owned(),
        })
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A client's WebSocket.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
