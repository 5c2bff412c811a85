//! Rebuilds the binary when a migration is added or changed: `refinery::embed_migrations!` reads
//! `migrations/` at compile time, and cargo does not otherwise know the macro depends on it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
