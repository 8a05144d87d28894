//! Schedulers that start workflows without anyone asking: cron schedules ([`cron`]) and
//! custom-poll triggers ([`trigger`]).
//!
//! Both start runs through [`Runner::submit_with`](crate::Runner::submit_with), so the
//! database decides what may start:
//!
//! - a **cron instant** is created only in the transaction that moves its schedule's cursor
//!   (`next_run_at`) past it and records the fire (`cron_fires`, primary key
//!   `(schedule_id, instant)`): each instant starts at most one run across every process and
//!   replica, and no crash can separate "claimed" from "started";
//! - a **trigger fire** carries a de-duplication key (the trigger and the SHA-256 of its
//!   canonical context) that a partial unique index keeps unique among unfinished runs.
//!
//! See `docs/scheduling.md` for the user-facing rules.

pub mod cron;
pub mod trigger;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::engine::EngineError;
use crate::store::{Millis, StoreError};

pub use cron::{CronConfig, CronExpr, CronScheduler, PassReport, SweepReport};
pub use trigger::{
    FireOutcome, TriggerConfig, TriggerInfo, TriggerScheduler, TriggerSource, canonical_hash,
};

/// Why a scheduling operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron schedule '{schedule}': {reason}")]
    InvalidSchedule { schedule: String, reason: String },
    #[error(
        "custom-poll trigger '{trigger}' is not declared by package '{package}' (it declares: {declared})"
    )]
    UnknownTrigger {
        trigger: String,
        package: String,
        declared: String,
    },
    #[error("{what} name '{name}' is listed more than once; names must be unique per package")]
    DuplicateName { what: &'static str, name: String },
    #[error(
        "custom-poll trigger '{trigger}' of package '{package_id}' is not registered; register the package's triggers first"
    )]
    TriggerNotRegistered { trigger: String, package_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl crate::error::ErrorCode for ScheduleError {
    fn code(&self) -> &'static str {
        match self {
            ScheduleError::InvalidSchedule { .. } | ScheduleError::DuplicateName { .. } => {
                "schedule_invalid"
            }
            ScheduleError::UnknownTrigger { .. } | ScheduleError::TriggerNotRegistered { .. } => {
                "trigger_not_found"
            }
            ScheduleError::Store(e) => e.code(),
            ScheduleError::Engine(e) => e.code(),
        }
    }
}

impl ScheduleError {
    /// True when retrying later may succeed (the database was unreachable, say).
    pub fn is_transient(&self) -> bool {
        match self {
            ScheduleError::Store(e) | ScheduleError::Engine(EngineError::Store(e)) => {
                e.is_transient()
            }
            _ => false,
        }
    }
}

/// Where the schedulers read the time (Unix milliseconds, UTC). Tests inject a
/// [`ManualClock`] instead of sleeping through real minutes.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> Millis;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        crate::store::now_ms()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(now: Millis) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(now),
        })
    }

    pub fn set(&self, now: Millis) {
        self.now.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(
            by.as_millis().min(i64::MAX as u128) as i64,
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// Remembers the last problem reported per key so a problem that persists is logged once, not
/// on every tick.
#[derive(Debug, Default)]
pub(crate) struct Notes<K: std::hash::Hash + Eq> {
    last: std::sync::Mutex<std::collections::HashMap<K, String>>,
}

impl<K: std::hash::Hash + Eq> Notes<K> {
    /// True when `message` differs from the last one noted for `key` (so it should be logged).
    pub(crate) fn note(&self, key: K, message: &str) -> bool {
        let mut last = crate::sync::lock(&self.last);
        match last.get(&key) {
            Some(m) if m == message => false,
            _ => {
                last.insert(key, message.to_string());
                true
            }
        }
    }

    /// Forgets `key`'s problem; returns it, if there was one (to log the recovery once).
    pub(crate) fn clear(&self, key: &K) -> Option<String> {
        crate::sync::lock(&self.last).remove(key)
    }
}
