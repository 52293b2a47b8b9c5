//! Push rules: each user's ruleset lives in their `m.push_rules` account data (which is
//! also how clients receive it in `/sync`), seeded with the spec's defaults. Evaluation
//! is ruma's, once per member when an event is written (`actions.rs`).

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::FutureExt;
use lru::LruCache;
use parking_lot::Mutex;
use ruma::{
    Int, OwnedUserId, RoomId, UInt, UserId,
    events::room::member::MembershipState,
    power_levels::NotificationPowerLevels,
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomPowerLevelsRules,
};
use serde_json::Value;

use crate::{
    Result,
    service::{
        account_data::AccountData,
        rooms::{Rooms, state::StateMap},
    },
};

const EVENT_TYPE: &str = "m.push_rules";

/// A user's rules as stored (the defaults if none are).
pub fn load(account_data: &AccountData, user: &UserId) -> Result<Ruleset> {
    let stored = account_data.get(user, None, EVENT_TYPE)?;
    Ok(stored
        .and_then(|content| content.get("global").cloned())
        .and_then(|global| serde_json::from_value(global).ok())
        .unwrap_or_else(|| default_ruleset(user)))
}

/// The spec's default rules plus the three it deprecated in favour of `m.mentions`
/// (`.m.rule.contains_display_name`, `.m.rule.roomnotif`, `.m.rule.contains_user_name`),
/// where Synapse keeps them: clients, bridges and bots that do not send `m.mentions`
/// still name people in the body, and their messages must highlight.
///
/// Without the thread subscription rules (MSC4306): [`Rulesets`] adds those where the
/// server has subscriptions on.
pub fn default_ruleset(user: &UserId) -> Ruleset {
    let mut value = serde_json::to_value(Ruleset::server_default(user)).unwrap_or_default();
    if let Some(kinds) = value.as_object_mut() {
        kinds.remove("postcontent");
    }
    let highlight = serde_json::json!([
        "notify",
        { "set_tweak": "sound", "value": "default" },
        { "set_tweak": "highlight" },
    ]);
    if let Some(rules) = value.get_mut("override").and_then(Value::as_array_mut) {
        let after = |rules: &Vec<Value>, id: &str| {
            rules
                .iter()
                .position(|rule| rule["rule_id"] == id)
                .map_or(rules.len(), |at| at + 1)
        };
        let at = after(rules, ".m.rule.is_user_mention");
        rules.insert(
            at,
            serde_json::json!({
                "rule_id": ".m.rule.contains_display_name",
                "default": true,
                "enabled": true,
                "conditions": [{ "kind": "contains_display_name" }],
                "actions": highlight,
            }),
        );
        let at = after(rules, ".m.rule.is_room_mention");
        rules.insert(
            at,
            serde_json::json!({
                "rule_id": ".m.rule.roomnotif",
                "default": true,
                "enabled": true,
                "conditions": [
                    { "kind": "event_match", "key": "content.body", "pattern": "@room" },
                    { "kind": "sender_notification_permission", "key": "room" },
                ],
                "actions": ["notify", { "set_tweak": "highlight" }],
            }),
        );
    }
    value["content"] = serde_json::json!([{
        "rule_id": ".m.rule.contains_user_name",
        "default": true,
        "enabled": true,
        "pattern": user.localpart(),
        "actions": highlight,
    }]);
    serde_json::from_value(value).unwrap_or_else(|_| Ruleset::server_default(user))
}

pub fn save(account_data: &AccountData, user: &UserId, ruleset: &Ruleset) -> Result<()> {
    account_data.set(
        user,
        None,
        EVENT_TYPE,
        serde_json::json!({ "global": ruleset }),
    )
}

/// The default rules whose conditions name the user: their id (`invite_for_me`,
/// `is_user_mention`), their localpart (`contains_user_name`) or their display name
/// (`contains_display_name`).
const IDENTITY_RULES: [&str; 4] = [
    ".m.rule.invite_for_me",
    ".m.rule.is_user_mention",
    ".m.rule.contains_display_name",
    ".m.rule.contains_user_name",
];

