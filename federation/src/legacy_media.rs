//! `GET /_matrix/media/v3/download/{serverName}/{mediaId}`: the deprecated, unauthenticated
//! download through which servers that predate authenticated media (Matrix 1.11) still
//! serve their media to other servers. ruma declares it only in the client API.

use std::time::Duration;

use ruma::{
    OwnedServerName,
    api::{auth_scheme::NoAuthentication, request, response},
    metadata,
};

metadata! {
    method: GET,
    rate_limited: false,
    authentication: NoAuthentication,
    path: "/_matrix/media/v3/download/{server_name}/{media_id}",
}

/// A download of a media id of the server asked.
#[request]
pub struct Request {
    /// The server of the `mxc://` URI.
    #[ruma_api(path)]
    pub server_name: OwnedServerName,
    /// The media id.
    #[ruma_api(path)]
    pub media_id: String,
    /// Always `false`: the server asked serves its own media only.
    #[ruma_api(query)]
    pub allow_remote: bool,
    /// How long the server may wait for an awaited upload.
    #[ruma_api(query)]
    #[serde(with = "ruma::serde::duration::ms")]
    pub timeout_ms: Duration,
}

/// The file (read as a stream by `send_streaming`, never through this type).
#[response]
pub struct Response {
    /// The file's bytes.
    #[ruma_api(raw_body)]
    pub file: Vec<u8>,
}

impl Request {
    /// A download of `media_id` of `server_name` from that server, waiting up to
    /// `timeout` for an awaited upload.
    pub fn new(server_name: OwnedServerName, media_id: String, timeout: Duration) -> Self {
        Self {
            server_name,
            media_id,
            allow_remote: false,
            timeout_ms: timeout,
        }
    }
}
