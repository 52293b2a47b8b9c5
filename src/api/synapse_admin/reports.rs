//! Synapse's event reports admin API (`/_synapse/admin/v1/event_reports`), so the
//! moderation tools built for it (synapse-admin, scripts) list, read and close the
//! reports users file.

use std::sync::Arc;

use axum::{
    Router,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    response::Response,
    routing::get,
};
use http::{HeaderMap, Uri};
use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{answer, param, require_admin};
use crate::{
    Error, Result,
    service::{
        Services,
        reports::{EventReportQuery, Filed, Reported},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/event_reports", get(list))
        .route(
            "/_synapse/admin/v1/event_reports/{report_id}",
            get(one).delete(close),
        )
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    from: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    dir: Option<String>,
    user_id: Option<OwnedUserId>,
    room_id: Option<OwnedRoomId>,
}

fn default_limit() -> usize {
    100
}

/// # `GET /_synapse/admin/v1/event_reports`
///
/// Newest first unless `dir=f`; `from` is an offset, `next_token` the next one while
/// there are more.
async fn list(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let Query(query) = param(query)?;
            let oldest_first = match query.dir.as_deref() {
                None | Some("b") => false,
                Some("f") => true,
                Some(_) => return Err(Error::invalid_param("dir must be f or b")),
            };
            let (reports, total) = services.reports.event_reports(&EventReportQuery {
                reporter: query.user_id,
                room_id: query.room_id,
                oldest_first,
                from: query.from,
                limit: query.limit,
            })?;
            let next = query.from + reports.len();
            let reports = reports
                .iter()
                .map(|filed| described(&services, filed, false))
                .collect::<Result<Vec<_>>>()?;
            let mut body = json!({ "event_reports": reports, "total": total });
            if next < total {
                body["next_token"] = json!(next);
            }
            Ok(body)
        }
        .await,
    )
}

/// # `GET /_synapse/admin/v1/event_reports/{reportId}`: one report, with the event.
async fn one(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let filed = event_report(&services, param(path)?)?;
            described(&services, &filed, true)
        }
        .await,
    )
}

/// # `DELETE /_synapse/admin/v1/event_reports/{reportId}`: the report is dealt with.
async fn close(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    answer(
        async {
            require_admin(&services, &headers, &uri)?;
            let filed = event_report(&services, param(path)?)?;
            services.reports.delete(filed.id)?;
            Ok(json!({}))
        }
        .await,
    )
}

/// The event report a path names: a number, of a report of an event.
fn event_report(services: &Services, Path(id): Path<String>) -> Result<Filed> {
    let id: u64 = id
        .parse()
        .map_err(|_| Error::invalid_param("The report id must be a positive integer"))?;
    match services.reports.get(id)? {
        Some(filed) if matches!(filed.report.reported, Reported::Event { .. }) => Ok(filed),
        _ => Err(Error::not_found("No such event report")),
    }
}

/// A report as Synapse describes it: the room's name and canonical alias, the event's
/// sender, and with `full` the event itself.
fn described(services: &Services, filed: &Filed, full: bool) -> Result<Value> {
    let Reported::Event { room_id, event_id } = &filed.report.reported else {
        return Err(Error::internal("not an event report"));
    };
    let text = |kind: &str, field: &str| -> Result<Value> {
        Ok(services
            .rooms
            .state_content(room_id, kind, "")?
            .and_then(|content| content.get(field).cloned())
            .unwrap_or(Value::Null))
    };
    let event = services.rooms.raw_pdu(event_id)?;
    let event: Option<Value> = event
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(Error::internal)?;
    let sender = event
        .as_ref()
        .and_then(|event| event.get("sender").cloned())
        .unwrap_or(Value::Null);
    let mut body = json!({
        "id": filed.id,
        "received_ts": filed.report.received_at,
        "room_id": room_id,
        "event_id": event_id,
        "user_id": filed.report.reporter,
        "reason": filed.report.reason,
        "score": null,
        "sender": sender,
        "name": text("m.room.name", "name")?,
        "canonical_alias": text("m.room.canonical_alias", "alias")?,
    });
    if full {
        body["event_json"] = event.unwrap_or(Value::Null);
    }
    Ok(body)
}
