//! Writing events: build the PDU, sign it, authorise it against the room's state, append
//! it to the DAG and the indexes in one batch, then wake the members' syncs.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, EventId, OwnedDeviceId, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    api::error::ErrorKind,
    events::{StateEventType, TimelineEventType, room::member::MembershipState},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
};
use serde_json::value::RawValue;
use std::collections::HashMap;

use tokio::sync::{OwnedMutexGuard, oneshot};

use super::{
    Audience, Membership, RoomRecord, Rooms,
    pdu::{Pdu, StoredPdu},
    state::StateMap,
};
use crate::{
    Error, Result,
    service::{federation::queue::Outgoing, stream::Permit, users::now_ms},
    storage::{
        Batch, Keyspace,
        codec::{Key, decode_membership, encode_membership},
    },
};

/// An event a local user wants to send.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: String,
    pub content: serde_json::Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub fn state(kind: &str, state_key: &str, content: serde_json::Value) -> Self {
        Self {
            kind: kind.to_owned(),
            content,
            state_key: Some(state_key.to_owned()),
            redacts: None,
        }
    }

    pub fn message(kind: &str, content: serde_json::Value) -> Self {
        Self {
            kind: kind.to_owned(),
            content,
            state_key: None,
            redacts: None,
        }
    }
}

/// The device transaction an event was sent in, for idempotency.
pub struct Txn<'a> {
    pub device_id: &'a DeviceId,
    pub txn_id: &'a str,
}

/// The largest PDU the spec allows, in bytes of canonical JSON.
const MAX_PDU_BYTES: usize = 65_536;

/// The largest integer canonical JSON allows (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

fn txn_key(sender: &UserId, txn: &Txn<'_>) -> Key {
    Key::new()
        .str(sender.as_str())
        .str(txn.device_id.as_str())
        .str(txn.txn_id)
}

/// An event's batch, waiting to be written at its stream position.
pub(super) struct Pending {
    pub(super) batch: Batch,
    pub(super) permit: Permit,
    pub(super) woken: Audience,
    /// The event a redaction rewrites, whose parsed form must be forgotten.
    pub(super) redacted: Option<OwnedEventId>,
}

/// A message waiting for its room's next batch.
pub(super) struct Queued {
    sender: OwnedUserId,
    event: NewEvent,
    txn: Option<(OwnedDeviceId, String)>,
    reply: oneshot::Sender<Result<OwnedEventId>>,
}

/// A sender's channel and the answer it gets once the batch is written.
type Answer = (oneshot::Sender<Result<OwnedEventId>>, Result<OwnedEventId>);

