//! Date normalization for education and experience entries. The forms read, each with an example
//! (the README's Normalization section lists the same):
//!
//! - year first: `2011`, `2011-09`, `2011-9-5`, `2011.09`, `2011/09/15`, `201109`, `20110915`,
//!   `2011年9月`, `2011年09月15日`, `2011年`;
//! - month before year: `09/2011`, `9-2011`, `09.2011` (the year has four digits, so the order is
//!   certain);
//! - day, month and year with the year last, only where the order is certain: `15/09/2011` (15
//!   cannot be a month), `9/15/2011` (15 cannot be a month), `03/03/2011`; `03/04/2011` is left raw;
//! - English month names, abbreviated or full, with or without a day: `Sep 2011`, `Sept. 2011`,
//!   `September 2011`, `Sep 15, 2011`, `15 September 2011`, `Jan-2015`;
//! - full-width characters (as Chinese input methods type them) anywhere in the above: `２０１１年９月`,
//!   `２０１１－０９`, `２０１１／９`, `２０１１．０９`, ideographic spaces and full stops (`2011。9`);
//! - epoch timestamps written as digits (a JSON number reaches this function as its decimal text):
//!   9 or 10 digits are seconds, 12 or 13 digits are milliseconds (`1330531200`, `1330531200000`);
//! - ISO-8601 / RFC 3339 date-times: `2011-09-15T08:00:00+08:00`, `2011-09-15T00:00:00.000Z`,
//!   `2011-09-15 08:00`, `2011/09/15 08:00:00`;
//! - "still going on": `至今`, `今`, `现在`, `目前`, `present`, `now`, `till date`, ….
//!
//! A month without a day is the first of that month; a year alone is January 1st. Years outside
//! 1900–2100 are not dates.
//!
//! **Time zone.** An instant (an epoch timestamp, or a date-time with an offset or `Z`) is turned
//! into a calendar date in Asia/Shanghai (UTC+8; China has had no daylight saving time since 1991,
//! so a fixed offset is exact for every date this service sees): Moka is a Chinese ATS, and a
//! Java or JavaScript client in China that serializes "1 September 2011" serializes local midnight,
//! which is 31 August 16:00 UTC. A date-time without an offset is taken as written.
//!
//! **Digit counts.** 4 digits are a year, 6 `yyyyMM`, 8 `yyyyMMdd`, 9–10 epoch seconds (1973–2286),
//! 12–13 epoch milliseconds (1973–2286); 5, 7, 11 and 14+ digits are not dates. The ranges do not
//! overlap, so no count is read two ways. Timestamps before 1973 (8 digits or fewer, or negative)
//! are not read.
//!
//! Everything else — ranges (`2011.9-2015.6`), two-digit years (`Jan '15`), seasons (`Fall 2015`),
//! Chinese numerals (`二〇一一年九月`), ambiguous day/month orders — is not guessed: `parse`
//! returns `None` and the caller keeps the raw text with a warning.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate};

/// What a date text says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Date(NaiveDate),
    /// `至今`, `今`, `现在`, `present`, `now`: the entry is still going on.
    Ongoing,
}

const ONGOING: &[&str] = &[
    "至今",
    "今",
    "现在",
    "目前",
    "当前",
    "迄今",
    "present",
    "now",
    "current",
    "today",
    "ongoing",
    "till date",
    "to date",
    "till now",
    "until now",
];

/// Asia/Shanghai: UTC+8, without daylight saving time since 1991.
const SHANGHAI_SECS: i32 = 8 * 3600;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Parses `raw`; `None` when it is none of the known forms (the caller keeps it raw, with a warning).
pub fn parse(raw: &str) -> Option<When> {
    let folded = fold(raw.trim());
    let s = folded.trim();
    if ONGOING.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return Some(When::Ongoing);
    }
    date(s).filter(|d| (1900..=2100).contains(&chrono::Datelike::year(d))).map(When::Date)
}

fn date(s: &str) -> Option<NaiveDate> {
    let shanghai = FixedOffset::east_opt(SHANGHAI_SECS)?;
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Some(ts.with_timezone(&shanghai).date_naive());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return digits(s, shanghai);
    }
    // A date followed by a time without an offset ("2012-05-01T00:00:00", "2012/05/01 08:00"):
    // the date as written.
    let s = strip_time(s);
    if s.bytes().any(|b| b.is_ascii_alphabetic()) {
        return month_name(s);
    }
    numeric(s)
}

/// Full-width ASCII (U+FF01–U+FF5E) to ASCII, the ideographic space to a space, the ideographic
/// full stop to `.`, and `年`/`月` to `-`, `日`/`号` to nothing. ASCII text is borrowed as is.
fn fold(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)),
            '\u{3000}' => out.push(' '),
            '。' => out.push('.'),
            '年' | '月' => out.push('-'),
            '日' | '号' => {}
            c => out.push(c),
        }
    }
    // "2011年9月" → "2011-9-": the unit after the last number is not a separator.
    let trimmed = out.trim_end_matches(['-', ' ']).len();
    out.truncate(trimmed);
    Cow::Owned(out)
}

