//! Push rules: each user's ruleset lives in their `m.push_rules` account data (which is
//! also how clients receive it in `/sync`), seeded with the spec's defaults. Evaluation
//! is ruma's.

use ruma::events::room::member::MembershipState;
use ruma::{
    Int, OwnedUserId, RoomId, UInt, UserId,
    events::AnySyncTimelineEvent,
    power_levels::NotificationPowerLevels,
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomPowerLevelsRules,
    serde::Raw,
};
use serde_json::Value;

use crate::{
    Result,
    service::{
        account_data::AccountData,
        rooms::{Rooms, pdu::ClientEvent},
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

/// What one event means for one user: whether it notifies and whether it highlights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub notify: bool,
    pub highlight: bool,
}

/// Evaluates events of one room for one user.
pub struct Evaluator {
    ruleset: Ruleset,
    context: PushConditionRoomCtx,
}

impl Evaluator {
    /// Gathers what the rules need to know about the room: members, the user's display
    /// name there, and who may notify the whole room.
    pub fn new(
        rooms: &Rooms,
        account_data: &AccountData,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Self> {
        let state = rooms.current_state(room_id)?;
        let member_count = rooms.members_with(room_id, MembershipState::Join)?.len() as u64;
        let display_name = rooms
            .content_in(&state, "m.room.member", user.as_str())?
            .and_then(|content| {
                content
                    .get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| user.localpart().to_owned());
        let mut context = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::new(member_count).unwrap_or_default(),
            user.to_owned(),
            display_name,
        );
        context.power_levels = Some(power_levels(rooms, room_id, &state)?);
        Ok(Self {
            ruleset: load(account_data, user)?,
            context,
        })
    }

    /// The outcome of one event, given in the client format.
    pub async fn evaluate(&self, event: &ClientEvent) -> Outcome {
        let raw: Raw<AnySyncTimelineEvent> = Raw::from_json(event.json.clone());
        let actions = self.ruleset.get_actions(&raw, &self.context).await;
        Outcome {
            notify: actions
                .iter()
                .any(|action| matches!(action, Action::Notify)),
            highlight: actions.iter().any(Action::is_highlight),
        }
    }
}

fn power_levels(
    rooms: &Rooms,
    room_id: &RoomId,
    state: &crate::service::rooms::state::StateMap,
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
