//! Writes a batch of processed messages in one transaction: candidates (upsert, newest wins),
//! their educations and experiences, and one `submissions` row per message.
//!
//! Exactly once in effect:
//! - a message whose `submissions` row says `applied` or `stale` was done before: nothing changes
//!   (a `dead` one is being replayed, and is processed again);
//! - a candidate row is replaced only by a strictly newer submission, by (tonce, receive time);
//!   an older one is recorded as `stale`;
//! - a submission whose request (its signature's digest) was processed before, under another
//!   message id, is a replay that the ingress's cache forgot: recorded as `duplicate`, nothing else;
//! - rows are locked in `moka_id` order, so concurrent batches on several workers cannot deadlock.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::attachments::{self, Link};
use super::{plan, storable, DbError};
use crate::domain::{
    candidate::{Candidate, DateField},
    submission::Meta,
};

/// One valid submission to store.
pub struct Item<'a> {
    pub meta: &'a Meta,
    pub payload: &'a str,
    pub candidate: &'a Candidate,
    pub attempts: i32,
}

/// One message that was dead-lettered, for the audit trail.
pub struct DeadRecord<'a> {
    pub meta: &'a Meta,
    pub attempts: i32,
    /// `{kind, message, fields?}`
    pub error: serde_json::Value,
}

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The candidate now reflects this submission.
    Applied,
    /// A newer submission of the same candidate was already stored.
    Stale,
    /// This message was processed before (a redelivery): nothing is written.
    Duplicate,
    /// The same request was processed before under another message id (a replay that reached
    /// the worker): recorded as `duplicate` in `submissions`, nothing else written.
    Replayed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate | Outcome::Replayed => "duplicate",
        }
    }
}

const UPSERT_SQL: &str = "
INSERT INTO candidates AS c (
    moka_id, name, phone, phone_raw, email, gender, birth_year, source, academic_degree,
    academic_degree_raw, married, job_title, operator_name, operator_email, operator_phone,
    resume_url, interview_feedback_url, offer_attachment_urls, offer_info, raw_payload, warnings,
    source_tonce, source_received_at, last_message_id, created_at, updated_at)
SELECT u.moka_id, u.name, u.phone, u.phone_raw, u.email, u.gender, u.birth_year, u.source, u.academic_degree,
    u.academic_degree_raw, u.married, u.job_title, u.operator_name, u.operator_email, u.operator_phone,
    u.resume_url, u.interview_feedback_url, u.offer_attachment_urls::jsonb, u.offer_info::jsonb,
    u.raw_payload::jsonb, u.warnings::jsonb, u.source_tonce, u.source_received_at, u.last_message_id::uuid, now(), now()
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::text[],
            $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
            $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::int8[], $23::timestamptz[], $24::text[])
    AS u(moka_id, name, phone, phone_raw, email, gender, birth_year, source, academic_degree,
         academic_degree_raw, married, job_title, operator_name, operator_email, operator_phone,
         resume_url, interview_feedback_url, offer_attachment_urls, offer_info, raw_payload, warnings,
         source_tonce, source_received_at, last_message_id)
ON CONFLICT (moka_id) DO UPDATE SET
    name = excluded.name, phone = excluded.phone, phone_raw = excluded.phone_raw, email = excluded.email,
    gender = excluded.gender, birth_year = excluded.birth_year, source = excluded.source,
    academic_degree = excluded.academic_degree, academic_degree_raw = excluded.academic_degree_raw,
    married = excluded.married, job_title = excluded.job_title, operator_name = excluded.operator_name,
    operator_email = excluded.operator_email, operator_phone = excluded.operator_phone,
    resume_url = excluded.resume_url, interview_feedback_url = excluded.interview_feedback_url,
    offer_attachment_urls = excluded.offer_attachment_urls, offer_info = excluded.offer_info,
    raw_payload = excluded.raw_payload, warnings = excluded.warnings, source_tonce = excluded.source_tonce,
    source_received_at = excluded.source_received_at, last_message_id = excluded.last_message_id,
    updated_at = now()
WHERE (c.source_tonce, c.source_received_at) < (excluded.source_tonce, excluded.source_received_at)
RETURNING c.moka_id, (c.xmax = 0) AS inserted";

const DELETE_EDUCATIONS_SQL: &str = "DELETE FROM candidate_educations WHERE moka_id = ANY($1::text[])";
const DELETE_EXPERIENCES_SQL: &str = "DELETE FROM candidate_experiences WHERE moka_id = ANY($1::text[])";

