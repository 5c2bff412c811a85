//! The candidate as the CRM stores it, parsed from Moka's payload.
//!
//! Parsing is strict only where the CRM cannot do without a value: the required fields (`id`,
//! `name`, `phone`, `email`, `jobTitle`, `operator`) must be present and readable, and every
//! missing or unreadable one is named. Everything else is normalized where possible and kept raw
//! (with a warning) where not: data that is merely odd is never rejected.

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    dates::{self, When},
    degree, fields,
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
    pub offer_info: Option<Value>,
    pub educations: Vec<Education>,
    pub experiences: Vec<Experience>,
    pub warnings: Vec<Warning>,
}

/// Reads the payload. `current_year` bounds the plausible birth years.
pub fn parse(payload: &str, current_year: i32) -> Result<Candidate, Vec<FieldError>> {
    let value: Value = serde_json::from_str(payload)
        .map_err(|e| vec![FieldError { field: "payload".into(), problem: format!("not valid JSON: {e}") }])?;
    let Value::Object(obj) = value else {
        return Err(vec![FieldError { field: "payload".into(), problem: "must be a JSON object".into() }]);
    };
    let mut p = Parser { obj: &obj, errors: Vec::new(), warnings: Vec::new() };

    let moka_id = p.required_text("id");
    let name = p.required_text("name");
    let phone_raw = p.required_text("phone");
    let email_raw = p.required_text("email");
    let job_title = p.required_text("jobTitle");
    let operator = match obj.get("operator") {
        Some(Value::Object(o)) => Some(o),
        None | Some(Value::Null) => {
            p.error("operator", "is missing");
            None
        }
        Some(other) => {
            p.error("operator", &format!("must be an object, got {}", kind(other)));
            None
        }
    };
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

    let phone = fields::phone(&phone_raw);
    let (email, email_ok) = fields::email(&email_raw);
    if !email_ok {
        p.warn("email", format!("{email_raw:?} does not look like an email address"));
    }
    let gender = p.optional_text("gender").and_then(|g| p.mapped("gender", &g, fields::gender(&g)));
    let married = p.optional_text("married").and_then(|m| p.mapped("married", &m, fields::marital(&m)));
    let birth_year = match obj.get("birthYear") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => {
            let y = fields::birth_year(v, current_year);
            if y.is_none() {
                p.warn("birthYear", format!("{v} is not a plausible birth year"));
            }
            y
        }
    };
    let source = p.optional_text("source");
    let educations = p.entries("educationInfo").iter().enumerate().map(|(i, e)| p.education(i, e)).collect::<Vec<_>>();
    let experiences =
        p.entries("experienceInfo").iter().enumerate().map(|(i, e)| p.experience(i, e)).collect::<Vec<_>>();

    let academic_degree_raw = p.optional_text("academicDegree");
    let academic_degree = match &academic_degree_raw {
        Some(raw) => Some(p.degree("academicDegree", raw)),
        // Derived from the highest education entry when the candidate's own is missing.
        None => educations
            .iter()
            .filter_map(|e| e.academic_degree_raw.as_deref().and_then(degree::normalize))
            .max_by_key(|d| d.rank)
            .map(|d| d.name.to_string()),
    };

    let operator = operator.expect("checked above");
    let operator_text = |p: &mut Parser, key: &str| p.text_in(operator, "operator", key);
    let operator_name = operator_text(&mut p, "name");
    let operator_email = operator_text(&mut p, "email").map(|e| fields::email(&e).0);
    let operator_phone = operator_text(&mut p, "phone").map(|ph| fields::phone(&ph).value);

    let resume_url = p.optional_text("resumeUrl");
    let interview_feedback_url = p.optional_text("interviewFeedbackUrl");
    let offer_attachment_urls = match obj.get("offerAttachmentUrls") {
        None => Vec::new(),
        Some(v) => fields::url_list(v).unwrap_or_else(|| {
            p.warn("offerAttachmentUrls", format!("cannot read URLs from a {}", kind(v)));
            Vec::new()
        }),
    };
    let offer_info = match obj.get("offerInfo") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => Some(v.clone()),
    };

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

