//! Reading Moka's payload in one pass, without building what normalization does not use.
//!
//! A generic JSON tree costs about 32 bytes per value whatever the value, so a 1 MiB payload of
//! `[{},{},…]` becomes some 350,000 values before anything can count them. This reader keeps only
//! the fields the candidate has; an array or object where text is expected is skipped and
//! remembered by its kind; of `educationInfo`, `experienceInfo` and `offerAttachmentUrls` it
//! keeps the first `cap` items and counts the rest without keeping them; `offerInfo` stays the
//! JSON text it was; unknown keys are skipped. What it keeps is thus bounded by the caps, not by
//! the payload's shape. (serde_json's recursion limit of 128 bounds nesting.)

use std::{borrow::Cow, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{value::RawValue, Number};

/// A JSON value where text (or a number) is expected.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Text(Cow<'a, str>),
    Number(Number),
    Bool(bool),
    /// Skipped: its contents are not read into memory.
    Array,
    Object,
}

impl Scalar<'_> {
    /// The JSON kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Text(_) => "string",
            Scalar::Number(_) => "number",
            Scalar::Bool(_) => "boolean",
            Scalar::Array => "array",
            Scalar::Object => "object",
        }
    }
}

/// An entry of `educationInfo` or `experienceInfo`: the keys either kind uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry<'a> {
    pub start_date: Option<Scalar<'a>>,
    pub end_date: Option<Scalar<'a>>,
    pub school: Option<Scalar<'a>>,
    pub speciality: Option<Scalar<'a>>,
    pub academic_degree: Option<Scalar<'a>>,
    pub company: Option<Scalar<'a>>,
    pub title: Option<Scalar<'a>>,
}

/// One item of an entry list.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    Entry(Entry<'a>),
    /// Not an object: its kind.
    Other(&'static str),
}

/// `educationInfo` / `experienceInfo`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Entries<'a> {
    /// Absent, null or an empty string.
    #[default]
    Absent,
    /// A list (a single object is a list of one): its first items, up to the cap, and how many
    /// it has in all.
    List { items: Vec<Item<'a>>, total: usize },
    /// Neither a list nor an object: its kind.
    Other(&'static str),
}

/// `offerAttachmentUrls` given as a JSON array.
#[derive(Debug, Clone, PartialEq)]
pub enum Links<'a> {
    /// Text: one or several URLs, split later.
    Text(Cow<'a, str>),
    /// An array of strings: the first ones, up to the cap, and how many in all.
    List { urls: Vec<Cow<'a, str>>, total: usize },
    /// Null.
    Null,
    /// Of another kind, or an array holding something else than strings: that kind.
    Other(&'static str),
}

/// `operator`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Operator<'a> {
    /// Absent or null.
    #[default]
    Missing,
    Object {
        name: Option<Scalar<'a>>,
        email: Option<Scalar<'a>>,
        phone: Option<Scalar<'a>>,
    },
    Other(&'static str),
}

/// The fields of a payload that normalization reads (`None`: absent).
#[derive(Debug, Default)]
pub struct Payload<'a> {
    pub id: Option<Scalar<'a>>,
    pub name: Option<Scalar<'a>>,
    pub phone: Option<Scalar<'a>>,
    pub email: Option<Scalar<'a>>,
    pub job_title: Option<Scalar<'a>>,
    pub gender: Option<Scalar<'a>>,
    pub married: Option<Scalar<'a>>,
    pub birth_year: Option<Scalar<'a>>,
    pub source: Option<Scalar<'a>>,
    pub academic_degree: Option<Scalar<'a>>,
    pub resume_url: Option<Scalar<'a>>,
    pub interview_feedback_url: Option<Scalar<'a>>,
    pub operator: Operator<'a>,
    pub education: Entries<'a>,
    pub experience: Entries<'a>,
    pub offer_urls: Option<Links<'a>>,
    /// The JSON text of `offerInfo`, as sent.
    pub offer_info: Option<&'a RawValue>,
}

/// Why a payload cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("must be a JSON object")]
    NotObject,
}

/// How many list items to keep: entries (each list) and links.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub entries: usize,
    pub links: usize,
}

/// Reads `payload`, keeping at most `caps` items of each list.
pub fn read(payload: &str, caps: Caps) -> Result<Payload<'_>, ReadError> {
    let mut de = serde_json::Deserializer::from_str(payload);
    let parsed = PayloadSeed(caps).deserialize(&mut de).and_then(|p| de.end().map(|()| p));
    match parsed {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(ReadError::NotObject),
        Err(e) => Err(ReadError::NotJson(e.to_string())),
    }
}

