//! Queues the downloads of a committed batch: its pending links, as download jobs on the
//! downloads queue, confirmed by the broker before the batch is acknowledged (a crash in between
//! redelivers the batch, which finds the same links pending and queues them again).

use std::sync::Arc;

use crate::broker::{
    download::Job,
    publisher::{PublishError, Publisher},
    topology::Topology,
};
use crate::store::attachments::Link;

/// Most links in one job: a job is acknowledged when all its links are settled.
pub const MAX_LINKS_PER_JOB: usize = 256;

/// Publishes download jobs.
pub struct JobQueue {
    publisher: Arc<Publisher>,
    queue: String,
}

impl JobQueue {
    pub fn new(publisher: Arc<Publisher>, topology: &Topology) -> JobQueue {
        JobQueue { publisher, queue: topology.downloads.clone() }
    }

    /// Publishes jobs for `links` and waits for the broker's confirms.
    pub async fn enqueue(&self, links: &[Link]) -> Result<(), PublishError> {
        let jobs = links.chunks(MAX_LINKS_PER_JOB).map(|chunk| {
            let body = Job { links: chunk.to_vec() }.body();
            async move { self.publisher.publish("", &self.queue, &body, Job::properties()).await }
        });
        futures_util::future::try_join_all(jobs).await?;
        metrics::counter!("moka_worker_downloads_queued_total").increment(links.len() as u64);
        Ok(())
    }
}
