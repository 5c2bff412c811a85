//! The candidate as the CRM stores it, parsed from Moka's payload.
//!
//! Parsing is strict only where the CRM cannot do without a value: the required fields (`id`,
//! `name`, `phone`, `email`, `jobTitle`, `operator`) must be present and readable, and every
//! missing or unreadable one is named. Everything else is normalized where possible and kept raw
//! (with a warning) where not: data that is merely odd is never rejected.

use std::borrow::Cow;

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use super::{
    dates::{self, When},
    degree, fields,
    limits::Limits,
    payload::{self, Caps, Entries, Entry, Item, Links, Operator, Scalar},
};

/// Something normalization could not interpret; stored in `candidates.warnings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

/// A required field that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// One date of an entry: the parsed date (if any) and the text it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DateField {
    pub date: Option<NaiveDate>,
    pub raw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Education {
    pub start: DateField,
    pub end: DateField,
    pub is_current: bool,
    pub school: Option<String>,
    pub speciality: Option<String>,
    pub academic_degree: Option<String>,
    pub academic_degree_raw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Experience {
    pub start: DateField,
    pub end: DateField,
    pub is_current: bool,
    pub company: Option<String>,
    pub title: Option<String>,
}

/// A validated, normalized candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub moka_id: String,
    pub name: String,
    pub phone: String,
    pub phone_raw: String,
    pub email: String,
    pub gender: Option<String>,
    pub birth_year: Option<i32>,
    pub source: Option<String>,
    pub academic_degree: Option<String>,
    pub academic_degree_raw: Option<String>,
    pub married: Option<String>,
    pub job_title: String,
    pub operator_name: Option<String>,
    pub operator_email: Option<String>,
    pub operator_phone: Option<String>,
    pub resume_url: Option<String>,
    pub interview_feedback_url: Option<String>,
    pub offer_attachment_urls: Vec<String>,
    /// The JSON text of `offerInfo` as sent (stored as jsonb).
    pub offer_info: Option<String>,
    pub educations: Vec<Education>,
    pub experiences: Vec<Experience>,
    pub warnings: Vec<Warning>,
}

