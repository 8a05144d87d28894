//! Waiting on a condition, never on a fixed sleep.

use std::time::{Duration, Instant};

/// How long any one wait may take before the test fails (generous: the machine is shared).
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Polls `cond` every 100 ms until it holds; panics after [`WAIT_LIMIT`] with `what` and
/// whatever `context` says then (logs, status documents).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
