//! Sending: throughput by concurrency and room layout, and delivery latency to a
//! long-polling receiver.

use super::*;

impl Run {
    /// `concurrency` senders, each in its own room or all in one; returns a room that
    /// holds the phase's messages.
    pub(super) async fn send_phase(
        &mut self,
        concurrency: usize,
        one_room: bool,
    ) -> Result<String> {
        let per_sender = if concurrency == 1 {
            self.plan.single_sender_messages
        } else {
            self.plan.messages_per_sender
        };
        let (name, layout) = match (concurrency, one_room) {
            (1, _) => ("send_c1".to_owned(), "its own room"),
            (c, false) => (format!("send_c{c}_rooms"), "each in its own room"),
            (c, true) => (format!("send_c{c}_one_room"), "all in one room"),
        };
        let senders = self.users[..concurrency].to_vec();
        let rooms: Vec<String> = if one_room {
            let room = self.room_with(&senders[0], &senders[1..]).await?;
            vec![room; concurrency]
        } else {
            try_join_all(senders.iter().map(|s| self.room_with(s, &[]))).await?
        };
        let phase = Phase::new(
            &name,
            if concurrency == 1 {
                format!("1 sender, {layout}, {per_sender} messages")
            } else {
                format!("{concurrency} concurrent senders, {layout}, {per_sender} messages each")
            },
        );
        let deadline = Instant::now() + self.plan.phase_time_limit;
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let results = try_join_all(senders.iter().zip(&rooms).enumerate().map(
            |(i, (sender, room))| {
                let matrix = self.matrix.clone();
                async move {
                    let mut latencies = Vec::with_capacity(per_sender);
                    for n in 0..per_sender {
                        if Instant::now() > deadline {
                            break;
                        }
                        let t0 = Instant::now();
                        matrix
                            .send_text(sender, room, &format!("load {i} {n}"))
                            .await?;
                        latencies.push(t0.elapsed());
                    }
                    anyhow::Ok(latencies)
                }
            },
        ))
        .await?;
        let elapsed = started.elapsed();
        let usage = watch.finish();
        let latencies: Vec<Duration> = results.into_iter().flatten().collect();
        self.record(phase, &latencies, elapsed, usage);
        Ok(rooms[0].clone())
    }

    /// One sender, one receiver long-polling `/sync`: the time from just before each
    /// send until the receiver's sync returns it. Sends are one at a time.
    pub(super) async fn delivery_phase(
        &mut self,
        name: &str,
        messages: usize,
        via: Via,
    ) -> Result<()> {
        let (sender, receiver) = (self.users[0].clone(), self.users[1].clone());
        let room = self
            .room_with(&sender, std::slice::from_ref(&receiver))
            .await?;
        let phase = Phase::new(
            name,
            format!(
                "{messages} messages, one at a time, send to the other user's {}",
                via.describe()
            ),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
        let initial = self
            .matrix
            .sync(&receiver, None, 0, MESSAGES_FILTER)
            .await?;
        let mut since = initial["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        let listener = match via {
            Via::LongPoll => {
                let (matrix, stop, room) = (self.matrix.clone(), stop.clone(), room.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sync = matrix
                            .sync(&receiver, Some(&since), 30_000, MESSAGES_FILTER)
                            .await?;
                        arrivals(&sync, &room, &arrived_tx);
                        since = sync["next_batch"]
                            .as_str()
                            .context("next_batch")?
                            .to_owned();
                    }
                    anyhow::Ok(())
                })
            }
            Via::WebSocket => {
                let mut socket = self
                    .matrix
                    .websocket(&receiver, &since, MESSAGES_FILTER)
                    .await?
                    .context("the server offers no WebSocket")?;
                let (stop, room) = (stop.clone(), room.clone());
                tokio::spawn(async move {
                    use futures::StreamExt;
                    while !stop.load(Ordering::Relaxed) {
                        let Some(message) = socket.next().await else {
                            break;
                        };
                        if let tokio_tungstenite::tungstenite::Message::Text(text) = message? {
                            let frame: serde_json::Value = serde_json::from_str(text.as_str())?;
                            if frame["type"] == "sync" {
                                arrivals(&frame["body"], &room, &arrived_tx);
                            }
                        }
                    }
                    anyhow::Ok(())
                })
            }
        };
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let deadline = started + self.plan.phase_time_limit;
        let mut early: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::with_capacity(messages);
        for n in 0..messages {
            if Instant::now() > deadline {
                break;
            }
            let t0 = Instant::now();
            let event_id = self
                .matrix
                .send_text(&sender, &room, &format!("delivery {n}"))
                .await?;
            let at = match early.remove(&event_id) {
                Some(at) => at,
                None => loop {
                    let (id, at) = tokio::time::timeout(Duration::from_secs(30), arrived.recv())
                        .await
                        .with_context(|| format!("{event_id} never reached the receiver"))?
                        .context("receiver stopped")?;
                    if id == event_id {
                        break at;
                    }
                    early.insert(id, at);
                },
            };
            latencies.push(at.saturating_duration_since(t0));
        }
        let elapsed = started.elapsed();
        let usage = watch.finish();
        stop.store(true, Ordering::Relaxed);
        // Wake the listener's long-poll so it sees the stop flag.
        self.matrix.send_text(&sender, &room, "stop").await?;
        listener.await??;
        self.record(phase, &latencies, elapsed, usage);
        Ok(())
    }
}

/// How the receiver of a delivery phase hears of new messages.
#[derive(Clone, Copy, Debug)]
pub(super) enum Via {
    /// `/sync` long-polls, one after the other.
    LongPoll,
    /// The sync stream of a WebSocket (`docs/websocket.md`).
    WebSocket,
}

impl Via {
    fn describe(self) -> &'static str {
        match self {
            Via::LongPoll => "/sync",
            Via::WebSocket => "WebSocket sync stream",
        }
    }
}

/// Notes when each event of `room` in a sync response arrived.
fn arrivals(
    sync: &serde_json::Value,
    room: &str,
    arrived: &mpsc::UnboundedSender<(String, Instant)>,
) {
    let now = Instant::now();
    for event in sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(id) = event["event_id"].as_str() {
            let _ = arrived.send((id.to_owned(), now));
        }
    }
}
