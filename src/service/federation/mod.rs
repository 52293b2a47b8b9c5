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
//! - `presence.rs`: presence EDUs, both ways.
//! - `device_lists.rs`: device and cross-signing key changes, told to local users and
//!   to other servers (`m.device_list_update`, `m.signing_key_update`), and theirs.
//! - `user_keys.rs`: other servers' users' keys, queried and claimed on their servers.
//! - `to_device.rs`: to-device messages, both ways (`m.direct_to_device`).
//!
//! The protocol pieces that need no storage (discovery, the HTTP client, request
//! signing, TLS) live in the `palisade-federation` crate. This module sits above
//! `rooms` (it hands checked events to the room DAG), below the API handlers.

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
