//! Messages wait for their room's next batch: whoever holds the room lock next writes
//! every queued message in one batch with one synced write.

use std::collections::HashMap;

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId, OwnedUserId, RoomId, UInt, UserId,
    events::TimelineEventType,
};
use tokio::sync::{OwnedMutexGuard, oneshot};

use super::{Ahead, Head, NewEvent, Pending, Txn, Upcoming};
use crate::{
    Error, Result,
    service::{
        rooms::{Audience, Rooms, state::StateMap},
        users::now_ms,
    },
};

/// A message waiting for its room's next batch.
pub(in crate::service::rooms) struct Queued {
    sender: OwnedUserId,
    event: NewEvent,
    txn: Option<(OwnedDeviceId, String)>,
    /// What the indexes worked out for it while it was not yet queued.
    ahead: Ahead,
    reply: oneshot::Sender<Result<OwnedEventId>>,
}

/// A sender's channel and the answer it gets once the batch is written.
type Answer = (oneshot::Sender<Result<OwnedEventId>>, Result<OwnedEventId>);

impl Rooms {
    /// Queues a message for the room's next batch, and writes that batch if this request
    /// takes the room lock before an earlier holder has written the message.
    pub(super) async fn append_queued(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        let mut event = event;
        let ahead = self.prepare_message(room_id, sender, &mut event)?;
        let (reply, mut answer) = oneshot::channel();
        self.queues
            .lock()
            .entry(room_id.to_owned())
            .or_default()
            .push(Queued {
                sender: sender.to_owned(),
                event,
                txn: txn.map(|txn| (txn.device_id.to_owned(), txn.txn_id.to_owned())),
                ahead,
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
                    self.write_queued(room_id, queued, guard).await;
                }
            }
        }
        answer.await.map_err(Error::internal)?
    }

    /// Gives a message its timestamp, and has the indexes work out ahead what they can
    /// before it waits for the room's lock.
    fn prepare_message(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: &mut NewEvent,
    ) -> Result<Ahead> {
        let ts = *event.origin_server_ts.get_or_insert_with(now_ms);
        let content = serde_json::value::to_raw_value(&event.content).map_err(Error::internal)?;
        let kind = TimelineEventType::from(event.kind.as_str());
        Ok(self.prepare(&Upcoming {
            room_id,
            sender,
            kind: &kind,
            content: &content,
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::new(ts).unwrap_or_default()),
        }))
    }

    /// Builds, authorises and writes queued messages as one batch; every sender gets its
    /// own answer. Nothing here awaits before the write is handed to the blocking pool,
    /// so a dropped request cannot strand the others' messages.
    async fn write_queued(
        &self,
        room_id: &RoomId,
        queued: Vec<Queued>,
        room_lock: OwnedMutexGuard<()>,
    ) {
        let head = match self.head(room_id) {
            Ok(Some(head)) => head,
            Ok(None) => return refuse(queued, || Error::forbidden("You are not in this room")),
            Err(error) => return refuse(queued, || Error::internal(&error)),
        };
        let state = match self.state.get(head.record.state_group) {
            Ok(state) => state,
            Err(error) => return refuse(queued, || Error::internal(&error)),
        };
        let (pending, answers) = match self.stage_messages(head, &state, queued) {
            Ok(staged) => staged,
            Err(answers) => {
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
                return;
            }
        };
        let _ = self
            .commit_then(pending, room_lock, move |written| {
                for (reply, answer) in answers {
                    let answer = match (written, answer) {
                        (Err(error), Ok(_)) => Err(Error::internal(error)),
                        (_, answer) => answer,
                    };
                    let _ = reply.send(answer);
                }
            })
            .await;
    }

    /// Stages queued messages one after another on top of the room's head into one
    /// batch. Each sender's answer is kept for after the write; on a storage failure
    /// part-way the batch is unusable, and every answer is that failure.
    fn stage_messages(
        &self,
        mut head: Head,
        state: &StateMap,
        queued: Vec<Queued>,
    ) -> Result<(Pending, Vec<Answer>), Vec<Answer>> {
        let mut answers: Vec<Answer> = Vec::with_capacity(queued.len());
        let mut pending = Pending {
            batch: self.db.batch(),
            permits: Vec::new(),
            woken: Audience::default(),
            redacted: None,
        };
        // Messages change no membership: the audience is read once per batch.
        let mut audience: Option<Audience> = None;
        let mut sent_in_batch: HashMap<(OwnedUserId, OwnedDeviceId, String), OwnedEventId> =
            HashMap::new();
        for mut job in queued {
            // The client gave up before its message was started: not sending it is what
            // it was told (no answer); a retry with the same transaction sends it then.
            if job.reply.is_closed() {
                continue;
            }
            let key = job
                .txn
                .as_ref()
                .map(|(device_id, txn_id)| (job.sender.clone(), device_id.clone(), txn_id.clone()));
            let result = match key.as_ref().and_then(|key| sent_in_batch.get(key)) {
                Some(event_id) => Ok(event_id.clone()),
                None => {
                    let ahead = std::mem::take(&mut job.ahead);
                    self.stage_message(&mut pending, &mut head, state, &mut audience, &job, ahead)
                }
            };
            if let (Some(key), Ok(event_id)) = (key, &result) {
                sent_in_batch.insert(key, event_id.clone());
            }
            if let Err(Error::Storage(error)) = &result {
                let message = error.to_string();
                answers.push((job.reply, Err(Error::internal(&message))));
                return Err(answers
                    .into_iter()
                    .map(|(reply, _)| (reply, Err(Error::internal(&message))))
                    .collect());
            }
            answers.push((job.reply, result));
        }
        pending.woken = audience.unwrap_or_default();
        Ok((pending, answers))
    }

    /// Stages one queued message (or finds the event its transaction already made).
    fn stage_message(
        &self,
        pending: &mut Pending,
        head: &mut Head,
        state: &StateMap,
        audience: &mut Option<Audience>,
        job: &Queued,
        ahead: Ahead,
    ) -> Result<OwnedEventId> {
        let txn = job
            .txn
            .as_ref()
            .map(|(device_id, txn_id)| Txn { device_id, txn_id });
        if let Some(txn) = &txn
            && let Some(event_id) = self.txn_event(&job.sender, txn)?
        {
            return Ok(event_id);
        }
        let event = self.build_on_head(head, state, &job.sender, &job.event)?;
        let event_id = event.event_id.clone();
        if audience.is_none() {
            *audience = Some(self.audience(&head.room_id)?);
        }
        let audience = audience.as_mut().expect("read just above");
        let txn = txn.map(|txn| (job.sender.as_ref(), txn));
        let permit = self.stage(&mut pending.batch, head, event, txn, audience, ahead)?;
        pending.permits.push(permit);
        Ok(event_id)
    }
}

/// Answers every queued message with the same error.
fn refuse(queued: Vec<Queued>, error: impl Fn() -> Error) {
    for job in queued {
        let _ = job.reply.send(Err(error()));
    }
}
