//! The load phases. Each is bounded in count and in time, talks to one base URL, and
//! returns a [`Phase`] with what it measured.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    client::{Matrix, User},
    stats::{Latency, ServerProcesses, Usage, Watch},
};

/// What one phase measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Phase {
    /// A stable key, e.g. `send_c16_rooms`; reports match phases across servers by it.
    pub name: String,
    pub description: String,
    /// Operations completed (messages sent, syncs served, pages read).
    pub ops: u64,
    pub seconds: f64,
    /// `ops / seconds`.
    pub throughput: f64,
    pub latency: Option<Latency>,
    /// The server's CPU time and memory during the phase (empty without a pid).
    pub usage: Usage,
    /// Server CPU time per operation, in milliseconds.
    pub cpu_ms_per_op: f64,
    /// Phase-specific figures.
    pub extra: BTreeMap<String, f64>,
}

impl Phase {
    fn new(name: &str, description: String) -> Self {
        Self {
            name: name.to_owned(),
            description,
            ..Self::default()
        }
    }

    fn finish(&mut self, ops: u64, elapsed: Duration, latency: Option<Latency>, usage: Usage) {
        self.ops = ops;
        self.seconds = elapsed.as_secs_f64();
        self.throughput = ops as f64 / self.seconds.max(1e-9);
        self.latency = latency;
        self.usage = usage;
        self.cpu_ms_per_op = if ops > 0 {
            usage.cpu_secs * 1e3 / ops as f64
        } else {
            0.0
        };
        print_phase(self);
    }
}

fn print_phase(phase: &Phase) {
    let mut line = format!(
        "{:<28} {:>7} ops {:>8.2}s {:>9.1}/s",
        phase.name, phase.ops, phase.seconds, phase.throughput
    );
    if let Some(latency) = &phase.latency {
        line += &format!(
            "  p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms",
            latency.p50, latency.p90, latency.p99, latency.max
        );
    }
    if phase.usage.peak_memory_mib > 0.0 {
        line += &format!(
            "  cpu {:.3} ms/op  peak {:.0} MiB",
            phase.cpu_ms_per_op, phase.usage.peak_memory_mib
        );
    }
    for (key, value) in &phase.extra {
        line += &format!("  {key} {value:.2}");
    }
    println!("{line}");
}

/// Sizes and limits of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Messages the single sender sends.
    pub single_sender_messages: usize,
    /// Concurrent sender counts to measure (besides 1).
    pub concurrency: Vec<usize>,
    /// Messages each concurrent sender sends.
    pub messages_per_sender: usize,
    /// Messages timed from send to another user's sync.
    pub delivery_messages: usize,
    /// Rooms the initial-sync reader is in, messages in each, members in each.
    pub sync_rooms: usize,
    pub sync_messages_per_room: usize,
    pub sync_members: usize,
    /// How often each sync measurement is repeated.
    pub sync_repeats: usize,
    /// Messages in the room paged back through with `/messages`.
    pub pagination_messages: usize,
    /// Held idle long-polls to measure, over HTTP/1.1 connections.
    pub idle_syncs_http1: Vec<usize>,
    /// Held idle long-polls to measure, as HTTP/2 streams (100 per connection).
    pub idle_syncs_http2: Vec<usize>,
    /// A phase stops sending when it has run this long, whatever its count.
    pub phase_time_limit: Duration,
    /// Which groups of phases run: `send`, `delivery`, `sync`, `messages`, `idle`
    /// (all when empty).
    pub groups: Vec<String>,
}

impl Plan {
    fn runs(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }
}

impl Plan {
    /// Seconds-long sizes that exercise every phase (for CI).
    pub fn smoke() -> Self {
        Self {
            single_sender_messages: 30,
            concurrency: vec![4],
            messages_per_sender: 10,
            delivery_messages: 20,
            sync_rooms: 3,
            sync_messages_per_room: 5,
            sync_members: 3,
            sync_repeats: 3,
            pagination_messages: 30,
            idle_syncs_http1: vec![50],
            idle_syncs_http2: vec![200],
            phase_time_limit: Duration::from_secs(60),
            groups: Vec::new(),
        }
    }