/// A user's rules, parsed, with the part that does not depend on who they are.
pub struct UserRules {
    pub ruleset: Ruleset,
    /// The ruleset without [`IDENTITY_RULES`], when no other rule depends on the user:
    /// for an event that names them nowhere, the identity rules cannot apply and this
    /// gives the same actions as the whole ruleset. Users whose rest is the same share
    /// one value, so an event is evaluated once for all of them ([`Shared`]).
    pub shared: Option<Arc<Ruleset>>,
}

/// Each user's ruleset, parsed once and kept until they change it.
pub struct Rulesets {
    account_data: Arc<AccountData>,
    /// Whether thread subscriptions are on: every ruleset then has their default
    /// `postcontent` rules, else none has any `postcontent` rule.
    thread_subscriptions: bool,
    parsed: Mutex<LruCache<OwnedUserId, Arc<UserRules>>>,
    /// The distinct shared parts, by their JSON.
    shared: Mutex<HashMap<String, Arc<Ruleset>>>,
    /// Raised whenever a user's rules change: rules kept elsewhere are stale once it
    /// moves.
    generation: AtomicU64,
}

/// Users whose parsed rulesets are kept.
const RULESETS_KEPT: usize = 10_000;

/// Distinct shared parts kept (most users share a handful).
const SHARED_KEPT: usize = 1_000;

impl Rulesets {
    pub fn new(account_data: Arc<AccountData>, thread_subscriptions: bool) -> Self {
        Self {
            account_data,
            thread_subscriptions,
            parsed: Mutex::new(LruCache::new(
                NonZeroUsize::new(RULESETS_KEPT).expect("not zero"),
            )),
            shared: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The current generation of everyone's rules: read it before [`get`](Self::get),
    /// and what was got is current while it stays the same.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A user's rules (the defaults if none are stored).
    pub fn get(&self, user: &UserId) -> Result<Arc<UserRules>> {
        if let Some(rules) = self.parsed.lock().get(user) {
            return Ok(rules.clone());
        }
        let mut ruleset = load(&self.account_data, user)?;
        self.fit(&mut ruleset);
        let shared = without_identity(&ruleset, user).and_then(|rest| {
            let key = serde_json::to_string(&rest).ok()?;
            let mut kept = self.shared.lock();
            if kept.len() >= SHARED_KEPT {
                kept.clear();
            }
            Some(kept.entry(key).or_insert_with(|| Arc::new(rest)).clone())
        });
        let rules = Arc::new(UserRules { ruleset, shared });
        self.parsed.lock().put(user.to_owned(), rules.clone());
        Ok(rules)
    }

    /// Stores a new user's rules: the defaults.
    pub fn init(&self, user: &UserId) -> Result<()> {
        let mut ruleset = default_ruleset(user);
        self.fit(&mut ruleset);
        save(&self.account_data, user, &ruleset)
    }

    /// The thread subscription rules where subscriptions are on (added after the
    /// user's own `postcontent` rules when a ruleset stored earlier lacks them), none
    /// where they are off.
    fn fit(&self, ruleset: &mut Ruleset) {
        if !self.thread_subscriptions {
            ruleset.postcontent.clear();
            return;
        }
        let defaults = [
            ruma::push::ConditionalPushRule::unsubscribed_thread(),
            ruma::push::ConditionalPushRule::subscribed_thread(),
        ];
        for rule in defaults {
            if ruleset.postcontent.get(rule.rule_id.as_str()).is_none() {
                ruleset.postcontent.insert(rule);
            }
        }
    }

    /// Stores a user's rules (clients see them in their account data).
    pub fn set(&self, user: &UserId, ruleset: &Ruleset) -> Result<()> {
        save(&self.account_data, user, ruleset)?;
        self.parsed.lock().pop(user);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// `ruleset` without the [`IDENTITY_RULES`], or `None` when the rest still depends on
/// the user (a rule of their own on display names) or an identity rule's conditions are
/// not the spec's (what it matches is then unknown).
fn without_identity(ruleset: &Ruleset, user: &UserId) -> Option<Ruleset> {
    let defaults = serde_json::to_value(default_ruleset(user)).ok()?;
    let mut value = serde_json::to_value(ruleset).ok()?;
    for kind in [
        "override",
        "content",
        "postcontent",
        "room",
        "sender",
        "underride",
    ] {
        let Some(rules) = value.get_mut(kind).and_then(Value::as_array_mut) else {
            continue;
        };
        let mut kept = Vec::with_capacity(rules.len());
        for rule in rules.drain(..) {
            let id = rule["rule_id"].as_str().unwrap_or_default();
            if IDENTITY_RULES.contains(&id) {
                let default = defaults[kind]
                    .as_array()?
                    .iter()
                    .find(|default| default["rule_id"] == id)?;
                if rule.get("conditions") != default.get("conditions")
                    || rule.get("pattern") != default.get("pattern")
                {
                    return None;
                }
                continue;
            }
            // Conditions that read only the event and the room answer alike for
            // every user; any other kind (`contains_display_name`, one unknown here)
            // may depend on who evaluates it. A thread subscription is the member's,
            // but it is given to the evaluation: members share one only with those
            // whose answer is the same (`actions.rs`).
            const USER_FREE: [&str; 6] = [
                "event_match",
                "event_property_is",
                "event_property_contains",
                "room_member_count",
                "sender_notification_permission",
                "io.element.msc4306.thread_subscription",
            ];
            let depends_on_user = rule
                .get("conditions")
                .and_then(Value::as_array)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|condition| !USER_FREE.iter().any(|kind| condition["kind"] == *kind))
                });
            if depends_on_user {
                return None;
            }
            kept.push(rule);
        }
        *rules = kept;
    }
    serde_json::from_value(value).ok()
}

/// What in an event could name a user: its body, its state key and the users it
/// mentions. An event that names a user nowhere here cannot match their identity rules.
pub struct Naming<'a> {
    body: Option<String>,
    state_key: Option<&'a str>,
    mentioned: Vec<&'a str>,
}

