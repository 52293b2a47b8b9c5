//! The server-server API pieces: this server's signing key, its published key document and
//! signing of events and JSON with it; finding other servers (server name resolution); the
//! client that sends them signed requests; and the TLS configuration of the federation
//! listener.
//!
//! The crate knows nothing of storage or of the server: callers hand it a key and options.

#![warn(missing_docs)]

mod body;
pub mod client;
pub mod discovery;
pub mod legacy_media;
pub mod signing_key;
pub mod tls;
pub mod v1;

pub use client::{ClientError, ClientOptions, FederationClient};
pub use signing_key::{KeyError, SigningKey};

/// The `User-Agent` of outgoing requests.
const USER_AGENT: &str = concat!("Palisade/", env!("CARGO_PKG_VERSION"));

/// An error with its causes, `outer: inner: innermost` (reqwest's own message names only the
/// outermost, e.g. "error sending request", not "connection refused").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
