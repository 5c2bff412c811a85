//! Making outside text storable where it must be recorded whatever it holds: the `submissions`
//! row of a dead message records why PostgreSQL refused that message, so it cannot carry the
//! very bytes PostgreSQL refused.
//!
//! - NUL (`U+0000`), which neither `text` nor `jsonb` can hold, is written as the six characters
//!   `\u0000` (a literal backslash: what a reader of the JSON payload would see).
//! - A text longer than its cap is cut at a character boundary and ends with `…` (the whole
//!   value is still in the dead-lettered message). Keys must stay below B-tree's row limit of
//!   2704 bytes: [`ID_MAX_BYTES`] leaves room for the rest of the index row.

use std::borrow::Cow;

/// Longest `moka_id` (in bytes, before the `…`) recorded for a dead message.
pub const ID_MAX_BYTES: usize = 1024;

/// Longest error message (in bytes) recorded for a dead message.
pub const MESSAGE_MAX_BYTES: usize = 8192;

/// `text` with NUL escaped and cut to `max_bytes` (plus `…`). Borrows when nothing changes.
pub fn text(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes && !text.contains('\0') {
        return Cow::Borrowed(text);
    }
    // Character by character, so that a cut never splits a character or an escape.
    let mut out = String::with_capacity(text.len().min(max_bytes) + 8);
    for c in text.chars() {
        let piece_len = if c == '\0' { 6 } else { c.len_utf8() };
        if out.len() + piece_len > max_bytes {
            out.push('…');
            return Cow::Owned(out);
        }
        match c {
            '\0' => out.push_str(r"\u0000"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A JSON value with every string (and key) made storable by [`text`], each cut to `max_bytes`.
pub fn json(value: &serde_json::Value, max_bytes: usize) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(text(s, max_bytes).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(|v| json(v, max_bytes)).collect()),
        Value::Object(map) => map.iter().map(|(k, v)| (text(k, max_bytes).into_owned(), json(v, max_bytes))).collect(),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_written_as_an_escape_and_long_text_is_cut_at_a_character_boundary() {
        assert!(matches!(text("plain", 10), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b", 10), r"a\u0000b");
        assert_eq!(text("abcdef", 3), "abc…");
        assert_eq!(text("张三李四", 4), "张…", "cut before a character it would split");
        assert_eq!(text("\0\0", 8), r"\u0000…", "an escape is never split");
        assert!(text(&"\0".repeat(3000), ID_MAX_BYTES).len() <= ID_MAX_BYTES + '…'.len_utf8());
        assert!(text(&"x".repeat(3000), ID_MAX_BYTES).len() < 2704 - 100);
    }

    #[test]
    fn every_string_of_a_json_value_is_made_storable() {
        let v = json!({"kind": "database", "message": "id\0", "fields": [{"field": "a\0", "n": 1}], "k\0": null});
        assert_eq!(
            json(&v, 100),
            json!({"kind": "database", "message": r"id\u0000", "fields": [{"field": r"a\u0000", "n": 1}], r"k\u0000": null})
        );
    }
}
