//! The server-server API pieces: this server's signing key, its published key document,
//! and signing of events and JSON with it.

#![warn(missing_docs)]

pub mod signing_key;

pub use signing_key::SigningKey;
