//! Incoming transactions.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::transactions::send_transaction_message;

use crate::{
    Error, Result,
    api::{Ruma, RumaRouter},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_route(send_transaction)
}

/// # `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction(
    services: Arc<Services>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    let origin = request.origin()?.to_owned();
    let body = request.body;
    if body.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the signer",
        ));
    }
    if body.pdus.len() > 50 || body.edus.len() > 100 {
        return Err(Error::bad_json(
            "At most 50 PDUs and 100 EDUs per transaction",
        ));
    }
    let results = services
        .federation
        .receiver
        .receive_transaction(&origin, &body.transaction_id, &body.pdus, &body.edus)
        .await?;
    Ok(send_transaction_message::v1::Response::new(results))
}
