//! Access tokens already resolved, kept in memory: every request presents one, and
//! resolving it reads two records. An entry is only a shortcut past those reads; the
//! token's expiry is still checked on every use.
//!
//! Revoking a token (logout, a device deleted, tokens refreshed or replaced, an account
//! deactivated) empties the cache once the revocation is written, and counts a
//! generation: a lookup that read the records before that write finds the generation
//! moved and does not keep what it read.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use parking_lot::Mutex;

use super::users::Sender;

/// Tokens kept at most; past it the cache starts again empty.
const MOST: usize = 100_000;

/// What a resolved token stands for, and until when.
#[derive(Clone)]
pub struct Resolved {
    pub sender: Sender,
    pub expires_at_ms: Option<u64>,
}

#[derive(Default)]
pub struct TokenCache {
    /// By the token's hash.
    tokens: Mutex<HashMap<String, Resolved>>,
    revocations: AtomicU64,
}

impl TokenCache {
    pub fn get(&self, hash: &str) -> Option<Resolved> {
        self.tokens.lock().get(hash).cloned()
    }

    /// The generation to hand [`keep`](Self::keep): read it before the records.
    pub fn generation(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Keeps what the records said of a token, unless a revocation was written since
    /// `generation` was read.
    pub fn keep(&self, hash: &str, resolved: Resolved, generation: u64) {
        let mut tokens = self.tokens.lock();
        if self.revocations.load(Ordering::Acquire) != generation {
            return;
        }
        if tokens.len() >= MOST {
            tokens.clear();
        }
        tokens.insert(hash.to_owned(), resolved);
    }

    /// Forgets a token that expired.
    pub fn forget(&self, hash: &str) {
        self.tokens.lock().remove(hash);
    }

    /// A revocation was written: nothing kept before it holds.
    pub fn revoked(&self) {
        let mut tokens = self.tokens.lock();
        self.revocations.fetch_add(1, Ordering::AcqRel);
        tokens.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved() -> Resolved {
        Resolved {
            sender: Sender::user("@a:x".try_into().unwrap(), "D".into(), false),
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_lookup_that_raced_a_revocation_is_not_kept() {
        let cache = TokenCache::default();
        let before = cache.generation();
        cache.keep("h1", resolved(), before);
        assert!(cache.get("h1").is_some());
        // A lookup starts, the token is revoked meanwhile, then the lookup ends.
        let started = cache.generation();
        cache.revoked();
        cache.keep("h2", resolved(), started);
        assert!(cache.get("h1").is_none(), "emptied by the revocation");
        assert!(cache.get("h2").is_none(), "read before the revocation");
        cache.keep("h2", resolved(), cache.generation());
        assert!(cache.get("h2").is_some());
    }
}
