//! Idle long-polls held at once over HTTP/1.1 and HTTP/2: the memory each costs, and
//! delivery while they are held.

use super::*;

impl Run {
    /// `n` idle long-polls held at once (no event will wake them), spread over the
    /// users; the server's memory per held sync, then delivery latency while they
    /// are held.
    pub(super) async fn idle_phase(&mut self, n: usize, http2: bool) -> Result<()> {
        let name = format!("idle_syncs_{}_{n}", if http2 { "h2" } else { "h1" });
        let transport = if http2 {
            "HTTP/2 streams, 100 per connection"
        } else {
            "HTTP/1.1 connections"
        };
        let mut phase = Phase::new(
            &name,
            format!("{n} idle /sync long-polls held ({transport})"),
        );
        // The holders are idle users in no room, so nothing wakes their syncs.
        let holders = self.idle_users(&phase.name, n.clamp(1, 100)).await?;
        let clients: Vec<Matrix> = if http2 {
            (0..n.div_ceil(100))
                .map(|_| Matrix::new_h2(&self.base_url))
                .collect::<Result<_>>()?
        } else {
            vec![Matrix::new(&self.base_url)?]
        };
        // Registering the holders hashed their passwords; let the allocator hand that
        // memory back before taking the baseline.
        let before = self.settled_memory(Duration::from_millis(500)).await;
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let held = Held::start(&clients, &holders, n).await;
        // Held once the server's memory stops growing.
        let last = self.settled_memory(Duration::from_secs(2)).await;
        let held_for = started.elapsed();
        let usage = watch.finish();
        phase.extra.insert(
            "server_kib_per_held_sync".into(),
            (last - before).max(0.0) * 1024.0 / n as f64,
        );
        phase.extra.insert("server_memory_held_mib".into(), last);
        phase.extra.insert(
            "returned_early".into(),
            held.returned.load(Ordering::Relaxed) as f64,
        );
        phase
            .extra
            .insert("failed".into(), held.failed.load(Ordering::Relaxed) as f64);
        phase.finish(n as u64, held_for, None, usage);
        self.report.phases.push(phase);

        // Wake-up latency for another pair while the syncs are held.
        let messages = (self.plan.delivery_messages / 10).clamp(10, 100);
        self.delivery_phase(&format!("delivery_during_{name}"), messages, Via::LongPoll)
            .await?;

        held.stop();
        drop(clients);
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    /// `count` registered users in no room, each with a sync token.
    pub(super) async fn idle_users(
        &self,
        prefix: &str,
        count: usize,
    ) -> Result<Vec<(User, String)>> {
        try_join_all((0..count).map(|i| {
            let matrix = self.matrix.clone();
            let name = format!("{}{prefix}x{i}", self.prefix);
            async move {
                let user = matrix.register(&name, PASSWORD).await?;
                let since = matrix.sync(&user, None, 0, MESSAGES_FILTER).await?["next_batch"]
                    .as_str()
                    .context("next_batch")?
                    .to_owned();
                anyhow::Ok((user, since))
            }
        }))
        .await
    }

    /// The server's memory once two samples `interval` apart differ by under 0.5% (or
    /// after a minute).
    pub(super) async fn settled_memory(&self, interval: Duration) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.processes.sample().memory_mib;
        loop {
            tokio::time::sleep(interval).await;
            let now = self.processes.sample().memory_mib;
            if (now - last).abs() <= last * 0.005 || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

/// Long-polls held until stopped: each one, when it returns, is asked again.
struct Held {
    stop: Arc<AtomicBool>,
    returned: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Held {
    /// `n` long-polls, spread over `clients` and the `holders`' tokens.
    async fn start(clients: &[Matrix], holders: &[(User, String)], n: usize) -> Self {
        let mut held = Self {
            stop: Arc::new(AtomicBool::new(false)),
            returned: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            tasks: Vec::with_capacity(n),
        };
        for i in 0..n {
            let client = clients[i % clients.len()].clone();
            let (user, since) = holders[i % holders.len()].clone();
            let (stop, returned, failed) = (
                held.stop.clone(),
                held.returned.clone(),
                held.failed.clone(),
            );
            held.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .sync(&user, Some(&since), 120_000, MESSAGES_FILTER)
                        .await
                    {
                        Ok(_) => returned.fetch_add(1, Ordering::Relaxed),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            0
                        }
                    };
                }
            }));
            if i % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        held
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
        }
    }
}
