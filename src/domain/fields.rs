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
        Phone { value: format!("+86{national}"), recognized: true }
    } else {
        Phone { value: compact, recognized: false }
    }
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

/// `offerAttachmentUrls`: empty, one URL, several separated by commas or whitespace, or a JSON
/// array of strings. `None` when it is of another shape.
pub fn url_list(value: &serde_json::Value) -> Option<Vec<String>> {
    match value {
        serde_json::Value::Null => Some(Vec::new()),
        serde_json::Value::String(s) => Some(
            s.split(|c: char| c == ',' || c == '，' || c.is_whitespace())
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_owned()))
            .filter(|u| u.as_ref().is_none_or(|u| !u.is_empty()))
            .collect(),
        _ => None,
    }
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
            ("+1 (415) 555-0100", "+14155550100", false),
            ("12203030303", "12203030303", false),
        ];
        for (raw, value, recognized) in cases {
            assert_eq!(phone(raw), Phone { value: value.into(), recognized }, "{raw}");
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
    fn attachment_url_lists() {
        let two = Some(vec!["http://a/1".to_string(), "http://a/2".to_string()]);
        for (v, want) in [
            (json!(""), Some(vec![])),
            (json!(null), Some(vec![])),
            (json!("http://a/1"), Some(vec!["http://a/1".to_string()])),
            (json!("http://a/1,http://a/2"), two.clone()),
            (json!("http://a/1 \n http://a/2"), two.clone()),
            (json!("http://a/1， http://a/2"), two.clone()),
            (json!(["http://a/1", "http://a/2"]), two.clone()),
            (json!([1]), None),
            (json!({"u": 1}), None),
        ] {
            assert_eq!(url_list(&v), want, "{v}");
        }
    }
}
