//! Calls to an application service (the application service API): transactions, user
//! and alias queries, pings and third-party lookups, each authenticated with the
//! registration's `hs_token` as a bearer token.

use std::time::Duration;

use serde_json::Value;

use crate::Registration;

/// Why a call to an application service did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The registration has no URL (`url: null`): it receives nothing.
    #[error("the application service has no URL")]
    NoUrl,
    /// No answer: connection refused, a broken response.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
    /// An answer other than 200.
    #[error("answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl CallError {
    /// Whether the service answered 404 (an unknown user or alias, an unknown protocol).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

/// An HTTP client for application services, shared by all of them.
pub struct AppserviceClient {
    http: reqwest::Client,
}

impl AppserviceClient {
    /// Wraps a client built by the server (its TLS roots, no proxy).
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// `PUT /_matrix/app/v1/transactions/{txnId}`.
    pub async fn put_transaction(
        &self,
        registration: &Registration,
        txn_id: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let url = url(
            registration,
            &format!("/_matrix/app/v1/transactions/{}", encode(txn_id)),
        )?;
        let request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout);
        self.call(registration, request).await.map(drop)
    }

    /// `GET /_matrix/app/v1/users/{userId}`: whether the service made (or had) the user.
    pub async fn query_user(
        &self,
        registration: &Registration,
        user_id: &str,
        timeout: Duration,
    ) -> Result<bool, CallError> {
        let url = url(
            registration,
            &format!("/_matrix/app/v1/users/{}", encode(user_id)),
        )?;
        found(
            self.call(registration, self.http.get(url).timeout(timeout))
                .await,
        )
    }

    /// `GET /_matrix/app/v1/rooms/{roomAlias}`: whether the service made (or had) a
    /// room for the alias.
    pub async fn query_alias(
        &self,
        registration: &Registration,
        alias: &str,
        timeout: Duration,
    ) -> Result<bool, CallError> {
        let url = url(
            registration,
            &format!("/_matrix/app/v1/rooms/{}", encode(alias)),
        )?;
        found(
            self.call(registration, self.http.get(url).timeout(timeout))
                .await,
        )
    }

    /// `POST /_matrix/app/v1/ping`, with the id the client asked to be echoed.
    pub async fn ping(
        &self,
        registration: &Registration,
        transaction_id: Option<&str>,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let url = url(registration, "/_matrix/app/v1/ping")?;
        let mut body = serde_json::Map::new();
        if let Some(id) = transaction_id {
            body.insert("transaction_id".into(), id.into());
        }
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Value::Object(body).to_string())
            .timeout(timeout);
        self.call(registration, request).await.map(drop)
    }

    /// `GET` of a third-party lookup (`/_matrix/app/v1/thirdparty/...`), its JSON answer.
    pub async fn get_json(
        &self,
        registration: &Registration,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let url = url(registration, path_and_query)?;
        let body = self
            .call(registration, self.http.get(url).timeout(timeout))
            .await?;
        serde_json::from_slice(&body).map_err(|error| CallError::Unreachable(error.to_string()))
    }

    async fn call(
        &self,
        registration: &Registration,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, CallError> {
        let response = request
            .bearer_auth(&registration.hs_token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        if status != 200 {
            let mut body = String::from_utf8_lossy(&body).into_owned();
            body.truncate(200);
            return Err(CallError::Status { status, body });
        }
        Ok(body.to_vec())
    }
}

fn unreachable(error: reqwest::Error) -> CallError {
    if error.is_timeout() {
        CallError::Timeout
    } else {
        CallError::Unreachable(error.to_string())
    }
}

/// A query answered 200 found the id, 404 did not; anything else is an error.
fn found(outcome: Result<Vec<u8>, CallError>) -> Result<bool, CallError> {
    match outcome {
        Ok(_) => Ok(true),
        Err(error) if error.is_not_found() => Ok(false),
        Err(error) => Err(error),
    }
}

fn url(registration: &Registration, path: &str) -> Result<String, CallError> {
    let base = registration.url.as_deref().ok_or(CallError::NoUrl)?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// Percent-encodes a path segment (ids hold `@`, `#`, `:` and `!`).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_segment() {
        assert_eq!(
            encode("@telegram_1:example.org"),
            "%40telegram_1%3Aexample.org"
        );
        assert_eq!(encode("#a/b?c"), "%23a%2Fb%3Fc");
    }
}
