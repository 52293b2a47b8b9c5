//! Side-by-side tables: one report taken as the subject, the others as baselines, each
//! figure with its quotient (subject ÷ baseline) and the target it is held to.

use std::fmt::Write;

use crate::phases::{Phase, Report};

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// A target on the quotient subject ÷ baseline, and optionally on the subject's own figure.
#[derive(Clone, Copy)]
struct Target {
    quotient: Option<f64>,
    absolute: Option<f64>,
}

struct Row {
    label: String,
    target: Option<Target>,
    figure: Figure,
    phase: String,
}

/// Where a row's figure comes from in a report.
#[derive(Clone, Copy)]
enum Figure {
    Throughput,
    CpuPerOp,
    Latency(Quantile),
    /// A phase's extra figure, with its unit (lower is better).
    Extra(&'static str, &'static str),
    /// A phase's extra figure that is a rate, with its unit (higher is better).
    Rate(&'static str, &'static str),
    /// The highest memory of the message-load phases (idle-sync phases left out).
    PeakMemory,
}

#[derive(Clone, Copy)]
enum Quantile {
    P50,
    P90,
    P99,
    Max,
}

impl Quantile {
    fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
            Self::Max => "max",
        }
    }
}

impl Figure {
    fn unit(self) -> &'static str {
        match self {
            Self::Throughput => "events/s",
            Self::CpuPerOp | Self::Latency(_) => "ms",
            Self::Extra(_, unit) | Self::Rate(_, unit) => unit,
            Self::PeakMemory => "MiB",
        }
    }

    fn better(self) -> Better {
        match self {
            Self::Throughput | Self::Rate(..) => Better::Higher,
            _ => Better::Lower,
        }
    }

    fn of(self, report: &Report, name: &str) -> Option<f64> {
        if let Self::PeakMemory = self {
            let peak = report
                .phases
                .iter()
                .filter(|p| !p.name.starts_with("idle_") && !p.name.contains("_during_idle_"))
                .map(|p| p.usage.peak_memory_mib)
                .fold(0.0, f64::max);
            return (peak > 0.0).then_some(peak);
        }
        let phase = phase(report, name)?;
        match self {
            Self::Throughput => Some(phase.throughput),
            Self::CpuPerOp => Some(phase.cpu_ms_per_op),
            Self::Latency(q) => phase.latency.as_ref().map(|l| match q {
                Quantile::P50 => l.p50,
                Quantile::P90 => l.p90,
                Quantile::P99 => l.p99,
                Quantile::Max => l.max,
            }),
            Self::Extra(key, _) | Self::Rate(key, _) => phase.extra.get(key).copied(),
            Self::PeakMemory => None,
        }
    }
}

fn phase<'a>(report: &'a Report, name: &str) -> Option<&'a Phase> {
    report.phases.iter().find(|p| p.name == name)
}

fn quotient_target(quotient: f64) -> Option<Target> {
    Some(Target {
        quotient: Some(quotient),
        absolute: None,
    })
}

fn rows(subject: &Report) -> Vec<Row> {
    let mut rows: Vec<Row> = subject.phases.iter().flat_map(phase_rows).collect();
    rows.push(Row {
        label: "Peak server memory (PSS) under the message load: sends, delivery, sync, pagination"
            .to_owned(),
        target: quotient_target(1.0 / 3.0),
        figure: Figure::PeakMemory,
        phase: String::new(),
    });
    rows
}