/// The keys read; everything else is skipped.
enum Key {
    Id,
    Name,
    Phone,
    Email,
    JobTitle,
    Gender,
    Married,
    BirthYear,
    Source,
    AcademicDegree,
    ResumeUrl,
    InterviewFeedbackUrl,
    Operator,
    EducationInfo,
    ExperienceInfo,
    OfferAttachmentUrls,
    OfferInfo,
    StartDate,
    EndDate,
    School,
    Speciality,
    Company,
    Title,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "id" => Key::Id,
                    "name" => Key::Name,
                    "phone" => Key::Phone,
                    "email" => Key::Email,
                    "jobTitle" => Key::JobTitle,
                    "gender" => Key::Gender,
                    "married" => Key::Married,
                    "birthYear" => Key::BirthYear,
                    "source" => Key::Source,
                    "academicDegree" => Key::AcademicDegree,
                    "resumeUrl" => Key::ResumeUrl,
                    "interviewFeedbackUrl" => Key::InterviewFeedbackUrl,
                    "operator" => Key::Operator,
                    "educationInfo" => Key::EducationInfo,
                    "experienceInfo" => Key::ExperienceInfo,
                    "offerAttachmentUrls" => Key::OfferAttachmentUrls,
                    "offerInfo" => Key::OfferInfo,
                    "startDate" => Key::StartDate,
                    "endDate" => Key::EndDate,
                    "school" => Key::School,
                    "speciality" => Key::Speciality,
                    "company" => Key::Company,
                    "title" => Key::Title,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Scalar<'de>, E> {
        Ok(Number::from_f64(n).map_or(Scalar::Null, Scalar::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// The top level: `Some` for an object, `None` for any other JSON value (read and discarded).
struct PayloadSeed(Caps);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Option<Payload<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed {
    type Value = Option<Payload<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let caps = self.0;
        let mut p = Payload::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => p.id = Some(map.next_value()?),
                Key::Name => p.name = Some(map.next_value()?),
                Key::Phone => p.phone = Some(map.next_value()?),
                Key::Email => p.email = Some(map.next_value()?),
                Key::JobTitle => p.job_title = Some(map.next_value()?),
                Key::Gender => p.gender = Some(map.next_value()?),
                Key::Married => p.married = Some(map.next_value()?),
                Key::BirthYear => p.birth_year = Some(map.next_value()?),
                Key::Source => p.source = Some(map.next_value()?),
                Key::AcademicDegree => p.academic_degree = Some(map.next_value()?),
                Key::ResumeUrl => p.resume_url = Some(map.next_value()?),
                Key::InterviewFeedbackUrl => p.interview_feedback_url = Some(map.next_value()?),
                Key::Operator => p.operator = map.next_value_seed(OperatorSeed)?,
                Key::EducationInfo => p.education = map.next_value_seed(EntriesSeed(caps.entries))?,
                Key::ExperienceInfo => p.experience = map.next_value_seed(EntriesSeed(caps.entries))?,
                Key::OfferAttachmentUrls => p.offer_urls = Some(map.next_value_seed(LinksSeed(caps.links))?),
                Key::OfferInfo => p.offer_info = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(p))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The keys of an entry object.
fn read_entry<'de, A: MapAccess<'de>>(mut map: A) -> Result<Entry<'de>, A::Error> {
    let mut e = Entry::default();
    while let Some(key) = map.next_key::<Key>()? {
        let slot = match key {
            Key::StartDate => &mut e.start_date,
            Key::EndDate => &mut e.end_date,
            Key::School => &mut e.school,
            Key::Speciality => &mut e.speciality,
            Key::AcademicDegree => &mut e.academic_degree,
            Key::Company => &mut e.company,
            Key::Title => &mut e.title,
            _ => {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
        };
        *slot = Some(map.next_value()?);
    }
    Ok(e)
}

/// One item of an entry list: an entry, or the kind of what it is instead.
struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match d.deserialize_any(ItemVisitor)? {
            Ok(entry) => Ok(Item::Entry(entry)),
            Err(kind) => Ok(Item::Other(kind)),
        }
    }
}

/// An object as an entry; anything else as its kind (read through [`ScalarVisitor`], which
/// skips arrays and objects without keeping them).
struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Result<Entry<'de>, &'static str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_entry(map).map(Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|s| Err(s.kind()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err("string"))
    }
}

/// `educationInfo` / `experienceInfo`, keeping at most `.0` items.
struct EntriesSeed(usize);

