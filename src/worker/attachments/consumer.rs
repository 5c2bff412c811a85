//! The download consumer: takes jobs from the downloads queue on a connection of its own and
//! downloads their links, up to `attachments.concurrency` at once in the process and
//! `attachments.per_host` per host. A job is acknowledged once each of its links is settled
//! (row `stored` or `failed`), in a delay queue to be retried, or dead-lettered; a crash before
//! that redelivers it, and the links already settled are not fetched again.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use deadpool_postgres::Pool;
use futures_util::{stream::FuturesUnordered, FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    BasicProperties,
};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use super::{
    hosts::{host_of, Hosts},
    results::{Results, SettleError},
    Attachments, Link, Record, Transient,
};
use crate::{
    backoff::Backoff,
    broker::{
        consumer::{self, ConsumeError},
        dead::describe,
        download::Job,
        headers::{self, DeadLetter, History},
        publisher::Publisher,
        topology::{Topology, DEAD_KEY},
        Dialer,
    },
    store::{
        attachments,
        dead_letters::{self, State},
    },
    telemetry,
    worker::backlog::Backlog,
};

/// What the consumer needs, built by the worker from `[attachments]`, `[retry]` and `[broker]`.
pub struct Downloads {
    pub attachments: Attachments,
    pub hosts: Arc<Hosts>,
    /// Downloads in flight in this process (`attachments.concurrency`).
    pub slots: Arc<Semaphore>,
    /// While the lanes are behind, at most `floor` downloads run (see [`crate::worker::backlog`]).
    pub backlog: Arc<Backlog>,
    pub floor: usize,
    pub in_flight: AtomicUsize,
    /// Jobs being worked on; while the lanes are behind, one at a time.
    pub active_jobs: AtomicUsize,
    pub results: Results,
    /// Retries and dead letters (confirmed before the job is acknowledged).
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    pub pool: Pool,
    pub dialer: Dialer,
    /// Jobs held unacknowledged at once.
    pub prefetch: u16,
    pub reconnect: Backoff,
    /// `host:pid`, in dead letters and the consumer tag.
    pub name: String,
    pub up: AtomicBool,
}

