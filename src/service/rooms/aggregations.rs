//! Bundled aggregations: what a client gets in `unsigned.m.relations` of an event others
//! relate to: its latest edit (`m.replace`, the whole edit event), the events
//! referencing it (`m.reference`) and, for a thread root, the thread's summary
//! (`m.thread`: count, latest reply, whether the viewer took part). Read from the
//! relations index (`relations.rs`) for a page of events at once.

use ruma::EventId;
use serde_json::{Value, json};

use super::{
    pdu::{ClientEvent, ClientFormat},
    relations::{Aggregation, REFERENCE, RelationFilter},
    visibility::{Shown, Viewer},
};
use crate::Result;

impl Viewer<'_> {
    /// Adds the bundled aggregations to the shown events (of `event_ids`) that have any.
    pub(super) fn bundle(
        &mut self,
        event_ids: &[&EventId],
        shown: &mut [Option<Shown>],
        format: ClientFormat,
    ) -> Result<()> {
        let ids: Vec<&EventId> = event_ids
            .iter()
            .zip(shown.iter())
            .filter(|(_, shown)| shown.is_some())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let aggregations = self.rooms().aggregations(&ids)?;
        let found: Vec<(usize, Aggregation)> = aggregations
            .into_iter()
            .enumerate()
            .filter_map(|(at, aggregation)| aggregation.map(|a| (at, a)))
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        let mut slots: Vec<&mut Shown> = shown.iter_mut().flatten().collect();
        for (at, aggregation) in found {
            let room_id = slots[at].0.stored.room_id.clone();
            let relations = self.relations_of(&room_id, ids[at], &aggregation, format)?;
            if let Some(relations) = relations {
                with_relations(&mut slots[at].1, relations);
            }
        }
        Ok(())
    }

    /// The `m.relations` object of one event, `None` when nothing in it is visible.
    fn relations_of(
        &mut self,
        room_id: &ruma::RoomId,
        event_id: &EventId,
        aggregation: &Aggregation,
        format: ClientFormat,
    ) -> Result<Option<Value>> {
        let mut relations = serde_json::Map::new();
        if let Some((_, edit_id)) = &aggregation.replace
            && let Some((_, edit)) = self.events_unbundled(&[edit_id], format)?.pop().flatten()
        {
            relations.insert("m.replace".to_owned(), edit.into_value());
        }
        if aggregation.referenced {
            let filter = RelationFilter {
                rel_type: Some(REFERENCE),
                kind: None,
            };
            let chunk: Vec<Value> = self
                .rooms()
                .relations(room_id, event_id, &filter)?
                .into_iter()
                .map(|(_, relation)| json!({ "event_id": relation.event_id }))
                .collect();
            if !chunk.is_empty() {
                relations.insert("m.reference".to_owned(), json!({ "chunk": chunk }));
            }
        }
        if aggregation.thread
            && let Some(thread) = self.rooms().thread(room_id, event_id)?
            && let Some(latest) = &thread.latest
            && let Some((_, latest)) = self.events_unbundled(&[latest], format)?.pop().flatten()
        {
            let participated = thread.participants.iter().any(|p| p == self.user());
            relations.insert(
                "m.thread".to_owned(),
                json!({
                    "latest_event": latest.into_value(),
                    "count": thread.count,
                    "current_user_participated": participated,
                }),
            );
        }
        Ok((!relations.is_empty()).then_some(Value::Object(relations)))
    }
}

/// The event with `unsigned.m.relations` set.
fn with_relations(event: &mut ClientEvent, relations: Value) {
    let mut value = event.clone().into_value();
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let unsigned = object
        .entry("unsigned")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(unsigned) = unsigned.as_object_mut() {
        unsigned.insert("m.relations".to_owned(), relations);
    }
    if let Ok(json) = serde_json::value::to_raw_value(&value) {
        event.json = json;
    }
}
