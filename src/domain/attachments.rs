//! The files a candidate links to: the résumé, the interview feedback and the offer attachments,
//! each a [`Link`] of one [`Kind`]. A link is identified by its candidate, kind and URL, the key
//! of its `candidate_attachments` row and of its download.

use serde::{Deserialize, Serialize};

use super::candidate::Candidate;

/// `candidate_attachments.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Resume,
    InterviewFeedback,
    Offer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Resume => "resume",
            Kind::InterviewFeedback => "interview_feedback",
            Kind::Offer => "offer",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Resume, Kind::InterviewFeedback, Kind::Offer].into_iter().find(|k| k.as_str() == s)
    }
}

/// One file a candidate links to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Link {
    pub moka_id: String,
    pub kind: Kind,
    pub url: String,
}

/// The links of a candidate, in payload order, without repeats (the candidate's URLs are
/// already trimmed, and empty ones dropped, by the payload reader).
pub fn links(c: &Candidate) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let all = c
        .resume_url
        .iter()
        .map(|u| (Kind::Resume, u))
        .chain(c.interview_feedback_url.iter().map(|u| (Kind::InterviewFeedback, u)))
        .chain(c.offer_attachment_urls.iter().map(|u| (Kind::Offer, u)));
    for (kind, url) in all {
        if !url.is_empty() && !out.iter().any(|l| l.kind == kind && l.url == *url) {
            out.push(Link { moka_id: c.moka_id.clone(), kind, url: url.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_column_text() {
        for k in [Kind::Resume, Kind::InterviewFeedback, Kind::Offer] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("photo"), None);
    }
}
