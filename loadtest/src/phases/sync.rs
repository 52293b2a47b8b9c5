//! Syncing: initial syncs with full and lazy-loaded members, incremental syncs, and
//! paging back with `/messages`.

use super::*;

impl Run {
    /// A reader in `sync_rooms` rooms of `sync_members` members and
    /// `sync_messages_per_room` messages each: initial sync with full and with
    /// lazy-loaded member state, then incremental syncs.
    pub(super) async fn sync_phases(&mut self) -> Result<()> {
        let (reader, members, rooms) = self.sync_setup().await?;
        self.initial_syncs(&reader, &rooms).await?;
        self.incremental_sync(&reader, &members, &rooms).await
    }

    /// The reader, the other members and the rooms of the sync phases, filled.
    async fn sync_setup(&mut self) -> Result<(User, Vec<User>, Vec<String>)> {
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
        Ok((reader, members, rooms))
    }

    /// Initial syncs of `reader`, with full and with lazy-loaded member state.
    async fn initial_syncs(&mut self, reader: &User, rooms: &[String]) -> Result<()> {
        let plan = self.plan.clone();
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
                    .sync(reader, None, 0, &filter.to_string())
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

        Ok(())
    }

    /// Syncs of `reader` since the last token, each after one new message.
    async fn incremental_sync(
        &mut self,
        reader: &User,
        members: &[User],
        rooms: &[String],
    ) -> Result<()> {
        let plan = self.plan.clone();
        let phase = Phase::new(
            "incremental_sync",
            format!(
                "/sync since the last token after one new message, user in {} rooms",
                rooms.len()
            ),
        );
        let mut since = self.matrix.sync(reader, None, 0, LAZY_FILTER).await?["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut latencies = Vec::new();
        for n in 0..plan.sync_repeats * 10 {
            let room = &rooms[n % rooms.len()];
            self.matrix
                .send_text(&members.first().unwrap_or(reader).clone(), room, "new")
                .await?;
            let t0 = Instant::now();
            let sync = self
                .matrix
                .sync(reader, Some(&since), 10_000, LAZY_FILTER)
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
    pub(super) async fn pagination_phase(&mut self, room: &str) -> Result<()> {
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
}
