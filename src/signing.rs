//! The request signature: HMAC-SHA256(secret, `POST|/api/v2/moka_candidates|` + canonical query),
//! hex-encoded. The canonical query is every parameter but `signature`, sorted by name, written
//! `name=value` and joined with `&`. Clients disagree on how to write the values, so each access
//! key declares the one [`Encoding`] its client uses, and only that one verifies: were several
//! tried, two different payloads (`a+b` and `a b`) would share a signature.
//!
//! Shared by the ingress (verifying), `moka-ingest sign` (signing) and the configuration (which
//! declares each key's encoding); it depends on nothing else in the crate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The one signed method and path; a signature made for another path never verifies here.
pub const METHOD: &str = "POST";
pub const PATH: &str = "/api/v2/moka_candidates";

/// How values are written into the canonical query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The values as decoded: `payload={"id":"x"}`. The default: what the Peatio-v2 scheme and
    /// the reference client sign, and the only form that depends on no URL encoder's choices.
    #[default]
    Raw,
    /// As `Raw`, but every space written `+` (Peatio's server, where the scheme comes from).
    /// Ambiguous by construction: a space and a `+` sign alike, so `x y` and `x+y` share a
    /// signature. Only for clients that cannot change.
    Plus,
    /// Names and values form-encoded like Ruby's `to_query` / Python's `urlencode`: space as `+`,
    /// everything but ASCII letters, digits and `-._~` as `%XX` with uppercase hex.
    Form,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Raw, Encoding::Plus, Encoding::Form];

    /// The name used in the configuration and by `sign --encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Plus => "plus",
            Encoding::Form => "form",
        }
    }

    pub fn from_name(name: &str) -> Option<Encoding> {
        Encoding::ALL.into_iter().find(|e| e.name() == name)
    }

    fn write(self, out: &mut (impl CanonicalOut + ?Sized), s: &str) {
        match self {
            Encoding::Raw => out.put(s),
            Encoding::Plus => {
                for (i, part) in s.split(' ').enumerate() {
                    if i > 0 {
                        out.put("+");
                    }
                    out.put(part);
                }
            }
            Encoding::Form => form_encode(out, s),
        }
    }
}

/// Where the canonical text goes: into a string (to sign it or show it), or piece by piece
/// straight into the MACs (verifying: no copy of a payload of several kilobytes per request).
trait CanonicalOut {
    fn put(&mut self, s: &str);
}

impl CanonicalOut for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl CanonicalOut for [Hmac<Sha256>] {
    fn put(&mut self, s: &str) {
        for mac in self {
            mac.update(s.as_bytes());
        }
    }
}

/// Writes `s` form-encoded: runs of unreserved characters as they are, a space as `+`, each other
/// byte as `%XX`.
fn form_encode(out: &mut (impl CanonicalOut + ?Sized), s: &str) {
    const HEX: [&str; 16] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A", "B", "C", "D", "E", "F"];
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~') {
            continue;
        }
        // A run is ASCII only, so both its ends are character boundaries (an empty one may
        // sit inside a multi-byte character, hence the check).
        if run < i {
            out.put(&s[run..i]);
        }
        run = i + 1;
        if b == b' ' {
            out.put("+");
        } else {
            out.put("%");
            out.put(HEX[usize::from(b >> 4)]);
            out.put(HEX[usize::from(b & 15)]);
        }
    }
    out.put(&s[run..]);
}

/// The exact text that is signed, for the given parameters (any order; `signature` is skipped).
pub fn string_to_sign(params: &[(&str, &str)], encoding: Encoding) -> String {
    let mut out = String::with_capacity(
        METHOD.len() + PATH.len() + 2 + params.iter().map(|(k, v)| k.len() + v.len() * 3 + 2).sum::<usize>(),
    );
    write_canonical(params, encoding, &mut out);
    out
}

fn write_canonical(params: &[(&str, &str)], encoding: Encoding, out: &mut (impl CanonicalOut + ?Sized)) {
    let mut sorted: Vec<&(&str, &str)> = params.iter().filter(|(k, _)| *k != "signature").collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    out.put(METHOD);
    out.put("|");
    out.put(PATH);
    out.put("|");
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.put("&");
        }
        encoding.write(out, k);
        out.put("=");
        encoding.write(out, v);
    }
}

/// Lowercase hex signature of `params` with `secret`.
pub fn sign(secret: &[u8], params: &[(&str, &str)], encoding: Encoding) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign(params, encoding).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Decodes a hex signature (either case). `None` when it is not 64 hex digits.
pub fn decode_signature(sig: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(sig, &mut out).ok()?;
    Some(out)
}

/// True when `signature` matches `params` under any secret in `macs` (two during a rotation),
/// written in `encoding`. The text is hashed under every secret in one pass, whichever matches;
/// each comparison is constant-time (`verify_slice`).
pub fn verify(macs: &[Hmac<Sha256>], params: &[(&str, &str)], signature: &[u8; 32], encoding: Encoding) -> bool {
    let mut macs = macs.to_vec();
    write_canonical(params, encoding, macs.as_mut_slice());
    macs.into_iter().any(|mac| mac.verify_slice(signature).is_ok())
}

