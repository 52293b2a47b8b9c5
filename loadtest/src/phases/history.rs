//! Long timelines: an initial `/sync` asking for a thousand events per room, and
//! `/messages` and `/context` pages of a thousand events, as a client catching up on a
//! busy room or jumping to an old message asks for them.

use serde_json::Value;

use super::*;

/// The most timeline events a room's section holds in Synapse's `/sync`, whatever the
/// filter asks.
const SYNAPSE_TIMELINE_MOST: usize = 100;

/// The rooms of the history phases and, for each, the message in the middle of it.
struct History {
    reader: User,
    rooms: Vec<(String, String)>,
}

impl Run {
    pub(super) async fn history_phases(&mut self) -> Result<()> {
        let history = self.history_setup().await?;
        let messages = self.plan.history_messages;
        self.long_initial_sync(&history, messages).await?;
        // The most Synapse serves a room, so that both serve the same.
        if messages > SYNAPSE_TIMELINE_MOST {
            self.long_initial_sync(&history, SYNAPSE_TIMELINE_MOST)
                .await?;
        }
        self.long_pages(&history, Page::Messages).await?;
        self.long_pages(&history, Page::Context).await
    }

    /// `history_rooms` rooms of two members with `history_messages` messages each,
    /// written by both in turn.
    async fn history_setup(&mut self) -> Result<History> {
        let plan = self.plan.clone();
        let owner = self.users[0].clone();
        let reader = self
            .matrix
            .register(&format!("{}historian", self.prefix), PASSWORD)
            .await?;
        let setup = Instant::now();
        let run: &Run = self;
        let rooms = try_join_all((0..plan.history_rooms).map(|_| {
            let (owner, reader) = (owner.clone(), reader.clone());
            async move {
                let room = run.room_with(&owner, std::slice::from_ref(&reader)).await?;
                let mut middle = String::new();
                for n in 0..plan.history_messages {
                    let author = if n % 2 == 0 { &owner } else { &reader };
                    let id = run
                        .matrix
                        .send_text(author, &room, &format!("history {n}"))
                        .await?;
                    if n == plan.history_messages / 2 {
                        middle = id;
                    }
                }
                anyhow::Ok((room, middle))
            }
        }))
        .await?;
        println!(
            "{:<28} {} rooms x {} messages set up in {:.1}s",
            "history setup",
            rooms.len(),
            plan.history_messages,
            setup.elapsed().as_secs_f64()
        );
        Ok(History { reader, rooms })
    }

    /// Initial syncs whose filter asks for `limit` timeline events per room. A server
    /// may serve fewer (Synapse stops at 100 a room): the phase records how many it
    /// served and the time per event.
    async fn long_initial_sync(&mut self, history: &History, limit: usize) -> Result<()> {
        let messages = self.plan.history_messages;
        let name = if limit == messages {
            "long_initial_sync".to_owned()
        } else {
            format!("long_initial_sync_{limit}")
        };
        let mut phase = Phase::new(
            &name,
            format!(
                "initial /sync with timeline limit {limit} of a user in {} rooms of {messages} messages",
                history.rooms.len()
            ),
        );
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut latencies = Vec::new();
        let (mut bytes, mut served) = (0, 0);
        for n in 0..self.plan.sync_repeats {
            // Each filter differs, so no server answers from a cache of an earlier response.
            let filter = json!({
                "room": {"timeline": {"limit": limit}, "state": {"lazy_load_members": true}},
                "account_data": {"not_types": [format!("org.example.loadtest.{}.{n}", self.prefix)]},
            });
            let path = format!(
                "/_matrix/client/v3/sync?timeout=0&filter={}",
                crate::client::encode(&filter.to_string())
            );
            let (elapsed, sync) = self.matrix.get_timed(&history.reader, &path).await?;
            latencies.push(elapsed);
            served = 0;
            for (room, _) in &history.rooms {
                let events = sync["rooms"]["join"][room]["timeline"]["events"]
                    .as_array()
                    .map_or(0, Vec::len);
                if events == 0 || events > limit {
                    bail!("{name}: {events} events in {room}'s timeline (limit {limit})");
                }
                served += events;
            }
            bytes = sync.to_string().len();
        }
        phase
            .extra
            .insert("response_kib".into(), bytes as f64 / 1024.0);
        phase.extra.insert("events".into(), served as f64);
        let p50 = Latency::of(&latencies).p50;
        phase
            .extra
            .insert("us_per_event".into(), p50 * 1e3 / served.max(1) as f64);
        self.record(phase, &latencies, started.elapsed(), watch.finish());
        Ok(())
    }

    /// `/messages` back from the end of a room, or `/context` around its middle message,
    /// `history_messages` events a page, each room in turn.
    async fn long_pages(&mut self, history: &History, page: Page) -> Result<()> {
        let limit = self.plan.history_messages;
        let mut phase = Phase::new(page.name(), page.description(limit));
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut latencies = Vec::new();
        let mut bytes = 0;
        for n in 0..self.plan.sync_repeats {
            let (room, middle) = &history.rooms[n % history.rooms.len()];
            let path = page.path(room, middle, limit);
            let (elapsed, body) = self.matrix.get_timed(&history.reader, &path).await?;
            latencies.push(elapsed);
            let events = page.events(&body);
            // `/context` splits the limit between the events before and after.
            if events + 1 < limit {
                bail!("{}: {events} of {limit} events in {room}", page.name());
            }
            bytes = body.to_string().len();
        }
        phase
            .extra
            .insert("response_kib".into(), bytes as f64 / 1024.0);
        self.record(phase, &latencies, started.elapsed(), watch.finish());
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Page {
    Messages,
    Context,
}

impl Page {
    fn name(self) -> &'static str {
        match self {
            Page::Messages => "long_messages",
            Page::Context => "long_context",
        }
    }

    fn description(self, limit: usize) -> String {
        match self {
            Page::Messages => {
                format!("/messages?dir=b&limit={limit} from the end of a room of {limit} messages")
            }
            Page::Context => {
                format!("/context?limit={limit} around the middle of a room of {limit} messages")
            }
        }
    }

    fn path(self, room: &str, middle: &str, limit: usize) -> String {
        let room = crate::client::encode(room);
        match self {
            Page::Messages => {
                format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={limit}")
            }
            Page::Context => format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit={limit}",
                crate::client::encode(middle)
            ),
        }
    }

    /// The events a page holds.
    fn events(self, body: &Value) -> usize {
        let count = |key: &str| body[key].as_array().map_or(0, Vec::len);
        match self {
            Page::Messages => count("chunk"),
            Page::Context => count("events_before") + count("events_after"),
        }
    }
}
