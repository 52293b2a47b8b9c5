//! The `palisade` binary: `palisade --config conf/homeserver.toml`.

use std::path::PathBuf;

use clap::Parser;
use palisade::config::Config;
use tracing_subscriber::EnvFilter;

/// mimalloc hands freed memory back to the system within milliseconds; glibc's malloc
/// keeps it per thread arena, so a burst (argon2 holds 19 MiB per hash) would stay
/// resident for good.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `arena_eager_commit` option (its index in `mi_option_t`, which the Rust
/// bindings do not name).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// On Linux mimalloc commits its arenas whole when it reserves them, and memory it
/// frees inside them then stays in the resident set: 18 MiB of an idle server's 21, and
/// about a fifth of its peak under the load tool. Committed as used, freed memory
/// leaves the resident set. The option is read when the first arena is reserved, so it
/// is set before `main` (an ELF constructor), before anything is allocated. An
/// operator's `MIMALLOC_ARENA_EAGER_COMMIT` is left to decide.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ARENAS_AS_USED: extern "C" fn() = commit_arenas_as_used;

#[cfg(target_os = "linux")]
extern "C" fn commit_arenas_as_used() {
    // An operator's own `MIMALLOC_ARENA_EAGER_COMMIT` wins. SAFETY: getenv with a
    // NUL-terminated name allocates nothing; setting an option only stores its value,
    // which mimalloc reads on its first arena reservation, not made yet.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// A Matrix homeserver on an embedded RocksDB.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file (see conf/homeserver.toml); defaults apply without one.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Rebuild the message search index from the rooms (in the background, once started).
    #[arg(long)]
    rebuild_search_index: bool,
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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
    // One log line per panic (request handlers' panics are caught and answered with an
    // error), instead of a backtrace on stderr that any client could trigger at will.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, %message, "panic");
    }));
    if args.rebuild_search_index {
        let directory = config.search_directory();
        if let Err(error) = std::fs::remove_dir_all(&directory)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("palisade: cannot remove {}: {error}", directory.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    match palisade::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the server stopped");
            eprintln!("palisade: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