/// Digits only: a year, `yyyyMM`, `yyyyMMdd`, epoch seconds or epoch milliseconds, by length.
fn digits(s: &str, tz: FixedOffset) -> Option<NaiveDate> {
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    match s.len() {
        4 => NaiveDate::from_ymd_opt(n(0..4)? as i32, 1, 1),
        6 => NaiveDate::from_ymd_opt(n(0..4)? as i32, n(4..6)?, 1),
        8 => NaiveDate::from_ymd_opt(n(0..4)? as i32, n(4..6)?, n(6..8)?),
        9 | 10 => DateTime::from_timestamp(s.parse().ok()?, 0).map(|t| t.with_timezone(&tz).date_naive()),
        12 | 13 => DateTime::from_timestamp_millis(s.parse().ok()?).map(|t| t.with_timezone(&tz).date_naive()),
        _ => None,
    }
}

/// `2012-05-01T08:00:00`, `2012/05/01 08:00`, `2012-05-01 08:00:00.000` → the date part. Only a
/// time of day (digits, `:`, one `.`) is removed; anything else after the date is kept, so that it
/// fails to parse.
fn strip_time(s: &str) -> &str {
    let Some(at) = s.find(['T', ' ']) else { return s };
    let (date, time) = (&s[..at], &s[at + 1..]);
    let is_time = time.len() >= 4
        && time.contains(':')
        && time.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
        && date.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'/' | b'.'));
    if is_time {
        date
    } else {
        s
    }
}

