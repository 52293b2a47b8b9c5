//! Palisade: a Matrix homeserver on an embedded RocksDB.
//!
//! The code map is in `docs/architecture.md`. In short: [`router`] turns HTTP into typed
//! ruma requests and calls the handlers in [`api`]; handlers call [`service`]s; services
//! read and write through [`storage`], the only module that knows RocksDB.

pub mod api;
pub mod config;
pub mod error;
pub mod json;
pub mod router;
pub mod service;
pub mod storage;

use std::{net::SocketAddr, sync::Arc};

pub use crate::error::{Error, Result};
use crate::{config::Config, service::Services};

/// Opens the database, binds the listener and serves until the process is stopped.
pub async fn run(config: Config) -> Result<()> {
    let address = SocketAddr::new(config.address, config.port);
    let services = Services::open(config)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(Error::internal)?;
    tracing::info!(%address, server_name = %services.config.server_name, "listening");
    serve(services, listener).await
}

/// Serves the API on an already bound listener.
pub async fn serve(services: Arc<Services>, listener: tokio::net::TcpListener) -> Result<()> {
    let app = router::build(services);
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
