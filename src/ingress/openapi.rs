//! The ingress's OpenAPI 3.1 document (`docs/openapi.json`), served at `GET /openapi.json`: the
//! contract that integrators and schemathesis check the ingress against. Its `x-error-codes` list
//! and its responses are held to the code's error table by the tests below.

use axum::http::header;

/// The document, as checked in.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// The answer to `GET /openapi.json`.
pub async fn serve() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::DOCUMENT;
    use crate::ingress::error::examples;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
    }

    #[test]
    fn the_error_table_of_the_document_is_the_code_s() {
        let doc = document();
        let listed: Vec<(u64, u64, String)> = doc["x-error-codes"]
            .as_array()
            .expect("x-error-codes is a list")
            .iter()
            .map(|e| {
                (e["code"].as_u64().unwrap(), e["status"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_owned())
            })
            .collect();
        let code: Vec<(u64, u64, String)> = examples()
            .iter()
            .map(|r| (u64::from(r.code()), u64::from(r.status().as_u16()), r.kind().to_owned()))
            .collect();
        assert_eq!(listed, code, "docs/openapi.json's x-error-codes and ingress::error disagree");
    }

    #[test]
    fn each_refusal_is_documented_under_its_status_with_its_code_and_message() {
        let doc = document();
        let responses = &doc["paths"]["/api/v2/moka_candidates"]["post"]["responses"];
        let not_found = &doc["components"]["responses"]["NotFound"];
        for r in examples() {
            let status = r.status().as_u16().to_string();
            let response = if r.code() == 1008 { not_found } else { &responses[&status] };
            let json = &response["content"]["application/json"];
            assert!(json.is_object(), "no JSON answer documented for {} (HTTP {status})", r.code());
            let codes = &json["schema"]["properties"]["error_code"]["enum"];
            if r.code() != 1008 {
                assert!(
                    codes.as_array().is_some_and(|c| c.contains(&Value::from(r.code()))),
                    "HTTP {status} does not list code {}: {codes}",
                    r.code()
                );
            }
            // The example shows the body the code really sends.
            let body: Value = serde_json::from_str(&r.body()).unwrap();
            let examples = json["examples"].as_object().expect("examples");
            assert!(
                examples.values().any(|e| e["value"] == body),
                "HTTP {status} has no example of {body} among {examples:?}"
            );
        }
        // And nothing documented that the code never answers.
        let statuses: std::collections::BTreeSet<String> =
            examples().iter().map(|r| r.status().as_u16().to_string()).chain(["200".to_owned()]).collect();
        for documented in responses.as_object().unwrap().keys() {
            assert!(statuses.contains(documented), "HTTP {documented} is documented but never answered");
        }
    }
}
