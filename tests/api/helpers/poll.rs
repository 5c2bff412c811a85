//! Waiting in tests: poll with a deadline, never sleep and hope.

use std::{future::Future, time::Duration};

/// Polls `probe` every 20 ms until `done` holds of its value or `within` has passed; returns the
/// last value, for the caller's assertion to show.
pub async fn poll<T, Fut: Future<Output = T>>(
    within: Duration,
    mut probe: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = probe().await;
        if done(&value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` is true; fails the test, saying `what`, after `within`.
pub async fn eventually<Fut: Future<Output = bool>>(within: Duration, what: &str, check: impl FnMut() -> Fut) {
    assert!(poll(within, check, |ok| *ok).await, "{what} (not within {within:?})");
}