impl<'a> Naming<'a> {
    pub fn of(event: &'a FlattenedJson) -> Self {
        Self {
            body: event.get_str("content.body").map(str::to_lowercase),
            state_key: event.get_str("state_key"),
            mentioned: event
                .get(r"content.m\.mentions.user_ids")
                .and_then(|ids| ids.as_array())
                .map(|ids| ids.iter().filter_map(|id| id.as_str()).collect())
                .unwrap_or_default(),
        }
    }

    /// Whether the event may name `member`: a superset of what the identity rules
    /// match, which compare case-insensitively and treat `*` and `?` in a display name
    /// as wildcards.
    pub fn may_name(&self, member: &Member) -> bool {
        let user = member.user.as_str();
        if self.mentioned.contains(&user)
            || self
                .state_key
                .is_some_and(|key| key.to_lowercase() == user.to_lowercase())
        {
            return true;
        }
        let Some(body) = &self.body else {
            return false;
        };
        member.display_name.contains(['*', '?'])
            || body.contains(&member.localpart_lowercase)
            || body.contains(&member.display_name_lowercase)
    }
}

/// A local member as their push rules see them: who they are and their display name in
/// the room (their localpart when they set none), with the lowercase forms the
/// identity rules compare.
pub struct Member {
    pub user: OwnedUserId,
    pub display_name: String,
    localpart_lowercase: String,
    display_name_lowercase: String,
}

impl Member {
    pub fn new(user: OwnedUserId, display_name: String) -> Self {
        Self {
            localpart_lowercase: user.localpart().to_lowercase(),
            display_name_lowercase: display_name.to_lowercase(),
            user,
            display_name,
        }
    }
}

/// What the push rules of a room's members need to know about the room: its members,
/// each local member's display name there, and who may notify the whole room.
pub struct RoomContext {
    pub member_count: u64,
    pub power_levels: PushConditionPowerLevelsCtx,
}

impl RoomContext {
    pub fn of(rooms: &Rooms, room_id: &RoomId, state: &StateMap) -> Result<Self> {
        let member_count = rooms.members_with(room_id, MembershipState::Join)?.len() as u64;
        Ok(Self {
            member_count,
            power_levels: power_levels(rooms, room_id, state)?,
        })
    }

