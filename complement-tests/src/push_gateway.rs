//! A push gateway for tests: it records every notification the server posts to
//! `/_matrix/push/v1/notify`, and can fail requests or reject push keys on demand.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

#[derive(Default)]
struct Recorded {
    received: Vec<Value>,
    /// Requests still to answer with a 500.
    failures_left: usize,
    /// Requests answered with a 500 so far.
    failed: usize,
    rejected_keys: HashSet<String>,
}

/// A running recording gateway.
#[derive(Clone)]
pub struct RecordingGateway {
    state: Arc<Mutex<Recorded>>,
    port: u16,
}

impl RecordingGateway {
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(Recorded::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let app = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, port })
    }

    /// The URL a pusher names.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/_matrix/push/v1/notify", self.port)
    }

    /// The `notification` objects received so far, in order.
    pub fn received(&self) -> Vec<Value> {
        self.state.lock().unwrap().received.clone()
    }

    /// The notifications received for an event.
    pub fn for_event(&self, event_id: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|notification| notification["event_id"] == event_id)
            .collect()
    }

    /// Answers the next `count` requests with a 500 (recording nothing).
    pub fn fail_next(&self, count: usize) {
        self.state.lock().unwrap().failures_left = count;
    }

    /// Requests answered with a 500 so far.
    pub fn failed(&self) -> usize {
        self.state.lock().unwrap().failed
    }

    /// Rejects a push key from now on (`rejected` in the answer).
    pub fn reject(&self, pushkey: &str) {
        self.state
            .lock()
            .unwrap()
            .rejected_keys
            .insert(pushkey.to_owned());
    }
}

async fn notify(
    State(state): State<Arc<Mutex<Recorded>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut state = state.lock().unwrap();
    if state.failures_left > 0 {
        state.failures_left -= 1;
        state.failed += 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    let notification = body["notification"].clone();
    let rejected: Vec<String> = notification["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|device| device["pushkey"].as_str())
        .filter(|key| state.rejected_keys.contains(*key))
        .map(str::to_owned)
        .collect();
    state.received.push(notification);
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}
