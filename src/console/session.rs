//! Logins: server-side sessions in PostgreSQL (so that several consoles behind a load balancer
//! share them), the session cookie, the CSRF token of each session, and the slowdown of failed
//! logins.
//!
//! The cookie holds 32 random bytes; the table keeps only their SHA-256, so a leaked table grants
//! nothing. The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it), `Secure` when `console.secure_cookie` is set, and expires with the session.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use cookie::{Cookie, SameSite};
use deadpool_postgres::GenericClient;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::DbError;

/// The session cookie's name.
pub const COOKIE: &str = "moka_console";

/// A logged-in user's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    /// The token every state-changing form must carry.
    pub csrf: String,
}

/// 32 random bytes, hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Starts a session for `username`; returns the cookie's token. Expired sessions are swept here.
pub async fn create(client: &impl GenericClient, username: &str, ttl: Duration) -> Result<String, DbError> {
    let token = random_token();
    let secs = ttl.as_secs_f64();
    client.execute("DELETE FROM console_sessions WHERE expires_at < now()", &[]).await?;
    client
        .execute(
            "INSERT INTO console_sessions (token_sha256, username, csrf, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            &[&digest(&token), &username, &random_token(), &secs],
        )
        .await?;
    Ok(token)
}

/// The live session of `token`, if any.
pub async fn lookup(client: &impl GenericClient, token: &str) -> Result<Option<Session>, DbError> {
    let stmt = client
        .prepare_cached("SELECT username, csrf FROM console_sessions WHERE token_sha256 = $1 AND expires_at > now()")
        .await?;
    Ok(client.query_opt(&stmt, &[&digest(token)]).await?.map(|r| Session { username: r.get(0), csrf: r.get(1) }))
}

/// Ends the session of `token`.
pub async fn end(client: &impl GenericClient, token: &str) -> Result<(), DbError> {
    client.execute("DELETE FROM console_sessions WHERE token_sha256 = $1", &[&digest(token)]).await?;
    Ok(())
}

/// The session token in a request's `Cookie` header.
pub fn token_from(cookie_header: Option<&str>) -> Option<String> {
    Cookie::split_parse(cookie_header?).flatten().find(|c| c.name() == COOKIE).map(|c| c.value().to_owned())
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    Cookie::build((COOKIE, token.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)))
        .build()
        .to_string()
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    Cookie::build((COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed logins per user name, in this process: each failure waits longer before its answer
/// (doubling from [`Throttle::BASE`] up to [`Throttle::MAX`]), so guessing is slow; a success, or
/// a quiet quarter of an hour, forgets them.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    const BASE: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(8);
    const FORGET: Duration = Duration::from_secs(15 * 60);
    /// User names remembered at most (an attacker's made-up names must not fill memory).
    const NAMES: usize = 10_000;

    /// Records a failure of `name`; returns how long to wait before answering it.
    pub fn failed(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().expect("throttle lock");
        let now = Instant::now();
        if failures.len() >= Self::NAMES {
            failures.retain(|_, (_, at)| now.duration_since(*at) < Self::FORGET);
            if failures.len() >= Self::NAMES {
                failures.clear();
            }
        }
        let entry = failures.entry(name.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= Self::FORGET {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        Self::BASE.saturating_mul(1 << (entry.0 - 1).min(6)).min(Self::MAX)
    }

    /// How long `name` must still wait after its last failure, if at all.
    pub fn waiting(&self, name: &str) -> Option<Duration> {
        let failures = self.failures.lock().expect("throttle lock");
        let (n, at) = failures.get(name)?;
        let wait = Self::BASE.saturating_mul(1 << (n.saturating_sub(1)).min(6)).min(Self::MAX);
        wait.checked_sub(at.elapsed()).filter(|w| !w.is_zero())
    }

    pub fn succeeded(&self, name: &str) {
        self.failures.lock().expect("throttle lock").remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_expires() {
        let c = set_cookie("abc", Duration::from_secs(60), false);
        assert!(c.contains("moka_console=abc") && c.contains("HttpOnly") && c.contains("SameSite=Strict"), "{c}");
        assert!(c.contains("Max-Age=60") && !c.contains("Secure"), "{c}");
        assert!(set_cookie("abc", Duration::from_secs(60), true).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert_eq!(token_from(Some("a=b; moka_console=xyz; c=d")).as_deref(), Some("xyz"));
        assert_eq!(token_from(Some("a=b")), None);
    }

    #[test]
    fn each_failed_login_waits_longer_up_to_a_cap_and_a_success_forgets() {
        let t = Throttle::default();
        let waits: Vec<Duration> = (0..10).map(|_| t.failed("eve")).collect();
        assert_eq!(waits[0], Duration::from_millis(250));
        assert_eq!(waits[1], Duration::from_millis(500));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(8));
        assert_eq!(t.failed("bob"), Duration::from_millis(250), "per user name");
        assert!(t.waiting("eve").is_some_and(|w| w <= Duration::from_secs(8)), "in backoff right after a failure");
        assert_eq!(t.waiting("nobody"), None);
        t.succeeded("eve");
        assert_eq!(t.waiting("eve"), None);
        assert_eq!(t.failed("eve"), Duration::from_millis(250));
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abc", "abcd"));
    }
}