const INSERT_EDUCATIONS_SQL: &str = "
INSERT INTO candidate_educations (moka_id, position, start_date, end_date, is_current, start_raw, end_raw,
                                  school, speciality, academic_degree, academic_degree_raw)
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::date[], $4::date[], $5::bool[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[])";

const INSERT_EXPERIENCES_SQL: &str = "
INSERT INTO candidate_experiences (moka_id, position, start_date, end_date, is_current, start_raw, end_raw, company, title)
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::date[], $4::date[], $5::bool[], $6::text[], $7::text[], $8::text[], $9::text[])";

const SUBMISSIONS_SQL: &str = "
INSERT INTO submissions (message_id, moka_id, access_key, tonce, received_at, processed_at, outcome, attempts, error, signature)
SELECT u.message_id::uuid, u.moka_id, u.access_key, u.tonce, u.received_at, now(), u.outcome, u.attempts, u.error::jsonb, u.signature
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[], $6::text[], $7::int4[], $8::text[], $9::bytea[])
    AS u(message_id, moka_id, access_key, tonce, received_at, outcome, attempts, error, signature)
ON CONFLICT (message_id) DO UPDATE SET
    outcome = excluded.outcome, processed_at = excluded.processed_at, attempts = excluded.attempts, error = excluded.error
WHERE submissions.outcome = 'dead'
RETURNING message_id::text";

/// What a batch write did.
#[derive(Debug, Default)]
pub struct Written {
    /// One per item.
    pub outcomes: Vec<Outcome>,
    /// The links still to download of the candidates this batch applied or had applied before
    /// (a redelivery whose downloads may never have been queued).
    pub pending: Vec<Link>,
}

