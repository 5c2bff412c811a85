//! Group publishing: the broker's cost is per message, not per byte, so requests that arrive
//! while a publish waits for its confirm are sent together, as one message (envelope version 3),
//! whose confirm answers all of them, the way a database groups commits.
//!
//! A few publishing loops (one per confirm-mode channel) share one queue of requests. A loop
//! that is free takes everything waiting (up to `ingress.group_max_messages` and
//! `ingress.group_max_bytes`) and publishes it; while its confirm is awaited, new requests
//! gather for whichever loop is free next. A group that reaches either limit meanwhile goes at
//! once, without waiting for that confirm (at most [`MAX_IN_FLIGHT`] groups per loop): at 256
//! concurrent clients, waiting held three full groups back behind each confirm. At low load a
//! request finds a free loop and is published at once, alone (as version 2): no timer ever adds
//! latency.
//!
//! Every request of a group gets the group's answer: all confirmed, or all refused (nack,
//! return, timeout, no broker), so none is answered 200 unless the broker has it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::broker::{
    envelope::{Group, Meta},
    publisher::{PublishError, Publisher},
    topology::SUBMISSION_KEY,
};

/// One request waiting to be published.
struct Waiting {
    meta: Meta,
    payload: String,
    answer: oneshot::Sender<Result<(), String>>,
}

/// Groups one loop has published and not yet seen confirmed, at most. Bounds what a loop holds
/// when the broker slows down; the clients' own concurrency bounds it long before that.
pub const MAX_IN_FLIGHT: usize = 8;

/// The requests waiting, and the sum of their payloads' bytes (so that "is a full group
/// waiting?" is answered without walking the queue).
#[derive(Default)]
struct Queue {
    items: VecDeque<Waiting>,
    bytes: usize,
}

/// How large a group may grow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// The queue the publishing loops share.
pub struct Grouper {
    queue: Mutex<Queue>,
    /// For a free loop: something waits.
    wake: Notify,
    /// For a busy loop: a full group waits. (Apart from `wake`, so that a busy loop, which takes
    /// only full groups, never swallows the wake-up a free loop needed.)
    full: Notify,
    publisher: Arc<Publisher>,
    limits: Limits,
    sizes: metrics::Histogram,
}

impl Grouper {
    /// Starts `loops` publishing loops on `publisher`; they end once `stop` is cancelled and
    /// nothing waits.
    pub fn start(publisher: Arc<Publisher>, limits: Limits, loops: usize, stop: CancellationToken) -> Arc<Grouper> {
        let grouper = Arc::new(Grouper {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            full: Notify::new(),
            publisher,
            limits,
            sizes: metrics::histogram!("moka_ingress_group_size"),
        });
        for _ in 0..loops.max(1) {
            tokio::spawn(grouper.clone().run(stop.clone()));
        }
        grouper
    }

    /// Publishes one submission with whatever else is waiting; returns once the broker
    /// confirmed it (or why not).
    pub async fn publish(&self, meta: Meta, payload: String) -> Result<(), String> {
        let (answer, answered) = oneshot::channel();
        let full = {
            let mut queue = self.lock();
            queue.bytes += payload.len();
            queue.items.push_back(Waiting { meta, payload, answer });
            self.is_full(&queue)
        };
        self.wake.notify_one();
        if full {
            self.full.notify_one();
        }
        answered.await.unwrap_or_else(|_| Err("the ingress is shutting down".into()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether what waits makes a group that reaches a limit.
    fn is_full(&self, queue: &Queue) -> bool {
        queue.items.len() >= self.limits.max_messages || queue.bytes >= self.limits.max_bytes
    }

    /// What waits now, up to the limits (always at least one when anything waits); with
    /// `only_full`, nothing unless a group that reaches a limit is waiting.
    fn take(&self, only_full: bool) -> Vec<Waiting> {
        let mut queue = self.lock();
        if only_full && !self.is_full(&queue) {
            return Vec::new();
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.items.front() {
            let size = next.payload.len();
            if !group.is_empty() && (group.len() >= self.limits.max_messages || bytes + size > self.limits.max_bytes) {
                break;
            }
            bytes += size;
            group.push(queue.items.pop_front().expect("front exists"));
        }
        queue.bytes -= bytes;
        // Another loop may take what is left while this one publishes.
        if !queue.items.is_empty() {
            self.wake.notify_one();
        }
        if self.is_full(&queue) {
            self.full.notify_one();
        }
        group
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            // A free loop takes whatever waits; a busy one only a full group.
            let group = match in_flight.len() {
                0 => self.take(false),
                n if n < MAX_IN_FLIGHT => self.take(true),
                _ => Vec::new(),
            };
            if !group.is_empty() {
                in_flight.push(self.publish_group(group));
                continue;
            }
            tokio::select! {
                // (An empty set yields None at once: the branch is then off until the next turn.)
                Some(()) = in_flight.next() => {}
                _ = self.wake.notified(), if in_flight.is_empty() => {}
                _ = self.full.notified(), if !in_flight.is_empty() => {}
                _ = stop.cancelled(), if in_flight.is_empty() => {
                    // Whatever still waits is published before the loop ends.
                    if self.lock().items.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    /// Publishes `group` and answers each of its requests with the outcome.
    async fn publish_group(&self, group: Vec<Waiting>) {
        self.sizes.record(group.len() as f64);
        let result = self.send(&group).await.map_err(|e| e.to_string());
        for w in group {
            // A request that gave up (its client went away) no longer listens.
            let _ = w.answer.send(result.clone());
        }
    }

    /// One confirmed publish: version 2 for one submission, a version 3 group for more.
    async fn send(&self, group: &[Waiting]) -> Result<(), PublishError> {
        let exchange = &self.publisher.topology().exchange;
        match group {
            [one] => {
                let body = one.meta.body(one.payload.as_bytes());
                self.publisher.publish(exchange, SUBMISSION_KEY, &body, one.meta.properties()).await
            }
            many => {
                let body = Group::body(many.iter().map(|w| (&w.meta, w.payload.as_bytes())), many.len());
                self.publisher.publish(exchange, SUBMISSION_KEY, &body, Group::properties()).await
            }
        }
    }
}
