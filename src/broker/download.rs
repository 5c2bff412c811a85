//! The download job: the wire format of the messages on the downloads queue. A job names the
//! links to fetch (candidate, kind, URL); the worker that committed the candidates publishes one
//! job per batch, and a download that must be retried or dead-lettered travels as a job of one link.
//!
//! Body: JSON `{"links":[{"moka_id":…,"kind":"resume"|"interview_feedback"|"offer","url":…}]}`;
//! AMQP `type` [`MESSAGE_TYPE`], persistent, with a message id.

use lapin::{types::ShortString, BasicProperties};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::attachments::Link;

/// AMQP `type` property of download jobs.
pub const MESSAGE_TYPE: &str = "moka.download.v1";

/// Links to download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub links: Vec<Link>,
}

/// Why a delivery is not a readable job (a permanent failure: it is dead-lettered).
#[derive(Debug, thiserror::Error)]
#[error("not a readable download job")]
pub struct JobError(#[source] pub serde_json::Error);

impl Job {
    /// Whether a message is a download job (by its AMQP `type`).
    pub fn is_job(props: &BasicProperties) -> bool {
        props.kind().as_ref().is_some_and(|k| k.as_str() == MESSAGE_TYPE)
    }

    /// Properties for publishing a new job: persistent, typed, with a fresh message id.
    pub fn properties() -> BasicProperties {
        let mut id = Uuid::encode_buffer();
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_type(MESSAGE_TYPE.into())
            .with_content_type("application/json".into())
            .with_message_id(ShortString::from(&*Uuid::now_v7().hyphenated().encode_lower(&mut id)))
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("writing JSON to memory cannot fail")
    }

    pub fn from_body(body: &[u8]) -> Result<Job, JobError> {
        serde_json::from_slice(body).map_err(JobError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attachments::Kind;

    #[test]
    fn a_job_reads_back_as_written_and_names_its_kinds_as_the_table_does() {
        let job = Job {
            links: vec![Link { moka_id: "c1".into(), kind: Kind::InterviewFeedback, url: "http://127.0.0.1/a".into() }],
        };
        let body = job.body();
        assert!(String::from_utf8_lossy(&body).contains(r#""kind":"interview_feedback""#));
        assert_eq!(Job::from_body(&body).unwrap(), job);
        assert!(Job::from_body(b"{\"links\":[{\"kind\":\"photo\"}]}").is_err());
        assert!(Job::is_job(&Job::properties()));
    }
}
