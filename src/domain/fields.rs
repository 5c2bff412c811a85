//! Normalization of the candidate's scalar fields: gender, marital status, phone, email, birth
//! year, and the list of offer attachment URLs. Each function returns the normalized value or
//! `None` when it cannot interpret the input (the caller keeps the raw payload and warns).

/// `男` / `女`.
pub fn gender(raw: &str) -> Option<&'static str> {
    match raw.trim().to_lowercase().as_str() {
        "男" | "男性" | "m" | "male" | "man" | "先生" => Some("男"),
        "女" | "女性" | "f" | "female" | "woman" | "女士" => Some("女"),
        _ => None,
    }
}

/// `已婚` / `未婚` / `离异`.
pub fn marital(raw: &str) -> Option<&'static str> {
    match raw.trim().to_lowercase().as_str() {
        "已婚" | "已婚已育" | "已婚未育" | "married" | "已婚有子女" => Some("已婚"),
        "未婚" | "单身" | "single" | "unmarried" | "未婚未育" => Some("未婚"),
        "离异" | "离婚" | "离异单身" | "divorced" => Some("离异"),
        _ => None,
    }
}

/// A normalized phone number.
#[derive(Debug, PartialEq, Eq)]
pub struct Phone {
    pub value: String,
    /// False when it is not a mainland mobile and was kept as given (minus spaces and dashes).
    pub recognized: bool,
    /// False when it cannot be a phone number at all (see [`plausible_phone`]); kept all the same.
    pub plausible: bool,
}

/// Trims spaces, dashes and brackets; a mainland China mobile (11 digits from 1[3-9], with or
/// without +86 / 0086 / 86) becomes E.164 `+86…`; anything else is kept as given.
pub fn phone(raw: &str) -> Phone {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace() && !"-()（）".contains(*c)).collect();
    let national = compact
        .strip_prefix("+86")
        .or_else(|| compact.strip_prefix("0086"))
        .or_else(|| compact.strip_prefix("86").filter(|rest| rest.len() == 11))
        .unwrap_or(&compact);
    let b = national.as_bytes();
    let mobile = b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) && b.iter().all(u8::is_ascii_digit);
    if mobile {
        Phone { value: format!("+86{national}"), recognized: true, plausible: true }
    } else {
        Phone { plausible: plausible_phone(raw), value: compact, recognized: false }
    }
}

/// Whether `raw` can be a phone number, by libphonenumber's rules (the `phonenumber` crate):
/// after separators (spaces, `-`, `.`, `/`, brackets), a number with `+` or `00` must be a valid
/// international number; one without must be a valid Chinese number (Moka is a Chinese ATS), or
/// valid once a `+` is put before it (a country code written without it). A quick length check
/// (5 to 15 digits, E.164's bounds) comes first, so that junk costs no parsing.
pub fn plausible_phone(raw: &str) -> bool {
    use phonenumber::country::Id;
    let compact: String = raw.chars().filter(|c| !c.is_whitespace() && !"-()（）./".contains(*c)).collect();
    let (digits, international) = match compact.strip_prefix('+').or_else(|| compact.strip_prefix("00")) {
        Some(rest) => (rest, true),
        None => (compact.as_str(), false),
    };
    if !(5..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let valid = |region: Option<Id>, text: &str| phonenumber::parse(region, text).is_ok_and(|n| n.is_valid());
    let with_plus = format!("+{digits}");
    if international {
        return valid(None, &with_plus);
    }
    valid(Some(Id::CN), digits) || valid(None, &with_plus)
}

/// Trimmed and lower-cased, and whether it looks like an address.
pub fn email(raw: &str) -> (String, bool) {
    let e = raw.trim().to_lowercase();
    let looks_valid = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(char::is_whitespace)
        }
        None => false,
    };
    (e, looks_valid)
}

/// A birth year within a plausible range (`1900 ..= current_year - 14`).
pub fn birth_year(value: &serde_json::Value, current_year: i32) -> Option<i32> {
    let year = match value {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => s.trim().trim_end_matches('年').parse().ok()?,
        _ => return None,
    };
    (1900..=(current_year as i64 - 14)).contains(&year).then_some(year as i32)
}

