//! Group publishing: the broker's cost is per message, not per byte, so requests that arrive
//! while a publish waits for its confirm are sent together, as one message (envelope version 3),
//! whose confirm answers all of them, the way a database groups commits.
//!
//! A few publishing loops (one per confirm-mode channel) share one queue of requests. A loop
//! that is free takes everything waiting (up to `ingress.group_max_messages` and
//! `ingress.group_max_bytes`) and publishes it; while its confirm is awaited, new requests
//! gather for whichever loop is free next. At low load a request finds a free loop and is
//! published at once, alone (as version 2): no timer ever adds latency.
//!
//! Every request of a group gets the group's answer: all confirmed, or all refused (nack,
//! return, timeout, no broker), so none is answered 200 unless the broker has it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

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

/// How large a group may grow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// The queue the publishing loops share.
pub struct Grouper {
    queue: Mutex<VecDeque<Waiting>>,
    wake: Notify,
    publisher: Arc<Publisher>,
    limits: Limits,
    sizes: metrics::Histogram,
}

impl Grouper {
    /// Starts `loops` publishing loops on `publisher`; they end once `stop` is cancelled and
    /// nothing waits.
    pub fn start(publisher: Arc<Publisher>, limits: Limits, loops: usize, stop: CancellationToken) -> Arc<Grouper> {
        let grouper = Arc::new(Grouper {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
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
        self.lock().push_back(Waiting { meta, payload, answer });
        self.wake.notify_one();
        answered.await.unwrap_or_else(|_| Err("the ingress is shutting down".into()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What waits now, up to the limits (always at least one when anything waits).
    fn take(&self) -> Vec<Waiting> {
        let mut queue = self.lock();
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.front() {
            let size = next.payload.len();
            if !group.is_empty() && (group.len() >= self.limits.max_messages || bytes + size > self.limits.max_bytes) {
                break;
            }
            bytes += size;
            group.push(queue.pop_front().expect("front exists"));
        }
        // Another loop may take what is left while this one publishes.
        if !queue.is_empty() {
            self.wake.notify_one();
        }
        group
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let group = self.take();
            if group.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.cancelled() => {
                        if self.lock().is_empty() {
                            return;
                        }
                        continue;
                    }
                }
            }
            self.sizes.record(group.len() as f64);
            let result = self.send(&group).await.map_err(|e| e.to_string());
            for w in group {
                // A request that gave up (its client went away) no longer listens.
                let _ = w.answer.send(result.clone());
            }
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
