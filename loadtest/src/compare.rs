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
    unit: &'static str,
    better: Better,
    target: Option<Target>,
    value: fn(&Report, &str) -> Option<f64>,
    phase: String,
}

fn phase<'a>(report: &'a Report, name: &str) -> Option<&'a Phase> {
    report.phases.iter().find(|p| p.name == name)
}

fn rows(subject: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut push = |label: String,
                    phase: &str,
                    unit: &'static str,
                    better: Better,
                    target: Option<Target>,
                    value: fn(&Report, &str) -> Option<f64>| {
        rows.push(Row {
            label,
            unit,
            better,
            target,
            value,
            phase: phase.to_owned(),
        })
    };
    let at_least = |q: f64| {
        Some(Target {
            quotient: Some(q),
            absolute: None,
        })
    };
    for p in &subject.phases {
        let name = p.name.as_str();
        if name.starts_with("send_") {
            push(
                format!("Send throughput: {}", p.description),
                name,
                "events/s",
                Better::Higher,
                at_least(100.0),
                |r, n| phase(r, n).map(|p| p.throughput),
            );
            push(
                format!("Server CPU per message: {}", p.description),
                name,
                "ms",
                Better::Lower,
                at_least(0.01),
                |r, n| phase(r, n).map(|p| p.cpu_ms_per_op),
            );
            push(
                format!("Send request p50: {}", p.description),
                name,
                "ms",
                Better::Lower,
                None,
                |r, n| phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p50),
            );
            push(
                format!("Send request p99: {}", p.description),
                name,
                "ms",
                Better::Lower,
                None,
                |r, n| phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p99),
            );
        } else if name.starts_with("delivery") {
            let during = name.strip_prefix("delivery_during_");
            let what = during.map_or(String::new(), |idle| format!(" while {idle} are held"));
            for (q, value) in [
                (
                    "p50",
                    (|r: &Report, n: &str| {
                        phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p50)
                    }) as fn(&Report, &str) -> Option<f64>,
                ),
                ("p90", |r, n| {
                    phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p90)
                }),
                ("p99", |r, n| {
                    phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p99)
                }),
                ("max", |r, n| {
                    phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.max)
                }),
            ] {
                let target = (q == "p99" && during.is_none()).then_some(Target {
                    quotient: Some(0.05),
                    absolute: Some(10.0),
                });
                push(
                    format!("Delivery {q}, send to the other user's /sync{what}"),
                    name,
                    "ms",
                    Better::Lower,
                    target,
                    value,
                );
            }
        } else if name.starts_with("initial_sync") {
            push(
                format!("Initial sync p50: {}", p.description),
                name,
                "ms",
                Better::Lower,
                at_least(0.1),
                |r, n| phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p50),
            );
            push(
                format!(
                    "Initial sync, first request (cold caches): {}",
                    p.description
                ),
                name,
                "ms",
                Better::Lower,
                None,
                |r, n| phase(r, n).and_then(|p| p.extra.get("first_ms").copied()),
            );
        } else if name == "incremental_sync" || name == "messages_back" {
            for (q, value) in [
                (
                    "p50",
                    (|r: &Report, n: &str| {
                        phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p50)
                    }) as fn(&Report, &str) -> Option<f64>,
                ),
                ("p99", |r, n| {
                    phase(r, n).and_then(|p| p.latency.as_ref()).map(|l| l.p99)
                }),
            ] {
                push(
                    format!("{} {q}", p.description),
                    name,
                    "ms",
                    Better::Lower,
                    None,
                    value,
                );
            }
        } else if name.starts_with("idle_syncs") {
            push(
                format!("Server memory per held sync: {}", p.description),
                name,
                "KiB",
                Better::Lower,
                None,
                |r, n| phase(r, n).and_then(|p| p.extra.get("server_kib_per_held_sync").copied()),
            );
            let target = name.ends_with("_100000").then_some(Target {
                quotient: None,
                absolute: Some(2048.0),
            });
            push(
                format!("Server memory while held: {}", p.description),
                name,
                "MiB",
                Better::Lower,
                target,
                |r, n| phase(r, n).and_then(|p| p.extra.get("server_memory_held_mib").copied()),
            );
        }
    }
    push(
        "Peak server memory (PSS) under the message load: sends, delivery, sync, pagination"
            .to_owned(),
        "",
        "MiB",
        Better::Lower,
        Some(Target {
            quotient: Some(1.0 / 3.0),
            absolute: None,
        }),
        |r, _| {
            let peak = r
                .phases
                .iter()
                .filter(|p| !p.name.starts_with("idle_") && !p.name.contains("_during_idle_"))
                .map(|p| p.usage.peak_memory_mib)
                .fold(0.0, f64::max);
            (peak > 0.0).then_some(peak)
        },
    );
    rows
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
        let Some(ours) = (row.value)(subject, &row.phase) else {
            continue;
        };
        let _ = write!(out, "| {} | {} | {} |", row.label, row.unit, number(ours));
        let mut met = Vec::new();
        for b in baselines {
            match (row.value)(b, &row.phase) {
                Some(theirs) if theirs > 0.0 => {
                    let quotient = ours / theirs;
                    let _ = write!(out, " {} | {} |", number(theirs), number(quotient));
                    if let Some(q) = row.target.and_then(|t| t.quotient) {
                        met.push(match row.better {
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
                let sign = if row.better == Better::Higher {
                    "≥"
                } else {
                    "≤"
                };
                target_text.push(format!("÷ {sign} {}", number(q)));
            }
            if let Some(limit) = target.absolute {
                target_text.push(format!("< {} {}", number(limit), row.unit));
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
