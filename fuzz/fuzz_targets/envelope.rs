//! The envelope reader (`broker::envelope`), every version: version 1 (metadata in headers),
//! version 2 (a JSON line, then the payload), version 3 (a group), and the failure headers of
//! `broker::headers`, from any properties and body. Besides not panicking: what the ingress writes
//! reads back exactly, payload bytes and metadata alike, alone or in a group.
#![no_main]

use chrono::{TimeZone, Utc};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};
use libfuzzer_sys::fuzz_target;
use moka_ingest::broker::{
    envelope::{Envelope, Group, MESSAGE_TYPE},
    headers::{v1, History},
};
use moka_ingest::domain::submission::Meta;

/// Header names the readers look at, and one they do not.
const NAMES: [&str; 8] = [
    v1::ENVELOPE_VERSION,
    v1::RECEIVED_AT,
    v1::ACCESS_KEY,
    v1::TONCE,
    v1::MOKA_ID,
    "x-retry-count",
    "x-death",
    "other",
];

/// Splits `data` at the first occurrences of `sep`: (head, tail), tail empty if none.
fn cut(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 4 {
        // Arbitrary properties (a type, a header table) and body.
        0..=2 => {
            let kinds = [None, Some(MESSAGE_TYPE), Some("moka.submission.v3"), Some("moka.submission.v1")];
            let mut props =
                BasicProperties::default().with_message_id(ShortString::from("0192f000-0000-7000-8000-000000000000"));
            if let Some(kind) = kinds[usize::from(selector >> 2) % kinds.len()] {
                props = props.with_type(ShortString::from(kind));
            }
            // Headers: `\x01`-separated entries, each a name index byte, a type byte, a value.
            let (headers, body) = cut(rest, 0xff);
            if !headers.is_empty() {
                let mut table = FieldTable::default();
                for entry in headers.split(|&b| b == 0x01) {
                    let [name, kind, value @ ..] = entry else { continue };
                    let text = String::from_utf8_lossy(value).into_owned();
                    let value = match kind % 4 {
                        0 => AMQPValue::LongString(LongString::from(text)),
                        1 => AMQPValue::LongLongInt(text.parse().unwrap_or(i64::from(value.len() as u8))),
                        2 => AMQPValue::ShortString(ShortString::from(text)),
                        _ => AMQPValue::FieldArray(vec![AMQPValue::FieldTable(FieldTable::default())].into()),
                    };
                    table.insert(ShortString::from(NAMES[usize::from(*name) % NAMES.len()]), value);
                }
                props = props.with_headers(table);
            }
            let _ = Envelope::read_all(&props, body);
            let _ = Envelope::from_delivery(&props, body);
            let _ = Group::count(&props, body);
            let _ = History::read(&props);
        }
        // Round trip: fields and payloads from the input, written as the ingress writes them.
        _ => {
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.split('\u{1}');
            let (key, id) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let tonce = i64::from(rest.len() as u32) * 7919 - 1_000_000;
            let at = Utc.timestamp_opt(1_764_400_000 + i64::from(selector), 123_456_000).unwrap();
            let payloads: Vec<&str> = parts.collect();
            let metas: Vec<Meta> = payloads.iter().map(|_| Meta::new(key, tonce, id, at).signed(rest)).collect();
            if let (Some(meta), Some(payload)) = (metas.first(), payloads.first()) {
                let back =
                    Envelope::from_delivery(&meta.properties(), &meta.body(payload.as_bytes())).expect("v2 reads back");
                assert_eq!((&back.meta, back.payload.as_str()), (meta, *payload));
            }
            if !payloads.is_empty() && payloads.len() <= 64 {
                let items = metas.iter().zip(&payloads).map(|(m, p)| (m, p.as_bytes()));
                let body = Group::body(items, payloads.len());
                let back = Envelope::read_all(&Group::properties(), &body).expect("a group reads back");
                assert_eq!(back.len(), payloads.len());
                for ((e, m), p) in back.iter().zip(&metas).zip(&payloads) {
                    assert_eq!((&e.meta, e.payload.as_str()), (m, *p));
                }
            }
        }
    }
});
