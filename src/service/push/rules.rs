//! Push rules: each user's ruleset lives in their `m.push_rules` account data (which is
//! also how clients receive it in `/sync`), seeded with the spec's defaults. Evaluation
//! is ruma's, once per member when an event is written (`actions.rs`).

use std::{num::NonZeroUsize, sync::Arc};

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

/// A user's rules (the defaults if none are stored).
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
pub fn default_ruleset(user: &UserId) -> Ruleset {
    let mut value = serde_json::to_value(Ruleset::server_default(user)).unwrap_or_default();
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

/// Each user's ruleset, parsed once and kept until they change it.
pub struct Rulesets {
    account_data: Arc<AccountData>,
    parsed: Mutex<LruCache<OwnedUserId, Arc<Ruleset>>>,
}

/// Users whose parsed rulesets are kept.
const RULESETS_KEPT: usize = 10_000;

impl Rulesets {
    pub fn new(account_data: Arc<AccountData>) -> Self {
        Self {
            account_data,
            parsed: Mutex::new(LruCache::new(
                NonZeroUsize::new(RULESETS_KEPT).expect("not zero"),
            )),
        }
    }

    /// A user's rules (the defaults if none are stored).
    pub fn get(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(ruleset) = self.parsed.lock().get(user) {
            return Ok(ruleset.clone());
        }
        let ruleset = Arc::new(load(&self.account_data, user)?);
        self.parsed.lock().put(user.to_owned(), ruleset.clone());
        Ok(ruleset)
    }

    /// Stores a user's rules (clients see them in their account data).
    pub fn set(&self, user: &UserId, ruleset: &Ruleset) -> Result<()> {
        save(&self.account_data, user, ruleset)?;
        self.parsed.lock().pop(user);
        Ok(())
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

    /// The conditions' context for one member.
    pub fn for_user(
        &self,
        room_id: &RoomId,
        user: &UserId,
        display_name: String,
    ) -> PushConditionRoomCtx {
        let mut context = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::new(self.member_count).unwrap_or_default(),
            user.to_owned(),
            display_name,
        );
        context.power_levels = Some(self.power_levels.clone());
        context
    }
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
        // Only thread-subscription conditions wait on anything, and this server
        // evaluates none, so every rule answers at once.
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