    /// The sizes the issue's targets are stated for.
    pub fn full() -> Self {
        Self {
            single_sender_messages: 2_000,
            concurrency: vec![16, 64],
            messages_per_sender: 200,
            delivery_messages: 1_000,
            sync_rooms: 100,
            sync_messages_per_room: 100,
            sync_members: 10,
            sync_repeats: 10,
            pagination_messages: 2_000,
            idle_syncs_http1: vec![10_000],
            idle_syncs_http2: vec![10_000, 50_000, 100_000],
            phase_time_limit: Duration::from_secs(60),
            groups: Vec::new(),
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub base_url: String,
    pub phases: Vec<Phase>,
    /// Requests answered 429 and retried (should be 0: the limiter is not measured).
    pub rate_limited: u64,
    /// The server's memory before the first phase and the highest seen in any phase.
    pub start_memory_mib: f64,
    pub peak_memory_mib: f64,
}

/// The state a run carries between phases.
pub struct Run {
    matrix: Matrix,
    base_url: String,
    processes: ServerProcesses,
    plan: Plan,
    /// Unique per run so names never collide with an earlier run on the same server.
    prefix: String,
    users: Vec<User>,
    report: Report,
}

const PASSWORD: &str = "loadtest-password-1";

/// A filter that keeps syncs about messages: no presence, no account data.
const MESSAGES_FILTER: &str = r#"{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},"room":{"timeline":{"limit":50,"types":["m.room.message"]},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}}}"#;

/// Lazy-loaded members, as Element and Element X ask for them.
const LAZY_FILTER: &str =
    r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}"#;

/// The full member state of every room.
const FULL_FILTER: &str = r#"{"room":{"timeline":{"limit":10}}}"#;

impl Run {
    pub fn new(base_url: &str, label: &str, pids: Vec<u32>, plan: Plan) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        Ok(Self {
            matrix: Matrix::new(base_url)?,
            base_url: base_url.to_owned(),
            processes: ServerProcesses::new(pids),
            plan,
            prefix: format!("lt{:x}", nanos % 0xffff_ffff),
            users: Vec::new(),
            report: Report {
                label: label.to_owned(),
                base_url: base_url.to_owned(),
                ..Report::default()
            },
        })
    }

    /// Runs every phase in order and returns the report.
    pub async fn all(mut self) -> Result<Report> {
        raise_fd_limit();
        self.matrix
            .server_version()
            .await
            .context("server not up")?;
        self.report.start_memory_mib = self.processes.sample().memory_mib;
        let most = self.plan.concurrency.iter().copied().max().unwrap_or(1);
        self.ensure_users(most.max(self.plan.sync_members).max(2))
            .await?;

        let plan = self.plan.clone();
        if plan.runs("send") || plan.runs("messages") {
            let single_room = self.send_phase(1, false).await?;
            if plan.runs("send") {
                for &concurrency in &plan.concurrency {
                    self.send_phase(concurrency, false).await?;
                    self.send_phase(concurrency, true).await?;
                }
            }
            if plan.runs("messages") {
                self.pagination_phase(&single_room).await?;
            }
        }
        if plan.runs("delivery") {
            self.delivery_phase("delivery", plan.delivery_messages)
                .await?;
        }
        if plan.runs("sync") {
            self.sync_phases().await?;
        }
        if plan.runs("idle") {
            for &n in &plan.idle_syncs_http1 {
                self.idle_phase(n, false).await?;
            }
            for &n in &plan.idle_syncs_http2 {
                self.idle_phase(n, true).await?;
            }
        }
        self.report.rate_limited = crate::client::RATE_LIMITED.load(Ordering::Relaxed);
        self.report.peak_memory_mib = self
            .report
            .phases
            .iter()
            .map(|p| p.usage.peak_memory_mib)
            .fold(self.report.start_memory_mib, f64::max);
        Ok(self.report)
    }