impl Rooms {
    /// The event id an earlier request with this transaction id produced.
    pub fn txn_event(&self, sender: &UserId, txn: &Txn<'_>) -> Result<Option<OwnedEventId>> {
        let value = self
            .db
            .get(Keyspace::TxnIds, txn_key(sender, txn).bytes())?;
        Ok(value
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|id| id.try_into().ok()))
    }

    /// Sends an event into an existing room as a local user.
    ///
    /// Messages queue for their room: whoever holds the room lock next writes every
    /// queued message in one batch with one synced write, so many senders in one room
    /// share the cost of the sync. State events and redactions change what later events
    /// are checked against, and are written one at a time.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        if event.state_key.is_some() || event.redacts.is_some() || event.kind == "m.room.redaction"
        {
            return self.append_alone(room_id, sender, event, txn).await;
        }
        let (reply, mut answer) = oneshot::channel();
        self.queues
            .lock()
            .entry(room_id.to_owned())
            .or_default()
            .push(Queued {
                sender: sender.to_owned(),
                event,
                txn: txn.map(|txn| (txn.device_id.to_owned(), txn.txn_id.to_owned())),
                reply,
            });
        let lock = self.lock(room_id);
        tokio::select! {
            biased;
            // An earlier lock holder wrote it.
            written = &mut answer => return written.map_err(Error::internal)?,
            guard = lock.lock_owned() => {
                let queued = self.queues.lock().remove(room_id).unwrap_or_default();
                if queued.is_empty() {
                    drop(guard);
                } else {
                    self.append_queued(room_id, queued, guard).await;
                }
            }
        }
        answer.await.map_err(Error::internal)?
    }

    /// Builds, authorises and writes queued messages as one batch; every sender gets its
    /// own answer. Nothing here awaits before the write is handed to the blocking pool,
    /// so a dropped request cannot strand the others' messages.
    async fn append_queued(
        &self,
        room_id: &RoomId,
        queued: Vec<Queued>,
        room_lock: OwnedMutexGuard<()>,
    ) {
        let room = match self.room(room_id) {
            Ok(Some(room)) => room,
            Ok(None) => {
                for job in queued {
                    let _ = job
                        .reply
                        .send(Err(Error::forbidden("You are not in this room")));
                }
                return;
            }
            Err(error) => {
                let message = error.to_string();
                for job in queued {
                    let _ = job.reply.send(Err(Error::internal(message.clone())));
                }
                return;
            }
        };
        let staged = self.stage_messages(room_id, room, queued);
        let (batch, permits, woken, answers) = match staged {
            Ok(staged) => staged,
            Err((error, answers)) => {
                let message = error.to_string();
                for (reply, _) in answers {
                    let _ = reply.send(Err(Error::internal(message.clone())));
                }
                return;
            }
        };
        let (db, stream, queue) = (self.db.clone(), self.stream.clone(), self.queue.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let written = db.write(batch);
            drop(permits);
            drop(room_lock);
            if written.is_ok() {
                stream.notify(woken.users.iter().map(|user| user.as_ref()));
                queue.wake(&woken.servers);
            }
            for (reply, answer) in answers {
                let answer = match (&written, answer) {
                    (Err(error), Ok(_)) => Err(Error::internal(error.to_string())),
                    (_, answer) => answer,
                };
                let _ = reply.send(answer);
            }
        })
        .await;
    }

    /// Stages queued messages one after another on top of the room's head into one
    /// batch. Each sender's answer is kept for after the write.
    #[allow(clippy::type_complexity)]
    fn stage_messages(
        &self,
        room_id: &RoomId,
        mut room: RoomRecord,
        queued: Vec<Queued>,
    ) -> Result<(Batch, Vec<Permit>, Audience, Vec<Answer>), (Error, Vec<Answer>)> {
        let mut answers: Vec<Answer> = Vec::with_capacity(queued.len());
        let mut batch = self.db.batch();
        let mut permits = Vec::new();
        let mut woken: Option<Audience> = None;
        let rules = match Self::rules(&room.version) {
            Ok(rules) => rules,
            Err(error) => {
                return Err((
                    error,
                    queued
                        .into_iter()
                        .map(|q| (q.reply, Err(Error::internal(""))))
                        .collect(),
                ));
            }
        };
        let state = match self.state.get(room.state_group) {
            Ok(state) => state,
            Err(error) => {
                return Err((
                    error,
                    queued
                        .into_iter()
                        .map(|q| (q.reply, Err(Error::internal(""))))
                        .collect(),
                ));
            }
        };
        let mut sent_in_batch: HashMap<(OwnedUserId, OwnedDeviceId, String), OwnedEventId> =
            HashMap::new();
        for job in queued {
            // The client gave up before its message was started: not sending it is what
            // it was told (no answer); a retry with the same transaction sends it then.
            if job.reply.is_closed() {
                continue;
            }
            let result = (|| {
                if let Some((device_id, txn_id)) = &job.txn {
                    let key = (job.sender.clone(), device_id.clone(), txn_id.clone());
                    if let Some(event_id) = sent_in_batch.get(&key) {
                        return Ok(event_id.clone());
                    }
                    let txn = Txn { device_id, txn_id };
                    if let Some(event_id) = self.txn_event(&job.sender, &txn)? {
                        return Ok(event_id);
                    }
                }
                let (event_id, object, pdu) =
                    self.build_on_head(room_id, &room, &rules, &state, &job.sender, &job.event)?;
                let txn = job
                    .txn
                    .as_ref()
                    .map(|(device_id, txn_id)| (job.sender.as_ref(), Txn { device_id, txn_id }));
                // Messages change no membership: the audience is read once per batch.
                let audience = match &woken {
                    None => self.audience(room_id)?,
                    Some(audience) => audience.clone(),
                };
                let (permit, audience) = self.stage(
                    &mut batch, room_id, &mut room, &rules, pdu, object, txn, audience,
                )?;
                permits.push(permit);
                woken.get_or_insert(audience);
                if let Some((device_id, txn_id)) = &job.txn {
                    sent_in_batch.insert(
                        (job.sender.clone(), device_id.clone(), txn_id.clone()),
                        event_id.clone(),
                    );
                }
                Ok(event_id)
            })();
            match result {
                // A storage failure part-way leaves the batch unusable for everyone.
                Err(Error::Storage(error)) => {
                    answers.push((job.reply, Err(Error::internal(error.to_string()))));
                    return Err((Error::internal("storage failure while staging"), answers));
                }
                result => answers.push((job.reply, result)),
            }
        }
        Ok((batch, permits, woken.unwrap_or_default(), answers))
    }

    /// Sends one event on its own under the room lock.
    async fn append_alone(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        let guard = self.lock(room_id).lock_owned().await;
        if let Some(txn) = &txn
            && let Some(event_id) = self.txn_event(sender, txn)?
        {
            return Ok(event_id);
        }
        let room = self
            .room(room_id)?
            .ok_or_else(|| Error::forbidden("You are not in this room"))?;
        let rules = Self::rules(&room.version)?;
        let state = self.state.get(room.state_group)?;
        let (event_id, object, pdu) =
            self.build_on_head(room_id, &room, &rules, &state, sender, &event)?;
        let redacted = (pdu.kind == TimelineEventType::RoomRedaction)
            .then(|| pdu.redacts.clone())
            .flatten();
        let mut room = room;
        let mut batch = self.db.batch();
        let (permit, woken) = self.stage(
            &mut batch,
            room_id,
            &mut room,
            &rules,
            pdu,
            object,
            txn.map(|txn| (sender, txn)),
            self.audience(room_id)?,
        )?;
        self.commit(
            Pending {
                batch,
                permit,
                woken,
                redacted,
            },
            guard,
        )
        .await?;
        Ok(event_id)
    }

    /// Creates a room with its `m.room.create` event; returns the room id.
    pub async fn append_create(
        &self,
        version: &RoomVersionId,
        sender: &UserId,
        content: serde_json::Value,
    ) -> Result<OwnedRoomId> {
        let rules = Self::rules(version)?;
        let event = NewEvent::state("m.room.create", "", content);
        let state = StateMap::new();
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            let localpart = crate::service::users::random_localpart();
            Some(
                OwnedRoomId::try_from(format!("!{localpart}:{}", self.server_name))
                    .map_err(Error::internal)?,
            )
        };
        let (event_id, object) = self.build(
            version,
            &rules,
            &state,
            room_id.as_deref(),
            &[],
            1,
            sender,
            &event,
        )?;
        let room_id = match room_id {
            Some(room_id) => room_id,
            None => OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                .map_err(Error::internal)?,
        };
        let guard = self.lock(&room_id).lock_owned().await;
        let pdu = self.authorise(&rules, &event_id, &object, &state)?;
        let record = RoomRecord {
            version: version.clone(),
            state_group: 0,
            extremities: Vec::new(),
            depth: 0,
            last_position: 0,
        };
        let mut record = record;
        let mut batch = self.db.batch();
        let (permit, woken) = self.stage(
            &mut batch,
            &room_id,
            &mut record,
            &rules,
            pdu,
            object,
            None,
            Audience {
                users: vec![sender.to_owned()],
                servers: Vec::new(),
            },
        )?;
        self.commit(
            Pending {
                batch,
                permit,
                woken,
                redacted: None,
            },
            guard,
        )
        .await?;
        Ok(room_id)
    }

    /// Builds the next event of a room on top of its head and current state, and
    /// authorises it.
    pub(super) fn build_on_head(
        &self,
        room_id: &RoomId,
        room: &RoomRecord,
        rules: &RoomVersionRules,
        state: &StateMap,
        sender: &UserId,
        event: &NewEvent,
    ) -> Result<(OwnedEventId, CanonicalJsonObject, Pdu)> {
        let (event_id, object) = self.build(
            &room.version,
            rules,
            state,
            Some(room_id),
            &room.extremities,
            room.depth + 1,
            sender,
            event,
        )?;
        let pdu = self.authorise(rules, &event_id, &object, state)?;
        Ok((event_id, object, pdu))
    }

    /// Builds, hashes and signs a PDU on top of the given state and parents.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        state: &StateMap,
        room_id: Option<&RoomId>,
        prev_events: &[OwnedEventId],
        depth: u64,
        sender: &UserId,
        event: &NewEvent,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let kind = TimelineEventType::from(event.kind.as_str());
        let raw_content =
            serde_json::value::to_raw_value(&event.content).map_err(Error::internal)?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &kind,
            sender,
            event.state_key.as_deref(),
            &raw_content,
            &rules.authorization,
        )
        .map_err(|error| Error::bad_json(format!("Invalid event content: {error}")))?;
        let auth_events: Vec<OwnedEventId> = auth_types
            .iter()
            .filter_map(|(kind, state_key)| {
                state.get(&(kind.to_string(), state_key.clone())).cloned()
            })
            .collect();

        let mut json = serde_json::json!({
            "type": event.kind,
            "content": event.content,
            "sender": sender,
            "origin_server_ts": now_ms(),
            "depth": depth.min(MAX_SAFE_INTEGER),
            "prev_events": self.references(rules, prev_events)?,
            "auth_events": self.references(rules, &auth_events)?,
        });
        let object = json.as_object_mut().expect("built as an object");
        if let Some(room_id) = room_id {
            object.insert("room_id".to_owned(), room_id.as_str().into());
        }
        if let Some(state_key) = &event.state_key {
            object.insert("state_key".to_owned(), state_key.as_str().into());
        }
        if let Some(redacts) = &event.redacts {
            if !rules.redaction.content_field_redacts {
                object.insert("redacts".to_owned(), redacts.as_str().into());
            }
            if rules.redaction.content_field_redacts
                && let Some(content) = object.get_mut("content").and_then(|c| c.as_object_mut())
            {
                content.insert("redacts".to_owned(), redacts.as_str().into());
            }
        }
        if rules.event_id_format == EventIdFormatVersion::V1 {
            let id = format!(
                "${}:{}",
                crate::service::users::random_localpart(),
                self.server_name
            );
            object.insert("event_id".to_owned(), id.into());
        }
        if matches!(version, RoomVersionId::V1 | RoomVersionId::V2) {
            object.insert("origin".to_owned(), self.server_name.as_str().into());
        }

        let mut canonical = match CanonicalJsonValue::try_from(json) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            Ok(_) => unreachable!("built as an object"),
            Err(error) => {
                return Err(Error::bad_json(format!(
                    "Content is not canonical JSON: {error}"
                )));
            }
        };
        self.signing_key
            .sign_event(&self.server_name, &mut canonical, &rules.redaction)
            .map_err(Error::internal)?;
        let event_id = match canonical.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => id.clone(),
            _ => {
                let hash =
                    ruma::signatures::reference_hash(&canonical, rules).map_err(|error| {
                        Error::new(ErrorKind::TooLarge, format!("Event rejected: {error}"))
                    })?;
                format!("${hash}")
            }
        };
        let size = serde_json::to_vec(&canonical)
            .map_err(Error::internal)?
            .len();
        if size > MAX_PDU_BYTES {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "Event is larger than 64 KiB",
            ));
        }
        Ok((
            OwnedEventId::try_from(event_id).map_err(Error::internal)?,
            canonical,
        ))
    }

    /// Event references in the room version's format: ids, or `[id, hashes]` pairs.
    fn references(
        &self,
        rules: &RoomVersionRules,
        ids: &[OwnedEventId],
    ) -> Result<serde_json::Value> {
        if rules.events_reference_format != EventsReferenceFormatVersion::V1 {
            return Ok(serde_json::json!(ids));
        }
        let mut out = Vec::new();
        for id in ids {
            let hashes = self
                .pdu(id)?
                .and_then(|pdu| serde_json::from_str::<serde_json::Value>(pdu.pdu.get()).ok())
                .and_then(|value| value.get("hashes").cloned())
                .unwrap_or_else(|| serde_json::json!({}));
            out.push(serde_json::json!([id, hashes]));
        }
        Ok(serde_json::Value::Array(out))
    }

    /// Checks a PDU against the spec's authorisation rules (ruma's implementation): the
    /// state-independent rules with its auth events, then the rules against `state`.
    fn authorise(
        &self,
        rules: &RoomVersionRules,
        event_id: &EventId,
        object: &CanonicalJsonObject,
        state: &StateMap,
    ) -> Result<Pdu> {
        ruma::state_res::check_pdu_format(object, &rules.event_format)
            .map_err(|error| Error::bad_json(format!("Invalid event: {error}")))?;
        let raw = raw_json(object)?;
        let pdu = Pdu::parse(event_id.to_owned(), &raw).map_err(Error::internal)?;
        let fetch_event = |id: &EventId| self.state_event(id).ok().flatten();
        ruma::state_res::check_state_independent_auth_rules(
            &rules.authorization,
            &pdu,
            fetch_event,
        )
        .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))?;
        let fetch_state = |kind: &StateEventType, state_key: &str| {
            state
                .get(&(kind.to_string(), state_key.to_owned()))
                .and_then(|id| self.state_event(id).ok().flatten())
        };
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_state)
            .map_err(|reason| Error::forbidden(format!("Event not authorised: {reason}")))?;
        Ok(pdu)
    }

    /// Adds an authorised local event and everything it changes to `batch`, at the next
    /// stream position, and moves `room` (the room's head) past it. `audience` are the
    /// users whose syncs the event concerns and the servers it goes to (the room's
    /// members); a member event adds its target. Returns the position's permit and them.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        room: &mut RoomRecord,
        rules: &RoomVersionRules,
        pdu: Pdu,
        object: CanonicalJsonObject,
        txn: Option<(&UserId, Txn<'_>)>,
        mut audience: Audience,
    ) -> Result<(Permit, Audience)> {
        let state_before = room.state_group;
        let state_after = self.state_after(batch, state_before, &pdu)?;
        let permit = self.stream.next();
        let position = permit.position();
        if let Some((target, membership)) = member_change(&pdu) {
            self.index_membership(
                batch,
                room_id,
                &target,
                &membership,
                &pdu.event_id,
                position,
            )?;
            if target.server_name() != self.server_name
                && !audience.servers.iter().any(|s| s == target.server_name())
            {
                audience.servers.push(target.server_name().to_owned());
            }
            if !audience.users.contains(&target) {
                audience.users.push(target);
            }
        }
        if pdu.sender.server_name() == self.server_name {
            self.queue.enqueue(
                batch,
                &audience.servers,
                &Outgoing::Pdu(pdu.event_id.clone()),
            );
        } else {
            audience.servers.clear();
        }
        let event_id = pdu.event_id.clone();
        let depth = pdu.depth;
        self.stage_pdu(
            batch,
            room_id,
            rules,
            pdu,
            object,
            txn,
            Some(position),
            state_before,
            state_after,
        )?;
        room.state_group = state_after;
        room.extremities = vec![event_id];
        room.depth = depth;
        room.last_position = position;
        batch.put_json(
            Keyspace::Rooms,
            room_id.as_str().as_bytes().to_vec(),
            &*room,
        );
        permit.persist_in(batch);
        Ok((permit, audience))
    }

    /// The state group after an event: a new group for a state event, else the one
    /// before it.
    pub(super) fn state_after(
        &self,
        batch: &mut Batch,
        state_before: u64,
        pdu: &Pdu,
    ) -> Result<u64> {
        match &pdu.state_key {
            Some(state_key) => self.state.create(
                batch,
                state_before,
                vec![(
                    pdu.kind.to_string(),
                    state_key.clone(),
                    pdu.event_id.clone(),
                )],
            ),
            None => Ok(state_before),
        }
    }

    /// Indexes a membership as the room's current one: the room's member list, and for a
    /// local user their rooms and membership stream.
    pub(super) fn index_membership(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        target: &UserId,
        membership: &MembershipState,
        event_id: &EventId,
        position: u64,
    ) -> Result<()> {
        let member_key = Key::new().str(room_id.as_str()).str(target.as_str());
        let was_joined = self
            .db
            .get(Keyspace::RoomMembers, member_key.bytes())?
            .is_some_and(|value| decode_membership(&value) == MembershipState::Join);
        let joined = *membership == MembershipState::Join;
        if was_joined != joined {
            batch.put(
                Keyspace::RoomMembersStream,
                Key::new().str(room_id.as_str()).u64(position),
                target.as_str().as_bytes().to_vec(),
            );
            let joined_key = Key::new().str(target.as_str()).str(room_id.as_str());
            if joined {
                batch.put(Keyspace::JoinedRooms, joined_key, Vec::new());
            } else {
                batch.delete(Keyspace::JoinedRooms, joined_key);
            }
            if target.server_name() != self.server_name {
                // Another server's user's cached keys are kept fresh by its device-list
                // updates only while a room is shared: a join may end a gap.
                batch.delete(Keyspace::RemoteDevices, target.as_bytes().to_vec());
            }
        }
        if matches!(
            membership,
            MembershipState::Join | MembershipState::Invite | MembershipState::Knock
        ) {
            batch.put(
                Keyspace::RoomMembers,
                member_key,
                encode_membership(membership),
            );
        } else {
            batch.delete(Keyspace::RoomMembers, member_key);
        }
        if target.server_name() == self.server_name {
            // A member event that keeps the membership (a profile change) is not a
            // membership change: the position stays the one of the transition, so
            // sync does not treat the room as newly joined.
            let previous = self.membership(room_id, target)?;
            let unchanged = previous
                .as_ref()
                .is_some_and(|p| p.membership == *membership);
            let since = match &previous {
                Some(previous) if unchanged => previous.position,
                _ => position,
            };
            batch.put_json(
                Keyspace::UserRooms,
                Key::new().str(target.as_str()).str(room_id.as_str()),
                &Membership {
                    membership: membership.clone(),
                    event_id: event_id.to_owned(),
                    position: since,
                },
            );
            if !unchanged {
                batch.put(
                    Keyspace::UserRoomsStream,
                    Key::new().str(target.as_str()).u64(position),
                    room_id.as_str().as_bytes().to_vec(),
                );
            }
        }
        Ok(())
    }

    /// Writes the PDU, and at a stream position its timeline entry, its transaction id
    /// and what a redaction changes. Without a position the event is an outlier: known
    /// (as an auth or state event, or soft-failed) but not part of the timeline.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_pdu(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        pdu: Pdu,
        object: CanonicalJsonObject,
        txn: Option<(&UserId, Txn<'_>)>,
        position: Option<u64>,
        state_before: u64,
        state_after: u64,
    ) -> Result<()> {
        self.stage_stored(
            batch,
            room_id,
            rules,
            pdu,
            object,
            txn,
            position,
            (state_before, state_after),
            false,
        )
    }

    /// As [`stage_pdu`](Self::stage_pdu), marking the event soft-failed if so.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_stored(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        pdu: Pdu,
        object: CanonicalJsonObject,
        txn: Option<(&UserId, Txn<'_>)>,
        position: Option<u64>,
        (state_before, state_after): (u64, u64),
        soft_failed: bool,
    ) -> Result<()> {
        if let Some(position) = position {
            if pdu.kind == TimelineEventType::RoomRedaction
                && let Some(target_id) = &pdu.redacts
            {
                self.apply_redaction(batch, room_id, rules, target_id, &pdu.event_id)?;
            }
            batch.put(
                Keyspace::Timeline,
                Key::new().str(room_id.as_str()).u64(position),
                pdu.event_id.as_str().as_bytes().to_vec(),
            );
        }
        let txn_record = txn.as_ref().map(|(sender, txn)| {
            batch.put(
                Keyspace::TxnIds,
                txn_key(sender, txn),
                pdu.event_id.as_str().as_bytes().to_vec(),
            );
            (txn.device_id.to_string(), txn.txn_id.to_owned())
        });
        let stored = StoredPdu {
            room_id: room_id.to_owned(),
            position: position.unwrap_or(0),
            state_before,
            state_after,
            redacted_by: None,
            txn: txn_record,
            outlier: position.is_none(),
            soft_failed,
            pdu: raw_json(&object)?,
        };
        batch.put_json(
            Keyspace::Pdus,
            pdu.event_id.as_str().as_bytes().to_vec(),
            &stored,
        );
        Ok(())
    }

    /// Writes a prepared event, then wakes the syncs it concerns. The write runs off the
    /// async workers, so sends to different rooms reach RocksDB together and share one
    /// synced write-ahead-log append. The room lock and the stream position go with the
    /// write: if the request is dropped meanwhile, neither is released before the event
    /// is on disk (the next event of the room builds on it; syncs read up to it).
    pub(super) async fn commit(
        &self,
        pending: Pending,
        room_lock: OwnedMutexGuard<()>,
    ) -> Result<()> {
        let (db, stream, queue) = (self.db.clone(), self.stream.clone(), self.queue.clone());
        let state_events = self.state_events.clone();
        tokio::task::spawn_blocking(move || {
            let Pending {
                batch,
                permit,
                woken,
                redacted,
            } = pending;
            let written = db.write(batch);
            if let Some(redacted) = redacted {
                state_events.forget(&redacted);
            }
            drop(permit);
            drop(room_lock);
            if written.is_ok() {
                stream.notify(woken.users.iter().map(|user| user.as_ref()));
                queue.wake(&woken.servers);
            }
            written
        })
        .await
        .map_err(Error::internal)??;
        Ok(())
    }

    /// Replaces the stored target with its redacted form, keeping its signatures valid.
    fn apply_redaction(
        &self,
        batch: &mut crate::storage::Batch,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        target_id: &EventId,
        redaction_id: &EventId,
    ) -> Result<()> {
        let Some(mut target) = self.pdu(target_id)? else {
            return Ok(());
        };
        if target.room_id != room_id || target.redacted_by.is_some() {
            return Ok(());
        }
        let object: CanonicalJsonObject =
            serde_json::from_str(target.pdu.get()).map_err(Error::internal)?;
        let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(Error::internal)?;
        target.pdu = raw_json(&redacted)?;
        target.redacted_by = Some(redaction_id.to_owned());
        batch.put_json(
            Keyspace::Pdus,
            target_id.as_str().as_bytes().to_vec(),
            &target,
        );
        Ok(())
    }
}

/// The member whose membership a member event sets, and to what.
pub(super) fn member_change(pdu: &Pdu) -> Option<(OwnedUserId, MembershipState)> {
    if pdu.kind != TimelineEventType::RoomMember {
        return None;
    }
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|key| UserId::parse(key).ok())?;
    let membership = serde_json::from_str::<serde_json::Value>(pdu.content.get())
        .ok()
        .and_then(|content| super::membership::membership_in(&content))
        .unwrap_or(MembershipState::Leave);
    Some((target, membership))
}

pub(super) fn raw_json(object: &CanonicalJsonObject) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(object).map_err(Error::internal)
}