    /// The conditions' context for one member; `subscribed`: whether they follow the
    /// event's thread, for an event in a thread where subscriptions are on.
    pub fn for_user(
        &self,
        room_id: &RoomId,
        user: &UserId,
        display_name: String,
        subscribed: Option<bool>,
    ) -> PushConditionRoomCtx {
        let mut context = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::new(self.member_count).unwrap_or_default(),
            user.to_owned(),
            display_name,
        );
        context.power_levels = Some(self.power_levels.clone());
        match subscribed {
            Some(true) => context.with_has_thread_subscription_fn(subscribed_to_thread),
            Some(false) => context.with_has_thread_subscription_fn(not_subscribed_to_thread),
            None => context,
        }
    }
}

/// The answer to a thread-subscription condition, known before evaluating.
type Answer<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;

fn subscribed_to_thread(_: &ruma::EventId) -> Answer<'_> {
    Box::pin(std::future::ready(true))
}

fn not_subscribed_to_thread(_: &ruma::EventId) -> Answer<'_> {
    Box::pin(std::future::ready(false))
}

/// The actions of the first rule that applies to `event`, empty when none does or when
/// the user sent it.
pub fn actions<'a>(
    ruleset: &'a Ruleset,
    event: &FlattenedJson,
    context: &PushConditionRoomCtx,
) -> &'a [Action] {
    if event.get_str("sender") == Some(context.user_id.as_str()) {
        return &[];
    }
    for rule in ruleset {
        // Only thread-subscription conditions wait on anything, and their answer is
        // given ready (`RoomContext::for_user`), so every rule answers at once.
        if rule.applies(event, context).now_or_never() == Some(true) {
            return rule.actions();
        }
    }
    &[]
}

