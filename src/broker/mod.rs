//! RabbitMQ: the topology ([`topology`]), the message format ([`envelope`]), and a supervised,
//! self-healing connection with confirm-mode publishing ([`publisher`]), and a dead message's
//! story read off its headers ([`dead`]).

pub mod consumer;
pub mod dead;
pub mod download;
pub mod envelope;
pub mod headers;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};

/// Opens a connection driven by the tokio runtime.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await
}
