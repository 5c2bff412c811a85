//! Degree normalization: maps the many ways resumes write a degree (`统招本科`, `理学学士`,
//! `Master of Science`, `EMBA`, …) onto the seed's values `本科, 硕士, 博士, 高中, 大专, 中专, MBA, 其他`.
//! The rules are data (`degrees.toml`, beside this file), read top to bottom.

use std::sync::OnceLock;

use serde::Deserialize;

/// The fallback for values no rule recognizes.
pub const OTHER: &str = "其他";

#[derive(Debug, Deserialize)]
struct Rules {
    /// Forms known to have no single answer (`JD`, `同等学力`, `本科及以上`): checked first, and
    /// left raw with a warning rather than mapped.
    ambiguous: Matcher,
    rule: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    degree: String,
    rank: u8,
    #[serde(flatten)]
    matcher: Matcher,
}

#[derive(Debug, Default, Deserialize)]
struct Matcher {
    /// The value, without spaces and lower-cased, contains one of these.
    #[serde(default)]
    contains: Vec<String>,
    /// The value, without spaces and lower-cased, is one of these.
    #[serde(default)]
    equals: Vec<String>,
    /// One word of the value (a run of ASCII letters, digits and dots, dots removed, lower-cased)
    /// is one of these: `BA Psychology`, `B.S. Ed`, `Bachelor of Arts (BA)`, `MBA硕士`.
    #[serde(default)]
    words: Vec<String>,
}

impl Matcher {
    fn hits(&self, key: &str, words: &[String]) -> bool {
        self.equals.iter().any(|e| e == key)
            || self.contains.iter().any(|c| key.contains(c.as_str()))
            || self.words.iter().any(|w| words.contains(w))
    }
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| toml::from_str(include_str!("degrees.toml")).expect("degrees.toml is valid (unit-tested)"))
}

/// A recognized degree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degree {
    pub name: &'static str,
    /// Higher is more advanced (博士 6 … 其他 0).
    pub rank: u8,
}

/// Full-width ASCII (as Chinese input methods type it: `ＭＢＡ`) to ASCII, lower-cased.
fn fold(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        c => c,
    }
    .to_ascii_lowercase()
}

/// The normalized degree of `raw`, or `None` when no rule recognizes it, or when it is one of the
/// ambiguous forms (the caller stores `其他` with a warning, and keeps the raw text).
pub fn normalize(raw: &str) -> Option<Degree> {
    let key: String = raw.chars().filter(|c| !c.is_whitespace()).map(fold).collect();
    if key.is_empty() {
        return None;
    }
    // Runs of ASCII letters, digits and dots, dots removed: "B.S. Ed" → ["bs", "ed"],
    // "MBA硕士" → ["mba"].
    let folded: String = raw.chars().map(fold).collect();
    let words: Vec<String> = folded
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
        .map(|w| w.replace('.', ""))
        .filter(|w| !w.is_empty())
        .collect();
    let rules = rules();
    if rules.ambiguous.hits(&key, &words) {
        return None;
    }
    rules.rule.iter().find(|r| r.matcher.hits(&key, &words)).map(|r| Degree { name: r.degree.as_str(), rank: r.rank })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_chinese_and_english_forms() {
        let cases = [
            ("本科", "本科"),
            ("本科学历", "本科"),
            ("大学本科", "本科"),
            ("统招本科", "本科"),
            ("学士学位", "本科"),
            ("理学学士", "本科"),
            ("大学", "本科"),
            ("Bachelor", "本科"),
            ("Bachelor of Engineering", "本科"),
            ("B.Sc.", "本科"),
            ("硕士", "硕士"),
            ("工学硕士", "硕士"),
            ("硕士研究生", "硕士"),
            ("研究生学历", "硕士"),
            ("Master of Science", "硕士"),
            ("MSc", "硕士"),
            ("M.A.", "硕士"),
            ("博士", "博士"),
            ("博士研究生", "博士"),
            ("博士后", "博士"),
            ("PhD", "博士"),
            ("Ph.D.", "博士"),
            ("Doctor of Philosophy", "博士"),
            ("EMBA", "MBA"),
            ("MBA硕士", "MBA"),
            ("工商管理硕士", "MBA"),
            ("Master of Business Administration", "MBA"),
            ("大专", "大专"),
            ("大专文化程度", "大专"),
            ("大学专科", "大专"),
            ("高职", "大专"),
            ("Associate", "大专"),
            ("Associate Degree", "大专"),
            ("中专", "中专"),
            ("中专学历", "中专"),
            ("职高", "中专"),
            ("高中", "高中"),
            ("高中文化", "高中"),
            ("High School", "高中"),
            ("初中", "其他"),
            ("其他", "其他"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).map(|d| d.name), Some(want), "{raw}");
        }
    }

    #[test]
    fn unknown_values_are_not_guessed() {
        // "mathematics" must not match the whole-word-only "ma".
        for raw in ["", "   ", "火星学院", "mathematics", "art"] {
            assert_eq!(normalize(raw), None, "{raw}");
        }
    }

    #[test]
    fn colloquial_part_time_and_overseas_forms() {
        let cases = [
            ("大本", "本科"),
            ("本科在读", "本科"),
            ("全日制本科", "本科"),
            ("自考本科", "本科"),
            ("成人本科", "本科"),
            ("函授本科", "本科"),
            ("网络教育本科", "本科"),
            ("专升本", "本科"),
            ("专科升本科", "本科"),
            ("专本连读", "本科"),
            ("在职研究生", "硕士"),
            ("海外硕士", "硕士"),
            ("本硕连读", "硕士"),
            ("硕博连读", "博士"),
            ("副学士", "大专"),
            ("准学士", "大专"),
            ("普高", "高中"),
            ("BA Psychology", "本科"),
            ("B.S. Ed", "本科"),
            ("B.Tech", "本科"),
            ("MSc Computer Science", "硕士"),
            ("LL.M.", "硕士"),
            ("ＭＢＡ", "MBA"),
            ("Executive MBA", "MBA"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).map(|d| d.name), Some(want), "{raw}");
        }
    }

    #[test]
    fn look_alikes_are_not_mistaken() {
        let cases = [
            ("Bachelor of Business Administration", Some("本科")),
            ("High School Diploma", Some("高中")),
            ("Junior High School", Some("其他")),
            ("Diploma in Banking", None),
            ("Doctor of Business Administration", Some("博士")),
            ("Juris Doctor (JD)", None),
            ("MD", None),
            ("同等学力", None),
            ("本科及以上", None),
            ("大学肄业", None),
            ("研究生课程班", None),
            ("高中以下", None),
            ("自考", None),
            ("电大", None),
            ("B.Tech in ME", Some("本科")),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).map(|d| d.name), want, "{raw}");
        }
    }

    #[test]
    fn ranks_order_degrees() {
        let rank = |s| normalize(s).unwrap().rank;
        assert!(rank("博士") > rank("硕士"));
        assert!(rank("硕士") > rank("本科"));
        assert!(rank("本科") > rank("大专"));
        assert!(rank("大专") > rank("高中"));
        assert!(rank("高中") > rank("初中"));
    }

    /// The labelled corpus (`corpus/degrees.tsv`, with sources): every row a claimed family must read right;
    /// a wrong value fails in every family. `cargo test --lib corpus -- --nocapture` prints the accuracy.
    #[test]
    fn corpus_of_real_degrees_is_read() {
        crate::domain::corpus::check("corpus/degrees.tsv", include_str!("corpus/degrees.tsv"), |input| {
            normalize(input).map_or("none", |d| d.name).to_owned()
        });
    }
}
