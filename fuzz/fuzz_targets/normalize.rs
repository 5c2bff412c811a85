//! Each normalization function (`domain::dates`, `domain::degree`, `domain::fields`): any text.
//! Besides not panicking, each keeps its promise: a recognized phone is `+86` and 11 digits, and
//! normalizing it again changes nothing; an email is trimmed and lower-case, and normalizing it
//! again changes nothing; a date is within 1900–2100; a degree is one of the table's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moka_ingest::domain::{dates, degree, fields};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Some(dates::When::Date(d)) = dates::parse(raw) {
        assert!((1900..=2100).contains(&chrono::Datelike::year(&d)), "{d}");
    }
    if let Some(d) = degree::normalize(raw) {
        assert!(!d.name.is_empty() && d.rank <= 6, "{d:?}");
        assert_eq!(degree::normalize(d.name).map(|n| n.name), Some(d.name), "a degree's name is not its own degree");
    }
    let phone = fields::phone(raw);
    if phone.recognized {
        assert!(phone.value.len() == 14 && phone.value.starts_with("+861"), "{}", phone.value);
        assert_eq!(fields::phone(&phone.value), phone, "normalizing a phone twice changed it");
    }
    let _ = fields::plausible_phone(raw);
    let (email, _) = fields::email(raw);
    assert_eq!(fields::email(&email).0, email, "normalizing an email twice changed it");
    let _ = (fields::gender(raw), fields::marital(raw));
    let _ = fields::birth_year(&serde_json::Value::String(raw.to_owned()), 2026);
    assert!(fields::split_urls(raw).all(|u| !u.is_empty() && u.trim() == u));
});
