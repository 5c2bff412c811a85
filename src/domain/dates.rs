//! Date normalization for education and experience entries: `yyyy`, `yyyy-MM`, `yyyy-MM-dd`,
//! `yyyy.MM`, `yyyy/MM`, `yyyy年M月`, `yyyyMM`, ISO-8601 timestamps, and "ongoing" words.
//! A month without a day is the first of that month; a year alone is January 1st.

use chrono::{DateTime, NaiveDate};

/// What a date text says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Date(NaiveDate),
    /// `至今`, `今`, `现在`, `present`, `now`: the entry is still going on.
    Ongoing,
}

const ONGOING: &[&str] = &["至今", "今", "现在", "目前", "当前", "present", "now", "current", "today", "ongoing"];

/// Parses `raw`; `None` when it is none of the known forms (the caller keeps it raw, with a warning).
pub fn parse(raw: &str) -> Option<When> {
    let s = raw.trim();
    if ONGOING.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return Some(When::Ongoing);
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Some(When::Date(ts.date_naive()));
    }
    if let Some(d) = s.get(..10).and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok()) {
        // ISO-8601 date-times without an offset ("2012-05-01T00:00:00", "2012-05-01 08:00").
        if s.len() == 10 || s[10..].starts_with(['T', ' ']) {
            return Some(When::Date(d));
        }
    }
    // Chinese: 2012年5月 / 2012年05月01日 / 2012年 (rewritten only when there is something to rewrite)
    let normalized: std::borrow::Cow<str> = if s.is_ascii() {
        s.into()
    } else {
        s.replace(['年', '月'], "-").replace(['日', '号'], "").trim_end_matches('-').to_owned().into()
    };
    let parts: Vec<&str> = normalized.split(['-', '.', '/']).map(str::trim).collect();
    let num = |p: &str| -> Option<u32> {
        (!p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
    };
    let ymd = match parts.as_slice() {
        [y] if y.len() == 4 => (num(y)?, 1, 1),
        [ym] if ym.len() == 6 && ym.bytes().all(|b| b.is_ascii_digit()) => {
            (ym[..4].parse().ok()?, ym[4..].parse().ok()?, 1)
        }
        [ymd] if ymd.len() == 8 && ymd.bytes().all(|b| b.is_ascii_digit()) => {
            (ymd[..4].parse().ok()?, ymd[4..6].parse().ok()?, ymd[6..].parse().ok()?)
        }
        [y, m] if y.len() == 4 => (num(y)?, num(m)?, 1),
        [y, m, d] if y.len() == 4 => (num(y)?, num(m)?, num(d)?),
        _ => return None,
    };
    let (y, m, d) = ymd;
    if !(1900..=2100).contains(&y) {
        return None;
    }
    NaiveDate::from_ymd_opt(y as i32, m, d).map(When::Date)
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
            (" 2011-09 ", d(2011, 9, 1)),
            ("至今", Some(When::Ongoing)),
            ("今", Some(When::Ongoing)),
            ("现在", Some(When::Ongoing)),
            ("Present", Some(When::Ongoing)),
            ("now", Some(When::Ongoing)),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn nonsense_is_not_a_date() {
        for raw in ["", "soon", "2011-13", "2011-02-30", "11-09", "1850", "2011-09-15garbage", "九月", "20111"] {
            assert_eq!(parse(raw), None, "{raw:?}");
        }
    }
}
