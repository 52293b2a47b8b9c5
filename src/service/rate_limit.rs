//! Token-bucket rate limiting, keyed by client IP address or user id.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::{Error, Result, config::RateLimit};

pub struct RateLimiter {
    rule: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(rule: RateLimit) -> Self {
        Self {
            rule,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for the sender's user, unless the limits do not apply to it (an
    /// application service that did not ask for them).
    pub fn check_sender(&self, sender: &crate::service::users::Sender) -> Result<()> {
        if sender.rate_limited {
            self.check(sender.user_id.as_str())
        } else {
            Ok(())
        }
    }

    /// Takes one token for `key`, or fails with `M_LIMIT_EXCEEDED` and how long to wait.
    pub fn check(&self, key: &str) -> Result<()> {
        self.check_many(key, 1)
    }

    /// Takes `count` tokens for `key` at once (a request that does `count` things).
    pub fn check_many(&self, key: &str, count: u32) -> Result<()> {
        let now = Instant::now();
        let burst = f64::from(self.rule.burst.max(1));
        // More than a burst at once takes the whole bucket.
        let count = f64::from(count.max(1)).min(burst);
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            let idle = Duration::from_secs_f64(burst / self.rule.per_second.max(0.001));
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < idle);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rule.per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= count {
            bucket.tokens -= count;
            return Ok(());
        }
        let wait = (count - bucket.tokens) / self.rule.per_second.max(0.001);
        Err(Error::limit_exceeded(Duration::from_secs_f64(wait)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_wait() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 3,
        });
        for _ in 0..3 {
            limiter.check("ip").unwrap();
        }
        let error = limiter.check("ip").unwrap_err();
        assert!(matches!(
            error.kind(),
            Some(ruma::api::error::ErrorKind::LimitExceeded(_))
        ));
        limiter.check("other ip").unwrap();
    }
}
