//! The `palisade` binary: `palisade --config conf/homeserver.toml`.

use std::path::PathBuf;

use clap::Parser;
use palisade::config::Config;
use tracing_subscriber::EnvFilter;

/// A Matrix homeserver on an embedded RocksDB.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file (see conf/homeserver.toml); defaults apply without one.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("palisade: {error}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    // ruma's authorisation checks log every decision at info; keep them for debugging.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("ruma_state_res=warn,{}", config.log)));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match palisade::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the server stopped");
            eprintln!("palisade: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
