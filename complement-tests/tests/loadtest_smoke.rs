//! The load tool's smoke run against a real server: every phase runs end to end and its
//! figures are coherent, so the benchmark never rots between hand-made full runs.

use complement_tests::TestServer;
use loadtest::{Plan, Run, compare};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_phase_runs_and_measures() -> anyhow::Result<()> {
    let server = TestServer::start_with("sync_timeout_max_ms = 120000").await?;
    let plan = Plan::smoke();
    let pid = server.pid().expect("the server runs");
    let report = Run::new(&server.base_url(), "palisade", vec![pid], plan.clone())?
        .all()
        .await?;

    let phase = |name: &str| {
        report
            .phases
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no phase {name} in {:?}", report.phases))
    };
    let sent = phase("send_c1");
    assert_eq!(sent.ops, plan.single_sender_messages as u64);
    assert!(sent.throughput > 0.0 && sent.usage.cpu_secs >= 0.0);
    for c in &plan.concurrency {
        for layout in ["rooms", "one_room"] {
            let p = phase(&format!("send_c{c}_{layout}"));
            assert_eq!(p.ops, (c * plan.messages_per_sender) as u64, "{p:?}");
        }
    }
    let delivery = phase("delivery");
    let latency = delivery.latency.as_ref().expect("delivery latencies");
    assert_eq!(latency.count, plan.delivery_messages);
    assert!(latency.p50 > 0.0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    for name in ["initial_sync_full", "initial_sync_lazy", "incremental_sync"] {
        assert!(phase(name).ops > 0, "{name}");
    }
    assert!(phase("messages_back").extra["events"] >= plan.single_sender_messages as f64);
    for (n, proto) in plan
        .idle_syncs_http1
        .iter()
        .map(|n| (n, "h1"))
        .chain(plan.idle_syncs_http2.iter().map(|n| (n, "h2")))
    {
        let idle = phase(&format!("idle_syncs_{proto}_{n}"));
        assert_eq!(idle.extra["failed"], 0.0, "{idle:?}");
        assert_eq!(
            idle.extra["returned_early"], 0.0,
            "idle syncs woke: {idle:?}"
        );
        assert!(idle.extra["server_memory_held_mib"] > 0.0);
        assert!(phase(&format!("delivery_during_idle_syncs_{proto}_{n}")).ops > 0);
    }
    assert_eq!(report.rate_limited, 0, "the limiter was measured");
    assert!(report.peak_memory_mib > 0.0);

    let table = compare::markdown(&report, std::slice::from_ref(&report));
    assert!(
        table.contains("| Send throughput: 1 sender, its own room"),
        "{table}"
    );
    assert!(
        table.contains("| 1.00 |"),
        "a report against itself gives quotients of 1: {table}"
    );
    Ok(())
}
