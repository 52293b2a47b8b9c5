//! Push rules and pushers. The rules live in the user's `m.push_rules` account data
//! (which is how clients also receive them in `/sync`), seeded with the spec's default
//! ruleset at registration.

use std::sync::Arc;

use axum::{Router, response::IntoResponse, routing::any};
use ruma::{
    UserId,
    api::client::push::{
        delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions,
        get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pusher,
        set_pushrule, set_pushrule_actions, set_pushrule_enabled,
    },
    push::RuleKind,
    push::Ruleset,
};
use serde_json::{Map, Value};

use crate::service::{
    push::counts::current_read_marks,
    rooms::{pdu::ClientFormat, visibility::Viewer},
};
use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = router
        .ruma_route(all_rules)
        .ruma_route(global_rules)
        .ruma_route_json(kind_rules)
        .ruma_route(rule)
        .ruma_route_prepared(set_rule, default_conditions)
        .ruma_route(delete_rule)
        .ruma_route(rule_enabled)
        .ruma_route(set_rule_enabled)
        .ruma_route(rule_actions)
        .ruma_route(set_rule_actions)
        .ruma_route(pushers)
        .ruma_route(notifications)
        .ruma_route(set_pusher);
    // A scope other than `global` (the only one) is a malformed request, as on Synapse;
    // `global` paths are matched first.
    ["r0", "v3"].into_iter().fold(router, |router, version| {
        router.route(
            &format!("/_matrix/client/{version}/pushrules/{{scope}}/{{*rest}}"),
            any(|| async { Error::invalid_param("Unknown push rule scope").into_response() }),
        )
    })
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/`, which ruma has no type for.
mod get_pushrules_kind {
    use ruma::{
        api::{auth_scheme::AccessToken, request, response},
        metadata,
        push::RuleKind,
    };

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/pushrules/global/{kind}/",
            1.1 => "/_matrix/client/v3/pushrules/global/{kind}/",
        }
    }

    /// The kind of rules to list.
    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub kind: RuleKind,
    }

    /// Unused: the handler answers with its own JSON.
    #[response]
    pub struct Response {}
}

/// A rule kind the spec defines (and MSC4306's `postcontent` where thread subscriptions
/// are on); any other is a malformed path (400, as on Synapse, with the spec's generic
/// `M_INVALID_PARAM`), not a rule that is missing.
fn known_kind(services: &Services, kind: &RuleKind) -> Result<()> {
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        RuleKind::PostContent if services.config.push.thread_subscriptions => Ok(()),
        _ => Err(Error::invalid_param("Unknown push rule kind")),
    }
}

/// The key of a kind's rules in a ruleset's JSON.
fn kind_key(kind: &RuleKind) -> &str {
    match kind {
        RuleKind::PostContent => "postcontent",
        other => other.as_str(),
    }
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/`
async fn kind_rules(
    services: Arc<Services>,
    request: Ruma<get_pushrules_kind::Request>,
) -> Result<Value> {
    known_kind(&services, &request.body.kind)?;
    let ruleset =
        serde_json::to_value(load(&services, request.user_id()?)?).map_err(Error::internal)?;
    Ok(ruleset
        .get(kind_key(&request.body.kind))
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new())))
}

fn load(services: &Services, user_id: &UserId) -> Result<Ruleset> {
    Ok(services.push.rules.get(user_id)?.ruleset.clone())
}

fn save(services: &Services, user_id: &UserId, ruleset: &Ruleset) -> Result<()> {
    services.push.rules.set(user_id, ruleset)
}

fn not_found() -> Error {
    Error::not_found("No such push rule")
}

/// # `GET /_matrix/client/v3/pushrules/`
async fn all_rules(
    services: Arc<Services>,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(load(
        &services,
        request.user_id()?,
    )?))
}

