//! The request parameters' decoder (`ingress::params`): query string plus a form or JSON body,
//! any bytes, before anything is authenticated. Besides not panicking: an accepted request has no
//! name twice and at most `MAX_PARAMETERS`, and what a form body yields survives being encoded
//! again and decoded (the values the signature is computed over are exactly what was sent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moka_ingest::ingress::params::{Params, MAX_PARAMETERS};

const TYPES: [Option<&str>; 5] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("Application/JSON; charset=utf-8"),
    Some("multipart/form-data; boundary=x"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let content_type = TYPES[usize::from(selector) % TYPES.len()];
    // The next byte says how much of the rest is the query string (when it is text).
    let (query, body) = match rest.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
        None => (&[][..], rest),
    };
    let query = std::str::from_utf8(query).ok().filter(|_| selector & 0x80 != 0);
    let Ok(params) = Params::parse(query, content_type, body) else { return };
    assert!(params.all.len() <= MAX_PARAMETERS, "{} parameters accepted", params.all.len());
    for (i, (name, _)) in params.all.iter().enumerate() {
        assert!(!params.all[..i].iter().any(|(n, _)| n == name), "{name} accepted twice");
    }
    if query.is_none() && content_type.is_some_and(|c| c.ends_with("urlencoded")) {
        let again: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params.pairs()).finish();
        let back = Params::parse(None, content_type, again.as_bytes()).expect("a re-encoded form is accepted");
        assert_eq!(back.all, params.all, "form decoding is not stable under re-encoding");
    }
});
