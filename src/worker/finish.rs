//! The last step of a batch, off the lane's path: queue the downloads of its committed candidates
//! (confirmed by the broker) and acknowledge its messages. A lane hands each committed segment to
//! its finisher and goes on with the next batch, so the broker's confirm of a download job (a
//! quorum-queue write) does not add to every batch's time. Segments are finished in order: an
//! acknowledgement (`multiple`) never covers a segment whose downloads are not queued yet.

use std::sync::Arc;

use futures_util::{stream::FuturesOrdered, StreamExt};
use lapin::{acker::Acker, options::BasicAckOptions};
use tokio::sync::mpsc;

use super::{attachments::jobs::JobQueue, outcome::BatchError};
use crate::store::attachments::Link;

/// A committed segment: its downloads to queue, and the acknowledgement that settles it.
#[derive(Debug)]
pub struct Finish {
    pub links: Vec<Link>,
    /// The segment's last delivery (acknowledged with `multiple`).
    pub acker: Acker,
}

/// Segments whose download jobs may await their confirms at once.
const IN_FLIGHT: usize = 8;

/// Finishes segments in order until the lane drops its sender, or until one fails: then it stops
/// (acknowledging nothing more) and returns why; the lane reconnects and what was not
/// acknowledged is redelivered (and found committed: its downloads are queued again).
///
/// The jobs of several segments are published at once (their confirms overlap), but each
/// segment is acknowledged only after its own job and every earlier segment are done.
pub async fn run(jobs: Option<Arc<JobQueue>>, mut rx: mpsc::Receiver<Finish>) -> Result<(), BatchError> {
    let mut queued = FuturesOrdered::new();
    let mut open = true;
    while open || !queued.is_empty() {
        tokio::select! {
            f = rx.recv(), if open && queued.len() < IN_FLIGHT => match f {
                None => open = false,
                Some(f) => {
                    let jobs = jobs.clone();
                    queued.push_back(async move {
                        if let (Some(jobs), false) = (jobs, f.links.is_empty()) {
                            jobs.enqueue(&f.links).await.map_err(|e| BatchError::Broker {
                                what: "queueing the downloads failed",
                                source: e.into(),
                            })?;
                        }
                        Ok::<_, BatchError>(f.acker)
                    });
                }
            },
            Some(done) = queued.next() => {
                done?.ack(BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| BatchError::Broker { what: "ack failed", source: e.into() })?;
            }
        }
    }
    Ok(())
}
