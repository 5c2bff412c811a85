//! The candidate parser (`domain::candidate::parse`, over `domain::payload`): any text as the
//! `payload`. Besides not panicking: a candidate it accepts keeps within the limits it enforces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moka_ingest::domain::{candidate, limits::Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let limits = Limits::default();
    match candidate::parse(text, 2026, &limits) {
        Ok(c) => {
            assert!(!c.moka_id.is_empty() && c.moka_id.len() <= limits.id_max_bytes, "{:?}", c.moka_id);
            assert!(c.educations.len() <= limits.max_entries && c.experiences.len() <= limits.max_entries);
            assert!(c.offer_attachment_urls.len() <= limits.max_links);
            assert!(c.birth_year.is_none_or(|y| (1900..=2026 - 14).contains(&y)));
        }
        Err(errors) => assert!(!errors.is_empty(), "refused without saying why"),
    }
});
