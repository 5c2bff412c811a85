//! The four request parameters, gathered from the query string and from a form-encoded or JSON
//! body. A name given twice anywhere is refused: which copy was signed would be ambiguous.
//!
//! This runs before the signature is checked, so anyone can make it work: its cost is linear in
//! the body, and the number of parameters is capped ([`MAX_PARAMETERS`]).

use serde::de::{Deserializer, MapAccess, Visitor};

use super::error::Rejection;

/// Moka sends four parameters; a client adding a few of its own is fine, hundreds is an attack
/// (each one costs a decode and a duplicate check before anything is authenticated).
pub const MAX_PARAMETERS: usize = 32;

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
        // Quadratic, but over at most MAX_PARAMETERS names.
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
/// would silently substitute U+FFFD.
fn parse_form(input: &[u8], out: &mut Vec<(String, String)>) -> Result<(), Rejection> {
    // memchr finds the separators in the long payload value many bytes at a time.
    let mut rest = input;
    while !rest.is_empty() {
        let end = memchr::memchr(b'&', rest).unwrap_or(rest.len());
        let pair = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        if out.len() == MAX_PARAMETERS {
            return Err(Rejection::TooManyParameters(MAX_PARAMETERS));
        }
        out.push((decode_component(name)?, decode_component(value)?));
    }
    Ok(())
}

/// The value of each byte as a hex digit; `NOT_HEX` for every other byte.
const NOT_HEX: u8 = 0xff;
const HEX: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes one name or value. A form-encoded payload is mostly escapes (JSON punctuation, every
/// byte of Chinese text), so this is a byte loop with a table lookup per hex digit, writing into
/// a buffer sized once (the output is never longer than the input), then checked as UTF-8 and
/// copied into the value. Measured with callgrind, this indexed loop took fewer instructions
/// than `Vec::push` or slice-pattern variants.
fn decode_component(input: &[u8]) -> Result<String, Rejection> {
    let mut out = vec![0u8; input.len()];
    let (mut i, mut n) = (0, 0);
    while i < input.len() {
        let b = input[i];
        out[n] = if b == b'%' {
            let (hi, lo) = match input.get(i + 1..i + 3) {
                Some(h) => (HEX[h[0] as usize], HEX[h[1] as usize]),
                None => (NOT_HEX, NOT_HEX),
            };
            if hi == NOT_HEX || lo == NOT_HEX {
                return Err(malformed_escape());
            }
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            if b == b'+' {
                b' '
            } else {
                b
            }
        };
        n += 1;
    }
    out.truncate(n);
    // The payload is mostly multi-byte text, where the SIMD check is several times faster than
    // std's; copying the checked text once more costs less than the difference.
    simdutf8::basic::from_utf8(&out)
        .map(str::to_owned)
        .map_err(|_| Rejection::Malformed("a form value is not valid UTF-8".into()))
}

#[cold]
fn malformed_escape() -> Rejection {
    Rejection::Malformed("the form body has a malformed %-escape".into())
}

/// One value of a JSON body: a string, or a number taken as its text (for `tonce`). Anything
/// else is refused as soon as it starts, without reading it into memory.
struct ParamValue(String);

impl<'de> serde::Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = ParamValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ParamValue, E> {
                Ok(ParamValue(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
        }
        d.deserialize_any(Text)
    }
}

/// Reads a JSON object whose values are strings, keeping duplicate keys so that they can be
/// refused, and stopping at the [`MAX_PARAMETERS`]th + 1 key.
fn parse_json_object(body: &[u8]) -> Result<Vec<(String, String)>, Rejection> {
    /// Set when the object has too many keys (serde_json then stops with an error of its own).
    struct Pairs<'a>(&'a mut bool);
    impl<'de> Visitor<'de> for Pairs<'_> {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object with string values")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(4);
            while let Some(k) = map.next_key::<String>()? {
                if out.len() == MAX_PARAMETERS {
                    *self.0 = true;
                    return Err(serde::de::Error::custom("too many parameters"));
                }
                let ParamValue(v) = map
                    .next_value()
                    .map_err(|e| serde::de::Error::custom(format!("parameter `{k}` must be a string ({e})")))?;
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut too_many = false;
    let mut de = serde_json::Deserializer::from_slice(body);
    let pairs = (&mut de).deserialize_map(Pairs(&mut too_many)).and_then(|p| de.end().map(|_| p));
    match pairs {
        Err(_) if too_many => Err(Rejection::TooManyParameters(MAX_PARAMETERS)),
        Err(e) => Err(Rejection::Malformed(format!("JSON body: {e}"))),
        Ok(p) => Ok(p),
    }
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

    /// The plain reading of the rules, as the oracle for the fast decoder.
    fn naive(input: &[u8]) -> Option<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let h = std::str::from_utf8(input.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(h, 16).ok().filter(|_| !h.starts_with('+'))?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }

    #[test]
    fn the_decoder_agrees_with_the_plain_rules() {
        // Deterministic pseudo-random inputs over an alphabet rich in escapes, broken escapes,
        // '+' and multi-byte text.
        let alphabet: [&[u8]; 12] =
            [b"%", b"+", b"a", b"%2B", b"%e5%BC%a0", b"%zz", b"%4", b"=", "张".as_bytes(), b"%20", b"%+1", b"~"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut decoded, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let input: Vec<u8> = (0..next(9)).flat_map(|_| alphabet[next(alphabet.len())].to_vec()).collect();
            let fast = decode_component(&input).ok();
            assert_eq!(fast, naive(&input), "{:?}", String::from_utf8_lossy(&input));
            if fast.is_some() {
                decoded += 1
            } else {
                refused += 1
            }
        }
        assert!(decoded > 1000 && refused > 1000, "both outcomes are exercised: {decoded} {refused}");
    }

    #[test]
    fn more_than_the_cap_of_parameters_is_refused_in_linear_time() {
        let at_cap: String = (0..MAX_PARAMETERS).map(|i| format!("p{i}=1&")).collect();
        assert_eq!(Params::parse(None, None, at_cap.as_bytes()).unwrap().all.len(), MAX_PARAMETERS);
        // 160,000 distinct names (640 KB) took 32 s with the quadratic duplicate check.
        let many: String = (0..160_000).map(|i| format!("{i:x}=&")).collect();
        assert_eq!(Params::parse(None, None, many.as_bytes()).unwrap_err().code(), 1006);
        assert_eq!(
            Params::parse(Some(&at_cap), None, b"x=1").unwrap_err().code(),
            1006,
            "query and body count together"
        );
        let json = format!("{{{}}}", (0..100_000).map(|i| format!("\"k{i}\":\"v\"")).collect::<Vec<_>>().join(","));
        assert_eq!(Params::parse(None, Some("application/json"), json.as_bytes()).unwrap_err().code(), 1006);
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
