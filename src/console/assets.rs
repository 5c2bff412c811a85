//! The console's stylesheet and its one small script, served by the binary itself (no build
//! step, nothing from elsewhere: the Content-Security-Policy allows only this origin).

pub const CSS: &str = include_str!("assets/console.css");
/// Select-all for the dead-letter table; every page works without it.
pub const JS: &str = include_str!("assets/console.js");
