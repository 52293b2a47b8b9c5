//! Federation: talking to other homeservers over the server-server API.
//!
//! - `keys.rs`: other servers' signing keys (fetched, checked, stored; notary answers)
//!   and the check of a request's `X-Matrix` signature.
//! - `queue.rs`: what is to be sent to each server, persisted with the change that
//!   produced it; `sender.rs` sends it as transactions, in order, with backoff.
//! - `pdu.rs`: the checks of a received PDU (format, signatures, content hash).
//! - `receive.rs`: incoming transactions (PDUs with their missing ancestors, EDUs).
//! - `join.rs`: joining (and leaving) a room through another server.
//! - `invite.rs`: invites across servers, both ways.
//! - `presence.rs`: presence EDUs, both ways, and the presence timeouts.
//! - `device_lists.rs`: device and cross-signing key changes, told to local users and
//!   to other servers (`m.device_list_update`, `m.signing_key_update`), and theirs.
//! - `user_keys.rs`: other servers' users' keys, queried and claimed on their servers.
//! - `to_device.rs`: to-device messages, both ways (`m.direct_to_device`).
//!
//! Each part is a struct built once at start (`Federation::new`) with the handles it
//! uses.
//!
//! The protocol pieces that need no storage (discovery, the HTTP client, request
//! signing, TLS) live in the `palisade-federation` crate. This module sits above
//! `rooms` (it hands checked events to the room DAG), below the API handlers.

mod backfill;
pub mod device_lists;
pub mod invite;
pub mod join;
pub mod keys;
pub mod pdu;
pub mod presence;
pub mod queue;
pub mod receive;
pub mod sender;
pub mod to_device;
pub mod user_keys;

use std::sync::Arc;

use palisade_federation::{FederationClient, SigningKey};

use self::{
    device_lists::DeviceLists, join::Memberships, keys::ServerKeys, presence::PresenceRelay,
    queue::OutgoingQueue, receive::Receiver, sender::Sender, to_device::ToDeviceRelay,
    user_keys::UserKeys,
};
use crate::{
    config::Config,
    service::{
        e2ee::E2ee, presence::Presence, receipts::Receipts, rooms::Rooms, stream::Stream,
        to_device::ToDevice, typing::Typing, users::Users,
    },
    storage::Db,
};

/// The federation services.
pub struct Federation {
    pub memberships: Memberships,
    pub receiver: Receiver,
    pub device_lists: Arc<DeviceLists>,
    pub presence: Arc<PresenceRelay>,
    pub to_device: Arc<ToDeviceRelay>,
    pub user_keys: UserKeys,
    pub sender: Arc<Sender>,
}

/// The handles the federation services are built from.
pub struct Handles {
    pub db: Arc<Db>,
    pub signing_key: Arc<SigningKey>,
    pub client: Arc<FederationClient>,
    pub keys: Arc<ServerKeys>,
    pub outgoing: Arc<OutgoingQueue>,
    pub stream: Arc<Stream>,
    pub rooms: Arc<Rooms>,
    pub users: Arc<Users>,
    pub e2ee: Arc<E2ee>,
    pub presence: Arc<Presence>,
    pub to_device: Arc<ToDevice>,
    pub typing: Arc<Typing>,
    pub receipts: Arc<Receipts>,
    pub delivery: Arc<crate::service::delivery::Delivery>,
}

impl Federation {
    /// Builds each part with what it uses.
    pub fn new(config: &Config, handles: Handles) -> Self {
        let server_name = config.server_name.clone();
        let device_lists = Arc::new(DeviceLists {
            db: handles.db.clone(),
            e2ee: handles.e2ee.clone(),
            users: handles.users.clone(),
            rooms: handles.rooms.clone(),
            stream: handles.stream,
            outgoing: handles.outgoing.clone(),
        });
        let presence = Arc::new(PresenceRelay {
            presence: handles.presence,
            rooms: handles.rooms.clone(),
            outgoing: handles.outgoing.clone(),
            told: Default::default(),
        });
        let to_device = Arc::new(ToDeviceRelay {
            server_name: server_name.clone(),
            users: handles.users.clone(),
            to_device: handles.to_device,
            outgoing: handles.outgoing.clone(),
        });
        Self {
            memberships: Memberships {
                server_name: server_name.clone(),
                enabled: config.federation.enabled,
                signing_key: handles.signing_key,
                client: handles.client.clone(),
                keys: handles.keys.clone(),
                rooms: handles.rooms.clone(),
                users: handles.users,
            },
            receiver: Receiver {
                db: handles.db,
                client: handles.client.clone(),
                keys: handles.keys,
                rooms: handles.rooms.clone(),
                typing: handles.typing,
                receipts: handles.receipts,
                delivery: handles.delivery,
                presence: presence.clone(),
                device_lists: device_lists.clone(),
                to_device: to_device.clone(),
            },
            user_keys: UserKeys {
                enabled: config.federation.enabled,
                client: handles.client.clone(),
                rooms: handles.rooms.clone(),
                e2ee: handles.e2ee,
            },
            sender: Arc::new(Sender::new(
                server_name,
                handles.client,
                handles.outgoing,
                handles.rooms,
            )),
            device_lists,
            presence,
            to_device,
        }
    }
}