    async fn ensure_users(&mut self, count: usize) -> Result<()> {
        let start = self.users.len();
        let names: Vec<String> = (start..count)
            .map(|i| format!("{}u{i}", self.prefix))
            .collect();
        let registered = try_join_all(names.iter().map(|name| {
            let matrix = self.matrix.clone();
            async move { matrix.register(name, PASSWORD).await }
        }))
        .await?;
        self.users.extend(registered);
        Ok(())
    }

    /// A room created by `owner` with `members` joined.
    async fn room_with(&self, owner: &User, members: &[User]) -> Result<String> {
        let room = self
            .matrix
            .create_room(owner, json!({"preset": "public_chat"}))
            .await?;
        try_join_all(members.iter().map(|member| self.matrix.join(member, &room))).await?;
        Ok(room)
    }

    /// `concurrency` senders, each in its own room or all in one; returns a room that
    /// holds the phase's messages.
    async fn send_phase(&mut self, concurrency: usize, one_room: bool) -> Result<String> {
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
    async fn delivery_phase(&mut self, name: &str, messages: usize) -> Result<()> {
        let (sender, receiver) = (self.users[0].clone(), self.users[1].clone());
        let room = self
            .room_with(&sender, std::slice::from_ref(&receiver))
            .await?;
        let phase = Phase::new(
            name,
            format!("{messages} messages, one at a time, send to the other user's /sync"),
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
        let listener = {
            let (matrix, stop, room) = (self.matrix.clone(), stop.clone(), room.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sync = matrix
                        .sync(&receiver, Some(&since), 30_000, MESSAGES_FILTER)
                        .await?;
                    let now = Instant::now();
                    for event in sync["rooms"]["join"][&room]["timeline"]["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(id) = event["event_id"].as_str() {
                            let _ = arrived_tx.send((id.to_owned(), now));
                        }
                    }
                    since = sync["next_batch"]
                        .as_str()
                        .context("next_batch")?
                        .to_owned();
                }
                anyhow::Ok(())
            })
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

    /// A reader in `sync_rooms` rooms of `sync_members` members and
    /// `sync_messages_per_room` messages each: initial sync with full and with
    /// lazy-loaded member state, then incremental syncs.
    async fn sync_phases(&mut self) -> Result<()> {
        let plan = self.plan.clone();
        let reader = self
            .matrix
            .register(&format!("{}reader", self.prefix), PASSWORD)
            .await?;
        let members: Vec<User> = self.users[..plan.sync_members.saturating_sub(1)].to_vec();
        let mut joined = members.clone();
        joined.push(reader.clone());
        // Room creation and filling run 16 rooms at a time.
        let mut rooms = Vec::with_capacity(plan.sync_rooms);
        let setup = Instant::now();
        let run: &Run = self;
        for chunk in (0..plan.sync_rooms).collect::<Vec<_>>().chunks(16) {
            let created = try_join_all(chunk.iter().map(|&i| {
                let owner = run.users[i % run.users.len()].clone();
                let joiners: Vec<User> = joined
                    .iter()
                    .filter(|u| u.user_id != owner.user_id)
                    .cloned()
                    .collect();
                let matrix = run.matrix.clone();
                async move {
                    let room = run.room_with(&owner, &joiners).await?;
                    for n in 0..plan.sync_messages_per_room {
                        let author = if n % 2 == 0 {
                            &owner
                        } else {
                            &joiners[n % joiners.len()]
                        };
                        matrix
                            .send_text(author, &room, &format!("history {n}"))
                            .await?;
                    }
                    anyhow::Ok(room)
                }
            }))
            .await?;
            rooms.extend(created);
        }
        println!(
            "{:<28} {} rooms x {} messages x {} members set up in {:.1}s",
            "sync setup",
            rooms.len(),
            plan.sync_messages_per_room,
            joined.len().max(1),
            setup.elapsed().as_secs_f64()
        );

        for (name, filter, what) in [
            ("initial_sync_full", FULL_FILTER, "full member state"),
            ("initial_sync_lazy", LAZY_FILTER, "lazy-loaded members"),
        ] {
            let mut phase = Phase::new(
                name,
                format!(
                    "initial /sync of a user in {} rooms ({what}, timeline limit 10)",
                    rooms.len()
                ),
            );
            let watch = Watch::start(&self.processes);
            let started = Instant::now();
            let mut latencies = Vec::new();
            let mut bytes = 0usize;
            for n in 0..plan.sync_repeats {
                // Each request differs (an account data type nobody uses is filtered
                // out), so no server answers it from a cache of earlier responses:
                // every one measures the work of an initial sync.
                let mut filter: serde_json::Value =
                    serde_json::from_str(filter).context("filter")?;
                filter["account_data"] =
                    json!({ "not_types": [format!("org.example.loadtest.{}.{n}", self.prefix)] });
                let t0 = Instant::now();
                let sync = self
                    .matrix
                    .sync(&reader, None, 0, &filter.to_string())
                    .await?;
                latencies.push(t0.elapsed());
                let seen = sync["rooms"]["join"].as_object().map_or(0, |r| r.len());
                if seen != rooms.len() {
                    bail!(
                        "{name}: {seen} of {} rooms in the initial sync",
                        rooms.len()
                    );
                }
                bytes = sync.to_string().len();
            }
            phase
                .extra
                .insert("response_kib".into(), bytes as f64 / 1024.0);
            phase.extra.insert(
                "first_ms".into(),
                latencies.first().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            );
            self.record(phase, &latencies, started.elapsed(), watch.finish());
        }

        let phase = Phase::new(
            "incremental_sync",
            format!(
                "/sync since the last token after one new message, user in {} rooms",
                rooms.len()
            ),
        );
        let mut since = self.matrix.sync(&reader, None, 0, LAZY_FILTER).await?["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut latencies = Vec::new();
        for n in 0..plan.sync_repeats * 10 {
            let room = &rooms[n % rooms.len()];
            self.matrix
                .send_text(&members.first().unwrap_or(&reader).clone(), room, "new")
                .await?;
            let t0 = Instant::now();
            let sync = self
                .matrix
                .sync(&reader, Some(&since), 10_000, LAZY_FILTER)
                .await?;
            latencies.push(t0.elapsed());
            since = sync["next_batch"]
                .as_str()
                .context("next_batch")?
                .to_owned();
        }
        self.record(phase, &latencies, started.elapsed(), watch.finish());
        Ok(())
    }

    /// Pages back through `room` with `/messages`, 20 events a page (as Element does).
    async fn pagination_phase(&mut self, room: &str) -> Result<()> {
        let reader = self.users[0].clone();
        let mut phase = Phase::new(
            "messages_back",
            format!(
                "/messages?dir=b&limit=20 back through up to {} messages",
                self.plan.pagination_messages
            ),
        );
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut latencies = Vec::new();
        let mut from: Option<String> = None;
        let mut events = 0usize;
        while events < self.plan.pagination_messages {
            let t0 = Instant::now();
            let page = self
                .matrix
                .messages_back(&reader, room, from.as_deref(), 20)
                .await?;
            latencies.push(t0.elapsed());
            let chunk = page["chunk"].as_array().map_or(0, Vec::len);
            events += chunk;
            match page["end"].as_str() {
                Some(end) if chunk > 0 => from = Some(end.to_owned()),
                _ => break,
            }
        }
        phase.extra.insert("events".into(), events as f64);
        self.record(phase, &latencies, started.elapsed(), watch.finish());
        Ok(())
    }

    /// `n` idle long-polls held at once (no event will wake them), spread over the
    /// users; the server's memory per held sync, then delivery latency while they
    /// are held.
    async fn idle_phase(&mut self, n: usize, http2: bool) -> Result<()> {
        let name = format!("idle_syncs_{}_{n}", if http2 { "h2" } else { "h1" });
        let transport = if http2 {
            "HTTP/2 streams, 100 per connection"
        } else {
            "HTTP/1.1 connections"
        };
        let mut phase = Phase::new(
            &name,
            format!("{n} idle /sync long-polls held ({transport})"),
        );
        // The holders are idle users in no room, so nothing wakes their syncs.
        let holder_count = n.clamp(1, 100);
        let holders = try_join_all((0..holder_count).map(|i| {
            let matrix = self.matrix.clone();
            let name = format!("{}{}x{i}", self.prefix, phase.name);
            async move {
                let user = matrix.register(&name, PASSWORD).await?;
                let since = matrix.sync(&user, None, 0, MESSAGES_FILTER).await?["next_batch"]
                    .as_str()
                    .context("next_batch")?
                    .to_owned();
                anyhow::Ok((user, since))
            }
        }))
        .await?;
        let clients: Vec<Matrix> = if http2 {
            (0..n.div_ceil(100))
                .map(|_| Matrix::new_h2(&self.base_url))
                .collect::<Result<_>>()?
        } else {
            vec![Matrix::new(&self.base_url)?]
        };
        // Registering the holders hashed their passwords; let the allocator hand that
        // memory back before taking the baseline.
        let before = self.settled_memory(Duration::from_millis(500)).await;
        let watch = Watch::start(&self.processes);
        let stop = Arc::new(AtomicBool::new(false));
        let returned = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let client = clients[i % clients.len()].clone();
            let (user, since) = holders[i % holders.len()].clone();
            let (stop, returned, failed) = (stop.clone(), returned.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .sync(&user, Some(&since), 120_000, MESSAGES_FILTER)
                        .await
                    {
                        Ok(_) => returned.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            0
                        }
                    };
                }
            }));
            if i % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        // Held once the server's memory stops growing.
        let last = self.settled_memory(Duration::from_secs(2)).await;
        let held_for = started.elapsed();
        let usage = watch.finish();
        phase.extra.insert(
            "server_kib_per_held_sync".into(),
            (last - before).max(0.0) * 1024.0 / n as f64,
        );
        phase.extra.insert("server_memory_held_mib".into(), last);
        phase.extra.insert(
            "returned_early".into(),
            returned.load(Ordering::Relaxed) as f64,
        );
        phase
            .extra
            .insert("failed".into(), failed.load(Ordering::Relaxed) as f64);
        phase.finish(n as u64, held_for, None, usage);
        self.report.phases.push(phase);

        // Wake-up latency for another pair while the syncs are held.
        let messages = (self.plan.delivery_messages / 10).clamp(10, 100);
        self.delivery_phase(&format!("delivery_during_{name}"), messages)
            .await?;

        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.abort();
        }
        drop(clients);
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }
}

impl Run {
    /// The server's memory once two samples `interval` apart differ by under 0.5% (or
    /// after a minute).
    async fn settled_memory(&self, interval: Duration) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.processes.sample().memory_mib;
        loop {
            tokio::time::sleep(interval).await;
            let now = self.processes.sample().memory_mib;
            if (now - last).abs() <= last * 0.005 || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

impl Run {
    /// Completes a phase timed request by request and adds it to the report.
    fn record(
        &mut self,
        mut phase: Phase,
        latencies: &[Duration],
        elapsed: Duration,
        usage: Usage,
    ) {
        phase.finish(
            latencies.len() as u64,
            elapsed,
            Some(Latency::of(latencies)),
            usage,
        );
        self.report.phases.push(phase);
    }
}

/// Holding thousands of connections needs more descriptors than the default soft limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