/// For a signature that did not verify: another encoding under which it would have, to tell an
/// operator migrating a key which encoding its client uses. Never a reason to accept.
pub fn other_encoding_matching(
    macs: &[Hmac<Sha256>],
    params: &[(&str, &str)],
    signature: &[u8; 32],
    declared: Encoding,
) -> Option<Encoding> {
    Encoding::ALL.into_iter().filter(|e| *e != declared).find(|e| verify(macs, params, signature, *e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"id":"x","name":"张 三","note":"a&b=c+d%e~f*g"}"#;

    fn params() -> Vec<(&'static str, &'static str)> {
        vec![("tonce", "1764400000"), ("payload", PAYLOAD), ("access_key", "AK")]
    }

    #[test]
    fn canonical_texts_for_each_encoding() {
        let p = vec![("tonce", "1"), ("payload", "a b&~*张"), ("access_key", "A K"), ("signature", "zz")];
        let cases = [
            (Encoding::Raw, "POST|/api/v2/moka_candidates|access_key=A K&payload=a b&~*张&tonce=1"),
            (Encoding::Plus, "POST|/api/v2/moka_candidates|access_key=A+K&payload=a+b&~*张&tonce=1"),
            (Encoding::Form, "POST|/api/v2/moka_candidates|access_key=A+K&payload=a+b%26~%2A%E5%BC%A0&tonce=1"),
        ];
        for (enc, want) in cases {
            assert_eq!(string_to_sign(&p, enc), want, "{enc:?}");
        }
    }

    #[test]
    fn known_vector_matches_openssl() {
        // printf 'POST|/api/v2/moka_candidates|access_key=AK&payload={"id":"x"}&tonce=1764400000' \
        //   | openssl dgst -sha256 -hmac 0123456789abcdef
        let p = [("access_key", "AK"), ("payload", r#"{"id":"x"}"#), ("tonce", "1764400000")];
        assert_eq!(
            sign(b"0123456789abcdef", &p, Encoding::Raw),
            "8e55c0197ab32043891af9c83fa9a839a0919665a2f88cf0f58d45f1d3ea8cde"
        );
    }

    #[test]
    fn only_the_declared_encoding_verifies_and_tampering_does_not() {
        let secret = b"0123456789abcdef";
        let macs = [Hmac::<Sha256>::new_from_slice(secret).unwrap()];
        for enc in Encoding::ALL {
            let sig = decode_signature(&sign(secret, &params(), enc)).unwrap();
            assert!(verify(&macs, &params(), &sig, enc), "{enc:?}");
            for other in Encoding::ALL.into_iter().filter(|o| *o != enc) {
                assert!(!verify(&macs, &params(), &sig, other), "{enc:?} signature verified as {other:?}");
                assert_eq!(other_encoding_matching(&macs, &params(), &sig, other), Some(enc));
            }
            let mut tampered = params();
            tampered[1].1 = r#"{"id":"y"}"#;
            assert!(!verify(&macs, &tampered, &sig, enc), "{enc:?}");
        }
    }

    #[test]
    fn a_plus_and_a_space_are_two_payloads_with_two_signatures() {
        // Issue 9, point 7: `x y@a.com` sent with the signature of `x+y@a.com` was accepted.
        let secret = b"0123456789abcdef";
        let macs = [Hmac::<Sha256>::new_from_slice(secret).unwrap()];
        let signed = [("access_key", "AK"), ("payload", r#"{"email":"x+y@a.com"}"#), ("tonce", "1")];
        let tampered = [("access_key", "AK"), ("payload", r#"{"email":"x y@a.com"}"#), ("tonce", "1")];
        for enc in [Encoding::Raw, Encoding::Form] {
            let sig = decode_signature(&sign(secret, &signed, enc)).unwrap();
            assert!(!verify(&macs, &tampered, &sig, enc), "{enc:?}");
            let sig = decode_signature(&sign(secret, &tampered, enc)).unwrap();
            assert!(!verify(&macs, &signed, &sig, enc), "{enc:?}");
        }
        // The plus encoding cannot tell them apart: why it is not the default (README).
        let sig = decode_signature(&sign(secret, &signed, Encoding::Plus)).unwrap();
        assert!(verify(&macs, &tampered, &sig, Encoding::Plus));
    }

    #[test]
    fn signature_hex_is_case_insensitive_and_length_checked() {
        let sig = sign(b"0123456789abcdef", &params(), Encoding::Raw);
        assert_eq!(decode_signature(&sig), decode_signature(&sig.to_uppercase()));
        assert!(decode_signature(&sig[..63]).is_none());
        assert!(decode_signature("").is_none());
        assert!(decode_signature(&"g".repeat(64)).is_none());
    }
}
