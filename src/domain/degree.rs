//! Degree normalization: maps the many ways resumes write a degree (`统招本科`, `理学学士`,
//! `Master of Science`, `EMBA`, …) onto the seed's values `本科, 硕士, 博士, 高中, 大专, 中专, MBA, 其他`.
//! The rules are data (`degrees.toml`, beside this file), read top to bottom.

use std::sync::OnceLock;

use serde::Deserialize;

/// The fallback for values no rule recognizes.
pub const OTHER: &str = "其他";

#[derive(Debug, Deserialize)]
struct Rules {
    rule: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    degree: String,
    rank: u8,
    #[serde(default)]
    contains: Vec<String>,
    #[serde(default)]
    equals: Vec<String>,
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Rules> = OnceLock::new();
    &RULES
        .get_or_init(|| toml::from_str(include_str!("degrees.toml")).expect("degrees.toml is valid (unit-tested)"))
        .rule
}

/// A recognized degree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degree {
    pub name: &'static str,
    /// Higher is more advanced (博士 6 … 其他 0).
    pub rank: u8,
}

/// The normalized degree of `raw`, or `None` when no rule recognizes it (the caller stores
/// `其他` with a warning).
pub fn normalize(raw: &str) -> Option<Degree> {
    let key: String = raw.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_lowercase();
    if key.is_empty() {
        return None;
    }
    rules().iter().find_map(|r| {
        let hit = r.equals.contains(&key) || r.contains.iter().any(|c| key.contains(c.as_str()));
        hit.then_some(Degree { name: r.degree.as_str(), rank: r.rank })
    })
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
    fn ranks_order_degrees() {
        let rank = |s| normalize(s).unwrap().rank;
        assert!(rank("博士") > rank("硕士"));
        assert!(rank("硕士") > rank("本科"));
        assert!(rank("本科") > rank("大专"));
        assert!(rank("大专") > rank("高中"));
        assert!(rank("高中") > rank("初中"));
    }
}