/// Writes `items` and `dead` in the transaction `tx` (the caller commits). With `track_links`,
/// each applied candidate's links become `pending` rows of `candidate_attachments`.
///
/// Three round trips whatever the batch size: the upsert, then the child rows, the attachment
/// rows and the `submissions` rows pipelined (tokio-postgres sends them back to back, in order),
/// then COMMIT; one more to read the pending links of candidates that existed or were written before.
pub async fn write(
    tx: &Transaction<'_>,
    items: &[Item<'_>],
    track_links: bool,
    dead: &[DeadRecord<'_>],
) -> Result<Written, DbError> {
    // Messages processed before (redeliveries) and replays (a request processed before under
    // another message id) take no further part.
    let prior = prior(tx, items).await?;
    let live: Vec<usize> = (0..items.len()).filter(|i| prior[*i].is_none()).collect();
    // Keyed by the candidate's normalized id, the one its row is written under: two payloads
    // whose ids differ only in surrounding spaces are the same candidate.
    let keys: Vec<plan::Key> = live
        .iter()
        .map(|i| &items[*i])
        .map(|i| plan::Key {
            message_id: i.meta.message_id,
            moka_id: &i.candidate.moka_id,
            tonce: i.meta.tonce,
            received_at: i.meta.received_at,
        })
        .collect();
    let plan::Plan { repeated, winners } = plan::plan(&keys);
    let winners: Vec<usize> = winners.into_iter().map(|w| live[w]).collect();
    let mut outcomes: Vec<Outcome> = prior.iter().map(|p| p.unwrap_or(Outcome::Stale)).collect();
    for (j, i) in live.iter().enumerate() {
        outcomes[*i] = if repeated[j] { Outcome::Duplicate } else { Outcome::Stale };
    }

    let (applied, updated) =
        if winners.is_empty() { (HashSet::new(), Vec::new()) } else { upsert_candidates(tx, items, &winners).await? };
    let applied_items: Vec<usize> =
        winners.iter().copied().filter(|w| applied.contains(items[*w].candidate.moka_id.as_str())).collect();
    for w in &applied_items {
        outcomes[*w] = Outcome::Applied;
    }

    // Only candidates that existed have children to replace. (Skipping the delete for new ones
    // also avoids a sequential-scan plan on freshly created, unanalyzed tables.)
    let replace_children = async {
        if !updated.is_empty() {
            let (edu, exp) =
                tokio::try_join!(tx.prepare_cached(DELETE_EDUCATIONS_SQL), tx.prepare_cached(DELETE_EXPERIENCES_SQL))?;
            let params: [&(dyn ToSql + Sync); 1] = [&updated];
            tokio::try_join!(tx.execute(&edu, &params), tx.execute(&exp, &params))?;
        }
        insert_children(tx, items, &applied_items).await
    };
    // The applied candidates' links become pending rows; those of candidates that existed may
    // drop earlier pending links.
    let links: Vec<Link> = match track_links {
        true => applied_items.iter().flat_map(|w| crate::domain::attachments::links(items[*w].candidate)).collect(),
        false => Vec::new(),
    };
    let existed: Vec<&str> = if track_links { updated.iter().map(String::as_str).collect() } else { Vec::new() };
    let (_, recorded, _) = tokio::try_join!(
        replace_children,
        record_submissions(tx, items, &outcomes, dead),
        attachments::record_pending(tx, &existed, &links)
    )?;
    for (i, item) in items.iter().enumerate() {
        if outcomes[i] != Outcome::Duplicate && !recorded.contains(&item.meta.message_id.to_string()) {
            // Its submissions row already said applied or stale: a redelivery.
            outcomes[i] = Outcome::Duplicate;
        }
    }
    // What to download: a new candidate's links are all pending (just written); for one that
    // existed, and for a redelivery (whose downloads may never have been queued), ask.
    let pending = match track_links {
        false => Vec::new(),
        true => {
            let existed: HashSet<&str> = existed.into_iter().collect();
            let mut ask: HashSet<&str> = existed.clone();
            ask.extend(
                items
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| **o == Outcome::Duplicate)
                    .map(|(i, _)| i.candidate.moka_id.as_str()),
            );
            let mut pending: Vec<Link> = links.into_iter().filter(|l| !ask.contains(l.moka_id.as_str())).collect();
            if !ask.is_empty() {
                pending.extend(attachments::pending(tx, &ask.into_iter().collect::<Vec<_>>()).await?);
            }
            pending
        }
    };
    Ok(Written { outcomes, pending })
}

/// What was done before for each item, if anything: [`Outcome::Duplicate`] for a message
/// recorded `applied` or `stale` (a redelivery), [`Outcome::Replayed`] for a request processed
/// under another message id (by the digest of its signature; also a repeat of an earlier item of
/// this batch). Items without a digest (messages from before it was recorded) are never replays.
///
/// Two lookups by `= ANY(array)` on an index, pipelined. (This replaced a `NOT EXISTS` in the
/// upsert: planned while `submissions` was small, and the plan cached for the connection's
/// life, it was a hash anti-join over a sequential scan of the whole table in every batch, so
/// the worker slowed down as the ledger grew: 0.48x the reference at 200,000 submissions.)
async fn prior(tx: &Transaction<'_>, items: &[Item<'_>]) -> Result<Vec<Option<Outcome>>, DbError> {
    let ids: Vec<String> = items.iter().map(|i| i.meta.message_id.to_string()).collect();
    let signed: Vec<(usize, &[u8; 16])> =
        items.iter().enumerate().filter_map(|(i, item)| item.meta.signature.as_ref().map(|s| (i, s))).collect();
    let sigs: Vec<&[u8]> = signed.iter().map(|(_, s)| s.as_slice()).collect();
    let (done_stmt, sig_stmt) = tokio::try_join!(
        tx.prepare_cached(
            "SELECT message_id::text FROM submissions WHERE message_id = ANY($1::text[]::uuid[]) AND outcome <> 'dead'"
        ),
        tx.prepare_cached(
            "SELECT DISTINCT signature FROM submissions
             WHERE signature = ANY($1::bytea[]) AND NOT (message_id = ANY($2::text[]::uuid[]))"
        ),
    )?;
    let done_params: [&(dyn ToSql + Sync); 1] = [&ids];
    let sig_params: [&(dyn ToSql + Sync); 2] = [&sigs, &ids];
    let (done, seen) = tokio::try_join!(tx.query(&done_stmt, &done_params), async {
        match signed.is_empty() {
            true => Ok(Vec::new()),
            false => tx.query(&sig_stmt, &sig_params).await,
        }
    })?;
    let done: HashSet<String> = done.iter().map(|r| r.get(0)).collect();
    let seen_before: HashSet<Vec<u8>> = seen.iter().map(|r| r.get(0)).collect();
    let mut prior: Vec<Option<Outcome>> =
        items.iter().zip(&ids).map(|(_, id)| done.contains(id).then_some(Outcome::Duplicate)).collect();
    let mut seen_now: HashSet<&[u8; 16]> = HashSet::new();
    for (i, sig) in signed {
        // The first copy in the batch goes on, unless the request was processed before.
        if prior[i].is_none() && (seen_before.contains(sig.as_slice()) || !seen_now.insert(sig)) {
            prior[i] = Some(Outcome::Replayed);
        }
    }
    Ok(prior)
}

