//! Remembers the signatures of accepted requests until their tonce leaves the window, so that an
//! exact repeat is answered "ok" again without being enqueued twice. Only accepted requests are
//! remembered: a request that failed (bad signature, broker down) is processed normally if repeated.
//!
//! The key is the 32-byte signature: it is an HMAC under the access key's own secret, so two
//! different requests (or two access keys) cannot share one. The cache is per ingress process.

use std::{collections::HashMap, sync::Mutex};

/// Accepted signatures and the unix second after which their tonce is out of the window anyway.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    expiry: HashMap<[u8; 32], i64>,
    /// When the next sweep of expired entries is due (unix seconds).
    next_sweep: i64,
}

impl ReplayCache {
    /// True if `signature` was accepted and has not expired at `now`.
    pub fn seen(&self, signature: &[u8; 32], now: i64) -> bool {
        let inner = self.inner.lock().expect("replay cache lock");
        inner.expiry.get(signature).is_some_and(|&until| until >= now)
    }

    /// Records an accepted request, valid until `until`; sweeps expired entries now and then so
    /// the cache holds at most one window's worth of requests.
    pub fn remember(&self, signature: [u8; 32], until: i64, now: i64) {
        let mut inner = self.inner.lock().expect("replay cache lock");
        inner.expiry.insert(signature, until);
        if now >= inner.next_sweep {
            inner.expiry.retain(|_, &mut u| u >= now);
            inner.next_sweep = now + 10;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("replay cache lock").expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_then_forgets() {
        let cache = ReplayCache::default();
        let sig = [7u8; 32];
        assert!(!cache.seen(&sig, 100));
        cache.remember(sig, 400, 100);
        assert!(cache.seen(&sig, 400));
        assert!(!cache.seen(&[8u8; 32], 100));
        assert!(!cache.seen(&sig, 401));
        cache.remember([9u8; 32], 1000, 500);
        assert_eq!(cache.len(), 1, "the expired entry is swept");
    }
}
