//! A user in many rooms: the room list as Element X loads it (simplified sliding sync,
//! MSC4186), and what one new message costs an incremental `/sync` and a sliding sync
//! when the user is in thousands of rooms.

use super::*;

/// The state Element X asks for with each room of its room list.
const ROOM_LIST_STATE: &str = r#"[["m.room.name",""],["m.room.encryption",""],["m.room.member","$LAZY"],["m.room.member","$ME"],["m.room.topic",""],["m.room.avatar",""],["m.room.canonical_alias",""],["m.room.power_levels",""],["org.matrix.msc3401.call.member","*"],["m.room.join_rules",""],["m.room.tombstone",""],["m.room.create",""],["m.room.history_visibility",""],["m.member_hints",""],["m.space.parent","*"],["m.space.child","*"],["m.beacon_info","*"]]"#;

/// Element X's room list request for the rooms in `0..=last`.
fn room_list_request(conn_id: &str, last: usize) -> Result<serde_json::Value> {
    let required_state: serde_json::Value = serde_json::from_str(ROOM_LIST_STATE)?;
    Ok(json!({
        "conn_id": conn_id,
        "lists": { "all_rooms": {
            "ranges": [[0, last]],
            "timeline_limit": 1,
            "required_state": required_state,
        }},
        "extensions": {
            "account_data": { "enabled": true },
            "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true },
        },
    }))
}

impl Run {
    /// A reader alone in `list_rooms` rooms, then in `many_rooms` (one shared with a
    /// poster): the room list's first page and all of it over sliding sync, then the
    /// sync after one new message, over `/sync` and over sliding sync.
    pub(super) async fn many_rooms_phases(&mut self) -> Result<()> {
        let plan = self.plan.clone();
        let reader = self
            .matrix
            .register(&format!("{}many", self.prefix), PASSWORD)
            .await?;
        let poster = self.users[0].clone();
        let mut rooms = vec![
            self.room_with(&reader, std::slice::from_ref(&poster))
                .await?,
        ];
        self.fill_rooms(&reader, &mut rooms, plan.list_rooms)
            .await?;
        self.room_list_phases(&reader, rooms.len()).await?;
        self.fill_rooms(&reader, &mut rooms, plan.many_rooms)
            .await?;
        self.one_message_phases(&reader, &poster, &rooms[0], rooms.len())
            .await
    }

    /// Creates rooms of `owner`'s alone, 16 at a time, until there are `count`.
    async fn fill_rooms(&self, owner: &User, rooms: &mut Vec<String>, count: usize) -> Result<()> {
        let started = Instant::now();
        let before = rooms.len();
        while rooms.len() < count {
            let batch = (count - rooms.len()).min(16);
            let created = try_join_all((0..batch).map(|_| {
                self.matrix
                    .create_room(owner, json!({"preset": "private_chat"}))
            }))
            .await?;
            rooms.extend(created);
        }
        println!(
            "{:<28} {} rooms created in {:.1}s",
            "many rooms setup",
            rooms.len() - before,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The room list on a new connection: its first 20 rooms, then all of them.
    async fn room_list_phases(&mut self, reader: &User, count: usize) -> Result<()> {
        let plan = self.plan.clone();
        for (name, last, what) in [
            (
                "sliding_list_first_page",
                19.min(count - 1),
                "the first 20 rooms",
            ),
            ("sliding_list_all", count - 1, "all of them"),
        ] {
            let phase = Phase::new(
                name,
                format!(
                    "sliding sync room list of a user in {count} rooms on a new connection, \
                     {what} (Element X's list: timeline 1, its required state)"
                ),
            );
            let watch = Watch::start(&self.processes);
            let started = Instant::now();
            let mut latencies = Vec::new();
            for n in 0..plan.sync_repeats {
                let body = room_list_request(&format!("{}-{name}-{n}", self.prefix), last)?;
                let t0 = Instant::now();
                let response = self.matrix.sliding_sync(reader, None, 0, &body).await?;
                latencies.push(t0.elapsed());
                let listed = response["lists"]["all_rooms"]["count"].as_u64();
                let sent = response["rooms"].as_object().map_or(0, |rooms| rooms.len());
                if listed != Some(count as u64) || sent != last + 1 {
                    bail!(
                        "{name}: list count {listed:?} and {sent} rooms, not {count} and {}",
                        last + 1
                    );
                }
            }
            self.record(phase, &latencies, started.elapsed(), watch.finish());
        }
        Ok(())
    }

    /// One message from the poster, then the reader's sync since its last one; timed
    /// from the sync request to its answer holding the message. Over `/sync`, then over
    /// sliding sync.
    async fn one_message_phases(
        &mut self,
        reader: &User,
        poster: &User,
        room: &str,
        count: usize,
    ) -> Result<()> {
        let initial = self.matrix.sync(reader, None, 0, LAZY_FILTER).await?;
        let since = initial["next_batch"].as_str().context("next_batch")?;
        let mut follow = Follow::Sync(since.to_owned());
        let phase = Phase::new(
            "many_rooms_incremental_sync",
            format!("/sync since the last token after one new message, user in {count} rooms"),
        );
        self.one_message_phase(phase, &mut follow, reader, poster, room)
            .await?;

        let request = room_list_request(&format!("{}-incremental", self.prefix), count - 1)?;
        let first = self.matrix.sliding_sync(reader, None, 0, &request).await?;
        let pos = first["pos"].as_str().context("pos")?.to_owned();
        let mut follow = Follow::Sliding { request, pos };
        let phase = Phase::new(
            "many_rooms_sliding_incremental",
            format!(
                "sliding sync (Element X's list over all rooms) after one new message, \
                 user in {count} rooms"
            ),
        );
        self.one_message_phase(phase, &mut follow, reader, poster, room)
            .await
    }

    async fn one_message_phase(
        &mut self,
        phase: Phase,
        follow: &mut Follow,
        reader: &User,
        poster: &User,
        room: &str,
    ) -> Result<()> {
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut latencies = Vec::new();
        for n in 0..self.plan.sync_repeats * 2 {
            let body = format!("{} {n}", phase.name);
            self.matrix.send_text(poster, room, &body).await?;
            let t0 = Instant::now();
            loop {
                let events = follow.next(&self.matrix, reader, room).await?;
                if events.as_array().is_some_and(|events| {
                    events.iter().any(|e| e["content"]["body"] == body.as_str())
                }) {
                    break;
                }
            }
            latencies.push(t0.elapsed());
        }
        self.record(phase, &latencies, started.elapsed(), watch.finish());
        Ok(())
    }
}

/// Where a reader's sync is up to.
enum Follow {
    Sync(String),
    Sliding {
        request: serde_json::Value,
        pos: String,
    },
}

impl Follow {
    /// The next response (waiting up to 10 s for one); returns the room's timeline.
    async fn next(
        &mut self,
        matrix: &crate::client::Matrix,
        reader: &User,
        room: &str,
    ) -> Result<serde_json::Value> {
        match self {
            Follow::Sync(since) => {
                let mut sync = matrix
                    .sync(reader, Some(since), 10_000, LAZY_FILTER)
                    .await?;
                *since = sync["next_batch"]
                    .as_str()
                    .context("next_batch")?
                    .to_owned();
                Ok(sync["rooms"]["join"][room]["timeline"]["events"].take())
            }
            Follow::Sliding { request, pos } => {
                let mut response = matrix
                    .sliding_sync(reader, Some(pos), 10_000, request)
                    .await?;
                *pos = response["pos"].as_str().context("pos")?.to_owned();
                Ok(response["rooms"][room]["timeline"].take())
            }
        }
    }
}
