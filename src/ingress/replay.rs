//! Remembers the signatures of accepted requests until their tonce leaves the window, so that an
//! exact repeat is answered "ok" again without being enqueued twice. Only accepted requests are
//! remembered: a request that failed (broker down) is processed normally if repeated later.
//!
//! Copies that arrive while the first one is still being published do not publish: they wait for
//! the first one's outcome and are given its answer (a single flight per signature), so a request
//! sent many times at once is enqueued exactly once.
//!
//! Bounded: at most `ingress.replay_cache_entries` accepted requests are remembered, each in a
//! compact entry (the first 16 bytes of its signature, an HMAC and so already uniformly random,
//! and a 4-byte expiry: about 30 bytes with the map's overhead). They are kept in two
//! generations of at most half the bound each, allocated once at their full size (a map that
//! grows by doubling leaves the allocator fragmented): when the current one is full, the
//! previous one, the oldest half, is forgotten. A forgotten repeat is enqueued again, and the
//! worker records it as a `duplicate` (the request's signature digest travels with it) that
//! changes nothing.
//! The cache is per ingress process; the worker's check also covers several ingresses.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::watch;

use super::error::Rejection;

/// What the first copy of a request ended with, as its copies are told.
pub type Outcome = Result<(), Rejection>;

/// The key of a request: the first 16 bytes of its signature.
type Key = [u8; 16];

fn key(signature: &[u8; 32]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&signature[..16]);
    k
}

/// Accepted signatures and requests in flight.
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
    max_entries: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Accepted requests, newer generation: the unix second after which each one's tonce is out
    /// of the window.
    current: HashMap<Key, u32>,
    /// The generation before; forgotten as a whole when `current` is full.
    previous: HashMap<Key, u32>,
    /// Requests being published by their first copy; copies wait on these.
    in_flight: HashMap<Key, watch::Receiver<Option<Outcome>>>,
}

/// What a request is, with respect to the requests before it.
pub enum Claim<'a> {
    /// The first: it goes ahead, and reports its outcome with [`Flight::finish`].
    First(Flight<'a>),
    /// A repeat of an accepted request.
    Accepted,
    /// A copy of a request in flight: wait for its outcome with [`wait`].
    Copy(watch::Receiver<Option<Outcome>>),
}

/// The first copy's duty to tell the others; dropped unfinished (its request was cancelled), it
/// tells them to retry.
pub struct Flight<'a> {
    cache: &'a ReplayCache,
    key: Key,
    tell: watch::Sender<Option<Outcome>>,
    finished: bool,
}

/// Seconds as the cache keeps them (unix time fits in 32 bits until 2106).
fn secs(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

impl ReplayCache {
    /// A cache remembering at most `max_entries` accepted requests.
    pub fn new(max_entries: usize) -> ReplayCache {
        let max_entries = max_entries.max(2);
        let inner = Inner { current: HashMap::with_capacity(max_entries / 2), ..Inner::default() };
        ReplayCache { inner: Mutex::new(inner), max_entries }
    }

    /// Classifies a request by its signature at `now` (unix seconds).
    pub fn claim(&self, signature: [u8; 32], now: i64) -> Claim<'_> {
        let key = key(&signature);
        let mut inner = self.lock();
        let remembered = inner.current.get(&key).or_else(|| inner.previous.get(&key));
        if remembered.is_some_and(|until| *until >= secs(now)) {
            return Claim::Accepted;
        }
        if let Some(outcome) = inner.in_flight.get(&key) {
            return Claim::Copy(outcome.clone());
        }
        let (tell, outcome) = watch::channel(None);
        inner.in_flight.insert(key, outcome);
        Claim::First(Flight { cache: self, key, tell, finished: false })
    }

    /// Accepted requests remembered now.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.current.len() + inner.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent: keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Remembers `key` until `until`; when the current generation is full (half of `max`), the
    /// previous one is forgotten and a fresh one starts, at its full size at once.
    fn remember(&mut self, key: Key, until: u32, max: usize) {
        if self.current.len() >= max / 2 && !self.current.contains_key(&key) {
            // Freed before the new one is allocated: the allocator reuses the block.
            self.previous = HashMap::new();
            self.previous = std::mem::take(&mut self.current);
            self.current = HashMap::with_capacity(max / 2);
        }
        self.current.insert(key, until);
    }
}