/// Reads the payload. `current_year` bounds the plausible birth years; `limits` caps what it
/// may hold (see [`super::limits`]).
pub fn parse(payload: &str, current_year: i32, limits: &Limits) -> Result<Candidate, Vec<FieldError>> {
    let caps = Caps { entries: limits.max_entries, links: limits.max_links };
    let raw = payload::read(payload, caps)
        .map_err(|e| vec![FieldError { field: "payload".into(), problem: e.to_string() }])?;
    let mut p = Parser { limits, errors: Vec::new(), warnings: Vec::new(), unshown: 0 };

    let moka_id = p.required_text("id", raw.id.as_ref());
    if let Some(id) = moka_id.as_ref().filter(|id| id.len() > limits.id_max_bytes) {
        p.error("id", &format!("is {} bytes long, at most {} are accepted", id.len(), limits.id_max_bytes));
    }
    let name = p.required_text("name", raw.name.as_ref()).map(|t| p.cut("name", t));
    let phone_raw = p.required_text("phone", raw.phone.as_ref()).map(|t| p.cut("phone", t));
    let email_raw = p.required_text("email", raw.email.as_ref()).map(|t| p.cut("email", t));
    let job_title = p.required_text("jobTitle", raw.job_title.as_ref()).map(|t| p.cut("jobTitle", t));
    let operator = match raw.operator {
        Operator::Object { name, email, phone } => Some((name, email, phone)),
        Operator::Missing => {
            p.error("operator", "is missing");
            None
        }
        Operator::Other(kind) => {
            p.error("operator", &format!("must be an object, got {kind}"));
            None
        }
    };
    // Counted before any entry is built: a list over its cap costs nothing more.
    let education_items = p.counted("educationInfo", raw.education);
    let experience_items = p.counted("experienceInfo", raw.experience);
    let offer_urls = p.links(raw.offer_urls);
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    let (moka_id, name, phone_raw, email_raw, job_title) = (
        moka_id.unwrap_or_default(),
        name.unwrap_or_default(),
        phone_raw.unwrap_or_default(),
        email_raw.unwrap_or_default(),
        job_title.unwrap_or_default(),
    );

    let phone = p.phone("phone", &phone_raw);
    let (email, email_ok) = fields::email(&email_raw);
    if !email_ok {
        p.warn("email", format!("{email_raw:?} does not look like an email address"));
    }
    let gender = p.text("", "gender", raw.gender.as_ref()).and_then(|g| p.mapped("gender", &g, fields::gender(&g)));
    let married =
        p.text("", "married", raw.married.as_ref()).and_then(|m| p.mapped("married", &m, fields::marital(&m)));
    let birth_year = match raw.birth_year {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Text(s)) if s.trim().is_empty() => None,
        Some(v) => {
            let value = match &v {
                Scalar::Text(s) => Value::String(p.cut("birthYear", s.to_string())),
                Scalar::Number(n) => Value::Number(n.clone()),
                _ => Value::Null,
            };
            let y = fields::birth_year(&value, current_year);
            if y.is_none() {
                let shown = if value.is_null() { v.kind().to_owned() } else { value.to_string() };
                p.warn("birthYear", format!("{shown} is not a plausible birth year"));
            }
            y
        }
    };
    let source = p.text("", "source", raw.source.as_ref());
    let education_entries = p.objects("educationInfo", education_items);
    let educations = education_entries.iter().enumerate().map(|(i, e)| p.education(i, e)).collect::<Vec<_>>();
    let experience_entries = p.objects("experienceInfo", experience_items);
    let experiences = experience_entries.iter().enumerate().map(|(i, e)| p.experience(i, e)).collect::<Vec<_>>();

    let academic_degree_raw = p.text("", "academicDegree", raw.academic_degree.as_ref());
    let academic_degree = match &academic_degree_raw {
        Some(raw) => Some(p.degree("academicDegree", raw)),
        // Derived from the highest education entry when the candidate's own is missing.
        None => educations
            .iter()
            .filter_map(|e| e.academic_degree_raw.as_deref().and_then(degree::normalize))
            .max_by_key(|d| d.rank)
            .map(|d| d.name.to_string()),
    };

    let (op_name, op_email, op_phone) = operator.expect("checked above");
    let operator_name = p.text("operator", "name", op_name.as_ref());
    let operator_email = p.text("operator", "email", op_email.as_ref()).map(|e| fields::email(&e).0);
    let operator_phone = p.text("operator", "phone", op_phone.as_ref()).map(|ph| p.phone("operator.phone", &ph).value);

    let resume_url = p.url("resumeUrl", raw.resume_url.as_ref());
    let interview_feedback_url = p.url("interviewFeedbackUrl", raw.interview_feedback_url.as_ref());
    let offer_attachment_urls = offer_urls
        .into_iter()
        .enumerate()
        .filter_map(|(i, u)| p.url_fits(&format!("offerAttachmentUrls[{i}]"), u.trim()))
        .collect();
    let offer_info = raw.offer_info.and_then(|v| match v.get() {
        "null" => None,
        text if text.starts_with('"') => match serde_json::from_str::<Cow<str>>(text) {
            Ok(s) if s.trim().is_empty() => None,
            _ => Some(text.to_owned()),
        },
        text => Some(text.to_owned()),
    });
    if p.unshown > 0 {
        p.warnings
            .push(Warning { field: "warnings".into(), message: format!("{} more warnings not shown", p.unshown) });
    }

    Ok(Candidate {
        moka_id,
        name,
        phone: phone.value,
        phone_raw,
        email,
        gender: gender.map(str::to_owned),
        birth_year,
        source,
        academic_degree,
        academic_degree_raw,
        married: married.map(str::to_owned),
        job_title,
        operator_name,
        operator_email,
        operator_phone,
        resume_url,
        interview_feedback_url,
        offer_attachment_urls,
        offer_info,
        educations,
        experiences,
        warnings: p.warnings,
    })
}

