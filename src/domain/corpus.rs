//! The runner of the labelled corpora (`corpus/*.tsv`, test builds only): each row is
//! `input, expected, family, source`. It prints the accuracy per family and fails on any wrong
//! value, and on any row left unread outside the `unclaimed` family (true values the rules do not
//! claim to read yet). `cargo test --lib corpus -- --nocapture` shows the table.

/// Rows of this family are real values the rules do not read yet: left raw is not a failure there.
pub const UNCLAIMED: &str = "unclaimed";

/// Runs the corpus `text` (named `name` in messages) through `read`, which returns the normalized
/// value as the corpus writes it, or `none`.
pub fn check(name: &str, text: &str, read: impl Fn(&str) -> String) {
    let mut families: std::collections::BTreeMap<&str, [usize; 4]> = Default::default();
    let mut failures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [input, expected, family, _source] = cols[..] else { panic!("{name}:{}: four columns", i + 1) };
        let got = read(input);
        // [rows, right, missed (left raw), wrong value]
        let f = families.entry(family).or_default();
        f[0] += 1;
        if got == expected {
            f[1] += 1;
        } else if got == "none" {
            f[2] += 1;
            if family != UNCLAIMED {
                failures.push(format!("{name}:{}: {input:?} not read, expected {expected}", i + 1));
            }
        } else {
            f[3] += 1;
            failures.push(format!("{name}:{}: {input:?} read as {got}, expected {expected}", i + 1));
        }
    }
    let (mut rows, mut right, mut claimed, mut claimed_right) = (0, 0, 0, 0);
    println!("{name}: family, rows, right, left raw, wrong, accuracy");
    for (family, [n, ok, missed, wrong]) in &families {
        println!("  {family:<16} {n:>4} {ok:>4} {missed:>4} {wrong:>4} {:>6.1}%", 100.0 * *ok as f64 / *n as f64);
        rows += n;
        right += ok;
        if *family != UNCLAIMED {
            claimed += n;
            claimed_right += ok;
        }
    }
    println!(
        "  overall {right}/{rows} = {:.1}%; families the rules claim: {claimed_right}/{claimed} = {:.1}%",
        100.0 * right as f64 / rows as f64,
        100.0 * claimed_right as f64 / claimed as f64
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
