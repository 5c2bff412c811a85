//! The signature's canonicalization (`signing`): any parameters, in every encoding. The string to
//! sign does not depend on the parameters' order and never covers `signature`; what is signed
//! verifies, with this key only, and a hex signature decodes back to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moka_ingest::signing::{decode_signature, sign, string_to_sign, verify, Encoding, METHOD, PATH};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let encoding = Encoding::ALL[usize::from(selector) % Encoding::ALL.len()];
    let text = String::from_utf8_lossy(rest);
    // Parameters `name=value`, separated by NUL.
    let params: Vec<(&str, &str)> = text.split('\0').map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    let canonical = string_to_sign(&params, encoding);
    assert!(canonical.starts_with(&format!("{METHOD}|{PATH}|")));
    let mut reversed = params.clone();
    reversed.reverse();
    // Names sort the parameters; equal names keep their order, so only distinct names are
    // order-free.
    let mut names: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() == params.len() {
        assert_eq!(string_to_sign(&reversed, encoding), canonical, "order changed the string to sign");
    }
    let mut with_signature = params.clone();
    with_signature.push(("signature", "anything"));
    let without: Vec<(&str, &str)> = params.iter().copied().filter(|(n, _)| *n != "signature").collect();
    assert_eq!(string_to_sign(&with_signature, encoding), string_to_sign(&without, encoding));

    let secret = b"fuzz-secret-0123456789";
    let hex = sign(secret, &params, encoding);
    let bytes = decode_signature(&hex).expect("a signature we made decodes");
    assert_eq!(hex.len(), 64);
    use hmac::Mac;
    let mac = |k: &[u8]| hmac::Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
    assert!(verify(&[mac(secret)], &params, &bytes, encoding), "what was signed does not verify");
    assert!(!verify(&[mac(b"another-secret-0123456")], &params, &bytes, encoding));
    let _ = decode_signature(&text);
});
