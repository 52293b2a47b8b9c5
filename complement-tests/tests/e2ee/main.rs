//! End-to-end encryption, black-box, in one test binary:
//! - `keys`: the key plumbing across servers over the raw client API (this server with a
//!   second instance and with Synapse): device keys, claims, to-device messages,
//!   cross-signing keys, devices coming and going, `/keys/changes`, `failures`;
//! - `clients`: encrypted chat between real matrix-js-sdk clients (Rust crypto) on
//!   different servers, through the driver `complement-tests/js/e2ee/chat.mjs`;
//! - `to_device`: to-device inboxes on one server (backlogs, crashes, `*`);
//! - `device_lists`: devices added, renamed and deleted before they have keys.

mod clients;
mod device_lists;
mod keys;
mod to_device;
