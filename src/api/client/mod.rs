//! The client-server API.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod appservice;
pub mod delayed_events;
pub mod device;
pub mod directory;
pub mod discovery;
pub mod encryption;
pub mod ephemeral;
pub mod events;
pub mod filter;
pub mod key_backup;
pub mod media;
pub mod members;
pub mod membership;
pub mod message;
pub mod mutual_rooms;
pub mod pagination;
pub mod peeking;
pub mod presence;
pub mod profile;
pub mod push;
pub mod register;
pub mod relations;
pub mod report;
pub mod room;
pub mod search;
pub mod session;
pub mod spaces;
pub mod state;
pub mod sync;
pub mod thirdparty;
pub mod thread_subscriptions;
pub mod threepid;
pub mod to_device;
pub mod uia;
pub mod user_directory;
pub mod voip;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = discovery::routes(router);
    let router = register::routes(router);
    let router = session::routes(router);
    let router = device::routes(router);
    let router = account::routes(router);
    let router = admin::routes(router);
    let router = appservice::routes(router);
    let router = profile::routes(router);
    let router = account_data::routes(router);
    let router = filter::routes(router);
    let router = push::routes(router);
    let router = user_directory::routes(router);
    let router = mutual_rooms::routes(router);
    let router = room::routes(router);
    let router = message::routes(router);
    let router = report::routes(router);
    let router = pagination::routes(router);
    let router = relations::routes(router);
    let router = thread_subscriptions::routes(router);
    let router = threepid::routes(router);
    let router = search::routes(router);
    let router = peeking::routes(router);
    let router = state::routes(router);
    let router = members::routes(router);
    let router = membership::routes(router);
    let router = directory::routes(router);
    let router = spaces::routes(router);
    let router = voip::routes(router);
    let router = delayed_events::routes(router);
    let router = ephemeral::routes(router);
    let router = presence::routes(router);
    let router = thirdparty::routes(router);
    let router = encryption::routes(router);
    let router = to_device::routes(router);
    let router = key_backup::routes(router);
    let router = media::routes(router);
    sync::routes(router)
}