/// The rows a phase of the subject report contributes.
fn phase_rows(p: &Phase) -> Vec<Row> {
    use Figure::*;
    use Quantile::*;
    let (name, description) = (p.name.as_str(), &p.description);
    let row = |label: String, figure: Figure, target: Option<Target>| Row {
        label,
        target,
        figure,
        phase: name.to_owned(),
    };
    if name.starts_with("send_") {
        vec![
            row(
                format!("Send throughput: {description}"),
                Throughput,
                quotient_target(100.0),
            ),
            row(
                format!("Server CPU per message: {description}"),
                CpuPerOp,
                quotient_target(0.01),
            ),
            row(
                format!("Send request p50: {description}"),
                Latency(P50),
                None,
            ),
            row(
                format!("Send request p99: {description}"),
                Latency(P99),
                None,
            ),
        ]
    } else if name.starts_with("delivery") {
        let during = name.strip_prefix("delivery_during_");
        let what = during.map_or(String::new(), |idle| format!(" while {idle} are held"));
        [P50, P90, P99, Max]
            .into_iter()
            .map(|q| {
                let target = (matches!(q, P99) && during.is_none() && name == "delivery")
                    .then_some(Target {
                        quotient: Some(0.05),
                        absolute: Some(10.0),
                    });
                let to = if name == "delivery_websocket" {
                    "WebSocket sync stream"
                } else {
                    "/sync"
                };
                let label = format!("Delivery {}, send to the other user's {to}{what}", q.name());
                row(label, Latency(q), target)
            })
            .collect()
    } else if name.starts_with("initial_sync") {
        vec![
            row(
                format!("Initial sync p50: {description}"),
                Latency(P50),
                quotient_target(0.1),
            ),
            row(
                format!("Initial sync, first request (cold caches): {description}"),
                Extra("first_ms", "ms"),
                None,
            ),
        ]
    } else if name.starts_with("long_initial_sync") {
        vec![
            row(format!("{description} p50"), Latency(P50), None),
            row(format!("{description} p99"), Latency(P99), None),
            row(
                format!("{description}: timeline events served"),
                Extra("events", "events"),
                None,
            ),
            row(
                format!("{description}: time per event served (p50 ÷ events)"),
                Extra("us_per_event", "µs"),
                quotient_target(0.1),
            ),
        ]
    } else if name.starts_with("long_") {
        vec![
            row(
                format!("{description} p50"),
                Latency(P50),
                quotient_target(0.1),
            ),
            row(format!("{description} p99"), Latency(P99), None),
        ]
    } else if name == "incremental_sync"
        || name == "messages_back"
        || name.starts_with("sliding_list")
        || name.starts_with("many_rooms")
    {
        [P50, P99]
            .into_iter()
            .map(|q| row(format!("{description} {}", q.name()), Latency(q), None))
            .collect()
    } else if name == "media_upload" || name == "media_download" {
        let what = if name == "media_upload" {
            "Upload"
        } else {
            "Download"
        };
        vec![
            row(
                format!("{what} throughput: {description}"),
                Rate("mib_per_s", "MiB/s"),
                None,
            ),
            row(
                format!("{what} request p50: {description}"),
                Latency(P50),
                None,
            ),
            row(
                format!("{what} request p99: {description}"),
                Latency(P99),
                None,
            ),
        ]
    } else if name == "media_thumbnail" {
        vec![
            row(
                format!("Thumbnail, first request, p50: {description}"),
                Latency(P50),
                None,
            ),
            row(
                format!("Thumbnail, first request, p99: {description}"),
                Latency(P99),
                None,
            ),
            row(
                format!("Thumbnail, asked again, p50: {description}"),
                Extra("cached_p50_ms", "ms"),
                None,
            ),
            row(
                format!("Thumbnail, asked again, p99: {description}"),
                Extra("cached_p99_ms", "ms"),
                None,
            ),
        ]
    } else if name.starts_with("idle_websockets") {
        vec![row(
            format!("Server memory per held WebSocket: {description}"),
            Extra("server_kib_per_socket", "KiB"),
            None,
        )]
    } else if name.starts_with("idle_syncs") {
        let target = name.ends_with("_100000").then_some(Target {
            quotient: None,
            absolute: Some(2048.0),
        });
        vec![
            row(
                format!("Server memory per held sync: {description}"),
                Extra("server_kib_per_held_sync", "KiB"),
                None,
            ),
            row(
                format!("Server memory while held: {description}"),
                Extra("server_memory_held_mib", "MiB"),
                target,
            ),
        ]
    } else {
        Vec::new()
    }
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A Markdown table of every figure of `subject` beside each baseline's.
pub fn markdown(subject: &Report, baselines: &[Report]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| Measure | unit | {} |", subject.label);
    for b in baselines {
        let _ = write!(out, " {} | {} ÷ {} |", b.label, subject.label, b.label);
    }
    out.push_str(" target | met |\n|---|---|---:|");
    for _ in baselines {
        out.push_str("---:|---:|");
    }
    out.push_str("---|---|\n");
    for row in rows(subject) {
        let Some(ours) = row.figure.of(subject, &row.phase) else {
            continue;
        };
        let _ = write!(
            out,
            "| {} | {} | {} |",
            row.label,
            row.figure.unit(),
            number(ours)
        );
        let mut met = Vec::new();
        for b in baselines {
            match row.figure.of(b, &row.phase) {
                Some(theirs) if theirs > 0.0 => {
                    let quotient = ours / theirs;
                    let _ = write!(out, " {} | {} |", number(theirs), number(quotient));
                    if let Some(q) = row.target.and_then(|t| t.quotient) {
                        met.push(match row.figure.better() {
                            Better::Higher => quotient >= q,
                            Better::Lower => quotient <= q,
                        });
                    }
                }
                _ => out.push_str(" – | – |"),
            }
        }
        let mut target_text = Vec::new();
        if let Some(target) = row.target {
            if let Some(q) = target.quotient {
                let sign = if row.figure.better() == Better::Higher {
                    "≥"
                } else {
                    "≤"
                };
                target_text.push(format!("÷ {sign} {}", number(q)));
            }
            if let Some(limit) = target.absolute {
                target_text.push(format!("< {} {}", number(limit), row.figure.unit()));
                met.push(ours < limit);
            }
        }
        let verdict = if met.is_empty() {
            ""
        } else if met.iter().all(|m| *m) {
            "yes"
        } else {
            "**no**"
        };
        let _ = writeln!(out, " {} | {} |", target_text.join(", "), verdict);
    }
    let limited: Vec<String> = std::iter::once(subject)
        .chain(baselines)
        .filter(|r| r.rate_limited > 0)
        .map(|r| format!("{}: {}", r.label, r.rate_limited))
        .collect();
    if !limited.is_empty() {
        let _ = writeln!(
            out,
            "\nRequests answered 429 and retried (rate limiter reached): {}",
            limited.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;

    fn report(label: &str, throughput: f64, p99: f64) -> Report {
        Report {
            label: label.to_owned(),
            phases: vec![
                Phase {
                    name: "send_c1".into(),
                    description: "1 sender".into(),
                    throughput,
                    cpu_ms_per_op: 1.0,
                    usage: crate::stats::Usage {
                        peak_memory_mib: 10.0,
                        ..Default::default()
                    },
                    ..Phase::default()
                },
                Phase {
                    name: "delivery".into(),
                    latency: Some(Latency {
                        p99,
                        ..Latency::default()
                    }),
                    ..Phase::default()
                },
            ],
            ..Report::default()
        }
    }

    #[test]
    fn quotients_and_verdicts() {
        let table = markdown(&report("A", 2000.0, 2.0), &[report("B", 20.0, 100.0)]);
        assert!(
            table.contains(
                "| Send throughput: 1 sender | events/s | 2000 | 20.00 | 100 | ÷ ≥ 100 | yes |"
            ),
            "{table}"
        );
        assert!(table.contains("| Delivery p99, send to the other user's /sync | ms | 2.00 | 100 | 0.020 | ÷ ≤ 0.050, < 10.00 ms | yes |"), "{table}");
        let slow = markdown(&report("A", 200.0, 20.0), &[report("B", 20.0, 100.0)]);
        assert!(slow.contains("| 10.00 | ÷ ≥ 100 | **no** |"), "{slow}");
    }
}