fn power_levels(
    rooms: &Rooms,
    room_id: &RoomId,
    state: &StateMap,
) -> Result<PushConditionPowerLevelsCtx> {
    let content = rooms
        .content_in(state, "m.room.power_levels", "")?
        .unwrap_or_default();
    let int = |value: Option<&Value>, default: i64| {
        value
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(Int::new)
            .unwrap_or_else(|| Int::new(default).unwrap_or_default())
    };
    let users = content
        .get("users")
        .and_then(Value::as_object)
        .map(|users| {
            users
                .iter()
                .filter_map(|(id, level)| {
                    Some((
                        OwnedUserId::try_from(id.as_str()).ok()?,
                        int(Some(level), 0),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut notifications = NotificationPowerLevels::new();
    notifications.room = int(content.pointer("/notifications/room"), 50);
    let version = rooms.room(room_id)?.map(|room| room.version);
    let rules = match version.as_ref().and_then(|v| v.rules()) {
        Some(rules) => {
            let creators = rooms.creators_in(state)?;
            RoomPowerLevelsRules::new(&rules.authorization, creators)
        }
        None => RoomPowerLevelsRules::new(&ruma::room_version_rules::AuthorizationRules::V11, []),
    };
    Ok(PushConditionPowerLevelsCtx::new(
        users,
        int(content.get("users_default"), 0),
        notifications,
        rules,
    ))
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, serde::Raw, user_id};
    use serde_json::json;

    use super::*;
    use crate::{service::stream::Stream, storage::Db};

    fn context(user: &UserId, display_name: &str, member_count: u64) -> PushConditionRoomCtx {
        let power_levels = PushConditionPowerLevelsCtx::new(
            [(user_id!("@boss:example.org").to_owned(), Int::from(100))].into(),
            Int::from(0),
            NotificationPowerLevels::new(),
            RoomPowerLevelsRules::new(&ruma::room_version_rules::AuthorizationRules::V11, []),
        );
        let mut context = PushConditionRoomCtx::new(
            owned_room_id!("!room:example.org"),
            UInt::new(member_count).unwrap(),
            user.to_owned(),
            display_name.to_owned(),
        );
        context.power_levels = Some(power_levels);
        context
    }

    fn event(sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut event = json!({
            "type": kind,
            "sender": sender,
            "room_id": "!room:example.org",
            "event_id": "$e",
            "origin_server_ts": 1,
            "content": content,
        });
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    fn corpus() -> Vec<Value> {
        let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
        vec![
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("hello all"),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("hello alice"),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("hi ALICE!"),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("malice aforethought"),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("Alice Liddell, tea?"),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("cArol is here"),
            ),
            event("@bob:example.org", "m.room.message", None, text("")),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                text("@room wake up"),
            ),
            event(
                "@boss:example.org",
                "m.room.message",
                None,
                text("@room wake up"),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                json!({ "msgtype": "m.notice", "body": "a notice" }),
            ),
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                json!({
                    "msgtype": "m.text",
                    "body": "no name here",
                    "m.mentions": { "user_ids": ["@alice:example.org"] },
                }),
            ),
            event(
                "@boss:example.org",
                "m.room.message",
                None,
                json!({ "msgtype": "m.text", "body": "all", "m.mentions": { "room": true } }),
            ),
            event(
                "@bob:example.org",
                "m.room.member",
                Some("@alice:example.org"),
                json!({ "membership": "invite" }),
            ),
            event(
                "@bob:example.org",
                "m.room.member",
                Some("@dave:example.org"),
                json!({ "membership": "invite" }),
            ),
            event(
                "@bob:example.org",
                "m.room.encrypted",
                None,
                json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" }),
            ),
            event(
                "@bob:example.org",
                "m.reaction",
                None,
                json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$x", "key": "👍" } }),
            ),
            event(
                "@bob:example.org",
                "m.call.invite",
                None,
                json!({ "call_id": "c" }),
            ),
            event(
                "@boss:example.org",
                "m.room.tombstone",
                Some(""),
                json!({ "body": "moved", "replacement_room": "!new:example.org" }),
            ),
        ]
    }

    fn encoded(actions: &[Action]) -> String {
        serde_json::to_string(actions).unwrap()
    }

    #[test]
    fn the_shared_part_answers_as_the_whole_rules_for_an_event_that_names_the_user_nowhere() {
        let no_one = user_id!("@-:no-one.invalid");
        let members = [
            (user_id!("@alice:example.org"), "Alice Liddell"),
            (user_id!("@carol:example.org"), "C*rol"),
            (user_id!("@erin.x:example.org"), "erin.x"),
        ];
        let (mut shared_answers, mut named) = (0, 0);
        for member_count in [2, 5] {
            for event in corpus() {
                let flattened = FlattenedJson::from_raw(&Raw::new(&event).unwrap());
                let naming = Naming::of(&flattened);
                for (user, name) in members {
                    let ruleset = default_ruleset(user);
                    let whole = actions(&ruleset, &flattened, &context(user, name, member_count));
                    if naming.may_name(&Member::new(user.to_owned(), name.to_owned())) {
                        named += 1;
                        continue;
                    }
                    let rest = without_identity(&ruleset, user).expect("the defaults share");
                    let shared = actions(&rest, &flattened, &context(no_one, "", member_count));
                    assert_eq!(
                        encoded(whole),
                        encoded(shared),
                        "{user} ({name}), {member_count} members: {event}"
                    );
                    shared_answers += 1;
                }
            }
        }
        assert!(
            shared_answers > 60 && named > 10,
            "{shared_answers} / {named}"
        );
    }

    #[test]
    fn with_thread_subscriptions_a_thread_notifies_subscribers_and_the_shared_part_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let account_data = Arc::new(AccountData::new(db.clone(), Stream::load(&db).unwrap()));
        let rulesets = Rulesets::new(account_data, true);
        let alice = user_id!("@alice:example.org");
        let rules = rulesets.get(alice).unwrap();
        let rest = rules.shared.clone().expect("the thread rules share");
        let no_one = user_id!("@-:no-one.invalid");
        let reply = |body: &str, mentions: Value| {
            event(
                "@bob:example.org",
                "m.room.message",
                None,
                json!({
                    "msgtype": "m.text",
                    "body": body,
                    "m.mentions": mentions,
                    "m.relates_to": { "rel_type": "m.thread", "event_id": "$root" },
                }),
            )
        };
        let with = |context: PushConditionRoomCtx, subscribed: bool| {
            if subscribed {
                context.with_has_thread_subscription_fn(subscribed_to_thread)
            } else {
                context.with_has_thread_subscription_fn(not_subscribed_to_thread)
            }
        };
        let plain = FlattenedJson::from_raw(&Raw::new(&reply("monday", json!({}))).unwrap());
        for (subscribed, notifies) in [(true, true), (false, false)] {
            let whole = actions(
                &rules.ruleset,
                &plain,
                &with(context(alice, "Alice", 5), subscribed),
            );
            let shared = actions(&rest, &plain, &with(context(no_one, "", 5), subscribed));
            assert_eq!(encoded(whole), encoded(shared));
            assert_eq!(
                whole.iter().any(|action| matches!(action, Action::Notify)),
                notifies,
                "subscribed: {subscribed}"
            );
        }
        // A mention notifies whether or not the member follows the thread.
        let mention = reply("x", json!({ "user_ids": ["@alice:example.org"] }));
        let mention = FlattenedJson::from_raw(&Raw::new(&mention).unwrap());
        let whole = actions(
            &rules.ruleset,
            &mention,
            &with(context(alice, "Alice", 5), false),
        );
        assert!(whole.iter().any(Action::is_highlight));
        // Off, the rules have no `postcontent` at all and a thread notifies as the room.
        let off = Rulesets::new(rulesets.account_data.clone(), false);
        let ruleset = &off.get(alice).unwrap().ruleset;
        assert!(ruleset.postcontent.is_empty());
        assert!(
            actions(ruleset, &plain, &context(alice, "Alice", 5))
                .iter()
                .any(|action| matches!(action, Action::Notify))
        );
    }

    #[test]
    fn an_event_names_a_user_by_id_localpart_display_name_or_state_key() {
        let alice = user_id!("@alice:example.org");
        let named = |event: Value, name: &str| {
            let flattened = FlattenedJson::from_raw(&Raw::new(&event).unwrap());
            Naming::of(&flattened).may_name(&Member::new(alice.to_owned(), name.to_owned()))
        };
        let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
        let from_bob = |content| event("@bob:example.org", "m.room.message", None, content);
        assert!(named(from_bob(text("ALICE?")), "Al"));
        assert!(named(from_bob(text("hi Mrs Liddell")), "mrs liddell"));
        assert!(named(from_bob(text("anything")), "Al*"));
        assert!(named(
            from_bob(json!({ "body": "x", "m.mentions": { "user_ids": ["@alice:example.org"] } })),
            "Al"
        ));
        assert!(named(
            event(
                "@bob:example.org",
                "m.room.member",
                Some("@alice:example.org"),
                json!({ "membership": "invite" })
            ),
            "Al"
        ));
        assert!(!named(from_bob(text("hello bob")), "Al Liddell"));
        assert!(!named(
            from_bob(json!({ "body": "x", "m.mentions": { "user_ids": ["@bob:example.org"] } })),
            "Al"
        ));
    }

    #[test]
    fn rules_of_ones_own_on_display_names_are_not_shared_and_equal_rules_share_one_part() {
        let alice = user_id!("@alice:example.org");
        let mut ruleset = default_ruleset(alice);
        assert!(without_identity(&ruleset, alice).is_some());
        let mut value = serde_json::to_value(&ruleset).unwrap();
        value["override"].as_array_mut().unwrap().push(json!({
            "rule_id": "mine",
            "default": false,
            "enabled": true,
            "conditions": [{ "kind": "contains_display_name" }],
            "actions": ["notify"],
        }));
        ruleset = serde_json::from_value(value).unwrap();
        assert!(without_identity(&ruleset, alice).is_none());

        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let account_data = Arc::new(AccountData::new(db.clone(), Stream::load(&db).unwrap()));
        let rulesets = Rulesets::new(account_data, false);
        let bob = user_id!("@bob:example.org");
        let carol = user_id!("@carol:example.org");
        let (bob_rules, carol_rules) = (rulesets.get(bob).unwrap(), rulesets.get(carol).unwrap());
        assert!(Arc::ptr_eq(
            bob_rules.shared.as_ref().unwrap(),
            carol_rules.shared.as_ref().unwrap()
        ));
        // Carol mutes a room: her rules are hers alone now.
        let mut value = serde_json::to_value(&carol_rules.ruleset).unwrap();
        value["room"] = json!([{
            "rule_id": "!room:example.org",
            "default": false,
            "enabled": true,
            "actions": [],
        }]);
        rulesets
            .set(carol, &serde_json::from_value(value).unwrap())
            .unwrap();
        let carol_rules = rulesets.get(carol).unwrap();
        assert!(!Arc::ptr_eq(
            bob_rules.shared.as_ref().unwrap(),
            carol_rules.shared.as_ref().unwrap()
        ));
    }
}
