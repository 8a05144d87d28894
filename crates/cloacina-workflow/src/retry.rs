//! Retry policies: how many attempts a task gets and how long to wait between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::TaskError;

/// How the delay grows from one retry to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed { delay_ms: u64 },
    /// `initial + increment * (retry - 1)`.
    Linear { initial_ms: u64, increment_ms: u64 },
    /// `initial * multiplier^(retry - 1)`.
    Exponential { initial_ms: u64, multiplier: f64 },
}

/// Which failures are retried at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RetryCondition {
    /// Every error except [`TaskError::Permanent`] and [`TaskError::Cancelled`].
    AllErrors,
    /// No error is retried.
    Never,
    /// Only [`TaskError::Transient`] and [`TaskError::Timeout`].
    TransientOnly,
    /// Errors whose message contains this text.
    MessageContains(String),
}

/// A task's retry policy.
///
/// `max_attempts` counts **all** attempts, the first included: `max_attempts = 3` means one run
/// and at most two retries. `max_delay_ms` is applied *after* jitter, so it is a real cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub max_delay_ms: u64,
    /// Fraction of the delay (0.0..=1.0) randomly added or removed.
    pub jitter: f64,
    /// A failure is retried when any condition matches.
    pub conditions: Vec<RetryCondition>,
}

/// Why a retry policy was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error("max_attempts must be at least 1 (it counts the first attempt too), got 0")]
    ZeroAttempts,
    #[error("jitter must be between 0.0 and 1.0, got {0}")]
    BadJitter(f64),
    #[error("exponential multiplier must be at least 1.0, got {0}")]
    BadMultiplier(f64),
}

impl RetryPolicyError {
    /// The stable machine code (documented in the host's docs/errors.md): an invalid policy
    /// makes its workflow invalid.
    pub fn code(&self) -> &'static str {
        "workflow_invalid"
    }
}

impl Default for RetryPolicy {
    /// Three attempts, exponential backoff from 1 s doubling, capped at 60 s, 10% jitter.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential {
                initial_ms: 1000,
                multiplier: 2.0,
            },
            max_delay_ms: 60_000,
            jitter: 0.1,
            conditions: vec![RetryCondition::AllErrors],
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    pub fn fixed(max_attempts: u32, delay: Duration) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::Fixed {
                delay_ms: millis(delay),
            },
            jitter: 0.0,
            ..Self::default()
        }
    }

    pub fn linear(max_attempts: u32, initial: Duration, increment: Duration) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::Linear {
                initial_ms: millis(initial),
                increment_ms: millis(increment),
            },
            jitter: 0.0,
            ..Self::default()
        }
    }

    pub fn exponential(max_attempts: u32, initial: Duration, multiplier: f64) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::Exponential {
                initial_ms: millis(initial),
                multiplier,
            },
            jitter: 0.0,
            ..Self::default()
        }
    }

    pub fn with_max_delay(mut self, max: Duration) -> Self {
        self.max_delay_ms = millis(max);
        self
    }

    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    pub fn with_conditions(mut self, conditions: Vec<RetryCondition>) -> Self {
        self.conditions = conditions;
        self
    }

    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if self.max_attempts == 0 {
            return Err(RetryPolicyError::ZeroAttempts);
        }
        if !(0.0..=1.0).contains(&self.jitter) || self.jitter.is_nan() {
            return Err(RetryPolicyError::BadJitter(self.jitter));
        }
        if let Backoff::Exponential { multiplier, .. } = self.backoff
            && (multiplier.is_nan() || multiplier < 1.0)
        {
            return Err(RetryPolicyError::BadMultiplier(multiplier));
        }
        Ok(())
    }

    /// Whether attempt number `attempt` (1-based) that failed with `error` gets another try.
    pub fn should_retry(&self, attempt: u32, error: &TaskError) -> bool {
        if attempt >= self.max_attempts {
            return false;
        }
        if matches!(error, TaskError::Permanent(_) | TaskError::Cancelled) {
            return false;
        }
        self.conditions.iter().any(|c| match c {
            RetryCondition::AllErrors => true,
            RetryCondition::Never => false,
            RetryCondition::TransientOnly => {
                matches!(error, TaskError::Transient(_) | TaskError::Timeout(_))
            }
            RetryCondition::MessageContains(text) => error.to_string().contains(text.as_str()),
        })
    }

    /// The delay before retry number `retry` (1 = the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let n = retry.max(1) - 1;
        let ms = match self.backoff {
            Backoff::Fixed { delay_ms } => delay_ms as f64,
            Backoff::Linear {
                initial_ms,
                increment_ms,
            } => initial_ms as f64 + increment_ms as f64 * n as f64,
            Backoff::Exponential {
                initial_ms,
                multiplier,
            } => initial_ms as f64 * multiplier.powi(n.min(1023) as i32),
        };
        Duration::from_millis(clamp_ms(ms, self.max_delay_ms))
    }

    /// The delay before retry number `retry`, with jitter from `unit` (a number in 0.0..1.0,
    /// normally random) and the cap applied last.
    pub fn delay_with(&self, retry: u32, unit: f64) -> Duration {
        let base = self.base_delay(retry).as_millis() as f64;
        let spread = base * self.jitter;
        let jittered = base - spread + 2.0 * spread * unit.clamp(0.0, 1.0);
        Duration::from_millis(clamp_ms(jittered, self.max_delay_ms))
    }

    /// The delay before retry number `retry`, with random jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, rand::random::<f64>())
    }
}

