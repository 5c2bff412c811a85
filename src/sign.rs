//! `moka-ingest sign`: builds a signed request the way Moka would, for integrators testing their
//! side (and for this project's tests).

use crate::signing::{self, Encoding};

/// One request to sign.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub access_key: String,
    pub payload: String,
    pub tonce: i64,
    pub signature: String,
}

impl SignedRequest {
    /// Signs `payload` with `secret`, writing the canonical query in `encoding`.
    pub fn new(access_key: &str, secret: &str, payload: &str, tonce: i64, encoding: Encoding) -> SignedRequest {
        let tonce_text = tonce.to_string();
        let params = [("access_key", access_key), ("payload", payload), ("tonce", tonce_text.as_str())];
        SignedRequest {
            access_key: access_key.to_owned(),
            payload: payload.to_owned(),
            tonce,
            signature: signing::sign(secret.as_bytes(), &params, encoding),
        }
    }

    /// The `application/x-www-form-urlencoded` body (what Moka sends).
    pub fn form_body(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("access_key", &self.access_key)
            .append_pair("payload", &self.payload)
            .append_pair("tonce", &self.tonce.to_string())
            .append_pair("signature", &self.signature)
            .finish()
    }

    /// A ready-to-run curl command posting the body to `url`.
    pub fn curl(&self, url: &str) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        format!(
            "curl -sS -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data-binary {} {}",
            quote(&self.form_body()),
            quote(url)
        )
    }

    /// Posts the form body to `url`; returns the status and the answer's body.
    pub async fn send(&self, url: &str) -> Result<(u16, String), reqwest::Error> {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(self.form_body())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }
}
