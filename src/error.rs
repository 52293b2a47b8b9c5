//! The one error type. Matrix errors are data (errcode kind, message, status); storage and
//! other infrastructure failures are wrapped and shown to clients as `M_UNKNOWN` without
//! their internals. [`Error::into_response`] is the only place errors become HTTP.

use std::{borrow::Cow, time::Duration};

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponseExt,
    client::uiaa::UiaaInfo,
    error::{
        ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody,
        UnknownTokenErrorData,
    },
};

use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error the client is meant to see, with the spec's errcode and status.
    #[error("{status} {kind:?}: {message}")]
    Matrix {
        kind: ErrorKind,
        message: Cow<'static, str>,
        status: StatusCode,
    },
    /// User-interactive authentication is required (401 with the flows).
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),
    /// An error answered with exactly this body ([`Error::custom`]).
    #[error("{status} {body}")]
    Body {
        status: StatusCode,
        body: Box<serde_json::Value>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An error of the given kind, with the status the spec gives that kind.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        let status = default_status(&kind);
        Self::Matrix {
            kind,
            message: message.into(),
            status,
        }
    }

    pub fn with_status(self, status: StatusCode) -> Self {
        match self {
            Self::Matrix { kind, message, .. } => Self::Matrix {
                kind,
                message,
                status,
            },
            other => other,
        }
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn bad_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }

    pub fn unknown_token(soft_logout: bool) -> Self {
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = soft_logout;
        Self::new(
            ErrorKind::UnknownToken(data),
            "Unknown or expired access token",
        )
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(ErrorKind::LimitExceeded(data), "Too many requests")
    }

    /// An error whose errcode ruma has no kind for (`M_SESSION_EXPIRED`,
    /// `M_TERMS_NOT_SIGNED`), or whose body carries fields beside `errcode` and `error`
    /// (an unstable proposal's), answered as written.
    pub fn custom(
        status: StatusCode,
        errcode: &str,
        message: impl Into<String>,
        extra: serde_json::Value,
    ) -> Self {
        let mut body = serde_json::json!({ "errcode": errcode, "error": message.into() });
        if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        Self::Body {
            status,
            body: Box::new(body),
        }
    }

    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(ErrorKind::Unrecognized, "Unrecognized request").with_status(status)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }

    /// The errcode kind, if this is a Matrix error.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// The HTTP status the spec pairs with each errcode.
fn default_status(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Forbidden | ErrorKind::GuestAccessForbidden | ErrorKind::ThreepidDenied => {
            StatusCode::FORBIDDEN
        }
        ErrorKind::UnknownToken(_) | ErrorKind::MissingToken | ErrorKind::Unauthorized => {
            StatusCode::UNAUTHORIZED
        }
        ErrorKind::NotFound | ErrorKind::Unrecognized => StatusCode::NOT_FOUND,
        ErrorKind::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::CannotOverwriteMedia => StatusCode::CONFLICT,
        ErrorKind::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::RoomInUse | ErrorKind::UserInUse | ErrorKind::Exclusive => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let result = match self {
            Self::Matrix {
                kind,
                message,
                status,
            } => ruma::api::error::Error::new(
                status,
                ErrorBody::Standard(StandardErrorBody::new(kind, message.into_owned())),
            )
            .try_into_http_response::<Vec<u8>>(),
            Self::Uiaa(info) => return uiaa_response(&info),
            Self::Body { status, body } => return (status, axum::Json(*body)).into_response(),
            Self::Storage(error) => {
                tracing::error!(%error, "storage error");
                return internal_response();
            }
            Self::Internal(error) => {
                tracing::error!(%error, "internal error");
                return internal_response();
            }
        };
        match result {
            Ok(response) => response.map(axum::body::Body::from),
            Err(error) => {
                tracing::error!(%error, "could not serialize an error response");
                internal_response()
            }
        }
    }
}

/// The 401 that asks for (more) user-interactive authentication. ruma leaves out an
/// empty `completed`; clients and tools read it on every answer, so it is always there.
fn uiaa_response(info: &UiaaInfo) -> Response {
    let Ok(mut body) = serde_json::to_value(info) else {
        return internal_response();
    };
    if let Some(object) = body.as_object_mut() {
        object
            .entry("completed")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    }
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

fn internal_response() -> Response {
    let body = r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#;
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
