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
            all.extend(form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
        }
        let mime = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match mime.as_deref() {
            _ if body.is_empty() => {}
            Some("application/json") => all.extend(parse_json_object(body)?),
            None | Some("application/x-www-form-urlencoded") => {
                if std::str::from_utf8(body).is_err() {
                    return Err(Rejection::Malformed("the form body is not valid UTF-8".into()));
                }
                all.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
            }
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
        self.all
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or(Rejection::MissingParameter(name))
    }

    /// Borrowed pairs, for signing.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
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
                    _ => {
                        return Err(serde::de::Error::custom(format!(
                            "parameter `{k}` must be a string"
                        )))
                    }
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
        let p = Params::parse(None, Some("application/x-www-form-urlencoded"), b"a=1+2&b=%E5%BC%A0").unwrap();
        assert_eq!(p.all, vec![("a".into(), "1 2".into()), ("b".into(), "张".into())]);
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
        assert_eq!(Params::parse(None, None, b"").unwrap().required("payload").unwrap_err().code(), 1001);
    }
}
