//! The WebSocket transport (`docs/websocket.md`): one socket per device that carries the
//! sync stream, pushed as it happens, and any client-server request, answered on the
//! same socket. It is a transport only: every request, the sync stream's included, goes
//! through the same router as over HTTP, with the socket's access token, so each
//! endpoint behaves (authentication, rate limits, transaction ids, errors) exactly as
//! it does over HTTP.
//!
//! Memory per socket is bounded: frames wait in a queue of [`QUEUED_FRAMES`]; the sync
//! stream builds its next response only once the last one is queued, and requests are
//! read only while fewer than `max_requests_in_flight` run. A client that does not read
//! for `write_timeout_secs` is disconnected; one silent for two ping intervals too.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{
        ConnectInfo, Query, State, WebSocketUpgrade,
        ws::{Message, Utf8Bytes, WebSocket},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Uri, header};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

use crate::{Error, api::ruma::access_token_in, config, service::Services};

/// Where the socket is opened.
pub const PATH: &str = "/_matrix/client/unstable/org.palisade.websocket";

/// Frames waiting to be written to one socket.
const QUEUED_FRAMES: usize = 8;

/// The socket's read buffer, in bytes.
const READ_BUFFER: usize = 4096;

/// How long each long-poll of the sync stream is held, in milliseconds.
const SYNC_POLL_MS: u64 = 30_000;

/// What the client chose when it connected.
#[derive(Debug, Default, Deserialize)]
struct Connect {
    /// `v3`: the server pushes `/sync` responses from `since`; absent: requests only.
    sync: Option<String>,
    since: Option<String>,
    filter: Option<String>,
    set_presence: Option<String>,
}

/// A request frame of the client's.
#[derive(Debug, Deserialize)]
struct RequestFrame {
    id: Value,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Clone)]
struct Transport {
    api: Router,
    services: Arc<Services>,
}

/// Serves the socket at [`PATH`] in front of `api` (which serves everything else and
/// every request the sockets carry).
pub fn wrap(api: Router, services: Arc<Services>) -> Router {
    if !services.config.websocket.enabled {
        return api;
    }
    Router::new()
        .route(PATH, get(upgrade))
        .with_state(Transport {
            api: api.clone(),
            services,
        })
        .fallback_service(api)
}

/// # `GET /_matrix/client/unstable/org.palisade.websocket`
async fn upgrade(
    State(transport): State<Transport>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    Query(connect): Query<Connect>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(token) = access_token_in(&headers, &uri) else {
        return Error::new(
            ruma::api::error::ErrorKind::MissingToken,
            "Missing access token",
        )
        .into_response();
    };
    if let Err(error) = transport.services.users.authenticate(&token) {
        return error.into_response();
    }
    if connect.sync.as_deref().is_some_and(|sync| sync != "v3") {
        return Error::invalid_param("sync must be v3 (sliding sync goes as requests)")
            .into_response();
    }
    let limits = transport.services.config.websocket.clone();
    let max = transport.services.config.max_request_size;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        // The default (128 KiB, allocated up front) would be most of an idle socket's
        // cost; frames larger than this are read in several pieces.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| serve(socket, transport, token, peer, connect, limits))
}

/// One socket: its writer (with pings and the write timeout), its reader (requests),
/// and its sync stream, until any of them ends.
async fn serve(
    socket: WebSocket,
    transport: Transport,
    token: String,
    peer: SocketAddr,
    connect: Connect,
    limits: config::WebSocket,
) {
    let (sink, stream) = socket.split();
    let (frames, queued) = mpsc::channel::<Message>(QUEUED_FRAMES);
    let heard = Arc::new(Mutex::new(Instant::now()));
    let caller = Caller {
        api: transport.api,
        token,
        peer,
    };
    let writer = write(sink, queued, heard.clone(), &limits);
    let reader = read(stream, frames.clone(), heard, caller.clone(), &limits);
    let sync = async {
        if connect.sync.is_some() {
            stream_sync(&caller, &connect, frames).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
        () = sync => {}
    }
}

/// Writes queued frames and pings; ends on a write that takes longer than the timeout
/// (a client that does not read) or on silence from the client.
async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut queued: mpsc::Receiver<Message>,
    heard: Arc<Mutex<Instant>>,
    limits: &config::WebSocket,
) {
    let interval = Duration::from_secs(limits.ping_interval_secs.max(1));
    let timeout = Duration::from_secs(limits.write_timeout_secs.max(1));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let frame = tokio::select! {
            frame = queued.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            _ = pings.tick() => {
                if heard.lock().elapsed() > interval * 2 {
                    tracing::debug!("websocket silent for two ping intervals: closed");
                    return;
                }
                Message::Ping(Default::default())
            }
        };
        match tokio::time::timeout(timeout, sink.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("websocket client reads too slowly: disconnected");
                return;
            }
        }
    }
}