impl Flight<'_> {
    /// Records the outcome: an accepted request is remembered until `until`, a failed one is
    /// forgotten (a later repeat is processed afresh). Every waiting copy gets the same outcome.
    pub fn finish(mut self, outcome: &Outcome, until: i64) {
        {
            let mut inner = self.cache.lock();
            inner.in_flight.remove(&self.key);
            if outcome.is_ok() {
                inner.remember(self.key, secs(until), self.cache.max_entries);
            }
        }
        self.finished = true;
        self.tell.send_replace(Some(outcome.clone()));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.lock().in_flight.remove(&self.key);
            let interrupted = Rejection::Unavailable("the first copy of this request was interrupted".into());
            self.tell.send_replace(Some(Err(interrupted)));
        }
    }
}

/// Waits for the outcome of the first copy.
pub async fn wait(mut outcome: watch::Receiver<Option<Outcome>>) -> Outcome {
    match outcome.wait_for(Option::is_some).await {
        Ok(o) => o.clone().expect("waited for Some"),
        Err(_) => Err(Rejection::Unavailable("the first copy of this request was interrupted".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_then_forgets() {
        let cache = ReplayCache::new(100);
        let sig = [7u8; 32];
        let Claim::First(flight) = cache.claim(sig, 100) else { panic!("first") };
        flight.finish(&Ok(()), 400);
        assert!(matches!(cache.claim(sig, 400), Claim::Accepted));
        let Claim::First(f) = cache.claim(sig, 401) else { panic!("expired: processed afresh") };
        drop(f);
    }

    #[test]
    fn beyond_its_bound_the_oldest_are_forgotten() {
        let cache = ReplayCache::new(4);
        let sig = |i: u8| [i; 32];
        for i in 0..7 {
            let Claim::First(f) = cache.claim(sig(i), 100) else { panic!("first") };
            f.finish(&Ok(()), 400);
            assert!(cache.len() <= 4, "never more than the bound");
        }
        assert!(matches!(cache.claim(sig(0), 100), Claim::First(_)), "the oldest is forgotten");
        assert!(matches!(cache.claim(sig(1), 100), Claim::First(_)), "the oldest is forgotten");
        for i in 4..7 {
            assert!(matches!(cache.claim(sig(i), 100), Claim::Accepted), "the newest are remembered");
        }
    }

    #[tokio::test]
    async fn copies_in_flight_get_the_first_ones_outcome() {
        let cache = ReplayCache::new(100);
        let sig = [1u8; 32];
        let Claim::First(flight) = cache.claim(sig, 100) else { panic!("first") };
        let Claim::Copy(copy) = cache.claim(sig, 100) else { panic!("a copy waits") };
        let failed = Err(Rejection::Unavailable("broker down".into()));
        flight.finish(&failed, 400);
        assert_eq!(wait(copy).await.unwrap_err().code(), 5001);
        assert!(matches!(cache.claim(sig, 100), Claim::First(_)), "a failed request is forgotten");
    }

    #[tokio::test]
    async fn an_interrupted_first_copy_releases_its_copies() {
        let cache = ReplayCache::new(100);
        let Claim::First(flight) = cache.claim([2u8; 32], 100) else { panic!("first") };
        let Claim::Copy(copy) = cache.claim([2u8; 32], 100) else { panic!("a copy waits") };
        drop(flight);
        assert_eq!(wait(copy).await.unwrap_err().code(), 5001);
        assert!(cache.is_empty());
    }
}
