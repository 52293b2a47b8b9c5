//! Palisade: a Matrix homeserver on an embedded RocksDB.
//!
//! The code map is in `docs/architecture.md`. In short, dependencies point one way:
//! [`router`] assembles the routes; the handlers in [`api`] receive typed ruma requests
//! and call [`service`]s; services read and write through [`storage`], the only module
//! that knows RocksDB.

pub mod api;
pub mod config;
pub mod error;
pub mod json;
pub mod metrics;
pub mod router;
pub mod service;
pub mod storage;

use std::{net::SocketAddr, sync::Arc};

pub use crate::error::{Error, Result};
use crate::{config::Config, service::Services};

/// Opens the database, binds the listeners and serves until the process is stopped.
pub async fn run(config: Config) -> Result<()> {
    let address = SocketAddr::new(config.address, config.port);
    let services = Services::open(config)?;
    if services.config.metrics.enabled {
        serve_metrics(services.clone()).await?;
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(Error::internal)?;
    tracing::info!(%address, server_name = %services.config.server_name, "listening");
    let federation = services.config.federation.enabled.then(|| {
        let federation = &services.config.federation;
        SocketAddr::new(
            federation.address.unwrap_or(services.config.address),
            federation.port,
        )
    });
    match federation {
        Some(address) => {
            let tls = federation_tls(&services.config)?;
            let std_listener = std::net::TcpListener::bind(address).map_err(Error::internal)?;
            std_listener
                .set_nonblocking(true)
                .map_err(Error::internal)?;
            tracing::info!(%address, "federation listening (TLS)");
            let handle = axum_server::Handle::new();
            let shutdown = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                shutdown.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            let app = router::build_federation(services.clone());
            let federation = axum_server::from_tcp_rustls(std_listener, tls)
                .map_err(Error::internal)?
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<SocketAddr>());
            let (client, federation) = tokio::join!(serve(services, listener), federation);
            client?;
            federation.map_err(Error::internal)
        }
        None => serve(services, listener).await,
    }
}

/// The federation listener's TLS configuration: the configured certificate, or a
/// self-signed one kept in the database directory.
fn federation_tls(config: &Config) -> Result<axum_server::tls_rustls::RustlsConfig> {
    let federation = &config.federation;
    let (certificate, key) = match (&federation.tls_certificate, &federation.tls_private_key) {
        (Some(certificate), Some(key)) => (certificate.clone(), key.clone()),
        (None, None) => {
            let certificate = config.database_path.join("federation-tls.crt");
            let key = config.database_path.join("federation-tls.key");
            if !certificate.exists() || !key.exists() {
                let host = config.server_name.host().to_owned();
                let (certificate_pem, key_pem) =
                    palisade_federation::tls::self_signed(&[host]).map_err(Error::internal)?;
                std::fs::write(&certificate, certificate_pem).map_err(Error::internal)?;
                std::fs::write(&key, key_pem).map_err(Error::internal)?;
                tracing::warn!(
                    "federation uses a self-signed certificate; servers that check \
                     certificates will not talk to this one"
                );
            }
            (certificate, key)
        }
        _ => {
            return Err(Error::internal(
                "federation needs both tls_certificate and tls_private_key, or neither",
            ));
        }
    };
    let server_config =
        palisade_federation::tls::server_config(&certificate, &key).map_err(Error::internal)?;
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        server_config,
    ))
}

/// Starts the metrics listener (`/metrics`, `/health`, `/ready`).
async fn serve_metrics(services: Arc<Services>) -> Result<()> {
    let metrics = &services.config.metrics;
    let address = SocketAddr::new(metrics.address, metrics.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(Error::internal)?;
    tracing::info!(%address, "metrics listening");
    let app = router::build_metrics(services);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics listener stopped");
        }
    });
    Ok(())
}

/// Serves the client API on an already bound listener.
pub async fn serve(services: Arc<Services>, listener: tokio::net::TcpListener) -> Result<()> {
    use axum::serve::ListenerExt;
    let app = router::build(services);
    // A streamed body goes out as headers then chunks: with Nagle's algorithm on, a
    // small last write waits for the client's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(Error::internal)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
