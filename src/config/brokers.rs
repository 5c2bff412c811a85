//! `amqp_url`: the address of one RabbitMQ node, or of several nodes of one cluster.
//!
//! Written as one URL, as URLs separated by commas (`AMQP_URL`), or as a list in the config file.
//! The order is shuffled once per process, so that the connections of many processes spread over
//! the nodes; each connection starts with the first and moves on to the next when it loses its
//! node (see [`crate::broker::Dialer`]). The URLs hold a password: only their host and port are
//! ever shown. A comma inside a password is written `%2C` (a literal one separates addresses).

use std::{fmt, sync::Arc};

use lapin::uri::AMQPUri;
use rand::seq::SliceRandom;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// The broker nodes, in this process's order.
#[derive(Clone)]
pub struct BrokerUrls {
    nodes: Arc<[Node]>,
}

struct Node {
    url: SecretString,
    /// `host:port`, for logs and errors.
    label: String,
}

impl BrokerUrls {
    /// Parses the written URLs (each one checked), then shuffles them.
    pub fn parse<S: AsRef<str>>(written: &[S]) -> Result<BrokerUrls, String> {
        let mut nodes = Vec::with_capacity(written.len());
        for (i, url) in written.iter().map(|u| u.as_ref().trim()).enumerate() {
            if url.is_empty() {
                return Err(format!("amqp_url: address {} of {} is empty", i + 1, written.len()));
            }
            // The error names the position, never the URL nor the parser's message (which may
            // quote it): it may hold a password.
            let uri: AMQPUri = url.parse().map_err(|_: String| {
                format!("amqp_url: address {} is not an AMQP URL (amqp://user:password@host:port/vhost)", i + 1)
            })?;
            let label = format!("{}:{}", uri.authority.host, uri.authority.port);
            nodes.push(Node { url: SecretString::from(url.to_owned()), label });
        }
        if nodes.is_empty() {
            return Err("amqp_url: no broker address given".into());
        }
        nodes.shuffle(&mut rand::thread_rng());
        Ok(BrokerUrls { nodes: nodes.into() })
    }

    /// How many nodes (at least one).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never empty; here for the lint.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The URL of node `i` (in this process's order).
    pub fn url(&self, i: usize) -> &str {
        self.nodes[i].url.expose_secret()
    }

    /// `host:port` of node `i`: safe to log.
    pub fn label(&self, i: usize) -> &str {
        &self.nodes[i].label
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.nodes.iter().map(|n| &n.label)).finish()
    }
}

impl<'de> Deserialize<'de> for BrokerUrls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BrokerUrls, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        let urls = match Written::deserialize(d)? {
            Written::One(s) => s.split(',').map(str::to_owned).collect::<Vec<_>>(),
            Written::Many(list) => list,
        };
        BrokerUrls::parse(&urls).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_several_separated_by_commas_or_a_list_and_never_the_password_in_sight() {
        let one = BrokerUrls::parse(&["amqp://guest:s3cret@127.0.0.1:5672/%2f"]).unwrap();
        assert_eq!((one.len(), one.label(0)), (1, "127.0.0.1:5672"));
        assert!(one.url(0).contains("s3cret"));

        let toml = r#"a = "amqp://u:s3cret@127.0.0.1:5681/%2f, amqp://u:s3cret@127.0.0.2:5682/%2f,amqp://u:s3cret@127.0.0.3:5683""#;
        #[derive(Deserialize)]
        struct T {
            a: BrokerUrls,
        }
        let t: T = toml::from_str(toml).unwrap();
        let mut labels: Vec<&str> = (0..t.a.len()).map(|i| t.a.label(i)).collect();
        labels.sort();
        assert_eq!(labels, ["127.0.0.1:5681", "127.0.0.2:5682", "127.0.0.3:5683"]);
        let debug = format!("{:?}", t.a);
        assert!(!debug.contains("s3cret") && debug.contains("127.0.0.2:5682"), "{debug}");

        let t: T = toml::from_str(r#"a = ["amqp://127.0.0.1:5681", "amqp://127.0.0.1:5682"]"#).unwrap();
        assert_eq!(t.a.len(), 2);
    }

    #[test]
    fn an_empty_or_unreadable_address_refuses_the_start_without_showing_it() {
        let e = BrokerUrls::parse(&["amqp://127.0.0.1:5672", " "]).unwrap_err();
        assert_eq!(e, "amqp_url: address 2 of 2 is empty");
        for bad in ["http://u:s3cret@127.0.0.1:5672", "amqp:u:s3cret@127.0.0.1"] {
            let e = BrokerUrls::parse(&[bad]).unwrap_err();
            assert!(e.starts_with("amqp_url: address 1 is not an AMQP URL") && !e.contains("s3cret"), "{e}");
        }
        // A comma in a password is percent-encoded; the password reaches the broker decoded.
        let one = BrokerUrls::parse(&["amqp://u:a%2Cb@127.0.0.1:5672"]).unwrap();
        assert_eq!(one.url(0).parse::<AMQPUri>().unwrap().authority.userinfo.password, "a,b");
        assert!(BrokerUrls::parse::<&str>(&[]).is_err());
    }

    #[test]
    fn the_order_is_shuffled_per_process_so_that_connections_spread() {
        let urls: Vec<String> = (0..8).map(|i| format!("amqp://127.0.0.1:{}", 5680 + i)).collect();
        let firsts: std::collections::HashSet<String> =
            (0..64).map(|_| BrokerUrls::parse(&urls).unwrap().label(0).to_owned()).collect();
        // 64 draws of the first of 8: all the same has probability 8^-63.
        assert!(firsts.len() > 1, "{firsts:?}");
    }
}