struct Parser<'l> {
    limits: &'l Limits,
    errors: Vec<FieldError>,
    /// At most `limits.max_warnings`; the others are only counted, in `unshown`.
    warnings: Vec<Warning>,
    unshown: usize,
}

/// `prefix.key`, or `key` without a prefix. Built only for a warning: this is per field of every entry.
fn field_name(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

impl Parser<'_> {
    fn error(&mut self, field: &str, problem: &str) {
        self.errors.push(FieldError { field: field.into(), problem: problem.into() });
    }

    fn warn(&mut self, field: &str, message: String) {
        if self.warnings.len() < self.limits.max_warnings {
            self.warnings.push(Warning { field: field.into(), message });
        } else {
            self.unshown += 1;
        }
    }

    /// A required text: a non-empty string (a number is read as its digits, e.g. a phone).
    fn required_text(&mut self, key: &str, value: Option<&Scalar>) -> Option<String> {
        match value {
            None | Some(Scalar::Null) => self.error(key, "is missing"),
            Some(Scalar::Text(s)) if s.trim().is_empty() => self.error(key, "is empty"),
            Some(Scalar::Text(s)) => return Some(s.trim().to_owned()),
            Some(Scalar::Number(n)) if key != "id" => return Some(n.to_string()),
            Some(other) => self.error(key, &format!("must be a string, got {}", other.kind())),
        }
        None
    }

    /// `text` cut to `limits.text_max_chars` characters, with a warning when it was longer.
    fn cut(&mut self, field: &str, mut text: String) -> String {
        let max = self.limits.text_max_chars;
        if let Some((end, _)) = text.char_indices().nth(max) {
            let chars = max + text[end..].chars().count();
            text.truncate(end);
            self.warn(field, format!("is {chars} characters long; cut to {max} (the whole text is in raw_payload)"));
        }
        text
    }

    /// An optional text at `key` (reported as `prefix.key`): empty is none; numbers and booleans
    /// are read as text; arrays and objects are kept only in the raw payload, with a warning.
    /// Cut to the text cap.
    fn text(&mut self, prefix: &str, key: &str, value: Option<&Scalar>) -> Option<String> {
        let text = match value? {
            Scalar::Null => return None,
            Scalar::Text(s) => Some(s.trim()).filter(|s| !s.is_empty())?.to_owned(),
            Scalar::Number(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
            other => {
                self.warn(&field_name(prefix, key), format!("expected text, got {}", other.kind()));
                return None;
            }
        };
        if text.len() <= self.limits.text_max_chars {
            // Fewer bytes than the cap in characters: no need to count them.
            return Some(text);
        }
        Some(self.cut(&field_name(prefix, key), text))
    }

    /// A normalized phone, with a warning when it is not a phone number at all.
    fn phone(&mut self, field: &str, raw: &str) -> fields::Phone {
        let phone = fields::phone(raw);
        if !phone.plausible {
            self.warn(field, "is not a phone number".into());
        }
        phone
    }

    /// A URL field: text, dropped with a warning when longer than the URL cap.
    fn url(&mut self, key: &str, value: Option<&Scalar>) -> Option<String> {
        let url = match value? {
            Scalar::Text(s) => s.trim(),
            Scalar::Null => return None,
            other => {
                self.warn(key, format!("expected text, got {}", other.kind()));
                return None;
            }
        };
        self.url_fits(key, url)
    }

    fn url_fits(&mut self, field: &str, url: &str) -> Option<String> {
        let max = self.limits.url_max_bytes;
        if url.is_empty() {
            None
        } else if url.len() > max {
            self.warn(field, format!("is {} bytes long, over {max}; not kept (it is in raw_payload)", url.len()));
            None
        } else {
            Some(url.to_owned())
        }
    }

    fn mapped(&mut self, field: &str, raw: &str, normalized: Option<&'static str>) -> Option<&'static str> {
        if normalized.is_none() {
            self.warn(field, format!("{raw:?} is not a known value; kept only in the raw payload"));
        }
        normalized
    }

    fn degree(&mut self, field: &str, raw: &str) -> String {
        match degree::normalize(raw) {
            Some(d) => d.name.to_owned(),
            None => {
                self.warn(field, format!("unknown degree {raw:?}, stored as {}", degree::OTHER));
                degree::OTHER.to_owned()
            }
        }
    }

    /// A list field, refused (an error, and nothing) when it has more than `limits.max_entries`.
    fn counted<'a>(&mut self, key: &str, entries: Entries<'a>) -> Entries<'a> {
        match entries {
            Entries::List { total, .. } if total > self.limits.max_entries => {
                let max = self.limits.max_entries;
                self.error(key, &format!("has {total} entries, at most {max} are accepted"));
                Entries::Absent
            }
            other => other,
        }
    }

    /// The objects of a list field (also given as a single object, or empty); what is not an
    /// object is warned about.
    fn objects<'a>(&mut self, key: &str, entries: Entries<'a>) -> Vec<Entry<'a>> {
        match entries {
            Entries::Absent => Vec::new(),
            Entries::List { items, .. } => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Item::Entry(e) => Some(e),
                    Item::Other(kind) => {
                        self.warn(&format!("{key}[{i}]"), format!("expected an object, got {kind}"));
                        None
                    }
                })
                .collect(),
            Entries::Other(kind) => {
                self.warn(key, format!("expected a list, got {kind}"));
                Vec::new()
            }
        }
    }

    /// `offerAttachmentUrls`: none, one, several separated by commas or whitespace, or a JSON
    /// array of strings; refused whole when it has more than `limits.max_links`.
    fn links<'a>(&mut self, links: Option<Links<'a>>) -> Vec<Cow<'a, str>> {
        const KEY: &str = "offerAttachmentUrls";
        let max = self.limits.max_links;
        let too_many = |p: &mut Self, n: usize| p.error(KEY, &format!("has {n} links, at most {max} are accepted"));
        match links {
            None | Some(Links::Null) => Vec::new(),
            Some(Links::Text(text)) => {
                let n = fields::split_urls(&text).count();
                if n > max {
                    too_many(self, n);
                    return Vec::new();
                }
                fields::split_urls(&text).map(|u| Cow::Owned(u.to_owned())).collect()
            }
            Some(Links::List { total, .. }) if total > max => {
                too_many(self, total);
                Vec::new()
            }
            Some(Links::List { urls, .. }) => urls,
            Some(Links::Other(kind)) => {
                self.warn(KEY, format!("cannot read URLs from a {kind}"));
                Vec::new()
            }
        }
    }

    /// Start and end of an entry; `end` may be an ongoing word.
    fn period(&mut self, field: &str, entry: &Entry) -> (DateField, DateField, bool) {
        let read = |p: &mut Self, key: &str, value: Option<&Scalar>| -> (DateField, bool) {
            let raw = p.text(field, key, value);
            let parsed = raw.as_deref().map(dates::parse);
            match (raw, parsed) {
                (None, _) => (DateField::default(), false),
                (Some(raw), Some(Some(When::Date(d)))) => (DateField { date: Some(d), raw: Some(raw) }, false),
                (Some(raw), Some(Some(When::Ongoing))) => (DateField { date: None, raw: Some(raw) }, true),
                (Some(raw), _) => {
                    p.warn(&format!("{field}.{key}"), format!("{raw:?} is not a date"));
                    (DateField { date: None, raw: Some(raw) }, false)
                }
            }
        };
        let (start, _) = read(self, "startDate", entry.start_date.as_ref());
        let (end, is_current) = read(self, "endDate", entry.end_date.as_ref());
        if let (Some(s), Some(e)) = (start.date, end.date) {
            if s > e {
                self.warn(field, format!("starts ({s}) after it ends ({e})"));
            }
        }
        (start, end, is_current)
    }

    fn education(&mut self, i: usize, e: &Entry) -> Education {
        let field = format!("educationInfo[{i}]");
        let (start, end, is_current) = self.period(&field, e);
        let academic_degree_raw = self.text(&field, "academicDegree", e.academic_degree.as_ref());
        let academic_degree =
            academic_degree_raw.as_deref().map(|raw| self.degree(&format!("{field}.academicDegree"), raw));
        Education {
            start,
            end,
            is_current,
            school: self.text(&field, "school", e.school.as_ref()),
            speciality: self.text(&field, "speciality", e.speciality.as_ref()),
            academic_degree,
            academic_degree_raw,
        }
    }

    fn experience(&mut self, i: usize, e: &Entry) -> Experience {
        let field = format!("experienceInfo[{i}]");
        let (start, end, is_current) = self.period(&field, e);
        Experience {
            start,
            end,
            is_current,
            company: self.text(&field, "company", e.company.as_ref()),
            title: self.text(&field, "title", e.title.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "id": "6XYfZGL4RWFfjSEpsEpdJ2eB", "name": "张三", "phone": "13203030303", "email": "A@b.com",
            "gender": "男", "birthYear": 1990, "source": "拉勾网", "academicDegree": "本科", "married": "未婚",
            "educationInfo": [{"startDate": "2007-09", "endDate": "2011-09", "school": "北京大学",
                               "speciality": "数学与应用数学", "academicDegree": "理学学士"}],
            "experienceInfo": [{"startDate": "2012-05", "endDate": "至今", "company": "腾讯广研", "title": "前端工程师"}],
            "resumeUrl": "http://url.com/file", "jobTitle": "前端工程师",
            "operator": {"name": "李四", "email": "lisi@a.com", "phone": "15828748567"},
            "interviewFeedbackUrl": "http://url.com/file", "offerAttachmentUrls": "", "offerInfo": ""
        })
    }

    fn parse_value(v: &Value) -> Result<Candidate, Vec<FieldError>> {
        parse(&v.to_string(), 2026, &Limits::default())
    }

    #[test]
    fn the_spec_example_parses_cleanly() {
        let c = parse_value(&sample()).unwrap();
        assert_eq!(c.warnings, vec![]);
        assert_eq!(
            (c.phone.as_str(), c.phone_raw.as_str(), c.email.as_str()),
            ("+8613203030303", "13203030303", "a@b.com")
        );
        assert_eq!((c.gender.as_deref(), c.married.as_deref(), c.birth_year), (Some("男"), Some("未婚"), Some(1990)));
        assert_eq!(c.educations[0].academic_degree.as_deref(), Some("本科"));
        assert_eq!(c.educations[0].start.date, NaiveDate::from_ymd_opt(2007, 9, 1));
        assert!(c.experiences[0].is_current);
        assert_eq!(c.experiences[0].end.date, None);
        assert_eq!(c.offer_info, None);
        assert!(c.offer_attachment_urls.is_empty());
        assert_eq!(c.operator_phone.as_deref(), Some("+8615828748567"));
    }

    #[test]
    fn every_bad_required_field_is_named() {
        let mut v = sample();
        let o = v.as_object_mut().unwrap();
        o.remove("name");
        o.insert("phone".into(), json!(""));
        o.insert("email".into(), json!({"x": 1}));
        o.insert("jobTitle".into(), json!(null));
        o.insert("operator".into(), json!("李四"));
        o.insert("id".into(), json!(7));
        let errs = parse_value(&v).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["id", "name", "phone", "email", "jobTitle", "operator"]);
        assert_eq!(parse("[1]", 2026, &Limits::default()).unwrap_err()[0].problem, "must be a JSON object");
        assert!(parse("{", 2026, &Limits::default()).unwrap_err()[0].problem.starts_with("not valid JSON"));
    }

    #[test]
    fn odd_data_is_kept_with_warnings_not_rejected() {
        let mut v = sample();
        let o = v.as_object_mut().unwrap();
        o.insert("gender".into(), json!("未知"));
        o.insert("email".into(), json!("not-an-address"));
        o.insert("birthYear".into(), json!("19x0"));
        o.insert("academicDegree".into(), json!("火星学院"));
        o.insert(
            "educationInfo".into(),
            json!({"startDate": "2011-09", "endDate": "2007-09", "academicDegree": "硕士研究生"}),
        );
        o.insert("experienceInfo".into(), json!([{"startDate": "sometime", "endDate": "2014-05"}, "junk"]));
        o.insert("offerInfo".into(), json!({"salary": "30k"}));
        o.insert("offerAttachmentUrls".into(), json!("http://a/1, http://a/2"));
        o.insert("phone".into(), json!(13203030303u64));
        let c = parse_value(&v).unwrap();
        let warned: Vec<&str> = c.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(
            warned,
            [
                "email",
                "gender",
                "birthYear",
                "educationInfo[0]",
                "experienceInfo[1]",
                "experienceInfo[0].startDate",
                "academicDegree"
            ]
        );
        assert_eq!(c.gender, None);
        assert_eq!(c.academic_degree.as_deref(), Some("其他"));
        assert_eq!(c.academic_degree_raw.as_deref(), Some("火星学院"));
        assert_eq!(c.educations.len(), 1, "a single object is a one-entry list");
        assert_eq!(c.educations[0].academic_degree.as_deref(), Some("硕士"));
        assert_eq!(c.experiences.len(), 1);
        assert_eq!(c.experiences[0].start.raw.as_deref(), Some("sometime"));
        assert_eq!(c.offer_info.as_deref(), Some(r#"{"salary":"30k"}"#), "kept as sent");
        assert_eq!(c.offer_attachment_urls, ["http://a/1", "http://a/2"]);
        assert_eq!(c.phone, "+8613203030303");
    }

    fn limits() -> Limits {
        Limits { max_entries: 3, max_links: 2, text_max_chars: 12, url_max_bytes: 20, max_warnings: 4, id_max_bytes: 8 }
    }

    #[test]
    fn an_id_over_its_cap_and_lists_over_theirs_are_refused_naming_each_field() {
        let mut v = sample();
        let o = v.as_object_mut().unwrap();
        o.insert("id".into(), json!("123456789"));
        o.insert("educationInfo".into(), json!([{}, {}, {}, {}]));
        o.insert("experienceInfo".into(), json!([1, 2, 3]));
        o.insert("offerAttachmentUrls".into(), json!("http://a/1 http://a/2 http://a/3"));
        let errs = parse(&v.to_string(), 2026, &limits()).unwrap_err();
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "id: is 9 bytes long, at most 8 are accepted",
                "educationInfo: has 4 entries, at most 3 are accepted",
                "offerAttachmentUrls: has 3 links, at most 2 are accepted",
            ]
        );
        o_insert(&mut v, "offerAttachmentUrls", json!(["http://a/1", "http://a/2", "http://a/3"]));
        let errs = parse(&v.to_string(), 2026, &limits()).unwrap_err();
        assert_eq!(errs.last().unwrap().to_string(), "offerAttachmentUrls: has 3 links, at most 2 are accepted");
    }

    fn o_insert(v: &mut Value, key: &str, value: Value) {
        v.as_object_mut().unwrap().insert(key.into(), value);
    }

    #[test]
    fn long_text_is_cut_long_urls_are_dropped_and_warnings_are_capped_with_a_count_of_the_rest() {
        let mut v = sample();
        o_insert(&mut v, "id", json!("c1"));
        o_insert(&mut v, "name", json!("张".repeat(14)));
        o_insert(&mut v, "resumeUrl", json!(format!("http://a/{}", "x".repeat(20))));
        o_insert(&mut v, "educationInfo", json!([{"startDate": "a"}, {"startDate": "b"}, {"startDate": "c"}]));
        let c = parse(&v.to_string(), 2026, &limits()).unwrap();
        assert_eq!(c.name, "张".repeat(12));
        assert_eq!(c.resume_url, None);
        let shown: Vec<(&str, &str)> = c.warnings.iter().map(|w| (w.field.as_str(), w.message.as_str())).collect();
        assert_eq!(
            shown,
            [
                ("name", "is 14 characters long; cut to 12 (the whole text is in raw_payload)"),
                ("educationInfo[0].startDate", "\"a\" is not a date"),
                ("educationInfo[1].startDate", "\"b\" is not a date"),
                ("educationInfo[2].startDate", "\"c\" is not a date"),
                ("warnings", "1 more warnings not shown"),
            ],
            "the fifth: the resume URL, dropped"
        );
    }

    #[test]
    fn dates_from_serializers_and_resumes_reach_the_entries_as_numbers_or_text() {
        // Epoch milliseconds as a JSON number (Java, JavaScript), month before year, full width,
        // an English month: each dated, none warned about; an ambiguous day/month stays raw.
        let mut v = sample();
        o_insert(
            &mut v,
            "experienceInfo",
            json!([
                {"startDate": 1330531200000u64, "endDate": "08/2023"},
                {"startDate": "２０１１年９月", "endDate": "Sept. 2012"},
                {"startDate": "03/04/2007", "endDate": "present"}
            ]),
        );
        let c = parse_value(&v).unwrap();
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        let e = &c.experiences;
        assert_eq!((e[0].start.date, e[0].end.date), (date(2012, 3, 1), date(2023, 8, 1)));
        assert_eq!(e[0].start.raw.as_deref(), Some("1330531200000"));
        assert_eq!((e[1].start.date, e[1].end.date), (date(2011, 9, 1), date(2012, 9, 1)));
        assert_eq!((e[2].start.date, e[2].start.raw.as_deref(), e[2].is_current), (None, Some("03/04/2007"), true));
        let warned: Vec<&str> = c.warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(warned, ["experienceInfo[2].startDate"]);
    }

    #[test]
    fn a_colloquial_degree_is_read_and_the_candidates_degree_derived_from_it() {
        let mut v = sample();
        o_insert(&mut v, "academicDegree", Value::Null);
        o_insert(&mut v, "educationInfo", json!([{"academicDegree": "大本"}, {"academicDegree": "在职研究生"}]));
        let c = parse_value(&v).unwrap();
        assert_eq!(c.educations[0].academic_degree.as_deref(), Some("本科"));
        assert_eq!(c.academic_degree.as_deref(), Some("硕士"));
    }

    #[test]
    fn a_phone_that_is_not_a_phone_number_is_kept_with_a_warning() {
        let mut v = sample();
        o_insert(&mut v, "phone", json!("1".repeat(500)));
        o_insert(&mut v, "operator", json!({"name": "李四", "phone": "ask the front desk"}));
        let c = parse_value(&v).unwrap();
        assert_eq!(c.phone, "1".repeat(500));
        assert_eq!(c.operator_phone.as_deref(), Some("askthefrontdesk"));
        let fields: Vec<(&str, &str)> = c.warnings.iter().map(|w| (w.field.as_str(), w.message.as_str())).collect();
        assert_eq!(fields, [("phone", "is not a phone number"), ("operator.phone", "is not a phone number")]);
    }

    #[test]
    fn a_hundred_thousand_entries_are_refused_without_being_built() {
        let mut v = sample();
        o_insert(&mut v, "educationInfo", Value::Array(vec![json!({}); 100_000]));
        o_insert(&mut v, "experienceInfo", Value::Array(vec![json!("junk"); 100_000]));
        let errs = parse_value(&v).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[1].to_string(), "experienceInfo: has 100000 entries, at most 50 are accepted");
    }

    #[test]
    fn missing_degree_is_derived_from_the_highest_education() {
        let mut v = sample();
        let o = v.as_object_mut().unwrap();
        o.remove("academicDegree");
        o.insert(
            "educationInfo".into(),
            json!([{"academicDegree": "本科"}, {"academicDegree": "Master of Science"}, {"academicDegree": "高中"}]),
        );
        let c = parse_value(&v).unwrap();
        assert_eq!((c.academic_degree.as_deref(), c.academic_degree_raw.as_deref()), (Some("硕士"), None));
    }
}
