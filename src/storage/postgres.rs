//! The PostgreSQL engine: a table per keyspace, `(key bytea primary key, value bytea)`;
//! bytea compares byte by byte, so key order and prefix walks are RocksDB's. A batch
//! is one transaction (an unsynced one with `synchronous_commit` off).
//!
//! `Engine` is synchronous (services call storage as they would an embedded store), so
//! queries run on a small runtime of the engine's own and the caller waits for the
//! answer: it works from any thread, inside a runtime or not.

use std::future::Future;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{
    Keyspace, StorageError, StorageResult,
    engine::{Engine, Op},
};

/// How many entries a walk reads per query.
const PAGE: i64 = 256;

pub struct PostgresEngine {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

fn backend(error: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(error.to_string())
}

fn table(keyspace: Keyspace) -> String {
    format!("ks_{}", keyspace.name())
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PostgresEngine {
    /// Connects to `url` (a libpq connection string or URI) with up to `pool_size`
    /// connections and creates the keyspaces' tables that are missing.
    pub fn open(url: &str, pool_size: usize) -> StorageResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(backend)?;
        let config: tokio_postgres::Config = url.parse().map_err(backend)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(backend)?;
        let engine = Self {
            runtime: Some(runtime),
            pool,
        };
        let pool = engine.pool.clone();
        engine.run(async move {
            let client = pool.get().await.map_err(backend)?;
            for keyspace in Keyspace::ALL {
                let create = format!(
                    "CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, value bytea NOT NULL)",
                    table(*keyspace)
                );
                client.batch_execute(&create).await.map_err(backend)?;
            }
            Ok(())
        })?;
        Ok(engine)
    }

    /// Runs `work` on the engine's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = StorageResult<T>> + Send + 'static,
    ) -> StorageResult<T> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the engine");
        runtime.spawn(async move {
            let _ = answer.send(work.await);
        });
        answered
            .recv()
            .map_err(|_| backend("the database task stopped"))?
    }
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        // Dropped maybe inside another runtime, where waiting for this one is refused.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Engine for PostgresEngine {
    fn get(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        read: &mut dyn FnMut(Option<&[u8]>),
    ) -> StorageResult<()> {
        let pool = self.pool.clone();
        let key = key.to_vec();
        let value: Option<Vec<u8>> = self.run(async move {
            let client = pool.get().await.map_err(backend)?;
            let query = format!("SELECT value FROM {} WHERE key = $1", table(keyspace));
            let statement = client.prepare_cached(&query).await.map_err(backend)?;
            let row = client
                .query_opt(&statement, &[&key])
                .await
                .map_err(backend)?;
            Ok(row.map(|row| row.get(0)))
        })?;
        read(value.as_deref());
        Ok(())
    }

    fn multi_get(
        &self,
        keyspace: Keyspace,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> StorageResult<()> {
        let pool = self.pool.clone();
        let wanted: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
        let found: Vec<(Vec<u8>, Vec<u8>)> = self.run(async move {
            let client = pool.get().await.map_err(backend)?;
            let query = format!(
                "SELECT key, value FROM {} WHERE key = ANY($1)",
                table(keyspace)
            );
            let statement = client.prepare_cached(&query).await.map_err(backend)?;
            let rows = client
                .query(&statement, &[&wanted])
                .await
                .map_err(backend)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })?;
        let found: std::collections::HashMap<&[u8], &[u8]> = found
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
            .collect();
        for (index, key) in keys.iter().enumerate() {
            read(index, found.get(key).copied());
        }
        Ok(())
    }

    fn for_each_from(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
        forwards: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> StorageResult<()> {
        let table = table(keyspace);
        // Pages of the walk: each query picks up after the last key seen.
        let mut from = start.to_vec();
        let mut inclusive = true;
        loop {
            let pool = self.pool.clone();
            let (bound, order, cmp) = if forwards {
                (
                    prefix_end(prefix),
                    "ASC",
                    if inclusive { ">=" } else { ">" },
                )
            } else {
                (
                    Some(prefix.to_vec()),
                    "DESC",
                    if inclusive { "<=" } else { "<" },
                )
            };
            let limit = if forwards { "<" } else { ">=" };
            let query = match &bound {
                Some(_) => format!(
                    "SELECT key, value FROM {table} WHERE key {cmp} $1 AND key {limit} $2 \
                     ORDER BY key {order} LIMIT {PAGE}"
                ),
                None => format!(
                    "SELECT key, value FROM {table} WHERE key {cmp} $1 ORDER BY key {order} LIMIT {PAGE}"
                ),
            };
            let from_key = from.clone();
            let rows: Vec<(Vec<u8>, Vec<u8>)> = self.run(async move {
                let client = pool.get().await.map_err(backend)?;
                let statement = client.prepare_cached(&query).await.map_err(backend)?;
                let rows = match &bound {
                    Some(bound) => client.query(&statement, &[&from_key, bound]).await,
                    None => client.query(&statement, &[&from_key]).await,
                }
                .map_err(backend)?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            })?;
            let full = rows.len() as i64 == PAGE;
            for (key, value) in &rows {
                if !key.starts_with(prefix) || !visit(key, value) {
                    return Ok(());
                }
            }
            match rows.last() {
                Some((key, _)) if full => {
                    from = key.clone();
                    inclusive = false;
                }
                _ => return Ok(()),
            }
        }
    }

    fn write(&self, ops: Vec<Op>, sync: bool) -> StorageResult<()> {
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(backend)?;
            let transaction = client.transaction().await.map_err(backend)?;
            if !sync {
                transaction
                    .batch_execute("SET LOCAL synchronous_commit TO OFF")
                    .await
                    .map_err(backend)?;
            }
            for op in ops {
                match op {
                    Op::Put(keyspace, key, value) => {
                        let query = format!(
                            "INSERT INTO {} (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            table(keyspace)
                        );
                        let statement = transaction.prepare_cached(&query).await.map_err(backend)?;
                        transaction.execute(&statement, &[&key, &value]).await.map_err(backend)?;
                    }
                    Op::Delete(keyspace, key) => {
                        let query = format!("DELETE FROM {} WHERE key = $1", table(keyspace));
                        let statement = transaction.prepare_cached(&query).await.map_err(backend)?;
                        transaction.execute(&statement, &[&key]).await.map_err(backend)?;
                    }
                    Op::MergeMax(keyspace, key, value) => {
                        // Big-endian u64s of 8 bytes compare as numbers.
                        let table = table(keyspace);
                        let query = format!(
                            "INSERT INTO {table} (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO UPDATE SET value = GREATEST({table}.value, EXCLUDED.value)"
                        );
                        let statement = transaction.prepare_cached(&query).await.map_err(backend)?;
                        let value = value.to_be_bytes().to_vec();
                        transaction.execute(&statement, &[&key, &value]).await.map_err(backend)?;
                    }
                }
            }
            transaction.commit().await.map_err(backend)
        })
    }

    fn sync(&self) -> StorageResult<()> {
        // Commits are durable once they return unless made unsynced; a synced commit
        // flushes the write-ahead log up to it, and so every earlier one.
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(backend)?;
            client
                .batch_execute("BEGIN; SELECT txid_current(); COMMIT;")
                .await
                .map_err(backend)
        })
    }

    fn property(&self, _property: &str) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_bound_every_key_of_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
