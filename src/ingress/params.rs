//! The four request parameters, gathered from the query string and from a form-encoded or JSON
//! body. A name given twice anywhere is refused: which copy was signed would be ambiguous.

use serde::de::{Deserializer, MapAccess, Visitor};

use super::error::Rejection;

/// The parameters of one request, as decoded text.
#[derive(Debug)]
pub struct Params {
    /// Every parameter, in arrival order (the signature covers all but `signature`).
    pub all: Vec<(String, String)>,
}

impl Params {
    /// Gathers parameters from `query` and `body`. `content_type` picks the body's parser: JSON for
    /// `application/json`, otherwise `application/x-www-form-urlencoded` (what Moka sends).
    pub fn parse(query: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Result<Params, Rejection> {
        let mut all: Vec<(String, String)> = Vec::with_capacity(4);
        if let Some(q) = query {
            parse_form(q.as_bytes(), &mut all)?;
        }
        let mime = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match mime.as_deref() {
            _ if body.is_empty() => {}
            Some("application/json") => all.extend(parse_json_object(body)?),
            None | Some("application/x-www-form-urlencoded") => parse_form(body, &mut all)?,
            Some(other) => {
                return Err(Rejection::Malformed(format!(
                    "unsupported content type {other:?}; send application/x-www-form-urlencoded or application/json"
                )))
            }
        }
        for (i, (name, _)) in all.iter().enumerate() {
            if all[..i].iter().any(|(n, _)| n == name) {
                return Err(Rejection::DuplicateParameter(name.clone()));
            }
        }
        Ok(Params { all })
    }

    /// The value of a required parameter.
    pub fn required(&self, name: &'static str) -> Result<&str, Rejection> {
        self.all.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).ok_or(Rejection::MissingParameter(name))
    }

    /// Borrowed pairs, for signing.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs strictly: a malformed `%` escape or bytes
/// that are not UTF-8 are refused (what was signed cannot be known), where `form_urlencoded`
/// would silently substitute U+FFFD. One pass per component; this is the ingress's hottest loop.
fn parse_form(input: &[u8], out: &mut Vec<(String, String)>) -> Result<(), Rejection> {
    for pair in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        out.push((decode_component(name)?, decode_component(value)?));
    }
    Ok(())
}

fn decode_component(input: &[u8]) -> Result<String, Rejection> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut bytes = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let decoded = input.get(i + 1..i + 3).and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?));
                let Some(byte) = decoded else {
                    return Err(Rejection::Malformed("the form body has a malformed %-escape".into()));
                };
                bytes.push(byte);
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| Rejection::Malformed("a form value is not valid UTF-8".into()))
}

/// Reads a JSON object whose values are strings (numbers are taken as their text, for `tonce`),
/// keeping duplicate keys so that they can be refused.
fn parse_json_object(body: &[u8]) -> Result<Vec<(String, String)>, Rejection> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object with string values")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(4);
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return Err(serde::de::Error::custom(format!("parameter `{k}` must be a string"))),
                };
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let pairs = (&mut de)
        .deserialize_map(Pairs)
        .and_then(|p| de.end().map(|_| p))
        .map_err(|e| Rejection::Malformed(format!("JSON body: {e}")))?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_from_each_source() {
        let p = Params::parse(None, Some("application/x-www-form-urlencoded"), b"a=1+2%2B&b=%E5%bc%A0&&c&d=").unwrap();
        let want = [("a", "1 2+"), ("b", "张"), ("c", ""), ("d", "")];
        assert_eq!(p.all, want.map(|(k, v)| (k.to_string(), v.to_string())));
        let p = Params::parse(Some("a=1"), None, b"").unwrap();
        assert_eq!(p.required("a" as &'static str).unwrap(), "1");
        let p = Params::parse(None, Some("application/json; charset=utf-8"), br#"{"a":"x","t":17}"#).unwrap();
        assert_eq!(p.all, vec![("a".into(), "x".into()), ("t".into(), "17".into())]);
    }

    #[test]
    fn refuses_duplicates_wherever_they_are() {
        let cases: [(Option<&str>, Option<&str>, &[u8]); 3] = [
            (None, None, b"a=1&a=1"),
            (Some("a=1"), None, b"a=2"),
            (None, Some("application/json"), br#"{"a":"1","a":"2"}"#),
        ];
        for (q, ct, body) in cases {
            let err = Params::parse(q, ct, body).unwrap_err();
            assert_eq!(err.code(), 1002, "{q:?} {body:?}");
        }
    }

    #[test]
    fn refuses_bad_bodies() {
        assert_eq!(Params::parse(None, Some("application/json"), b"[1]").unwrap_err().code(), 1003);
        assert_eq!(Params::parse(None, Some("application/json"), br#"{"a":{}}"#).unwrap_err().code(), 1003);
        assert_eq!(Params::parse(None, Some("text/plain"), b"a=1").unwrap_err().code(), 1003);
        assert_eq!(Params::parse(None, None, &[0xff, b'=', b'1']).unwrap_err().code(), 1003);
        assert_eq!(Params::parse(None, None, b"a=%E5%BC").unwrap_err().code(), 1003, "truncated UTF-8");
        assert_eq!(Params::parse(None, None, b"a=%zz").unwrap_err().code(), 1003, "bad escape");
        assert_eq!(Params::parse(None, None, b"a=%4").unwrap_err().code(), 1003, "short escape");
        assert_eq!(Params::parse(None, None, b"").unwrap().required("payload").unwrap_err().code(), 1001);
    }
}