/// Reads the client's frames: requests are answered (at most `max_requests_in_flight`
/// at a time: the next frame is read once one finishes), any frame counts as a sign of
/// life.
async fn read(
    mut stream: futures::stream::SplitStream<WebSocket>,
    frames: mpsc::Sender<Message>,
    heard: Arc<Mutex<Instant>>,
    caller: Caller,
    limits: &config::WebSocket,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_requests_in_flight.max(1)));
    while let Some(Ok(message)) = stream.next().await {
        *heard.lock() = Instant::now();
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => return,
            Message::Binary(_) => {
                let answer = error_frame(&Value::Null, 400, "M_NOT_JSON", "Frames are JSON text");
                if frames.send(answer).await.is_err() {
                    return;
                }
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let caller = caller.clone();
        let frames = frames.clone();
        tokio::spawn(async move {
            let answer = caller.answer(text.as_str()).await;
            let _ = frames.send(answer).await;
            drop(permit);
        });
    }
}

/// Pushes the `/sync` stream from the client's `since`: each response with something in
/// it, in order, the next built once this one is queued.
async fn stream_sync(caller: &Caller, connect: &Connect, frames: mpsc::Sender<Message>) {
    let mut since = connect.since.clone();
    loop {
        let mut query = format!("timeout={SYNC_POLL_MS}");
        let mut add = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                query.push_str(&format!("&{key}={}", percent(value)));
            }
        };
        add("since", &since);
        add("filter", &connect.filter);
        add("set_presence", &connect.set_presence);
        let path = format!("/_matrix/client/v3/sync?{query}");
        let (status, body) = caller.call(Method::GET, &path, None).await;
        if status != 200 {
            let frame = format!(r#"{{"type":"sync_error","status":{status},"body":{body}}}"#);
            let _ = frames.send(Message::Text(frame.into())).await;
            return;
        }
        let Ok(peek) = serde_json::from_str::<Value>(&body) else {
            return;
        };
        let next = peek["next_batch"].as_str().map(str::to_owned);
        if since.is_none() || has_news(&peek) {
            let frame = format!(r#"{{"type":"sync","body":{body}}}"#);
            if frames.send(Message::Text(frame.into())).await.is_err() {
                return;
            }
        }
        since = next.or(since);
    }
}

/// Whether a `/sync` response says anything (else it only moved the token).
fn has_news(sync: &Value) -> bool {
    let non_empty = |value: &Value| match value {
        Value::Object(map) => map.values().any(|inner| match inner {
            Value::Object(rooms) => !rooms.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => false,
        }),
        _ => false,
    };
    non_empty(&sync["rooms"])
        || ["to_device", "presence", "account_data"]
            .iter()
            .any(|part| {
                sync[part]["events"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
            })
        || non_empty(&sync["device_lists"])
}

/// Makes requests through the router as the socket's device.
#[derive(Clone)]
struct Caller {
    api: Router,
    token: String,
    peer: SocketAddr,
}

impl Caller {
    /// The response frame for a request frame.
    async fn answer(&self, text: &str) -> Message {
        let frame: RequestFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(error) => {
                let id = serde_json::from_str::<Value>(text)
                    .ok()
                    .map(|value| value["id"].clone())
                    .unwrap_or(Value::Null);
                return error_frame(&id, 400, "M_BAD_JSON", &error.to_string());
            }
        };
        let Ok(method) = Method::from_bytes(frame.method.as_bytes()) else {
            return error_frame(&frame.id, 400, "M_UNRECOGNIZED", "Unknown method");
        };
        if !frame.path.starts_with("/_matrix/") || frame.path.starts_with(PATH) {
            return error_frame(&frame.id, 400, "M_UNRECOGNIZED", "Not a Matrix API path");
        }
        let body = frame.body.as_ref().map(|body| body.get().to_owned());
        let (status, body) = self.call(method, &frame.path, body).await;
        let id = serde_json::to_string(&frame.id).unwrap_or_else(|_| "null".to_owned());
        Message::Text(Utf8Bytes::from(format!(
            r#"{{"type":"response","id":{id},"status":{status},"body":{body}}}"#
        )))
    }

    /// One request through the router; the status and the JSON body (`null` when the
    /// answer is not JSON).
    async fn call(&self, method: Method, path: &str, body: Option<String>) -> (u16, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .extension(ConnectInfo(self.peer))
            .body(Body::from(body.unwrap_or_default()));
        let Ok(request) = request else {
            return (400, error_body("M_UNRECOGNIZED", "Invalid request path"));
        };
        let Ok(response) = self.api.clone().oneshot(request).await;
        let status = response.status().as_u16();
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        if !json {
            // A download: not read at all, so it never sits in memory.
            return (status, "null".to_owned());
        }
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let body = match std::str::from_utf8(&bytes) {
            Ok(text) if !text.is_empty() => text.to_owned(),
            _ => "null".to_owned(),
        };
        (status, body)
    }
}

fn error_body(errcode: &str, error: &str) -> String {
    serde_json::json!({ "errcode": errcode, "error": error }).to_string()
}

fn error_frame(id: &Value, status: u16, errcode: &str, error: &str) -> Message {
    let frame = serde_json::json!({
        "type": "response",
        "id": id,
        "status": status,
        "body": { "errcode": errcode, "error": error },
    });
    Message::Text(frame.to_string().into())
}

/// A query parameter's value, percent-encoded.
fn percent(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
