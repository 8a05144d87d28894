//! Counting the statements a store sends, so benchmarks can report statements per workflow
//! rather than guess them from operations (one operation may be one statement or ten).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// Statements sent on a store's connections (writer and readers; not the PostgreSQL
/// notification listener, which only waits). Shared by all of them; one relaxed add per
/// statement.
#[derive(Clone, Default)]
pub(crate) struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Diesel's hook for `conn`: counts each statement it starts (prepared or not, a
    /// `batch_execute` string counting once, as it is one round trip).
    pub(crate) fn hook(&self) -> impl Instrumentation {
        let count = self.0.clone();
        move |event: InstrumentationEvent<'_>| {
            if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