/// The URLs of an `offerAttachmentUrls` text: separated by commas (ASCII or full-width) or
/// whitespace, trimmed, empty pieces skipped.
pub fn split_urls(text: &str) -> impl Iterator<Item = &str> + Clone {
    text.split(|c: char| c == ',' || c == '，' || c.is_whitespace()).map(str::trim).filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn genders() {
        for (raw, want) in [
            ("男", Some("男")),
            (" 女 ", Some("女")),
            ("Male", Some("男")),
            ("F", Some("女")),
            ("m", Some("男")),
            ("female", Some("女")),
            ("未知", None),
            ("", None),
        ] {
            assert_eq!(gender(raw), want, "{raw}");
        }
    }

    #[test]
    fn marital_statuses() {
        for (raw, want) in [
            ("已婚", Some("已婚")),
            ("已婚已育", Some("已婚")),
            ("单身", Some("未婚")),
            ("未婚", Some("未婚")),
            ("离婚", Some("离异")),
            ("Divorced", Some("离异")),
            ("保密", None),
        ] {
            assert_eq!(marital(raw), want, "{raw}");
        }
    }

    #[test]
    fn phones() {
        let cases = [
            ("13203030303", "+8613203030303", true),
            ("132 0303 0303", "+8613203030303", true),
            ("132-0303-0303", "+8613203030303", true),
            ("+86 132 0303 0303", "+8613203030303", true),
            ("008613203030303", "+8613203030303", true),
            ("8613203030303", "+8613203030303", true),
            ("010-8888 6666", "01088886666", false),
            ("+1 (650) 253-0000", "+16502530000", false),
            ("12203030303", "12203030303", false),
        ];
        for (raw, value, recognized) in cases {
            assert_eq!(phone(raw), Phone { value: value.into(), recognized, plausible: true }, "{raw}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(email("  A@B.Com "), ("a@b.com".to_string(), true));
        for bad in ["ab.com", "a@b", "a@@b.com", "@b.com", "a b@c.com", "a@.com"] {
            assert!(!email(bad).1, "{bad}");
        }
    }

    #[test]
    fn birth_years() {
        for (v, want) in [
            (json!(1990), Some(1990)),
            (json!("1990"), Some(1990)),
            (json!("1990年"), Some(1990)),
            (json!(1850), None),
            (json!(2020), None),
            (json!("abc"), None),
            (json!(1990.5), None),
            (json!([1990]), None),
        ] {
            assert_eq!(birth_year(&v, 2026), want, "{v}");
        }
    }

    #[test]
    fn attachment_url_texts() {
        for (text, want) in [
            ("", vec![]),
            ("http://a/1", vec!["http://a/1"]),
            ("http://a/1,http://a/2", vec!["http://a/1", "http://a/2"]),
            ("http://a/1 \n http://a/2", vec!["http://a/1", "http://a/2"]),
            ("http://a/1， http://a/2", vec!["http://a/1", "http://a/2"]),
        ] {
            assert_eq!(split_urls(text).collect::<Vec<_>>(), want, "{text}");
        }
    }

    #[test]
    fn what_is_not_a_phone_number_is_kept_but_not_plausible() {
        // Chinese mobile and landlines (Beijing, Guangzhou), with and without the country code;
        // US, UK and German numbers written internationally, or with the country code and no `+`.
        for raw in [
            "13203030303",
            "010-8888 6666",
            "020.8888.6666",
            "+86 10 8888 6666",
            "+1 (650) 253-0000",
            "16502530000",
            "0044 20 7946 0958",
            "+49 30 901820",
        ] {
            assert!(plausible_phone(raw), "{raw}");
        }
        // Too short or long, letters, no country has such numbers (+999, a Chinese number that
        // starts with 0 then 0), and a bare service code.
        let five_hundred = "1".repeat(500);
        for raw in [
            "1234",
            "1234567890123456",
            five_hundred.as_str(),
            "call me",
            "138x0000000",
            "+",
            "++8613203030303",
            "+999 1234 5678",
            "00000000000",
            "12345",
        ] {
            assert!(!plausible_phone(raw), "{raw}");
            assert_eq!(phone(raw).value, raw.replace(' ', ""), "kept as given");
        }
    }
}
