//! The server-server API pieces: this server's signing key, its published key document and
//! signing of events and JSON with it; and the TLS configuration of the federation listener.

#![warn(missing_docs)]

pub mod signing_key;
pub mod tls;

pub use signing_key::SigningKey;