impl<'de> DeserializeSeed<'de> for EntriesSeed {
    type Value = Entries<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed {
    type Value = Entries<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut total = 0;
        // Counted to the end, kept only up to the cap: the rest is skipped unread.
        loop {
            if total < self.0 {
                match seq.next_element_seed(ItemSeed)? {
                    Some(item) => items.push(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            total += 1;
        }
        Ok(Entries::List { items, total })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let entry = read_entry(map)?;
        Ok(if self.0 == 0 {
            Entries::List { items: Vec::new(), total: 1 }
        } else {
            Entries::List { items: vec![Item::Entry(entry)], total: 1 }
        })
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Entries::Absent)
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(if s.trim().is_empty() { Entries::Absent } else { Entries::Other("string") })
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Entries::Other("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Entries::Other("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Entries::Other("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Entries::Other("number"))
    }
}

/// `offerAttachmentUrls`, keeping at most `.0` URLs of an array.
struct LinksSeed(usize);

impl<'de> DeserializeSeed<'de> for LinksSeed {
    type Value = Links<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LinksSeed {
    type Value = Links<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("URLs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut urls = Vec::new();
        let mut total = 0;
        let mut other = None;
        while let Some(item) = seq.next_element::<Scalar<'de>>()? {
            match item {
                Scalar::Text(s) if total < self.0 => urls.push(s),
                Scalar::Text(_) => {}
                _ => other = Some("array"),
            }
            total += 1;
        }
        Ok(match other {
            Some(kind) => Links::Other(kind),
            None => Links::List { urls, total },
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_map(map).map(|_| Links::Other("object"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Links::Null)
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Links::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Links::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Links::Other("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Links::Other("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Links::Other("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Links::Other("number"))
    }
}

/// `operator`: the three keys the candidate uses.
struct OperatorSeed;

impl<'de> DeserializeSeed<'de> for OperatorSeed {
    type Value = Operator<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OperatorSeed {
    type Value = Operator<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut email, mut phone) = (None, None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Name => name = Some(map.next_value()?),
                Key::Email => email = Some(map.next_value()?),
                Key::Phone => phone = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Operator::Object { name, email, phone })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| Operator::Other("array"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Operator::Missing)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Operator::Other("string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Operator::Other("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Operator::Other("number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Operator::Other("number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Operator::Other("number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps { entries: 2, links: 2 };

    #[test]
    fn lists_are_counted_to_the_end_and_kept_up_to_the_cap() {
        let p = read(r#"{"educationInfo":[{"school":"a"},{},{},{}],"experienceInfo":{"company":"c"}}"#, CAPS).unwrap();
        let Entries::List { items, total } = &p.education else { panic!("{:?}", p.education) };
        assert_eq!((items.len(), *total), (2, 4));
        assert_eq!(items[0], Item::Entry(Entry { school: Some(Scalar::Text("a".into())), ..Default::default() }));
        assert!(matches!(&p.experience, Entries::List { items, total: 1 } if items.len() == 1));
        let p = read(r#"{"offerAttachmentUrls":["u1","u2","u3"]}"#, CAPS).unwrap();
        assert_eq!(p.offer_urls, Some(Links::List { urls: vec!["u1".into(), "u2".into()], total: 3 }));
    }

    #[test]
    fn arrays_and_objects_where_text_is_expected_are_skipped_and_named_by_kind() {
        let p =
            read(r#"{"id":"x","name":[1,[2]],"email":{"a":{"b":1}},"phone":13203030303,"gender":null,"x":[{}]}"#, CAPS)
                .unwrap();
        assert_eq!(p.id, Some(Scalar::Text("x".into())));
        assert_eq!((p.name, p.email), (Some(Scalar::Array), Some(Scalar::Object)));
        assert_eq!(p.phone, Some(Scalar::Number(13203030303u64.into())));
        assert_eq!(p.gender, Some(Scalar::Null));
        let p =
            read(r#"{"educationInfo":[{},"junk",[1]],"operator":"李四","offerInfo":{"salary": "30k"}}"#, CAPS).unwrap();
        assert!(matches!(&p.education, Entries::List { items, total: 3 } if items[1] == Item::Other("string")));
        assert_eq!(p.operator, Operator::Other("string"));
        assert_eq!(p.offer_info.unwrap().get(), r#"{"salary": "30k"}"#, "kept as sent");
    }

    #[test]
    fn what_is_not_an_object_or_not_json_is_refused() {
        assert_eq!(read("[1]", CAPS).unwrap_err(), ReadError::NotObject);
        assert_eq!(read("\"x\"", CAPS).unwrap_err(), ReadError::NotObject);
        assert!(matches!(read("{", CAPS), Err(ReadError::NotJson(_))));
        assert!(matches!(read("{} x", CAPS), Err(ReadError::NotJson(_))));
    }
}
