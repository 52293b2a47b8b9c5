//! The WebSocket transport (servers that offer it): delivery to a socket's sync stream
//! and the memory an idle socket costs, beside the long-poll figures of the same run.

use super::*;

impl Run {
    /// Delivery to a WebSocket sync stream, then idle sockets held; nothing on a server
    /// without the transport.
    pub(super) async fn websocket_phases(&mut self) -> Result<()> {
        let probe = &self.users[1];
        let since = self.matrix.sync(probe, None, 0, MESSAGES_FILTER).await?["next_batch"]
            .as_str()
            .context("next_batch")?
            .to_owned();
        if self
            .matrix
            .websocket(probe, &since, MESSAGES_FILTER)
            .await?
            .is_none()
        {
            println!(
                "{:<28} the server offers no WebSocket: skipped",
                "websocket"
            );
            return Ok(());
        }
        self.delivery_phase(
            "delivery_websocket",
            self.plan.delivery_messages,
            Via::WebSocket,
        )
        .await?;
        self.idle_websockets_phase(self.plan.idle_websockets).await
    }

    /// `n` sockets with a sync stream held at once by users in no room: the server's
    /// memory per socket.
    async fn idle_websockets_phase(&mut self, n: usize) -> Result<()> {
        let name = format!("idle_websockets_{n}");
        let mut phase = Phase::new(
            &name,
            format!("{n} idle WebSockets held, each with a /sync stream"),
        );
        let holders = self.idle_users(&name, n.clamp(1, 100)).await?;
        let before = self.settled_memory(Duration::from_millis(500)).await;
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut sockets = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let opened = try_join_all(chunk.iter().map(|&i| {
                let (user, since) = &holders[i % holders.len()];
                self.matrix.websocket(user, since, MESSAGES_FILTER)
            }))
            .await?;
            sockets.extend(opened.into_iter().flatten());
        }
        let last = self.settled_memory(Duration::from_secs(2)).await;
        let held_for = started.elapsed();
        let usage = watch.finish();
        phase.extra.insert(
            "server_kib_per_socket".into(),
            (last - before).max(0.0) * 1024.0 / n as f64,
        );
        phase.extra.insert("server_memory_held_mib".into(), last);
        phase.extra.insert("opened".into(), sockets.len() as f64);
        phase.finish(n as u64, held_for, None, usage);
        self.report.phases.push(phase);
        drop(sockets);
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }
}