/// Why the consumer lost its connection and reconnects.
#[derive(Debug, thiserror::Error)]
enum LostError {
    #[error(transparent)]
    Broker(#[from] ConsumeError),
    #[error("the broker cancelled the consumer")]
    Cancelled,
}

/// Longest a download waits for a host's `Retry-After` gate before its job moves it to a delay
/// queue instead.
const MAX_GATE_WAIT: Duration = Duration::from_secs(5);

/// Tries of a retry's or dead letter's publish before the job is returned to the queue.
const PUBLISH_TRIES: u32 = 8;

/// Longest a job or a download gives way to the lanes (see [`crate::worker::backlog`]).
const MAX_YIELD: Duration = Duration::from_secs(60);

/// How one link of a job ended.
enum Settled {
    /// Its row is final (stored or failed), or it was not wanted any more.
    Done,
    /// Try again later.
    Later(Link, Transient),
    /// The database refused its row.
    Refused(Link, String),
}

impl Downloads {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Consumes until `shutdown`, reconnecting with backoff when the broker goes away. Jobs in
    /// flight at shutdown are left unacknowledged (redelivered to the next consumer).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = self.reconnect.clone();
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => warn!(error = %telemetry::chain(&e), "download consumer lost; reconnecting"),
            }
            if !self.dialer.wait_for_election(&shutdown).await || !backoff.wait(&shutdown).await {
                break;
            }
        }
    }

    async fn consume(self: &Arc<Self>, shutdown: &CancellationToken, backoff: &mut Backoff) -> Result<(), LostError> {
        if !consumer::wait_for(&self.publisher, shutdown).await {
            return Ok(());
        }
        let spec = consumer::Spec {
            dialer: &self.dialer,
            name: "moka-ingest worker downloads",
            queue: &self.topology.downloads,
            tag: format!("{}-downloads", self.name),
            prefetch: self.prefetch,
        };
        let mut open = consumer::open(spec, &self.topology).await?;
        self.up.store(true, Ordering::Relaxed);
        backoff.reset();
        info!(prefetch = self.prefetch, "consuming downloads");

        let stop = shutdown.child_token();
        let mut jobs = FuturesUnordered::new();
        let result = loop {
            tokio::select! {
                next = open.consumer.next() => match next {
                    None => break Err(LostError::Cancelled),
                    Some(Err(source)) => break Err(LostError::Broker(ConsumeError { what: "receive", source })),
                    Some(Ok(delivery)) => jobs.push(tokio::spawn(self.clone().guarded(delivery, stop.clone()))),
                },
                Some(_) = jobs.next() => {}
                _ = shutdown.cancelled() => break Ok(()),
            }
        };
        self.up.store(false, Ordering::Relaxed);
        // Jobs in flight are abandoned: unacknowledged, they go back to the queue when the
        // channel closes, and their settled links are not fetched again.
        stop.cancel();
        for job in jobs.iter() {
            job.abort();
        }
        open.close().await;
        result
    }

    /// Processes one job; a job that panics is returned to the queue (whose delivery limit
    /// finally dead-letters a job that keeps doing so).
    async fn guarded(self: Arc<Self>, delivery: Delivery, stop: CancellationToken) {
        let outcome = tokio::select! {
            r = AssertUnwindSafe(self.process(&delivery)).catch_unwind() => r,
            _ = stop.cancelled() => return,
        };
        let settled = match outcome {
            Ok(Ok(())) => delivery.acker.ack(BasicAckOptions::default()).await,
            Ok(Err(e)) => {
                warn!(error = %telemetry::chain(&*e), "download job left for redelivery");
                delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await
            }
            Err(_panic) => {
                error!("download job panicked; returning it to the queue");
                delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await
            }
        };
        if let Err(e) = settled {
            warn!(error = %e, "cannot settle a download job; it will be redelivered");
        }
    }

    /// Downloads the wanted links of a job and settles each. `Err`: leave the job for redelivery.
    async fn process(&self, delivery: &Delivery) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let history = History::read(&delivery.properties);
        if history.replayed {
            metrics::counter!("moka_worker_replayed_messages_total").increment(1);
        }
        let job = match Job::from_body(&delivery.data) {
            Ok(job) => job,
            Err(e) => {
                let why = telemetry::chain(&e);
                let letter = self.letter("envelope", &why, &history);
                let props = delivery.properties.clone().with_headers(headers::dead_letter_headers(
                    &delivery.properties,
                    &history,
                    &letter,
                ));
                self.publish(&self.topology.dead_exchange, DEAD_KEY, &delivery.data, props).await?;
                return Ok(());
            }
        };
        // While the lanes are behind, jobs wait (even their reading costs the database), one at a time.
        let _active = self.take_turn().await;
        // Links stored meanwhile, or dropped by a newer submission, are not fetched.
        let wanted = match self.still_wanted(&job.links, history.replayed).await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %telemetry::chain(&e), "cannot read the attachment rows; fetching all links of the job");
                vec![true; job.links.len()]
            }
        };
        let superseded = wanted.iter().filter(|w| !**w).count();
        if superseded > 0 {
            metrics::counter!("moka_worker_attachments_total", "outcome" => "superseded").increment(superseded as u64);
        }
        let links = job.links.into_iter().zip(wanted).filter_map(|(l, w)| w.then_some(l));
        let settled: Vec<Settled> =
            links.map(|link| self.download(link)).collect::<FuturesUnordered<_>>().collect().await;

        let mut later = Vec::new();
        for s in settled {
            match s {
                Settled::Done => {}
                Settled::Later(link, t) => later.push((link, t)),
                Settled::Refused(link, why) => self.dead_link(&link, "database", &why, &history, delivery).await?,
            }
        }
        if !later.is_empty() {
            self.retry_or_give_up(later, &history, delivery).await?;
        }
        Ok(())
    }

    async fn still_wanted(&self, links: &[Link], replayed: bool) -> Result<Vec<bool>, crate::store::DbError> {
        let client = self.pool.get().await?;
        attachments::still_wanted(&client, links, replayed).await
    }

    /// Downloads one link (waiting for its host and a slot) and settles its row.
    async fn download(&self, link: Link) -> Settled {
        let host = host_of(&link.url);
        let span =
            tracing::info_span!("attachment", moka_id = %link.moka_id, kind = link.kind.as_str(), url = %link.url);
        let result = async {
            // A host that asked for a long wait is not waited for here: the job would be held
            // unacknowledged meanwhile (the broker's consumer timeout is 30 minutes).
            let _host = match self.hosts.acquire(&host, MAX_GATE_WAIT).await {
                Ok(permit) => permit,
                Err(wait) => {
                    return Err(Transient {
                        why: format!("{host} asked to wait (Retry-After)"),
                        retry_after: Some(wait),
                    })
                }
            };
            let _slot = self.slots.acquire().await.expect("the download semaphore is never closed");
            let _counted = self.give_way().await;
            let result = self.attachments.fetch(link.clone()).await;
            // The gate closes while this download still holds its host slot, so no other download
            // to that host starts in between.
            if let Err(Transient { retry_after: Some(wait), .. }) = &result {
                self.hosts.defer(&host, *wait);
            }
            result
        }
        .instrument(span)
        .await;
        match result {
            Ok(record) => {
                let outcome = if record.stored { "stored" } else { "failed" };
                match self.results.settle(record).await {
                    Ok(()) => {
                        metrics::counter!("moka_worker_attachments_total", "outcome" => outcome).increment(1);
                        Settled::Done
                    }
                    Err(e @ SettleError::Refused(_)) => Settled::Refused(link, telemetry::chain(&e)),
                    // Shutting down: the job is abandoned and redelivered.
                    Err(SettleError::Shutdown) => std::future::pending().await,
                }
            }
            Err(t) => Settled::Later(link, t),
        }
    }

    /// Counts this job as active, first waiting while the lanes are behind and another job is,
    /// but no longer than [`MAX_YIELD`].
    async fn take_turn(&self) -> ActiveJob<'_> {
        let since = tokio::time::Instant::now();
        loop {
            let now = self.active_jobs.load(Ordering::Relaxed);
            let yield_now = self.backlog.busy() && now > 0 && since.elapsed() < MAX_YIELD;
            if !yield_now
                && self.active_jobs.compare_exchange(now, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return ActiveJob(&self.active_jobs);
            }
            if yield_now {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Counts this download in flight, first waiting while the lanes are behind and `floor`
    /// downloads already run, but no longer than [`MAX_YIELD`]: candidates come first, but a job
    /// must not be held until the broker's consumer timeout.
    async fn give_way(&self) -> InFlight<'_> {
        let since = tokio::time::Instant::now();
        loop {
            let now = self.in_flight.load(Ordering::Relaxed);
            let yield_now = self.backlog.busy() && now >= self.floor && since.elapsed() < MAX_YIELD;
            if !yield_now && self.in_flight.compare_exchange(now, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                metrics::gauge!("moka_worker_downloads_in_flight").increment(1.0);
                return InFlight(&self.in_flight);
            }
            if yield_now {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Sends the links that failed for now to their next delay queue, as one job; with the
    /// schedule used up, each is dead-lettered and its row says `failed`.
    async fn retry_or_give_up(
        &self,
        later: Vec<(Link, Transient)>,
        history: &History,
        delivery: &Delivery,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let n = history.retries as usize;
        let at_least = later.iter().filter_map(|(_, t)| t.retry_after).max().unwrap_or_default();
        let Some((queue, expiration)) = retry_delay(&self.topology, n, at_least) else {
            for (link, t) in later {
                let why = format!("gave up after {n} retries: {}", t.why);
                match self.results.settle(Record::failed(link.clone(), why.clone())).await {
                    Ok(()) | Err(SettleError::Refused(_)) => {}
                    Err(SettleError::Shutdown) => return Err("shutting down".into()),
                }
                metrics::counter!("moka_worker_attachments_total", "outcome" => "dead").increment(1);
                self.dead_link(&link, "attachment", &why, history, delivery).await?;
            }
            return Ok(());
        };
        let why = later
            .iter()
            .map(|(l, t)| format!("{} {}: {}", l.kind.as_str(), l.url, t.why))
            .collect::<Vec<_>>()
            .join("; ");
        let count = later.len() as u64;
        let body = Job { links: later.into_iter().map(|(l, _)| l).collect() }.body();
        let h = headers::retry_headers(&delivery.properties, history, "attachment", &why);
        let props = job_properties(&delivery.properties)
            .with_headers(h)
            .with_expiration(expiration.as_millis().to_string().into());
        self.publish("", &queue, &body, props).await?;
        warn!(links = count, retry = n + 1, delay = ?expiration, reason = %why, "downloads failed for now; retrying later");
        metrics::counter!("moka_worker_attachments_total", "outcome" => "retry").increment(count);
        metrics::counter!("moka_worker_retries_total", "reason" => "attachment").increment(1);
        Ok(())
    }

    /// Dead-letters one link as a job of its own (so `dlq replay` acts on it alone).
    async fn dead_link(
        &self,
        link: &Link,
        kind: &str,
        why: &str,
        history: &History,
        delivery: &Delivery,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let letter = self.letter(kind, why, history);
        let props =
            Job::properties().with_headers(headers::dead_letter_headers(&delivery.properties, history, &letter));
        let body = Job { links: vec![link.clone()] }.body();
        let described = describe(&props, &body);
        self.publish(&self.topology.dead_exchange, DEAD_KEY, &body, props).await?;
        warn!(moka_id = %link.moka_id, url = %link.url, kind, reason = %why, "download dead-lettered");
        metrics::counter!("moka_worker_dead_letters_total", "reason" => "attachment").increment(1);
        // The console's index of the dead-letter queue; best effort, as for submissions.
        let indexed = match self.pool.get().await {
            Ok(client) => dead_letters::record(&client, &[described], State::Dead, None).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = indexed {
            warn!(error = %telemetry::chain(&e), "cannot index a dead download");
            metrics::counter!("moka_worker_dead_letter_index_errors_total").increment(1);
        }
        Ok(())
    }

    /// Publishes a retry or a dead letter, trying again in place (with backoff) while the
    /// publisher reconnects: returning the job at once would spend its deliveries in a short outage.
    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), crate::broker::publisher::PublishError> {
        let mut backoff = self.reconnect.clone();
        let mut tries = 0;
        loop {
            match self.publisher.publish(exchange, key, body, props.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if tries >= PUBLISH_TRIES => return Err(e),
                Err(e) => {
                    tries += 1;
                    warn!(error = %telemetry::chain(&e), "cannot publish a download's retry or dead letter yet");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn letter<'a>(&'a self, kind: &'a str, message: &'a str, history: &History) -> DeadLetter<'a> {
        DeadLetter { kind, message, fields: None, attempts: history.attempts(), failed_by: &self.name }
    }
}

/// A download in flight; counted down when dropped (also when its job is aborted or panics).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("moka_worker_downloads_in_flight").decrement(1.0);
    }
}

/// A job being worked on; counted down when dropped.
struct ActiveJob<'a>(&'a AtomicUsize);

impl Drop for ActiveJob<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry job keeps the original's id (its story), typed as a job.
fn job_properties(original: &BasicProperties) -> BasicProperties {
    let props = Job::properties();
    match original.message_id() {
        Some(id) => props.with_message_id(id.clone()),
        None => props,
    }
}

/// The delay queue of retry `n` and the message's expiration: the step's delay with ±20% jitter,
/// but no earlier than `at_least` (a host's `Retry-After`). A step whose queue cannot hold that
/// long gives way to the first later step that can (or the last one, as long as it holds).
fn retry_delay(topology: &Topology, n: usize, at_least: Duration) -> Option<(String, Duration)> {
    let (queue, delay) = topology.download_retry_queue(n)?;
    let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
    let fits = |d: Duration| Topology::delay_cap(d) >= at_least;
    if fits(delay) {
        return Some((queue, jittered.max(at_least)));
    }
    let later = (n + 1..).map_while(|i| topology.download_retry_queue(i)).find(|(_, d)| fits(*d));
    match later {
        Some((queue, delay)) => Some((queue, delay.max(at_least))),
        None => {
            let (queue, delay) = (n..).map_while(|i| topology.download_retry_queue(i)).last()?;
            Some((queue, Topology::delay_cap(delay)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(delays: &[u64]) -> Topology {
        Topology::new("t", 5, vec![], delays.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    #[test]
    fn a_retry_waits_its_step_with_jitter_but_never_less_than_retry_after() {
        let t = topology(&[10, 60, 600]);
        for _ in 0..50 {
            let (q, d) = retry_delay(&t, 0, Duration::ZERO).unwrap();
            assert_eq!(q, "t.downloads.retry.10000ms");
            assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12), "{d:?}");
        }
        let (q, d) = retry_delay(&t, 0, Duration::from_secs(12)).unwrap();
        assert_eq!(q, "t.downloads.retry.10000ms", "12 s fits the first step's cap of 12.5 s");
        assert!(d >= Duration::from_secs(12));
        let (q, d) = retry_delay(&t, 0, Duration::from_secs(40)).unwrap();
        assert_eq!((q.as_str(), d), ("t.downloads.retry.60000ms", Duration::from_secs(60)));
        let (q, d) = retry_delay(&t, 1, Duration::from_secs(3600)).unwrap();
        assert_eq!((q.as_str(), d), ("t.downloads.retry.600000ms", Duration::from_secs(750)), "the longest there is");
        assert!(retry_delay(&t, 3, Duration::ZERO).is_none(), "schedule used up");
    }
}
