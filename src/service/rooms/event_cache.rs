//! Events kept in memory, by id: the parsed state events every write checks its auth
//! events against and every read checks history visibility with (the same few, read over
//! and over), and the timeline events clients read, ready to be written out (a page of
//! recent history is read by every member's sync). A stored event changes only when
//! redacted, which `forget` handles.

use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;
use ruma::{EventId, OwnedEventId};

use crate::Result;

pub struct EventCache<V> {
    inner: Mutex<Inner<V>>,
    /// The most bytes kept, as `weigh` counts them; the least recently used go first.
    budget: usize,
    weigh: fn(&V) -> usize,
}

struct Inner<V> {
    events: LruCache<OwnedEventId, Arc<V>>,
    /// What the events kept weigh together.
    weight: usize,
    /// Bumped by every `forget`: a load that started before a redaction's write must not
    /// put the unredacted form back.
    epoch: u64,
}

impl<V> EventCache<V> {
    /// A cache of at most `budget` bytes of events, each weighing what `weigh` says
    /// (about what it holds in memory).
    pub fn new(budget: usize, weigh: fn(&V) -> usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                events: LruCache::unbounded(),
                weight: 0,
                epoch: 0,
            }),
            budget,
            weigh,
        }
    }

    /// The event from memory, or from `load` (kept for next time).
    pub fn get_or_load(
        &self,
        event_id: &EventId,
        load: impl FnOnce() -> Result<Option<V>>,
    ) -> Result<Option<Arc<V>>> {
        if let Some(found) = self.inner.lock().events.get(event_id) {
            return Ok(Some(found.clone()));
        }
        let mut found = self.get_many_or_load(&[event_id], |_| Ok(vec![load()?]), |_| true)?;
        Ok(found.pop().flatten())
    }

    /// Many events, in the order asked: those in memory from it, the others from one
    /// call of `load` (given the ids missing, answering in their order); those `keep`
    /// accepts are kept for next time.
    pub fn get_many_or_load(
        &self,
        event_ids: &[&EventId],
        load: impl FnOnce(&[&EventId]) -> Result<Vec<Option<V>>>,
        keep: impl Fn(&V) -> bool,
    ) -> Result<Vec<Option<Arc<V>>>> {
        let mut out: Vec<Option<Arc<V>>> = Vec::with_capacity(event_ids.len());
        let mut missing = Vec::new();
        let epoch = {
            let mut inner = self.inner.lock();
            for (index, event_id) in event_ids.iter().enumerate() {
                let found = inner.events.get(*event_id).cloned();
                if found.is_none() {
                    missing.push(index);
                }
                out.push(found);
            }
            inner.epoch
        };
        if missing.is_empty() {
            return Ok(out);
        }
        let ids: Vec<&EventId> = missing.iter().map(|index| event_ids[*index]).collect();
        let loaded = load(&ids)?;
        let mut inner = self.inner.lock();
        for (index, value) in missing.into_iter().zip(loaded) {
            let Some(value) = value else {
                continue;
            };
            let value = Arc::new(value);
            if inner.epoch == epoch && keep(&value) {
                inner.weight += (self.weigh)(&value);
                if let Some(old) = inner.events.put(event_ids[index].to_owned(), value.clone()) {
                    inner.weight -= (self.weigh)(&old);
                }
                while inner.weight > self.budget
                    && let Some((_, dropped)) = inner.events.pop_lru()
                {
                    inner.weight -= (self.weigh)(&dropped);
                }
            }
            out[index] = Some(value);
        }
        Ok(out)
    }

    /// Drops an event whose stored form changed (it was redacted).
    pub fn forget(&self, event_id: &EventId) {
        let mut inner = self.inner.lock();
        if let Some(dropped) = inner.events.pop(event_id) {
            inner.weight -= (self.weigh)(&dropped);
        }
        inner.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::rooms::pdu::Pdu;

    fn pdu(body: &str) -> Pdu {
        let json = serde_json::json!({
            "room_id": "!r:localhost", "sender": "@a:localhost", "origin_server_ts": 1,
            "type": "m.room.topic", "state_key": "", "content": { "topic": body },
            "prev_events": [], "auth_events": [], "depth": 1,
        });
        Pdu::parse(
            "$e".try_into().unwrap(),
            &serde_json::value::to_raw_value(&json).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn loads_once_and_forgets_on_redaction() {
        let cache = EventCache::new(1 << 20, |pdu: &Pdu| pdu.content.get().len());
        let id: OwnedEventId = "$e".try_into().unwrap();
        let mut loads = 0;
        for _ in 0..3 {
            cache
                .get_or_load(&id, || {
                    loads += 1;
                    Ok(Some(pdu("first")))
                })
                .unwrap();
        }
        assert_eq!(loads, 1);
        cache.forget(&id);
        let again = cache
            .get_or_load(&id, || Ok(Some(pdu("redacted"))))
            .unwrap();
        assert!(again.unwrap().content.get().contains("redacted"));
    }

    #[test]
    fn a_load_racing_a_redaction_is_not_kept() {
        let cache = EventCache::new(1 << 20, |pdu: &Pdu| pdu.content.get().len());
        let id: OwnedEventId = "$e".try_into().unwrap();
        // The redaction lands while the old form is being read.
        cache
            .get_or_load(&id, || {
                cache.forget(&id);
                Ok(Some(pdu("stale")))
            })
            .unwrap();
        let fresh = cache.get_or_load(&id, || Ok(Some(pdu("fresh")))).unwrap();
        assert!(fresh.unwrap().content.get().contains("fresh"));
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn a_batch_loads_only_what_is_missing_and_keeps_what_it_is_told_to() {
        let cache: EventCache<String> = EventCache::new(1 << 20, String::len);
        let ids: Vec<OwnedEventId> = ["$a", "$b", "$c"]
            .iter()
            .map(|id| (*id).try_into().unwrap())
            .collect();
        let refs: Vec<&EventId> = ids.iter().map(|id| &**id).collect();
        let first = cache
            .get_many_or_load(
                &refs,
                |missing| Ok(missing.iter().map(|id| Some(id.to_string())).collect()),
                |value| value != "$b",
            )
            .unwrap();
        assert_eq!(first.len(), 3);
        let mut asked = Vec::new();
        let second = cache
            .get_many_or_load(
                &refs,
                |missing| {
                    asked = missing.iter().map(|id| id.to_string()).collect();
                    Ok(missing.iter().map(|_| None).collect())
                },
                |_| true,
            )
            .unwrap();
        assert_eq!(asked, ["$b"], "only the one not kept is read again");
        assert_eq!(second[0].as_deref().map(String::as_str), Some("$a"));
        assert!(second[1].is_none());
        assert_eq!(second[2].as_deref().map(String::as_str), Some("$c"));
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_when_the_budget_is_spent() {
        let cache: EventCache<String> = EventCache::new(10, String::len);
        let ids: Vec<OwnedEventId> = ["$a", "$b", "$c"]
            .iter()
            .map(|id| (*id).try_into().unwrap())
            .collect();
        for (id, value) in ids.iter().zip(["aaaa", "bbbb", "cccc"]) {
            cache
                .get_or_load(id, || Ok(Some(value.to_owned())))
                .unwrap();
        }
        // 12 bytes asked for, 10 allowed: the first one read went.
        let mut reloaded = Vec::new();
        for id in &ids {
            cache
                .get_or_load(id, || {
                    reloaded.push(id.to_string());
                    Ok(Some("xxxx".to_owned()))
                })
                .unwrap();
        }
        assert_eq!(reloaded.first().map(String::as_str), Some("$a"));
        assert!(cache.inner.lock().weight <= 10);
    }
}