fn clamp_ms(ms: f64, max: u64) -> u64 {
    if ms.is_nan() || ms <= 0.0 {
        0
    } else if ms >= max as f64 {
        max
    } else {
        ms as u64
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let p = RetryPolicy::fixed(3, Duration::from_millis(10));
        let e = TaskError::failed("x");
        assert!(p.should_retry(1, &e));
        assert!(p.should_retry(2, &e));
        assert!(!p.should_retry(3, &e));
        assert!(!RetryPolicy::none().should_retry(1, &e));
    }

    #[test]
    fn conditions() {
        let p = RetryPolicy::fixed(5, Duration::ZERO)
            .with_conditions(vec![RetryCondition::TransientOnly]);
        assert!(p.should_retry(1, &TaskError::transient("blip")));
        assert!(p.should_retry(1, &TaskError::Timeout(Duration::from_secs(1))));
        assert!(!p.should_retry(1, &TaskError::failed("boom")));
        let p = RetryPolicy::fixed(5, Duration::ZERO)
            .with_conditions(vec![RetryCondition::MessageContains("deadlock".into())]);
        assert!(p.should_retry(1, &TaskError::failed("deadlock detected")));
        assert!(!p.should_retry(1, &TaskError::failed("bad input")));
        assert!(!RetryPolicy::default().should_retry(1, &TaskError::permanent("no")));
    }

    #[test]
    fn backoff_shapes() {
        let f = RetryPolicy::fixed(5, Duration::from_millis(100));
        assert_eq!(f.base_delay(1), Duration::from_millis(100));
        assert_eq!(f.base_delay(4), Duration::from_millis(100));
        let l = RetryPolicy::linear(5, Duration::from_millis(100), Duration::from_millis(50));
        assert_eq!(l.base_delay(1), Duration::from_millis(100));
        assert_eq!(l.base_delay(3), Duration::from_millis(200));
        let e = RetryPolicy::exponential(5, Duration::from_millis(100), 2.0);
        assert_eq!(e.base_delay(1), Duration::from_millis(100));
        assert_eq!(e.base_delay(4), Duration::from_millis(800));
    }

    #[test]
    fn validation() {
        let mut p = RetryPolicy::default();
        assert!(p.validate().is_ok());
        p.max_attempts = 0;
        assert_eq!(p.validate(), Err(RetryPolicyError::ZeroAttempts));
        assert!(RetryPolicy::default().with_jitter(1.5).validate().is_err());
    }

    fn arb_policy() -> impl Strategy<Value = RetryPolicy> {
        let backoff = prop_oneof![
            (0u64..100_000).prop_map(|d| Backoff::Fixed { delay_ms: d }),
            (0u64..100_000, 0u64..100_000).prop_map(|(i, n)| Backoff::Linear {
                initial_ms: i,
                increment_ms: n
            }),
            (0u64..100_000, 1.0f64..10.0).prop_map(|(i, m)| Backoff::Exponential {
                initial_ms: i,
                multiplier: m
            }),
        ];
        (1u32..20, backoff, 0u64..200_000, 0.0f64..=1.0).prop_map(|(a, b, max, j)| RetryPolicy {
            max_attempts: a,
            backoff: b,
            max_delay_ms: max,
            jitter: j,
            conditions: vec![RetryCondition::AllErrors],
        })
    }

    proptest! {
        /// The cap holds whatever the jitter draws.
        #[test]
        fn max_delay_is_a_real_cap(p in arb_policy(), retry in 1u32..200, unit in 0.0f64..=1.0) {
            prop_assert!(p.delay_with(retry, unit) <= Duration::from_millis(p.max_delay_ms));
        }

        /// Jitter stays within its fraction of the base delay.
        #[test]
        fn jitter_is_bounded(p in arb_policy(), retry in 1u32..50, unit in 0.0f64..=1.0) {
            let base = p.base_delay(retry).as_millis() as f64;
            let d = p.delay_with(retry, unit).as_millis() as f64;
            prop_assert!(d >= (base * (1.0 - p.jitter)).floor() - 1.0);
            prop_assert!(d <= (base * (1.0 + p.jitter)).ceil() + 1.0);
        }

        /// Without jitter, delays never shrink from one retry to the next.
        #[test]
        fn backoff_is_monotonic(mut p in arb_policy(), retry in 1u32..60) {
            p.jitter = 0.0;
            prop_assert!(p.base_delay(retry) <= p.base_delay(retry + 1));
        }

        /// The number of attempts is exactly max_attempts for an always-failing task.
        #[test]
        fn attempts_total(p in arb_policy()) {
            let e = TaskError::failed("x");
            let mut attempt = 1;
            while p.should_retry(attempt, &e) { attempt += 1; }
            prop_assert_eq!(attempt, p.max_attempts);
        }
    }
}
