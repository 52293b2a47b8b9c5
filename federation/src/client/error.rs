//! What can go wrong sending a request to another server.

use http::StatusCode;
use serde::Deserialize;

use crate::{discovery::DiscoveryError, error_chain, tls::TlsError};

/// A failed federation request, or a client that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The destination's server name did not resolve to any address.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Connecting, TLS, sending or receiving failed, or the request timed out.
    #[error("transport: {}", error_chain(.0))]
    Transport(reqwest::Error),
    /// The server answered with a non-2xx status. `errcode` and `error` are those of its
    /// Matrix error body, when it sent one.
    #[error("{status}: {} {}", .errcode.as_deref().unwrap_or("(no errcode)"), .error.as_deref().unwrap_or(""))]
    Remote {
        /// The HTTP status.
        status: StatusCode,
        /// The Matrix error code, e.g. `M_FORBIDDEN`.
        errcode: Option<String>,
        /// The human-readable message.
        error: Option<String>,
    },
    /// A 2xx response whose body is not what the endpoint returns, or a body over the size cap.
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The request could not be turned into HTTP (a bug on this side, not the remote's).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client's TLS configuration could not be built (e.g. an unreadable root certificate).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[derive(Deserialize)]
struct MatrixErrorBody {
    errcode: String,
    error: Option<String>,
}

impl ClientError {
    /// [`ClientError::Remote`] for a non-2xx response with this body.
    pub(super) fn remote(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<MatrixErrorBody>(body) {
            Ok(body) => ClientError::Remote {
                status,
                errcode: Some(body.errcode),
                error: body.error,
            },
            Err(_) => ClientError::Remote {
                status,
                errcode: None,
                error: None,
            },
        }
    }

    /// The HTTP status of a [`ClientError::Remote`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the remote server does not know the endpoint (404, or 400/405 with
    /// `M_UNRECOGNIZED`): the sign to try an older version of it.
    pub fn is_unknown_endpoint(&self) -> bool {
        match self.status() {
            Some(StatusCode::NOT_FOUND) => self.errcode().is_none_or(|e| e == "M_UNRECOGNIZED"),
            Some(StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED) => {
                self.errcode() == Some("M_UNRECOGNIZED")
            }
            _ => false,
        }
    }

    /// The Matrix error code of a [`ClientError::Remote`] that had one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            ClientError::Remote { errcode, .. } => errcode.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_error_body_keeps_status_errcode_and_message() {
        let error = ClientError::remote(
            StatusCode::FORBIDDEN,
            br#"{"errcode":"M_FORBIDDEN","error":"not in room"}"#,
        );
        assert_eq!(error.status(), Some(StatusCode::FORBIDDEN));
        assert_eq!(error.errcode(), Some("M_FORBIDDEN"));
        assert_eq!(error.to_string(), "403 Forbidden: M_FORBIDDEN not in room");
    }

    #[test]
    fn any_other_body_keeps_the_status() {
        for body in [
            &b"<html>Bad Gateway</html>"[..],
            b"",
            b"{}",
            b"{\"errcode\":4}",
        ] {
            let error = ClientError::remote(StatusCode::BAD_GATEWAY, body);
            assert_eq!(error.status(), Some(StatusCode::BAD_GATEWAY));
            assert_eq!(error.errcode(), None);
        }
    }
}
