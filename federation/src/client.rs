//! The HTTP client for requests to other servers: resolves the destination, signs the request
//! with this server's key when its endpoint asks for `X-Matrix`, sends it, and reads the typed
//! response or the Matrix error.

mod authentication;
mod connect;
mod error;

use std::{path::PathBuf, sync::Arc, time::Duration};

use ruma::{
    OwnedServerName, ServerName,
    api::{IncomingResponseExt, OutgoingRequest, OutgoingRequestExt, path_builder::SinglePath},
};
use tracing::debug;

pub use authentication::OutgoingAuthentication;
pub use error::ClientError;

use crate::{
    SigningKey, body,
    discovery::{self, Lookup, NetworkLookup},
    error_chain,
};
use connect::Connector;

/// How the client connects and what it accepts.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Check servers' certificates. `false` accepts any certificate, for tests only.
    pub verify_certificates: bool,
    /// PEM files of root certificates trusted on top of the Mozilla roots (e.g. a test CA).
    pub extra_root_certificates: Vec<PathBuf>,
    /// The time allowed for a whole request: connecting, sending, and reading the response.
    pub timeout: Duration,
    /// The largest response body read, in bytes.
    pub max_response_size: usize,
}

impl Default for ClientOptions {
    /// Verified certificates, the Mozilla roots, 60 s per request, responses up to 100 MiB
    /// (room for a `send_join` response of a large room).
    fn default() -> Self {
        ClientOptions {
            verify_certificates: true,
            extra_root_certificates: Vec::new(),
            timeout: Duration::from_secs(60),
            max_response_size: 100 * 1024 * 1024,
        }
    }
}

/// The client for this server's requests to other servers.
///
/// Connections are pooled per destination host and kept across requests; clone the client
/// (cheaply, it is reference-counted inside) rather than building another.
pub struct FederationClient<L: Lookup = NetworkLookup> {
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    lookup: Arc<L>,
    connector: Arc<Connector>,
    max_response_size: usize,
}

impl<L: Lookup> Clone for FederationClient<L> {
    fn clone(&self) -> Self {
        FederationClient {
            server_name: self.server_name.clone(),
            key: self.key.clone(),
            lookup: self.lookup.clone(),
            connector: self.connector.clone(),
            max_response_size: self.max_response_size,
        }
    }
}

impl FederationClient {
    /// A client sending as `server_name`, signing with `key`, resolving destinations through
    /// DNS and well-known documents.
    pub fn new(
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let tls = crate::tls::client_config(
            options.verify_certificates,
            &options.extra_root_certificates,
            false,
        )?;
        let lookup = NetworkLookup::new(tls)?;
        Self::with_lookup(server_name, key, options, lookup)
    }
}

impl<L: Lookup> FederationClient<L> {
    /// A client resolving destinations through `lookup` instead of the network.
    pub fn with_lookup(
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        options: ClientOptions,
        lookup: L,
    ) -> Result<Self, ClientError> {
        Ok(FederationClient {
            server_name,
            key,
            lookup: Arc::new(lookup),
            connector: Arc::new(Connector::new(&options)?),
            max_response_size: options.max_response_size,
        })
    }

    /// The server name requests are sent as.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Sends `request` to `destination` and reads the response.
    ///
    /// Requests whose endpoint uses `X-Matrix` authentication are signed with this server's
    /// key; the others go unsigned. A non-2xx answer is [`ClientError::Remote`].
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuthentication,
    {
        let response = self.send_streaming(destination, request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = body::read_limited(response, self.max_response_size)
            .await
            .map_err(|error| match error {
                body::BodyError::Transport(error) => ClientError::Transport(error),
                body::BodyError::TooLarge(limit) => {
                    ClientError::BadResponse(format!("response body over {limit} bytes"))
                }
            })?;
        let mut response = http::Response::new(body.as_slice());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        R::IncomingResponse::try_from_http_response(response)
            .map_err(|error| ClientError::BadResponse(error.to_string()))
    }

    /// Sends `request` to `destination` and hands back a successful response unread, for
    /// bodies streamed rather than held (media). A non-2xx answer is
    /// [`ClientError::Remote`]. The caller bounds what it reads.
    pub async fn send_streaming<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<reqwest::Response, ClientError>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuthentication,
    {
        let target = discovery::resolve(destination, &*self.lookup).await?;
        let route = self.connector.route(&target);
        let authentication =
            R::Authentication::input(&self.server_name, destination, self.key.key_pair());
        let mut http_request: http::Request<Vec<u8>> = request
            .try_into_http_request(&route.base_url, authentication, ())
            .map_err(|error| ClientError::BadRequest(error.to_string()))?;
        if let Some(host) = route.host_header {
            http_request.headers_mut().insert(http::header::HOST, host);
        }
        debug!(
            %destination,
            method = %http_request.method(),
            path = http_request.uri().path(),
            "federation request"
        );
        let request = reqwest::Request::try_from(http_request)
            .map_err(|error| ClientError::BadRequest(error_chain(&error)))?;
        let response = route
            .client
            .execute(request)
            .await
            .map_err(ClientError::Transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = body::read_limited(response, 64 * 1024)
                .await
                .unwrap_or_default();
            return Err(ClientError::remote(status, &body));
        }
        Ok(response)
    }

    /// `GET url` without signing, for a redirect another server answered a media request
    /// with (to its content delivery network). The caller bounds what it reads.
    pub async fn get_url(&self, url: &str) -> Result<reqwest::Response, ClientError> {
        let response = self
            .connector
            .plain()
            .get(url)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ClientError::remote(status, &[]));
        }
        Ok(response)
    }
}