/// Upserts the winners; returns the ids that applied, and those of them that already existed.
async fn upsert_candidates(
    tx: &Transaction<'_>,
    items: &[Item<'_>],
    winners: &[usize],
) -> Result<(HashSet<String>, Vec<String>), DbError> {
    let c = |i: &usize| items[*i].candidate;
    // Borrowed columns: a batch is thousands of small strings, no need to copy them.
    let text = |f: fn(&Candidate) -> &str| winners.iter().map(|i| f(c(i))).collect::<Vec<&str>>();
    let opt = |f: fn(&Candidate) -> Option<&str>| winners.iter().map(|i| f(c(i))).collect::<Vec<Option<&str>>>();
    let moka_id = text(|c| &c.moka_id);
    let name = text(|c| &c.name);
    let phone = text(|c| &c.phone);
    let phone_raw = text(|c| &c.phone_raw);
    let email = text(|c| &c.email);
    let gender = opt(|c| c.gender.as_deref());
    let birth_year: Vec<Option<i32>> = winners.iter().map(|i| c(i).birth_year).collect();
    let source = opt(|c| c.source.as_deref());
    let degree = opt(|c| c.academic_degree.as_deref());
    let degree_raw = opt(|c| c.academic_degree_raw.as_deref());
    let married = opt(|c| c.married.as_deref());
    let job_title = text(|c| &c.job_title);
    let op_name = opt(|c| c.operator_name.as_deref());
    let op_email = opt(|c| c.operator_email.as_deref());
    let op_phone = opt(|c| c.operator_phone.as_deref());
    let resume = opt(|c| c.resume_url.as_deref());
    let feedback = opt(|c| c.interview_feedback_url.as_deref());
    let offer_urls: Vec<String> = winners
        .iter()
        .map(|i| serde_json::to_string(&c(i).offer_attachment_urls).expect("strings serialize"))
        .collect();
    let offer_info: Vec<Option<String>> =
        winners.iter().map(|i| c(i).offer_info.as_ref().map(|v| v.to_string())).collect();
    let raw: Vec<&str> = winners.iter().map(|i| items[*i].payload).collect();
    let warnings: Vec<String> =
        winners.iter().map(|i| serde_json::to_string(&c(i).warnings).expect("warnings serialize")).collect();
    let tonce: Vec<i64> = winners.iter().map(|i| items[*i].meta.tonce).collect();
    let received: Vec<DateTime<Utc>> = winners.iter().map(|i| items[*i].meta.received_at).collect();
    let message_id: Vec<String> = winners.iter().map(|i| items[*i].meta.message_id.to_string()).collect();
    let params: [&(dyn ToSql + Sync); 24] = [
        &moka_id,
        &name,
        &phone,
        &phone_raw,
        &email,
        &gender,
        &birth_year,
        &source,
        &degree,
        &degree_raw,
        &married,
        &job_title,
        &op_name,
        &op_email,
        &op_phone,
        &resume,
        &feedback,
        &offer_urls,
        &offer_info,
        &raw,
        &warnings,
        &tonce,
        &received,
        &message_id,
    ];
    let stmt = tx.prepare_cached(UPSERT_SQL).await?;
    let rows = tx.query(&stmt, &params).await?;
    let mut applied = HashSet::with_capacity(rows.len());
    let mut updated = Vec::new();
    for row in rows {
        let id: String = row.get(0);
        if !row.get::<_, bool>(1) {
            updated.push(id.clone());
        }
        applied.insert(id);
    }
    Ok((applied, updated))
}

/// The columns every child row has (an education or an experience): its candidate, its position
/// in the payload and its period. Borrowed: a batch is thousands of small strings.
#[derive(Default)]
struct PeriodColumns<'a> {
    moka_id: Vec<&'a str>,
    position: Vec<i32>,
    start: Vec<Option<NaiveDate>>,
    end: Vec<Option<NaiveDate>>,
    current: Vec<bool>,
    start_raw: Vec<Option<&'a str>>,
    end_raw: Vec<Option<&'a str>>,
}

impl<'a> PeriodColumns<'a> {
    fn push(&mut self, moka_id: &'a str, position: usize, start: &'a DateField, end: &'a DateField, current: bool) {
        self.moka_id.push(moka_id);
        self.position.push(position as i32);
        self.start.push(start.date);
        self.end.push(end.date);
        self.current.push(current);
        self.start_raw.push(start.raw.as_deref());
        self.end_raw.push(end.raw.as_deref());
    }

    /// The period's parameters, in the order of the insert statements, then `rest`.
    fn params<'p>(&'p self, rest: &[&'p (dyn ToSql + Sync)]) -> Vec<&'p (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&self.moka_id, &self.position, &self.start, &self.end, &self.current, &self.start_raw, &self.end_raw];
        params.extend_from_slice(rest);
        params
    }
}

