//! `loadtest run` measures one server; `loadtest compare` puts reports side by side.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use loadtest::{Plan, Report, Run, compare};

#[derive(Parser)]
#[command(about = "Load generator for Matrix homeservers (client-server API, loopback)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    /// Seconds-long, tiny sizes: proves every phase runs.
    Smoke,
    /// The sizes the published figures are measured with.
    Full,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every phase against one server and writes a JSON report.
    Run {
        /// The server's client-server base URL, e.g. http://127.0.0.1:8008.
        #[arg(long)]
        base_url: String,
        /// The name of this server in reports.
        #[arg(long)]
        label: String,
        /// The server's process ids; each is measured with all its descendants.
        #[arg(long = "pid")]
        pids: Vec<u32>,
        #[arg(long, value_enum, default_value = "full")]
        size: Size,
        /// Idle HTTP/1.1 long-poll counts to hold (overrides the size's list; 0 for none).
        #[arg(long, value_delimiter = ',')]
        idle_http1: Option<Vec<usize>>,
        /// Idle HTTP/2 long-poll counts to hold (overrides the size's list; 0 for none).
        #[arg(long, value_delimiter = ',')]
        idle_http2: Option<Vec<usize>>,
        /// Rooms of the initial-sync user (overrides the size's count).
        #[arg(long)]
        sync_rooms: Option<usize>,
        /// Seconds after which a phase stops sending.
        #[arg(long)]
        phase_time_limit: Option<u64>,
        /// Only these groups of phases: send, delivery, sync, messages, media, rooms,
        /// websocket, history, idle.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Where the JSON report goes.
        #[arg(long)]
        out: PathBuf,
        /// Add this run's phases to the report already in `--out` (e.g. idle syncs
        /// measured on a freshly started server), replacing phases measured again.
        #[arg(long)]
        append: bool,
    },
    /// Prints a Markdown table of a report beside baselines, with quotients and targets.
    Compare {
        /// The report of the server being judged.
        subject: PathBuf,
        /// Reports of the servers it is compared with.
        baselines: Vec<PathBuf>,
    },
}

fn read(path: &PathBuf) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            base_url,
            label,
            pids,
            size,
            idle_http1,
            idle_http2,
            sync_rooms,
            phase_time_limit,
            only,
            out,
            append,
        } => {
            let mut plan = match size {
                Size::Smoke => Plan::smoke(),
                Size::Full => Plan::full(),
            };
            let non_zero = |v: Vec<usize>| v.into_iter().filter(|n| *n > 0).collect();
            if let Some(list) = idle_http1 {
                plan.idle_syncs_http1 = non_zero(list);
            }
            if let Some(list) = idle_http2 {
                plan.idle_syncs_http2 = non_zero(list);
            }
            if let Some(rooms) = sync_rooms {
                plan.sync_rooms = rooms;
            }
            plan.groups = only;
            if let Some(secs) = phase_time_limit {
                plan.phase_time_limit = Duration::from_secs(secs);
            }
            let mut report = Run::new(&base_url, &label, pids, plan)?.all().await?;
            if append && out.exists() {
                // A phase measured again replaces the earlier figure.
                let mut earlier = read(&out)?;
                earlier
                    .phases
                    .retain(|p| report.phases.iter().all(|new| new.name != p.name));
                earlier.phases.append(&mut report.phases);
                earlier.rate_limited += report.rate_limited;
                earlier.peak_memory_mib = earlier.peak_memory_mib.max(report.peak_memory_mib);
                report = earlier;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
            println!("report written to {}", out.display());
        }
        Command::Compare { subject, baselines } => {
            let subject = read(&subject)?;
            let baselines = baselines.iter().map(read).collect::<Result<Vec<_>>>()?;
            print!("{}", compare::markdown(&subject, &baselines));
        }
    }
    Ok(())
}
