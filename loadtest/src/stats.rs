//! Latency summaries and the server's resource use, read from `/proc`.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        // Nearest-rank percentile: the smallest sample with at least q of them at or below it.
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Self {
            count: ms.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// The processes that make up the server under test: each given pid and all of its
/// descendants (PostgreSQL's backends, worker processes).
#[derive(Clone, Debug, Default)]
pub struct ServerProcesses {
    roots: Vec<u32>,
}

/// CPU time and memory of the server processes at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// User plus system CPU time, in seconds, summed over the processes.
    pub cpu_secs: f64,
    /// Proportional set size summed over the processes (shared pages counted once), in MiB.
    pub memory_mib: f64,
}

impl ServerProcesses {
    pub fn new(roots: Vec<u32>) -> Self {
        Self { roots }
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Every pid in the trees under the roots.
    fn members(&self) -> Vec<u32> {
        let mut parents: Vec<(u32, u32)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if let Some(stat) = read_stat(pid) {
                    parents.push((pid, stat.ppid));
                }
            }
        }
        let mut members: HashSet<u32> = self.roots.iter().copied().collect();
        loop {
            let before = members.len();
            for (pid, ppid) in &parents {
                if members.contains(ppid) {
                    members.insert(*pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        members.into_iter().collect()
    }

    pub fn sample(&self) -> Sample {
        let ticks = clock_ticks();
        let mut sample = Sample::default();
        for pid in self.members() {
            if let Some(stat) = read_stat(pid) {
                sample.cpu_secs += (stat.utime + stat.stime) as f64 / ticks;
            }
            sample.memory_mib += read_pss_kib(pid).unwrap_or(0) as f64 / 1024.0;
        }
        sample
    }
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

/// Proportional set size: resident memory with pages shared between processes (e.g.
/// PostgreSQL's shared buffers) divided among them, so the sum is the real total.
fn read_pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|line| line.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Watches the server during one phase: CPU time used and the highest memory seen,
/// sampled every 100 ms.
pub struct Watch {
    processes: ServerProcesses,
    start: Sample,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

/// What a [`Watch`] saw.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_secs: f64,
    pub peak_memory_mib: f64,
    pub end_memory_mib: f64,
}

impl Watch {
    pub fn start(processes: &ServerProcesses) -> Self {
        let start = processes.sample();
        let peak_kib = Arc::new(AtomicU64::new((start.memory_mib * 1024.0) as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = (!processes.is_empty()).then(|| {
            let (processes, peak_kib, stop) = (processes.clone(), peak_kib.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let kib = (processes.sample().memory_mib * 1024.0) as u64;
                    peak_kib.fetch_max(kib, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Self {
            processes: processes.clone(),
            start,
            peak_kib,
            stop,
            sampler,
        }
    }

    pub fn finish(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let end = self.processes.sample();
        let peak = (self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0).max(end.memory_mib);
        Usage {
            cpu_secs: (end.cpu_secs - self.start.cpu_secs).max(0.0),
            peak_memory_mib: peak,
            end_memory_mib: end.memory_mib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let latency = Latency::of(&samples);
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50, 50.0);
        assert_eq!(latency.p90, 90.0);
        assert_eq!(latency.p99, 99.0);
        assert_eq!(latency.max, 100.0);
        assert_eq!(Latency::of(&[Duration::from_millis(7)]).p99, 7.0);
    }

    #[test]
    fn reads_its_own_process() {
        let me = ServerProcesses::new(vec![std::process::id()]);
        let sample = me.sample();
        assert!(sample.memory_mib > 0.0, "{sample:?}");
    }
}