struct Parser<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
    warnings: Vec<Warning>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl<'a> Parser<'a> {
    fn error(&mut self, field: &str, problem: &str) {
        self.errors.push(FieldError { field: field.into(), problem: problem.into() });
    }

    fn warn(&mut self, field: &str, message: String) {
        self.warnings.push(Warning { field: field.into(), message });
    }

    /// A required text: a non-empty string (a number is read as its digits, e.g. a phone).
    fn required_text(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => self.error(key, "is missing"),
            Some(Value::String(s)) if s.trim().is_empty() => self.error(key, "is empty"),
            Some(Value::String(s)) => return Some(s.trim().to_owned()),
            Some(Value::Number(n)) if key != "id" => return Some(n.to_string()),
            Some(other) => self.error(key, &format!("must be a string, got {}", kind(other))),
        }
        None
    }

    fn optional_text(&mut self, key: &str) -> Option<String> {
        let obj = self.obj;
        self.text_in(obj, "", key)
    }

    /// An optional text at `obj[key]`, reported as `prefix.key`: empty is none; numbers and
    /// booleans are read as text; arrays and objects are kept only in the raw payload, with a warning.
    fn text_in(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) -> Option<String> {
        match obj.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                // The field name is built only here: this runs for every field of every entry.
                let field = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
                self.warn(&field, format!("expected text, got {}", kind(other)));
                None
            }
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

    /// A list field that may also be given as a single object (or empty).
    fn entries(&mut self, key: &str) -> Vec<&'a Map<String, Value>> {
        let obj: &'a Map<String, Value> = self.obj;
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
            Some(Value::Object(o)) => vec![o],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Object(o) => Some(o),
                    other => {
                        self.warn(&format!("{key}[{i}]"), format!("expected an object, got {}", kind(other)));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.warn(key, format!("expected a list, got {}", kind(other)));
                Vec::new()
            }
        }
    }

    /// Start and end of an entry; `end` may be an ongoing word.
    fn period(&mut self, field: &str, entry: &Map<String, Value>) -> (DateField, DateField, bool) {
        let read = |p: &mut Self, key: &str| -> (DateField, bool) {
            let raw = p.text_in(entry, field, key);
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
        let (start, _) = read(self, "startDate");
        let (end, is_current) = read(self, "endDate");
        if let (Some(s), Some(e)) = (start.date, end.date) {
            if s > e {
                self.warn(field, format!("starts ({s}) after it ends ({e})"));
            }
        }
        (start, end, is_current)
    }

    fn education(&mut self, i: usize, e: &Map<String, Value>) -> Education {
        let field = format!("educationInfo[{i}]");
        let (start, end, is_current) = self.period(&field, e);
        let academic_degree_raw = self.text_in(e, &field, "academicDegree");
        let academic_degree =
            academic_degree_raw.as_deref().map(|raw| self.degree(&format!("{field}.academicDegree"), raw));
        Education {
            start,
            end,
            is_current,
            school: self.text_in(e, &field, "school"),
            speciality: self.text_in(e, &field, "speciality"),
            academic_degree,
            academic_degree_raw,
        }
    }

    fn experience(&mut self, i: usize, e: &Map<String, Value>) -> Experience {
        let field = format!("experienceInfo[{i}]");
        let (start, end, is_current) = self.period(&field, e);
        Experience {
            start,
            end,
            is_current,
            company: self.text_in(e, &field, "company"),
            title: self.text_in(e, &field, "title"),
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
        parse(&v.to_string(), 2026)
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
        assert_eq!(parse("[1]", 2026).unwrap_err()[0].problem, "must be a JSON object");
        assert!(parse("{", 2026).unwrap_err()[0].problem.starts_with("not valid JSON"));
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
        assert_eq!(c.offer_info, Some(json!({"salary": "30k"})));
        assert_eq!(c.offer_attachment_urls, ["http://a/1", "http://a/2"]);
        assert_eq!(c.phone, "+8613203030303");
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
