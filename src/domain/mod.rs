//! Pure domain code, no I/O: the candidate as the CRM stores it, and the normalization rules
//! (degrees, dates, other fields), each with its table-driven unit tests beside it.

pub mod candidate;
pub mod dates;
pub mod degree;
pub mod fields;
