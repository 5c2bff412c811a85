//! Pure domain code, no I/O: the candidate as the CRM stores it, the reader of Moka's payload,
//! the limits on what a payload may hold, and the normalization rules (degrees, dates, other
//! fields), each with its table-driven unit tests beside it; and a submission's metadata
//! ([`submission::Meta`]), shared by the broker's envelope and the store, and a dead message's
//! record ([`dead_letter::DeadMessage`]), shared by the broker's reading of it and its index.

pub mod attachments;
pub mod candidate;
#[cfg(test)]
mod corpus;
pub mod dates;
pub mod dead_letter;
pub mod degree;
pub mod fields;
pub mod limits;
pub mod payload;
pub mod submission;
