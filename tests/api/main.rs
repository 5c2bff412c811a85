//! Integration tests against the machine's real RabbitMQ (and, for the worker, PostgreSQL).
//! Each test uses its own queue prefix (and database schema), so they run in parallel, and
//! deletes what it declared.

mod attachments;
mod cli;
mod console;
mod contract;
mod failures;
mod groups;
mod helpers;
mod hostile_ingress;
mod hostile_worker;
mod ingress;
mod monitoring;
mod s3;
mod worker;
