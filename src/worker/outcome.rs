//! The message outcomes, in one place: a delivery as it was read ([`Received`]), and what a batch
//! decides for each message: stored ([`Ready`]), retried later ([`Retry`]) or dead ([`Dead`]).
//! [`BatchError`] is why a whole batch is left unacknowledged, to be redelivered.

use std::borrow::Cow;

use lapin::{message::Delivery, BasicProperties};

use super::failure::Failure;
use crate::{
    broker::{
        envelope::{Envelope, EnvelopeError, Group},
        headers::History,
    },
    domain::{candidate::Candidate, submission::Meta},
};

/// A submission as it arrived, read once: its envelope (or why it is not one) and what its
/// delivery's headers say about earlier attempts. The rest of the worker passes this along
/// instead of reading the delivery again. A group's delivery holds several.
pub struct Received<'a> {
    pub delivery: &'a Delivery,
    pub history: History,
    /// The envelope; its payload is taken (left empty) when the message becomes [`Ready`].
    pub envelope: Result<Envelope, EnvelopeError>,
    /// A submission of a group: its place in the group. It is retried or dead-lettered on its
    /// own, as a version 2 message, which is built only then (failures are rare; copying every
    /// submission of every group ahead of time was work on the path of each message).
    /// `None`: the delivery is the message.
    pub own: Option<usize>,
}

impl<'a> Received<'a> {
    pub fn read(delivery: &'a Delivery) -> Received<'a> {
        Received {
            delivery,
            history: History::read(&delivery.properties),
            envelope: Envelope::from_delivery(&delivery.properties, &delivery.data),
            own: None,
        }
    }

    /// Every submission of `delivery`: one, or each of a group's (a group that cannot be read is
    /// one message, dead-lettered whole with the reason).
    pub fn read_all(delivery: &'a Delivery) -> Vec<Received<'a>> {
        if !Group::is_group(&delivery.properties) {
            return vec![Self::read(delivery)];
        }
        let history = History::read(&delivery.properties);
        match Envelope::read_all(&delivery.properties, &delivery.data) {
            Err(e) => vec![Received { delivery, history, envelope: Err(e), own: None }],
            Ok(envelopes) => envelopes
                .into_iter()
                .enumerate()
                .map(|(i, e)| Received { delivery, history: history.clone(), envelope: Ok(e), own: Some(i) })
                .collect(),
        }
    }

    /// The message's properties: its own, version 2 (a group's submission), else its delivery's.
    pub fn properties(&self) -> Cow<'_, BasicProperties> {
        match (self.own, &self.envelope) {
            (Some(_), Ok(e)) => Cow::Owned(e.meta.properties()),
            _ => Cow::Borrowed(&self.delivery.properties),
        }
    }

    /// The message's body: its own, version 2 (a group's submission, read again from the group:
    /// its payload may have moved on), else its delivery's.
    pub fn body(&self) -> Cow<'_, [u8]> {
        let own = self.own.and_then(|i| {
            let mut all = Envelope::read_all(&self.delivery.properties, &self.delivery.data).ok()?;
            (i < all.len()).then(|| all.swap_remove(i))
        });
        match own {
            Some(e) => Cow::Owned(e.meta.body(e.payload.as_bytes())),
            None => Cow::Borrowed(&self.delivery.data),
        }
    }

    pub fn meta(&self) -> Option<&Meta> {
        self.envelope.as_ref().ok().map(|e| &e.meta)
    }

    /// Processing attempts so far, this one included, as the `submissions` table counts them.
    pub fn attempts(&self) -> i32 {
        i32::try_from(self.history.attempts()).unwrap_or(i32::MAX)
    }

    /// The message and candidate ids, for logs.
    pub fn ids(&self) -> (String, String) {
        let message_id = self.properties().message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
        (message_id, self.meta().map(|m| m.moka_id.clone()).unwrap_or_default())
    }
}

/// A message ready to be stored.
pub struct Ready {
    /// Its position in the batch.
    pub index: usize,
    pub meta: Meta,
    pub payload: String,
    pub candidate: Candidate,
    pub attempts: i32,
}

/// A message that will be dead-lettered.
pub struct Dead {
    pub index: usize,
    pub meta: Option<Meta>,
    pub failure: Failure,
    pub attempts: i32,
}

impl Dead {
    /// A transient failure with no retry left (the message at `index` of the batch): dead, saying so.
    pub fn exhausted(index: usize, received: &Received<'_>, mut failure: Failure) -> Dead {
        failure.transient = false;
        failure.message = format!("gave up after {} retries: {}", received.history.retries, failure.message);
        Dead { index, meta: received.meta().cloned(), failure, attempts: received.attempts() }
    }
}

/// A message that failed for now and will be retried after a delay.
pub struct Retry {
    pub index: usize,
    pub failure: Failure,
}

/// Where a message with a transient failure goes next.
pub enum Next {
    Retry(Retry),
    Dead(Dead),
}

/// Why a batch was left unacknowledged (it will be redelivered).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Acknowledging, or moving a failed message on, did not work: the lane reconnects.
    #[error("{what}")]
    Broker {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("shutting down")]
    Shutdown,
}
