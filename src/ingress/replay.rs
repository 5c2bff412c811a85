//! Remembers the signatures of accepted requests until their tonce leaves the window, so that an
//! exact repeat is answered "ok" again without being enqueued twice. Only accepted requests are
//! remembered: a request that failed (broker down) is processed normally if repeated later.
//!
//! Copies that arrive while the first one is still being published do not publish: they wait for
//! the first one's outcome and are given its answer (a single flight per signature), so a request
//! sent many times at once is enqueued exactly once.
//!
//! The key is the 32-byte signature: it is an HMAC under the access key's own secret, so two
//! different requests (or two access keys) cannot share one. The cache is per ingress process.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::watch;

use super::error::Rejection;

/// What the first copy of a request ended with, as its copies are told.
pub type Outcome = Result<(), Rejection>;

/// Accepted signatures and requests in flight.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
enum Entry {
    /// Being published by its first copy; copies wait on this.
    InFlight(watch::Receiver<Option<Outcome>>),
    /// Accepted; the unix second after which its tonce is out of the window anyway.
    Accepted(i64),
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    /// When the next sweep of expired entries is due (unix seconds).
    next_sweep: i64,
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
    signature: [u8; 32],
    tell: watch::Sender<Option<Outcome>>,
    finished: bool,
}

impl ReplayCache {
    /// Classifies a request by its signature at `now` (unix seconds).
    pub fn claim(&self, signature: [u8; 32], now: i64) -> Claim<'_> {
        let mut inner = self.lock();
        match inner.entries.get(&signature) {
            Some(Entry::Accepted(until)) if *until >= now => Claim::Accepted,
            Some(Entry::InFlight(outcome)) => Claim::Copy(outcome.clone()),
            _ => {
                let (tell, outcome) = watch::channel(None);
                inner.entries.insert(signature, Entry::InFlight(outcome));
                Claim::First(Flight { cache: self, signature, tell, finished: false })
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map inconsistent: keep serving.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Flight<'_> {
    /// Records the outcome: an accepted request is remembered until `until`, a failed one is
    /// forgotten (a later repeat is processed afresh). Every waiting copy gets the same outcome.
    pub fn finish(mut self, outcome: &Outcome, until: i64, now: i64) {
        {
            let mut inner = self.cache.lock();
            match outcome {
                Ok(()) => {
                    inner.entries.insert(self.signature, Entry::Accepted(until));
                }
                Err(_) => {
                    inner.entries.remove(&self.signature);
                }
            }
            if now >= inner.next_sweep {
                // In-flight entries stay: their first copy removes or replaces them.
                inner.entries.retain(|_, e| !matches!(e, Entry::Accepted(u) if *u < now));
                inner.next_sweep = now + 10;
            }
        }
        self.finished = true;
        self.tell.send_replace(Some(outcome.clone()));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cache.lock().entries.remove(&self.signature);
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
        let cache = ReplayCache::default();
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

    #[tokio::test]
    async fn copies_in_flight_get_the_first_ones_outcome() {
        let cache = ReplayCache::default();
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
        let cache = ReplayCache::default();
        let Claim::First(flight) = cache.claim([2u8; 32], 100) else { panic!("first") };
        let Claim::Copy(copy) = cache.claim([2u8; 32], 100) else { panic!("a copy waits") };
        drop(flight);
        assert_eq!(wait(copy).await.unwrap_err().code(), 5001);
        assert!(cache.is_empty());
    }
}