/// # `GET /_matrix/client/v3/pushrules/global/`
async fn global_rules(
    services: Arc<Services>,
    request: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(load(
        &services,
        request.user_id()?,
    )?))
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn rule(
    services: Arc<Services>,
    request: Ruma<get_pushrule::v3::Request>,
) -> Result<get_pushrule::v3::Response> {
    known_kind(&services, &request.body.kind)?;
    let ruleset = load(&services, request.user_id()?)?;
    let rule = ruleset
        .get(request.body.kind.clone(), &request.body.rule_id)
        .ok_or_else(not_found)?;
    Ok(get_pushrule::v3::Response::new(rule.into()))
}

/// The spec's `conditions` are optional ("a rule with no conditions always matches");
/// ruma requires them of `override` and `underride` rules, and the others ignore them.
fn default_conditions(body: &mut Map<String, Value>, _: &[&str]) -> Result<()> {
    body.entry("conditions")
        .or_insert_with(|| Value::Array(Vec::new()));
    Ok(())
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn set_rule(
    services: Arc<Services>,
    request: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let user_id = request.user_id()?.to_owned();
    if matches!(request.body.rule, ruma::push::NewPushRule::PostContent(_)) {
        known_kind(&services, &RuleKind::PostContent)?;
    }
    let mut ruleset = load(&services, &user_id)?;
    let body = request.body;
    ruleset
        .insert(body.rule, body.after.as_deref(), body.before.as_deref())
        .map_err(|error| match error {
            ruma::push::InsertPushRuleError::UnknownRuleId => not_found(),
            other => Error::bad_json(other.to_string()),
        })?;
    save(&services, &user_id, &ruleset)?;
    Ok(set_pushrule::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_rule(
    services: Arc<Services>,
    request: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    known_kind(&services, &request.body.kind)?;
    let user_id = request.user_id()?;
    let mut ruleset = load(&services, user_id)?;
    ruleset
        .remove(request.body.kind.clone(), &request.body.rule_id)
        .map_err(|error| match error {
            ruma::push::RemovePushRuleError::NotFound => not_found(),
            other => Error::bad_json(other.to_string()),
        })?;
    save(&services, user_id, &ruleset)?;
    Ok(delete_pushrule::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn rule_enabled(
    services: Arc<Services>,
    request: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    known_kind(&services, &request.body.kind)?;
    let ruleset = load(&services, request.user_id()?)?;
    let rule = ruleset
        .get(request.body.kind.clone(), &request.body.rule_id)
        .ok_or_else(not_found)?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn set_rule_enabled(
    services: Arc<Services>,
    request: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    known_kind(&services, &request.body.kind)?;
    let user_id = request.user_id()?;
    let mut ruleset = load(&services, user_id)?;
    ruleset
        .set_enabled(
            request.body.kind.clone(),
            &request.body.rule_id,
            request.body.enabled,
        )
        .map_err(|_| not_found())?;
    save(&services, user_id, &ruleset)?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn rule_actions(
    services: Arc<Services>,
    request: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    known_kind(&services, &request.body.kind)?;
    let ruleset = load(&services, request.user_id()?)?;
    let rule = ruleset
        .get(request.body.kind.clone(), &request.body.rule_id)
        .ok_or_else(not_found)?;
    Ok(get_pushrule_actions::v3::Response::new(
        rule.actions().to_vec(),
    ))
}

/// # `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn set_rule_actions(
    services: Arc<Services>,
    request: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    known_kind(&services, &request.body.kind)?;
    let user_id = request.user_id()?;
    let mut ruleset = load(&services, user_id)?;
    ruleset
        .set_actions(
            request.body.kind.clone(),
            &request.body.rule_id,
            request.body.actions.clone(),
        )
        .map_err(|_| not_found())?;
    save(&services, user_id, &ruleset)?;
    Ok(set_pushrule_actions::v3::Response::new())
}

/// # `GET /_matrix/client/v3/pushers`
async fn pushers(
    services: Arc<Services>,
    request: Ruma<get_pushers::v3::Request>,
) -> Result<get_pushers::v3::Response> {
    Ok(get_pushers::v3::Response::new(
        services.push.pushers.list(request.user_id()?)?,
    ))
}

/// # `POST /_matrix/client/v3/pushers/set`
async fn set_pusher(
    services: Arc<Services>,
    request: Ruma<set_pusher::v3::Request>,
) -> Result<set_pusher::v3::Response> {
    let user_id = request.user_id()?;
    match &request.body.action {
        set_pusher::v3::PusherAction::Post(data) => {
            check_pusher(&data.pusher)?;
            let device = request.sender()?.device()?;
            let from = services.stream.frontier();
            services
                .push
                .pushers
                .set(user_id, device, &data.pusher, data.append, from)?;
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            services
                .push
                .pushers
                .remove(user_id, &ids.app_id, &ids.pushkey)?;
        }
        _ => return Err(Error::bad_json("Unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

/// An HTTP pusher needs the URL of a push gateway's notify endpoint.
fn check_pusher(pusher: &ruma::api::client::push::Pusher) -> Result<()> {
    if let ruma::api::client::push::PusherKind::Http(data) = &pusher.kind {
        let url = url::Url::parse(&data.url)
            .map_err(|_| Error::invalid_param("The pusher's url is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_param(
                "The pusher's url must be http or https",
            ));
        }
        if url.path() != "/_matrix/push/v1/notify" {
            return Err(Error::invalid_param(
                "The pusher's url must end in /_matrix/push/v1/notify",
            ));
        }
    }
    Ok(())
}

/// Notifications per page when the client names no limit, and the most it may ask.
const NOTIFICATIONS_DEFAULT: u64 = 20;
const NOTIFICATIONS_MOST: u64 = 100;

/// # `GET /_matrix/client/v3/notifications`
///
/// The events that notified the user, newest first, as stored when each was written.
/// `from` is the `next_token` of the page before.
async fn notifications(
    services: Arc<Services>,
    request: Ruma<get_notifications::v3::Request>,
) -> Result<get_notifications::v3::Response> {
    let sender = request.sender()?;
    let user = &sender.user_id;
    let body = &request.body;
    let before = match body.from.as_deref() {
        Some(from) => from
            .parse::<u64>()
            .map_err(|_| Error::invalid_param("Invalid from token"))?,
        None => u64::MAX,
    };
    let limit = body
        .limit
        .map_or(NOTIFICATIONS_DEFAULT, u64::from)
        .clamp(1, NOTIFICATIONS_MOST) as usize;
    let only_highlight = body.only.as_deref() == Some("highlight");
    let found =
        services
            .push
            .counts
            .notifications(&services.rooms, user, before, limit, only_highlight)?;
    let next_token = (found.len() >= limit)
        .then(|| found.last().map(|(position, _)| position.to_string()))
        .flatten();
    let mut viewer = Viewer::new(&services.rooms, user, sender.device_id.as_deref());
    let mut marks = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (position, notification) in found {
        let Some((_, event)) = viewer.event(&notification.event_id, ClientFormat::Sync)? else {
            continue;
        };
        let room_id = notification.room_id.clone();
        if !marks.contains_key(&room_id) {
            let read = current_read_marks(&services.rooms, &services.receipts, &room_id, user)?;
            marks.insert(room_id.clone(), read);
        }
        let read = marks
            .get(&room_id)
            .is_some_and(|marks| marks.is_read(notification.thread.as_deref(), position));
        let entry = get_notifications::v3::Notification::new(
            notification.actions,
            event.into_raw(),
            read,
            room_id,
            ruma::MilliSecondsSinceUnixEpoch(ruma::UInt::new(notification.ts).unwrap_or_default()),
        );
        out.push(entry);
    }
    let mut response = get_notifications::v3::Response::new(out);
    response.next_token = next_token;
    Ok(response)
}
