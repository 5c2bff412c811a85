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
//! and a 4-byte expiry: about 40 bytes with the map's and the order's overhead). Beyond the
//! bound the oldest are forgotten; a forgotten repeat is enqueued again, and the worker records
//! it as a `duplicate` (the request's signature digest travels with it) that changes nothing.
//! The cache is per ingress process; the worker's check also covers several ingresses.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

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
    /// Accepted requests: the unix second after which each one's tonce is out of the window.
    accepted: HashMap<Key, u32>,
    /// Accepted keys, oldest first: what is forgotten first.
    order: VecDeque<Key>,
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
        ReplayCache { inner: Mutex::new(Inner::default()), max_entries: max_entries.max(1) }
    }

    /// Classifies a request by its signature at `now` (unix seconds).
    pub fn claim(&self, signature: [u8; 32], now: i64) -> Claim<'_> {
        let key = key(&signature);
        let mut inner = self.lock();
        if inner.accepted.get(&key).is_some_and(|until| *until >= secs(now)) {
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
        self.lock().accepted.len()
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
    /// Forgets from the oldest: what has expired, and whatever is over `max`.
    fn trim(&mut self, now: u32, max: usize) {
        while let Some(oldest) = self.order.front() {
            let expired = self.accepted.get(oldest).is_none_or(|until| *until < now);
            if !expired && self.accepted.len() <= max {
                break;
            }
            let oldest = self.order.pop_front().expect("front exists");
            self.accepted.remove(&oldest);
        }
    }
}

impl Flight<'_> {
    /// Records the outcome: an accepted request is remembered until `until`, a failed one is
    /// forgotten (a later repeat is processed afresh). Every waiting copy gets the same outcome.
    pub fn finish(mut self, outcome: &Outcome, until: i64, now: i64) {
        {
            let mut inner = self.cache.lock();
            inner.in_flight.remove(&self.key);
            if outcome.is_ok() && inner.accepted.insert(self.key, secs(until)).is_none() {
                inner.order.push_back(self.key);
            }
            inner.trim(secs(now), self.cache.max_entries);
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
        flight.finish(&Ok(()), 400, 100);
        assert!(matches!(cache.claim(sig, 400), Claim::Accepted));
        let Claim::First(f) = cache.claim(sig, 401) else { panic!("expired: processed afresh") };
        drop(f);
        let Claim::First(other) = cache.claim([9u8; 32], 500) else { panic!("first") };
        other.finish(&Ok(()), 1000, 500);
        assert_eq!(cache.len(), 1, "the expired entry is swept");
    }

    #[test]
    fn beyond_its_bound_the_oldest_are_forgotten() {
        let cache = ReplayCache::new(3);
        let sig = |i: u8| [i; 32];
        for i in 0..5 {
            let Claim::First(f) = cache.claim(sig(i), 100) else { panic!("first") };
            f.finish(&Ok(()), 400, 100);
        }
        assert_eq!(cache.len(), 3);
        assert!(matches!(cache.claim(sig(0), 100), Claim::First(_)), "the oldest is forgotten");
        assert!(matches!(cache.claim(sig(4), 100), Claim::Accepted), "the newest is remembered");
    }

    #[tokio::test]
    async fn copies_in_flight_get_the_first_ones_outcome() {
        let cache = ReplayCache::new(100);
        let sig = [1u8; 32];
        let Claim::First(flight) = cache.claim(sig, 100) else { panic!("first") };
        let Claim::Copy(copy) = cache.claim(sig, 100) else { panic!("a copy waits") };
        let failed = Err(Rejection::Unavailable("broker down".into()));
        flight.finish(&failed, 400, 100);
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
