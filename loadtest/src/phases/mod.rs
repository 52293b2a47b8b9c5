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

mod history;
mod idle;
mod media;
mod rooms;
mod send;
mod sync;
mod websocket;

use send::Via;

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
    /// Concurrent uploaders (and readers) of the media phases, files each, their size.
    pub media_uploaders: usize,
    pub media_files: usize,
    pub media_file_kib: usize,
    /// Photos thumbnailed in the thumbnail phase.
    pub media_images: usize,
    /// Rooms of the user whose room list is loaded over sliding sync, and of the user
    /// who syncs after one new message.
    pub list_rooms: usize,
    pub many_rooms: usize,
    /// Idle WebSockets held at once (servers that offer the transport).
    pub idle_websockets: usize,
    /// Rooms of the long-timeline phases and messages in each (also the page size asked
    /// for).
    pub history_rooms: usize,
    pub history_messages: usize,
    /// A phase stops sending when it has run this long, whatever its count.
    pub phase_time_limit: Duration,
    /// Which groups of phases run: `send`, `delivery`, `sync`, `messages`, `media`,
    /// `rooms`, `websocket`, `history`, `idle` (all when empty).
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
            media_uploaders: 2,
            media_files: 3,
            media_file_kib: 64,
            media_images: 2,
            list_rooms: 20,
            many_rooms: 40,
            idle_websockets: 50,
            history_rooms: 2,
            history_messages: 30,
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
            media_uploaders: 8,
            media_files: 32,
            media_file_kib: 1024,
            media_images: 50,
            list_rooms: 1_000,
            many_rooms: 5_000,
            idle_websockets: 10_000,
            history_rooms: 10,
            history_messages: 1_000,
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
        self.ensure_users(
            most.max(self.plan.sync_members)
                .max(self.plan.media_uploaders)
                .max(2),
        )
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
            self.delivery_phase("delivery", plan.delivery_messages, Via::LongPoll)
                .await?;
        }
        if plan.runs("sync") {
            self.sync_phases().await?;
        }
        if plan.runs("media") {
            self.media_phases().await?;
        }
        if plan.runs("rooms") {
            self.many_rooms_phases().await?;
        }
        if plan.runs("websocket") {
            self.websocket_phases().await?;
        }
        if plan.runs("history") {
            self.history_phases().await?;
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
