//! What a batch write will attempt, decided before any SQL: which messages repeat one already in
//! the batch, and which submission of each candidate competes with the stored row (the newest,
//! by tonce then receive time), in the order their rows are locked.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the plan needs to know of one message.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub message_id: Uuid,
    /// The candidate's id as written to `candidates` (normalized: the one its row is keyed by).
    pub moka_id: &'a str,
    pub tonce: i64,
    pub received_at: DateTime<Utc>,
}

/// The plan of a batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// By position in the batch: true for a message that repeats an earlier one of the batch.
    pub repeated: Vec<bool>,
    /// The newest message of each candidate, sorted by candidate id: every transaction locks
    /// candidate rows in this one order, so concurrent batches on several workers cannot deadlock.
    pub winners: Vec<usize>,
}

/// Plans a batch of messages.
pub fn plan(keys: &[Key<'_>]) -> Plan {
    let mut seen = HashSet::with_capacity(keys.len());
    let repeated: Vec<bool> = keys.iter().map(|k| !seen.insert(k.message_id)).collect();
    // If the newest one of a candidate was processed before, every older one is stale anyway.
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| !repeated[*i]) {
        let best = newest.entry(k.moka_id).or_insert(i);
        if (k.tonce, k.received_at) > (keys[*best].tonce, keys[*best].received_at) {
            *best = i;
        }
    }
    let mut winners: Vec<usize> = newest.into_values().collect();
    winners.sort_by(|a, b| keys[*a].moka_id.cmp(keys[*b].moka_id));
    Plan { repeated, winners }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u128, moka_id: &str, tonce: i64, received_secs: i64) -> Key<'_> {
        Key {
            message_id: Uuid::from_u128(id),
            moka_id,
            tonce,
            received_at: DateTime::from_timestamp(received_secs, 0).unwrap(),
        }
    }

    #[test]
    fn the_newest_of_each_candidate_wins_by_tonce_then_receive_time_in_lock_order() {
        let keys = [
            key(1, "b", 10, 100),
            key(2, "a", 10, 100),
            key(3, "b", 11, 90),  // newer tonce wins over an earlier one received later
            key(4, "a", 10, 101), // same tonce: received later wins
            key(5, "c", 5, 100),
        ];
        let p = plan(&keys);
        assert_eq!(p.repeated, [false; 5]);
        assert_eq!(p.winners, [3, 2, 4], "a, b, c: sorted by candidate id");
    }

    #[test]
    fn a_message_twice_in_a_batch_counts_once_and_never_wins_twice() {
        let keys = [key(1, "a", 10, 100), key(1, "a", 10, 100), key(2, "a", 9, 100)];
        let p = plan(&keys);
        assert_eq!(p.repeated, [false, true, false]);
        assert_eq!(p.winners, [0]);
        assert_eq!(plan(&[]), Plan { repeated: vec![], winners: vec![] });
    }
}