/// `candidate_educations` columns.
#[derive(Default)]
struct EducationColumns<'a> {
    period: PeriodColumns<'a>,
    school: Vec<Option<&'a str>>,
    speciality: Vec<Option<&'a str>>,
    academic_degree: Vec<Option<&'a str>>,
    academic_degree_raw: Vec<Option<&'a str>>,
}

/// `candidate_experiences` columns.
#[derive(Default)]
struct ExperienceColumns<'a> {
    period: PeriodColumns<'a>,
    company: Vec<Option<&'a str>>,
    title: Vec<Option<&'a str>>,
}

async fn insert_children(tx: &Transaction<'_>, items: &[Item<'_>], applied: &[usize]) -> Result<(), DbError> {
    let mut edu = EducationColumns::default();
    let mut exp = ExperienceColumns::default();
    for i in applied {
        let cand = items[*i].candidate;
        for (pos, e) in cand.educations.iter().enumerate() {
            edu.period.push(&cand.moka_id, pos, &e.start, &e.end, e.is_current);
            edu.school.push(e.school.as_deref());
            edu.speciality.push(e.speciality.as_deref());
            edu.academic_degree.push(e.academic_degree.as_deref());
            edu.academic_degree_raw.push(e.academic_degree_raw.as_deref());
        }
        for (pos, e) in cand.experiences.iter().enumerate() {
            exp.period.push(&cand.moka_id, pos, &e.start, &e.end, e.is_current);
            exp.company.push(e.company.as_deref());
            exp.title.push(e.title.as_deref());
        }
    }
    let educations = edu.period.params(&[&edu.school, &edu.speciality, &edu.academic_degree, &edu.academic_degree_raw]);
    let experiences = exp.period.params(&[&exp.company, &exp.title]);
    tokio::try_join!(
        insert_rows(tx, INSERT_EDUCATIONS_SQL, &educations, edu.period.moka_id.is_empty()),
        insert_rows(tx, INSERT_EXPERIENCES_SQL, &experiences, exp.period.moka_id.is_empty())
    )?;
    Ok(())
}

/// One bulk insert (`UNNEST` of column arrays); nothing to do for no rows.
async fn insert_rows(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    empty: bool,
) -> Result<(), DbError> {
    if !empty {
        let stmt = tx.prepare_cached(sql).await?;
        tx.execute(&stmt, params).await?;
    }
    Ok(())
}

/// Inserts the `submissions` rows; returns the message ids written (a redelivery of a message
/// recorded as applied or stale writes nothing).
async fn record_submissions(
    tx: &Transaction<'_>,
    items: &[Item<'_>],
    outcomes: &[Outcome],
    dead: &[DeadRecord<'_>],
) -> Result<HashSet<String>, DbError> {
    let mut message_id = Vec::new();
    let mut moka_id = Vec::new();
    let mut access_key = Vec::new();
    let mut tonce = Vec::new();
    let mut received = Vec::new();
    let mut outcome = Vec::new();
    let mut attempts = Vec::new();
    let mut error: Vec<Option<String>> = Vec::new();
    let mut signature: Vec<Option<Vec<u8>>> = Vec::new();
    let mut push = |meta: &Meta, o: &'static str, a: i32, e: Option<String>| {
        signature.push(meta.signature.map(|s| s.to_vec()));
        message_id.push(meta.message_id.to_string());
        moka_id.push(meta.moka_id.clone());
        access_key.push(meta.access_key.clone());
        tonce.push(meta.tonce);
        received.push(meta.received_at);
        outcome.push(o);
        attempts.push(a);
        error.push(e);
    };
    for (item, o) in items.iter().zip(outcomes).filter(|(_, o)| **o != Outcome::Duplicate) {
        push(item.meta, o.as_str(), item.attempts, None);
    }
    for d in dead {
        // A dead message may be dead precisely because PostgreSQL refuses its id or its text:
        // its record is made storable (NUL escaped, cut to fit the index), see [`storable`].
        let meta = Meta {
            moka_id: storable::text(&d.meta.moka_id, storable::ID_MAX_BYTES).into_owned(),
            access_key: storable::text(&d.meta.access_key, storable::ID_MAX_BYTES).into_owned(),
            ..d.meta.clone()
        };
        push(&meta, "dead", d.attempts, Some(storable::json(&d.error, storable::MESSAGE_MAX_BYTES).to_string()));
    }
    if message_id.is_empty() {
        return Ok(HashSet::new());
    }
    let stmt = tx.prepare_cached(SUBMISSIONS_SQL).await?;
    let rows = tx
        .query(&stmt, &[&message_id, &moka_id, &access_key, &tonce, &received, &outcome, &attempts, &error, &signature])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
