//! Incoming transactions.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::transactions::send_transaction_message;

use crate::{
    Error, Result,
    router::{Ruma, RumaRouter},
    service::{Services, federation::receive},
    storage::{Keyspace, codec::Key},
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
    let key = Key::new()
        .str(origin.as_str())
        .str(body.transaction_id.as_str());
    if services
        .db
        .contains(Keyspace::FederationTxns, key.bytes())?
    {
        return Ok(send_transaction_message::v1::Response::new(
            Default::default(),
        ));
    }
    let results = receive::receive_pdus(&services, &origin, &body.pdus).await;
    receive::receive_edus(&services, &origin, &body.edus);
    let mut batch = services.db.batch();
    batch.put(Keyspace::FederationTxns, key, Vec::new());
    services.db.write(batch)?;
    Ok(send_transaction_message::v1::Response::new(results))
}
