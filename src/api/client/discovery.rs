//! Server discovery: versions, well-known and capabilities.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::discovery::{
    discover_homeserver,
    discover_support::{self, Contact},
    get_capabilities, get_supported_versions,
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

/// The unstable feature flags clients gate on, for features this server has (each has
/// a test of the feature): the aliases of a room (MSC2432); cross-signing, which Element
/// Web bootstraps at login only when this flag is set; the rooms shared with a user
/// (MSC2666, both paths); private read receipts (MSC2285, stable since v1.4) and
/// receipts per thread (MSC3771), which older clients send only with these flags;
/// simplified sliding sync (MSC4186), which Element X and matrix-rust-sdk require.
const UNSTABLE_FEATURES: &[&str] = &[
    "org.matrix.simplified_msc3575",
    "org.matrix.msc2432",
    "org.matrix.e2e_cross_signing",
    "org.matrix.msc2285.stable",
    "org.matrix.msc3771",
    "uk.half-shot.msc2666.query_mutual_rooms",
    "uk.half-shot.msc2666.query_mutual_rooms.stable",
];

/// Thread subscriptions (MSC4306) and their changes (MSC4308), where the configuration
/// turns them on: Element X subscribes to threads only when the server says so.
const THREAD_SUBSCRIPTION_FEATURES: &[&str] = &["org.matrix.msc4306", "org.matrix.msc4308"];

/// The spec versions this server speaks. `fuzz/check_versions.py` (run with the fuzz
/// smoke) fails when one of them adds an endpoint this server does not serve and
/// `fuzz/version_gaps.txt` does not list.
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
];

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma_route(versions)
        .ruma_route_json(well_known)
        .ruma_route_json(transports)
        .ruma_route(well_known_server)
        .ruma_route(support)
        .ruma_route_json(capabilities)
}

/// # `GET /.well-known/matrix/server`
///
/// Served on the client listener, which is what answers at `https://server_name/`.
async fn well_known_server(
    services: Arc<Services>,
    _: Ruma<ruma::api::federation::discovery::discover_homeserver::Request>,
) -> Result<ruma::api::federation::discovery::discover_homeserver::Response> {
    let server = services
        .config
        .federation
        .well_known_server
        .clone()
        .filter(|_| services.config.federation.enabled)
        .ok_or_else(|| Error::not_found("No delegation is configured"))?;
    Ok(ruma::api::federation::discovery::discover_homeserver::Response::new(server))
}

/// # `GET /_matrix/client/versions`
async fn versions(
    services: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    let thread_subscriptions = if services.config.push.thread_subscriptions {
        THREAD_SUBSCRIPTION_FEATURES
    } else {
        &[]
    };
    let delayed_events: &[&str] = if services.delayed_events.enabled() {
        &["org.matrix.msc4140"]
    } else {
        &[]
    };
    response.unstable_features = UNSTABLE_FEATURES
        .iter()
        .chain(thread_subscriptions)
        .chain(delayed_events)
        .map(|flag| ((*flag).to_owned(), true))
        .collect();
    Ok(response)
}

/// # `GET /.well-known/matrix/support`
///
/// The help page and contacts of the configuration; 404 when it names neither.
async fn support(
    services: Arc<Services>,
    _: Ruma<discover_support::Request>,
) -> Result<discover_support::Response> {
    let config = &services.config;
    if config.support_page.is_none() && config.support_contacts.is_empty() {
        return Err(Error::not_found("No support information is available"));
    }
    let contacts = config
        .support_contacts
        .iter()
        .filter_map(|contact| {
            let role = contact.role.as_str().into();
            let mut answer = match (&contact.matrix_id, &contact.email_address) {
                (Some(id), _) => Contact::with_matrix_id(role, id.clone()),
                (None, Some(email)) => Contact::with_email_address(role, email.clone()),
                // Nothing to reach them by: not a contact.
                (None, None) => return None,
            };
            answer.email_address = contact.email_address.clone();
            Some(answer)
        })
        .collect();
    let mut response = discover_support::Response::with_contacts(contacts);
    response.support_page = config.support_page.clone();
    Ok(response)
}

/// # `GET /.well-known/matrix/client`
///
/// With this server's identity service (contact discovery) when it is on, and the group
/// call transports (MSC4143) when some are configured.
async fn well_known(
    services: Arc<Services>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<Value> {
    let mut answer = json!({
        "m.homeserver": { "base_url": services.config.client_base_url() },
    });
    if services.identity.enabled() {
        answer["m.identity_server"] = json!({ "base_url": services.config.client_base_url() });
    }
    let transports = rtc_transports(&services);
    if !transports.is_empty() {
        answer["org.matrix.msc4143.rtc_foci"] = Value::Array(transports);
    }
    Ok(answer)
}

/// The group call transports of the configuration (MSC4143).
fn rtc_transports(services: &Services) -> Vec<Value> {
    (services.config.rtc.livekit_service_urls.iter())
        .map(|url| json!({ "type": "livekit", "livekit_service_url": url }))
        .collect()
}

/// # `GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports`
async fn transports(
    services: Arc<Services>,
    _: Ruma<ruma::api::client::rtc::transports::v1::Request>,
) -> Result<Value> {
    Ok(json!({ "rtc_transports": rtc_transports(&services) }))
}

/// # `GET /_matrix/client/v3/capabilities`
///
/// Every capability is written out, also where its value is the spec's default (ruma
/// leaves those out): clients and tools read `m.change_password` and the others as given.
async fn capabilities(
    services: Arc<Services>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<Value> {
    let available: serde_json::Map<String, Value> = crate::service::rooms::ROOM_VERSIONS
        .iter()
        .map(|version| (version.to_string(), Value::from("stable")))
        .collect();
    let threepid_changes = services.threepids.offers(&ruma::thirdparty::Medium::Msisdn)
        || services.threepids.offers(&ruma::thirdparty::Medium::Email);
    Ok(json!({
        "capabilities": {
            "m.room_versions": {
                "default": services.config.default_room_version,
                "available": available,
            },
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            // Phone numbers and email addresses can be added where codes can be sent.
            "m.3pid_changes": { "enabled": threepid_changes },
            "m.get_login_token": { "enabled": true },
        }
    }))
}
