//! The operator console (issue 13), built in steps. This step: who may use it ([`users`]): the
//! users file, its roles, and the password hashes that `moka-ingest console hash-password` makes.

pub mod users;
