//! The access keys (`keys`) and the one encoding each signs with (`key_encodings`), combined once
//! at load into a [`KeyRing`]. Secrets are held as pre-keyed HMAC states and never printed.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{DEV_SECRET, MIN_SECRET_LEN};
use crate::signing::Encoding;

/// One access key: its HMAC state per secret (pre-keyed, so each request only clones it) and the
/// one encoding its client signs with.
#[derive(Clone)]
pub struct Key {
    pub macs: Vec<Hmac<Sha256>>,
    pub encoding: Encoding,
}

/// The access keys.
#[derive(Clone)]
pub struct KeyRing {
    keys: HashMap<String, Key>,
    /// Access keys that still use the development secret.
    dev_keys: Vec<String>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, only which access keys exist.
        f.debug_struct("KeyRing").field("access_keys", &self.keys.keys()).finish()
    }
}

impl KeyRing {
    /// Parses `ak:secret,ak:secret` and the encodings `ak:form,…`. Refuses an empty list, secrets
    /// shorter than 16 bytes, and an encoding for an unknown key or of an unknown name.
    pub fn parse(spec: &str, encodings: &str) -> Result<KeyRing, String> {
        let mut keys: HashMap<String, Key> = HashMap::new();
        let mut dev_keys = Vec::new();
        for (i, pair) in spec.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let Some((ak, secret)) = pair.split_once(':') else {
                return Err(format!("key #{} must be written access_key:secret (no ':' found)", i + 1));
            };
            let ak = ak.trim();
            if ak.is_empty() {
                return Err(format!("key #{} has an empty access key", i + 1));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "the secret of access key {ak:?} is {} bytes; at least {MIN_SECRET_LEN} are required",
                    secret.len()
                ));
            }
            if secret == DEV_SECRET {
                dev_keys.push(ak.to_string());
            }
            let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
            keys.entry(ak.to_string())
                .or_insert_with(|| Key { macs: Vec::new(), encoding: Encoding::default() })
                .macs
                .push(mac);
        }
        if keys.is_empty() {
            return Err("no access key is configured (set MOKA_INGEST_KEYS=access_key:secret)".into());
        }
        for pair in encodings.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (ak, name) = pair
                .split_once(':')
                .ok_or_else(|| format!("key_encodings entry {pair:?} must be written access_key:encoding"))?;
            let encoding = Encoding::from_name(name.trim()).ok_or_else(|| {
                format!("key_encodings: encoding {:?} of access key {ak:?} must be raw, plus or form", name.trim())
            })?;
            keys.get_mut(ak.trim())
                .ok_or_else(|| format!("key_encodings names access key {ak:?}, which is not in `keys`"))?
                .encoding = encoding;
        }
        Ok(KeyRing { keys, dev_keys })
    }

    /// An access key's secrets (two during a rotation) and encoding, or `None` if unknown.
    pub fn key(&self, access_key: &str) -> Option<&Key> {
        self.keys.get(access_key)
    }

    /// Access keys still configured with the development secret.
    pub fn dev_keys(&self) -> &[String] {
        &self.dev_keys
    }
}
