//! Environment variables: which `MOKA_INGEST_…` names mean something. A name that matches no
//! setting would otherwise be ignored without a word (`MOKA_INGEST_WORKER_CONCURRENCY`, one
//! underscore short), so the service refuses to start and names the closest valid one.

use super::{DEFAULT_TOML, WELL_KNOWN_ENV};

/// The prefix of the service's own variables.
pub const PREFIX: &str = "MOKA_INGEST_";

/// Variables with the prefix that are not settings, read by the command line.
pub const NOT_SETTINGS: &[&str] = &["MOKA_INGEST_CONFIG", "MOKA_INGEST_SIGN_SECRET"];

/// Every valid variable name with the prefix: one per setting of `config/default.toml`
/// (`MOKA_INGEST_<KEY>`, `MOKA_INGEST_<SECTION>__<KEY>`), the well-known names and [`NOT_SETTINGS`].
pub fn valid_names() -> Vec<String> {
    let table: toml::Table = DEFAULT_TOML.parse().expect("config/default.toml is valid TOML");
    let mut names = Vec::new();
    for (key, value) in &table {
        match value.as_table() {
            Some(section) => {
                names.extend(section.keys().map(|k| format!("{PREFIX}{}__{}", key, k).to_ascii_uppercase()))
            }
            None => names.push(format!("{PREFIX}{key}").to_ascii_uppercase()),
        }
    }
    names.extend(WELL_KNOWN_ENV.iter().map(|(name, _)| name.to_string()).filter(|n| n.starts_with(PREFIX)));
    names.extend(NOT_SETTINGS.iter().map(|n| n.to_string()));
    names
}

/// Refuses the first variable (of `names`, e.g. the process environment's) that has the prefix
/// (in any case) but matches no setting, naming the closest valid name.
pub fn check_names<I: IntoIterator<Item = String>>(names: I) -> Result<(), String> {
    let valid = valid_names();
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|n| n.to_ascii_uppercase().starts_with(PREFIX) && !valid.contains(&n.to_ascii_uppercase()))
        .collect();
    unknown.sort();
    let Some(name) = unknown.first() else { return Ok(()) };
    let upper = name.to_ascii_uppercase();
    let closest = valid.iter().min_by_key(|v| strsim::levenshtein(&upper, v)).expect("there are valid names");
    Err(format!(
        "environment variable {name} matches no setting (did you mean {closest}?); settings are \
         MOKA_INGEST_<KEY> for top-level keys and MOKA_INGEST_<SECTION>__<KEY> (two underscores) for the others"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(names: &[&str]) -> Result<(), String> {
        check_names(names.iter().map(|n| n.to_string()))
    }

    #[test]
    fn settings_well_known_names_and_the_command_lines_variables_are_valid() {
        check(&[
            "MOKA_INGEST_WORKER__CONCURRENCY",
            "MOKA_INGEST_LOG_FORMAT",
            "MOKA_INGEST_KEYS",
            "MOKA_INGEST_WORKER_LISTEN",
            "MOKA_INGEST_ATTACHMENTS_ALLOW",
            "MOKA_INGEST_CONFIG",
            "MOKA_INGEST_SIGN_SECRET",
            "moka_ingest_retry__schedule",
            "PATH",
            "AMQP_URL",
        ])
        .unwrap();
    }

    #[test]
    fn a_misspelled_variable_is_refused_with_the_closest_valid_name() {
        let err = check(&["MOKA_INGEST_WORKER_CONCURRENCY"]).unwrap_err();
        assert!(err.contains("MOKA_INGEST_WORKER_CONCURRENCY matches no setting"), "{err}");
        assert!(err.contains("did you mean MOKA_INGEST_WORKER__CONCURRENCY?"), "{err}");
        let err = check(&["MOKA_INGEST_RETRY__SCHEDUEL"]).unwrap_err();
        assert!(err.contains("did you mean MOKA_INGEST_RETRY__SCHEDULE?"), "{err}");
    }
}
