//! Group publishing: the broker's cost is per message, not per byte, so requests that arrive
//! while a publish waits for its confirm are sent together, as one message (envelope version 3),
//! whose confirm answers all of them, the way a database groups commits.
//!
//! A few publishing loops (one per confirm-mode channel) share one queue of requests, and take
//! turns: a turn is one publish whose confirm is awaited, and there are as many turns as loops.
//! At low load a request that finds nothing waiting and a turn free takes the turn itself and
//! publishes at once, alone (as version 2), from its own task: no timer and no hand-over to a
//! loop add latency. Requests that come while every turn is taken gather; a loop whose turn
//! comes takes everything waiting (up to `ingress.group_max_messages` and
//! `ingress.group_max_bytes`) and publishes it as one group. A group that reaches either limit
//! goes at once, turn or not (at most [`MAX_IN_FLIGHT`] groups per loop): at 256 concurrent
//! clients, waiting for a turn held three full groups back behind each confirm.
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

/// The requests waiting, the sum of their payloads' bytes (so that "is a full group waiting?" is
/// answered without walking the queue), and the turns taken.
#[derive(Default)]
struct Queue {
    items: VecDeque<Waiting>,
    bytes: usize,
    /// Turns taken, by loops and by requests publishing alone; at most `Grouper::turns`.
    busy: usize,
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
    /// One per loop.
    turns: usize,
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
            turns: loops.max(1),
            sizes: metrics::histogram!("moka_ingress_group_size"),
        });
        for _ in 0..grouper.turns {
            tokio::spawn(grouper.clone().run(stop.clone()));
        }
        grouper
    }

    /// Publishes one submission, alone or with whatever else is waiting; returns once the
    /// broker confirmed it (or why not).
    pub async fn publish(&self, meta: Meta, payload: String) -> Result<(), String> {
        let alone = {
            let mut queue = self.lock();
            let alone = queue.items.is_empty() && queue.busy < self.turns;
            if alone {
                queue.busy += 1;
            }
            alone
        };
        if alone {
            // The turn is given back however this ends, also when the request's future is
            // dropped in the middle (its client went away).
            let _turn = Turn(self);
            self.sizes.record(1.0);
            return self.send_one(&meta, &payload).await.map_err(|e| e.to_string());
        }
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

    /// Gives a turn back, and wakes a loop for what gathered meanwhile.
    fn give_back_turn(&self) {
        let waiting = {
            let mut queue = self.lock();
            queue.busy -= 1;
            !queue.items.is_empty()
        };
        if waiting {
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether what waits makes a group that reaches a limit.
    fn is_full(&self, queue: &Queue) -> bool {
        queue.items.len() >= self.limits.max_messages || queue.bytes >= self.limits.max_bytes
    }

    /// The next group to publish (only if `more`: the loop asking may publish another), and
    /// whether it took a turn: with a turn free (and none held by the loop asking), whatever
    /// waits, up to the limits; else, if a group that reaches a limit waits, that group; else
    /// nothing.
    fn take(&self, holds_turn: bool, more: bool) -> (Vec<Waiting>, bool) {
        let mut queue = self.lock();
        let turn = more && !holds_turn && queue.busy < self.turns && !queue.items.is_empty();
        let full = more && self.is_full(&queue);
        if !(turn || full) {
            return (Vec::new(), false);
        }
        if turn {
            queue.busy += 1;
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
        (group, turn)
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        // Each group in flight answers, when done, whether it took a turn (given back then).
        let mut in_flight = FuturesUnordered::new();
        let mut holds_turn = false;
        loop {
            let (group, turn) = self.take(holds_turn, in_flight.len() < MAX_IN_FLIGHT);
            if !group.is_empty() {
                holds_turn |= turn;
                let published = self.publish_group(group);
                in_flight.push(async move {
                    published.await;
                    turn
                });
                continue;
            }
            tokio::select! {
                // (An empty set yields None at once: the branch is then off until the next turn.)
                Some(took_turn) = in_flight.next() => {
                    if took_turn {
                        holds_turn = false;
                        self.give_back_turn();
                    }
                }
                _ = self.wake.notified(), if !holds_turn => {}
                // (Off while this loop may not publish more: it would swallow the notice another
                // loop needs.)
                _ = self.full.notified(), if in_flight.len() < MAX_IN_FLIGHT => {}
                _ = stop.cancelled(), if in_flight.is_empty() => {
                    // Whatever still waits is published before the loop ends. (The ingress stops
                    // its loops only once no request is in flight, so no turn is held elsewhere.)
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
        match group {
            [one] => self.send_one(&one.meta, &one.payload).await,
            many => {
                let body = Group::body(many.iter().map(|w| (&w.meta, w.payload.as_bytes())), many.len());
                let exchange = &self.publisher.topology().exchange;
                self.publisher.publish(exchange, SUBMISSION_KEY, &body, Group::properties()).await
            }
        }
    }

    /// One submission as version 2.
    async fn send_one(&self, meta: &Meta, payload: &str) -> Result<(), PublishError> {
        let exchange = &self.publisher.topology().exchange;
        self.publisher.publish(exchange, SUBMISSION_KEY, &meta.body(payload.as_bytes()), meta.properties()).await
    }
}

/// A turn taken by a request publishing alone; given back when dropped.
struct Turn<'a>(&'a Grouper);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.give_back_turn();
    }
}
