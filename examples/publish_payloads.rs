//! Publishes worst-case payloads straight to the submission exchange, confirmed, for
//! `scripts/bench-payload-memory.sh`. Settings (broker URL, queue prefix, limits) come from the
//! environment like the service's, so the topology it declares is the worker's.
//!
//! ```sh
//! MOKA_INGEST_QUEUE_PREFIX=bench cargo run --release --example publish_payloads -- entries 100
//! ```
//!
//! Kinds, each payload about `ingress.body_limit_bytes` (1 MiB) long:
//! - `entries`: `educationInfo` of empty objects (about 350,000): refused by the entry cap;
//! - `strings`: 50 education and 50 experience entries whose texts are 2,000 characters (cut);
//! - `offerinfo`: an `offerInfo` object of small keys, stored as it is;
//! - `warnings`: 50 entries whose every field is an array (350 warnings, capped), padded with a
//!   long unknown key;
//! - `noname`: a small payload without its required `name` (a validation failure: the
//!   dead letters of `scripts/bench-console.sh`).

use chrono::Utc;
use moka_ingest::{
    broker::{
        self,
        envelope::Meta,
        topology::{Topology, SUBMISSION_KEY},
    },
    config::Settings,
};
use serde_json::{json, Value};

fn base(id: &str) -> Value {
    json!({"id": id, "name": "张三", "phone": "13203030303", "email": "a@b.com", "jobTitle": "dev",
           "operator": {"name": "李四"}})
}

/// A payload of `kind`, about `size` bytes long.
fn payload(kind: &str, id: &str, size: usize) -> Result<String, String> {
    let mut v = base(id);
    let text = |n: usize| "x".repeat(n);
    match kind {
        "entries" => {
            let head = v.to_string();
            // `{},` is three bytes: as many as fit.
            let n = (size.saturating_sub(head.len() + 20)) / 3;
            let list = vec!["{}"; n].join(",");
            return Ok(format!("{},\"educationInfo\":[{list}]}}", &head[..head.len() - 1]));
        }
        "strings" => {
            let entry = json!({"startDate": text(2000), "endDate": text(2000), "school": text(2000),
                               "speciality": text(2000), "academicDegree": text(2000)});
            let job =
                json!({"startDate": text(2000), "endDate": text(2000), "company": text(2000), "title": text(2000)});
            v["educationInfo"] = Value::Array(vec![entry; 50]);
            v["experienceInfo"] = Value::Array(vec![job; 50]);
        }
        "offerinfo" => {
            let n = size / 12;
            v["offerInfo"] = (0..n).map(|i| (format!("k{i}"), json!(1))).collect::<serde_json::Map<_, _>>().into();
        }
        "warnings" => {
            let entry = json!({"startDate": [], "endDate": [], "school": [], "speciality": [], "academicDegree": [],
                               "company": [], "title": []});
            v["educationInfo"] = Value::Array(vec![entry.clone(); 50]);
            v["experienceInfo"] = Value::Array(vec![entry; 50]);
            let len = v.to_string().len();
            v["notes"] = json!(text(size.saturating_sub(len + 20)));
        }
        "noname" => {
            v.as_object_mut().expect("an object").remove("name");
        }
        other => return Err(format!("unknown kind {other:?}: entries, strings, offerinfo, warnings or noname")),
    }
    Ok(v.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kind), Some(count)) = (args.first(), args.get(1).and_then(|n| n.parse::<usize>().ok())) else {
        anyhow::bail!("usage: publish_payloads KIND COUNT");
    };
    let settings = Settings::load(None)?;
    let topology = Topology::from_settings(&settings.queue_prefix, &settings.broker, &settings.retry);
    let conn = broker::Dialer::new(&settings.amqp_url).connect("moka-ingest bench publisher").await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    ch.confirm_select(Default::default()).await?;
    let mut bytes = 0;
    let mut pending = Vec::new();
    for i in 0..count {
        let id = format!("bench-{kind}-{i}");
        let payload = payload(kind, &id, settings.ingress.body_limit_bytes).map_err(anyhow::Error::msg)?;
        bytes += payload.len();
        let meta = Meta::new("bench", Utc::now().timestamp(), &id, Utc::now());
        let body = meta.body(payload.as_bytes());
        pending.push(
            ch.basic_publish(&topology.exchange, SUBMISSION_KEY, Default::default(), &body, meta.properties()).await?,
        );
        // Confirms in groups: the broker takes them faster than one by one.
        if pending.len() == 20 {
            for confirm in pending.drain(..) {
                anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a message");
            }
        }
    }
    for confirm in pending {
        anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a message");
    }
    eprintln!("published {count} {kind} payloads, {} MiB of payload", bytes / (1024 * 1024));
    let _ = conn.close(200, "bye").await;
    Ok(())
}
