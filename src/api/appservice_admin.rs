//! Registering application services at run time, for server administrators:
//! `/_palisade/admin/v1/appservices`. A registration is the YAML (or JSON) a bridge
//! generates, as the configuration's files hold it; those of the files change only there.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State, rejection::PathRejection},
    response::Response,
    routing::get,
};
use http::{HeaderMap, Uri};
use palisade_appservice::Appservice;
use serde_json::{Value, json};

use super::synapse_admin::{answer, param, require_admin};
use crate::{Error, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_palisade/admin/v1/appservices", get(list))
        .route(
            "/_palisade/admin/v1/appservices/{id}",
            get(one).put(put).delete(remove),
        )
}

/// What the API shows of a registration: never its tokens.
fn describe(services: &Services, service: &Appservice) -> Value {
    let registration = &service.registration;
    let namespaces = |list: &[ruma::api::appservice::Namespace]| {
        list.iter()
            .map(|namespace| json!({ "regex": namespace.regex, "exclusive": namespace.exclusive }))
            .collect::<Vec<_>>()
    };
    json!({
        "id": registration.id,
        "url": registration.url,
        "sender_localpart": registration.sender_localpart,
        "namespaces": {
            "users": namespaces(&registration.namespaces.users),
            "aliases": namespaces(&registration.namespaces.aliases),
            "rooms": namespaces(&registration.namespaces.rooms),
        },
        "protocols": registration.protocols,
        "rate_limited": registration.rate_limited,
        "receive_ephemeral": service.receives_ephemeral,
        "source": if services.appservices.is_configured(&registration.id) { "config" } else { "admin" },
    })
}

/// # `GET /_palisade/admin/v1/appservices`
async fn list(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let registry = services.appservices.current();
            let all: Vec<Value> = (registry.registered.iter())
                .map(|service| describe(&services, service))
                .collect();
            Ok(json!({ "appservices": all }))
        }
        .await,
    )
}

/// # `GET /_palisade/admin/v1/appservices/{id}`
async fn one(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let Path(id) = param(id)?;
            let service = (services.appservices.by_id(&id))
                .ok_or_else(|| Error::not_found("No application service has this id"))?;
            Ok(describe(&services, &service))
        }
        .await,
    )
}

/// # `PUT /_palisade/admin/v1/appservices/{id}`
///
/// The body is the registration; its `id` must be the path's. Its own user is made if
/// missing, and its deliveries start.
async fn put(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    id: std::result::Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let Path(id) = param(id)?;
            let text = std::str::from_utf8(&body)
                .map_err(|_| Error::invalid_param("The registration must be UTF-8 text"))?;
            let service = services.appservices.put(&id, text)?;
            services.appservices.create_senders(
                &services.config.server_name,
                &services.users,
                &services.push.rules,
            )?;
            Ok(describe(&services, &service))
        }
        .await,
    )
}

/// # `DELETE /_palisade/admin/v1/appservices/{id}`
///
/// Its deliveries stop and its queue is dropped; its users stay.
async fn remove(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let Path(id) = param(id)?;
            if !services.appservices.remove(&id)? {
                return Err(Error::not_found("No application service has this id"));
            }
            Ok(json!({}))
        }
        .await,
    )
}