/// Up to three numbers separated by `-`, `.` or `/` (after folding `年`/`月`).
fn numeric(s: &str) -> Option<NaiveDate> {
    let mut parts = [""; 3];
    let mut count = 0;
    for p in s.split(['-', '.', '/']) {
        if count == 3 {
            return None;
        }
        parts[count] = p.trim();
        count += 1;
    }
    let num = |p: &str| -> Option<u32> {
        (!p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
    };
    let year = |p: &str| (p.len() == 4).then(|| num(p)).flatten().map(|y| y as i32);
    let small = |p: &str| (p.len() <= 2).then(|| num(p)).flatten();
    match &parts[..count] {
        [y] => NaiveDate::from_ymd_opt(year(y)?, 1, 1),
        [y, m] if y.len() == 4 => NaiveDate::from_ymd_opt(year(y)?, small(m)?, 1),
        [y, m, d] if y.len() == 4 => NaiveDate::from_ymd_opt(year(y)?, small(m)?, small(d)?),
        // Month before year: the four-digit year fixes the order.
        [m, y] => NaiveDate::from_ymd_opt(year(y)?, small(m)?, 1),
        // Day and month before the year: only when one of them cannot be a month, or both agree.
        [a, b, y] => {
            let (a, b, y) = (small(a)?, small(b)?, year(y)?);
            let (m, d) = match (a <= 12, b <= 12) {
                (true, true) if a == b => (a, b),
                (true, false) => (a, b),
                (false, true) => (b, a),
                _ => return None,
            };
            NaiveDate::from_ymd_opt(y, m, d)
        }
        _ => None,
    }
}

/// English month names: `Sep 2011`, `September 2011`, `Sept. 2011`, `Sep 15, 2011`,
/// `15 Sep 2011`, `Jan-2015`. The year must have four digits.
fn month_name(s: &str) -> Option<NaiveDate> {
    let mut month = None;
    let mut numbers = [""; 2];
    let mut count = 0;
    let mut month_at = 0;
    for (i, token) in s.split([' ', ',', '.', '-', '/']).filter(|t| !t.is_empty()).enumerate() {
        if token.bytes().all(|b| b.is_ascii_digit()) {
            if count == 2 {
                return None;
            }
            numbers[count] = token;
            count += 1;
        } else if month.is_none() {
            month = Some(month_number(token)?);
            month_at = i;
        } else {
            return None;
        }
    }
    let m = month?;
    let year = |p: &str| (p.len() == 4).then(|| p.parse::<i32>().ok()).flatten();
    let day = |p: &str| (p.len() <= 2).then(|| p.parse::<u32>().ok()).flatten();
    match (&numbers[..count], month_at) {
        // "Sep 2011"
        ([y], 0) => NaiveDate::from_ymd_opt(year(y)?, m, 1),
        // "Sep 15, 2011"
        ([d, y], 0) => NaiveDate::from_ymd_opt(year(y)?, m, day(d)?),
        // "15 Sep 2011"
        ([d, y], 1) => NaiveDate::from_ymd_opt(year(y)?, m, day(d)?),
        _ => None,
    }
}

/// `jan`, `January`, `SEPT` → 1, 1, 9. Abbreviations are the CLDR `en` ones (three letters) plus
/// `Sept`.
fn month_number(token: &str) -> Option<u32> {
    if token.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|name| {
            name.eq_ignore_ascii_case(token)
                || (token.len() == 3 && name[..3].eq_ignore_ascii_case(token))
                || (*name == "september" && token.eq_ignore_ascii_case("sept"))
        })
        .map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> Option<When> {
        Some(When::Date(NaiveDate::from_ymd_opt(y, m, day).unwrap()))
    }

    #[test]
    fn every_supported_form() {
        let cases = [
            ("2011", d(2011, 1, 1)),
            ("2011-09", d(2011, 9, 1)),
            ("2011-9", d(2011, 9, 1)),
            ("2011-09-15", d(2011, 9, 15)),
            ("2011.09", d(2011, 9, 1)),
            ("2011/09", d(2011, 9, 1)),
            ("2011/9/5", d(2011, 9, 5)),
            ("2011年9月", d(2011, 9, 1)),
            ("2011年09月15日", d(2011, 9, 15)),
            ("2011年", d(2011, 1, 1)),
            ("201109", d(2011, 9, 1)),
            ("20110915", d(2011, 9, 15)),
            ("2011-09-15T08:00:00Z", d(2011, 9, 15)),
            ("2011-09-15T08:00:00+08:00", d(2011, 9, 15)),
            ("2011-09-15T08:00:00", d(2011, 9, 15)),
            ("2011/09/15 08:00:00", d(2011, 9, 15)),
            (" 2011-09 ", d(2011, 9, 1)),
            ("09/2011", d(2011, 9, 1)),
            ("09.2011", d(2011, 9, 1)),
            ("2011.9", d(2011, 9, 1)),
            ("2011年08月19日", d(2011, 8, 19)),
            ("9-2011", d(2011, 9, 1)),
            ("15/09/2011", d(2011, 9, 15)),
            ("9/15/2011", d(2011, 9, 15)),
            ("03/03/2011", d(2011, 3, 3)),
            ("Sep 2011", d(2011, 9, 1)),
            ("Sept. 2011", d(2011, 9, 1)),
            ("SEPTEMBER 2011", d(2011, 9, 1)),
            ("Sep 15, 2011", d(2011, 9, 15)),
            ("15 September 2011", d(2011, 9, 15)),
            ("Jan-2015", d(2015, 1, 1)),
            ("２０１１年９月", d(2011, 9, 1)),
            ("２０１１－０９－１５", d(2011, 9, 15)),
            ("２０１１／９", d(2011, 9, 1)),
            ("2011。9", d(2011, 9, 1)),
            ("\u{3000}2011年9月\u{3000}", d(2011, 9, 1)),
            ("至今", Some(When::Ongoing)),
            ("今", Some(When::Ongoing)),
            ("现在", Some(When::Ongoing)),
            ("Present", Some(When::Ongoing)),
            ("now", Some(When::Ongoing)),
            ("till date", Some(When::Ongoing)),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn instants_take_the_calendar_date_in_shanghai() {
        // 2012-03-01 00:00 in Shanghai is 2012-02-29 16:00 UTC.
        for raw in ["1330531200", "1330531200000", "2012-02-29T16:00:00.000Z", "2012-03-01T00:00:00+08:00"] {
            assert_eq!(parse(raw), d(2012, 3, 1), "{raw:?}");
        }
        // One second earlier is still the 29th in Shanghai.
        assert_eq!(parse("1330531199"), d(2012, 2, 29));
        // 9 digits: seconds in 1973–2001.
        assert_eq!(parse("946656000"), d(2000, 1, 1));
    }

    #[test]
    fn digit_counts_never_overlap() {
        // 8 digits are always yyyyMMdd, 6 always yyyyMM, even where they would be valid seconds.
        assert_eq!(parse("19700101"), d(1970, 1, 1));
        assert_eq!(parse("199001"), d(1990, 1, 1));
        for raw in ["20111", "2011091", "13305312000", "13305312000000", "-1330531200", "1330531200.5"] {
            assert_eq!(parse(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn nonsense_and_ambiguity_are_not_dates() {
        for raw in [
            "",
            "soon",
            "2011-13",
            "2011-02-30",
            "11-09",
            "1850",
            "2011-09-15garbage",
            "九月",
            "20111",
            "03/04/2007",
            "13/13/2007",
            "Jan 15",
            "Jan '15",
            "Fall 2015",
            "2011-2015",
            "2011.9-2015.6",
            "May May 2011",
            "2011年9月-2015年6月",
            "Sep 15 16 2011",
            "maybe 2011",
        ] {
            assert_eq!(parse(raw), None, "{raw:?}");
        }
    }

    /// The labelled corpus (`corpus/dates.tsv`, with sources): every row a claimed family must read right;
    /// a wrong value fails in every family. `cargo test --lib corpus -- --nocapture` prints the accuracy.
    #[test]
    fn corpus_of_real_dates_is_read() {
        crate::domain::corpus::check("corpus/dates.tsv", include_str!("corpus/dates.tsv"), |input| {
            match parse(input) {
                None => "none".to_owned(),
                Some(When::Ongoing) => "ongoing".to_owned(),
                Some(When::Date(d)) => d.to_string(),
            }
        });
    }
}
