//! Politeness towards file hosts: at most `attachments.per_host` downloads to one host at once
//! (a burst of thousands of candidates does not open thousands of connections to one host), and
//! a host that answered `Retry-After` gets no request before that time from this process.
//!
//! A host is the URL's host and port. Hosts nobody waits for are forgotten, so that links to
//! many distinct hosts do not grow the table.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// The hosts being downloaded from, each with its own limit and gate.
pub struct Hosts {
    per_host: usize,
    table: Mutex<HashMap<String, Arc<Host>>>,
}

struct Host {
    permits: Arc<Semaphore>,
    /// No request before this (`Retry-After`).
    not_before: Mutex<Option<Instant>>,
}

/// A download slot for one host; released when dropped (and the host forgotten if idle).
pub struct HostPermit {
    permit: Option<OwnedSemaphorePermit>,
    hosts: Arc<Hosts>,
    key: String,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.hosts.forget_idle(&self.key);
    }
}

/// The host key of a URL (`host:port`), or `invalid` when it has none (the download then fails at
/// once, as a bad URL). It labels a metric, so it never carries more of the URL than its host.
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) => match u.host_str() {
            Some(h) => format!("{}:{}", h.to_ascii_lowercase(), u.port_or_known_default().unwrap_or(0)),
            None => "invalid".to_owned(),
        },
        Err(_) => "invalid".to_owned(),
    }
}

impl Hosts {
    pub fn new(per_host: usize) -> Hosts {
        Hosts { per_host: per_host.max(1), table: Mutex::new(HashMap::new()) }
    }

    fn host(&self, key: &str) -> Arc<Host> {
        let mut table = self.table.lock().expect("hosts table");
        table
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Host { permits: Arc::new(Semaphore::new(self.per_host)), not_before: Mutex::new(None) })
            })
            .clone()
    }

    /// Waits for the host's gate and a free slot of the host; `waiting` counts this download
    /// while it waits (the per-host queue metric). A gate that stays closed longer than `max_wait`
    /// is not waited for: `Err` says how long the host asked for.
    pub async fn acquire(self: &Arc<Self>, key: &str, max_wait: Duration) -> Result<HostPermit, Duration> {
        let host = self.host(key);
        let closed_for = || {
            let gate = *host.not_before.lock().expect("host gate");
            gate.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default()
        };
        let waiting = metrics::gauge!("moka_worker_downloads_waiting", "host" => key.to_owned());
        waiting.increment(1.0);
        let permit = loop {
            match closed_for() {
                wait if wait > max_wait => {
                    waiting.decrement(1.0);
                    drop(host);
                    self.forget_idle(key);
                    return Err(wait);
                }
                wait if !wait.is_zero() => tokio::time::sleep(wait).await,
                _ => {
                    let permit = host.permits.clone().acquire_owned().await.expect("host semaphores are never closed");
                    // The gate may have closed while this one waited for a slot (another download got a 429).
                    if closed_for().is_zero() {
                        break permit;
                    }
                }
            }
        };
        waiting.decrement(1.0);
        drop(host);
        Ok(HostPermit { permit: Some(permit), hosts: self.clone(), key: key.to_owned() })
    }

    /// The host asked for `wait` before the next request.
    pub fn defer(&self, key: &str, wait: Duration) {
        let host = self.host(key);
        let until = Instant::now() + wait;
        let mut gate = host.not_before.lock().expect("host gate");
        if gate.is_none_or(|t| t < until) {
            *gate = Some(until);
        }
    }

    /// Drops hosts that nobody holds or waits for and whose gate is open.
    fn forget_idle(&self, key: &str) {
        let mut table = self.table.lock().expect("hosts table");
        let idle = table.get(key).is_some_and(|h| {
            Arc::strong_count(h) == 1
                && h.permits.available_permits() == self.per_host
                && h.not_before.lock().expect("host gate").is_none_or(|t| t <= Instant::now())
        });
        if idle {
            table.remove(key);
        }
    }

    /// Hosts known now.
    pub fn known(&self) -> usize {
        self.table.lock().expect("hosts table").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_host_key_is_host_and_port() {
        assert_eq!(host_of("http://Files.Example.com/a.pdf"), "files.example.com:80");
        assert_eq!(host_of("https://127.0.0.1:8443/a"), "127.0.0.1:8443");
        assert_eq!(host_of("not a url"), "invalid");
    }

    #[tokio::test]
    async fn no_more_than_the_limit_run_at_once_for_one_host_and_others_are_not_held_up() {
        let hosts = Arc::new(Hosts::new(3));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (hosts, now, peak) = (hosts.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    let _p = hosts.acquire("a:80", Duration::from_secs(1)).await.unwrap();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Another host gets its slot at once while "a" is saturated.
        tokio::time::timeout(Duration::from_millis(50), hosts.acquire("b:80", Duration::ZERO))
            .await
            .expect("b is not held up")
            .unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_deferred_host_gets_no_slot_before_its_time_and_idle_hosts_are_forgotten() {
        let hosts = Arc::new(Hosts::new(2));
        hosts.defer("a:80", Duration::from_millis(300));
        let started = Instant::now();
        let wait =
            hosts.acquire("a:80", Duration::from_millis(100)).await.err().expect("a long gate is not waited for");
        assert!(wait > Duration::from_millis(100) && wait <= Duration::from_millis(300), "{wait:?}");
        drop(hosts.acquire("a:80", Duration::from_secs(1)).await.unwrap());
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        drop(hosts.acquire("b:80", Duration::ZERO).await.unwrap());
        assert_eq!(hosts.known(), 0, "released hosts with an open gate are forgotten");
    }
}
