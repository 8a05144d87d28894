//! One accumulator of a reactor: what it holds, what it contributes to the reactor's input
//! cache, and whether it has something new since the reactor last fired.
//!
//! | kind | holds | contributes to the cache | new input when |
//! |---|---|---|---|
//! | passthrough | the latest event | that event | every event |
//! | batch `{max_items, flush_interval_ms}` | a buffer | the released items not yet consumed by a firing, as an array | the buffer is released: `max_items` are waiting, or the flush interval has passed since the first of them |
//! | state `{capacity}` | the last `capacity` events | the history as an array, oldest first, newest last | every event |
//!
//! A firing *consumes* a batch's released items (the next firing will not see them again);
//! passthrough and state values stay in the cache until newer events replace them.

use std::collections::VecDeque;
use std::time::Duration;

use cloacina_workflow::package::AccumulatorKind;
use serde_json::Value;
use tokio::task::AbortHandle;

/// What a push did to an accumulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushEffect {
    /// The accumulator's contribution changed: it has new input for the reactor.
    NewInput,
    /// A batch accumulator buffered the event without releasing its buffer. `start_timer` is
    /// `Some((window, interval))` when this event opened a new window whose flush timer must
    /// be started.
    Buffered {
        held: usize,
        max_items: usize,
        start_timer: Option<(u64, Duration)>,
    },
}

#[derive(Debug)]
pub(crate) struct AccumulatorState {
    pub name: String,
    pub kind: AccumulatorKind,
    /// Passthrough: the latest event (0 or 1 item). Batch: the events not released yet.
    /// State: the history, oldest first.
    held: VecDeque<Value>,
    /// Batch only: items released by the buffer and not consumed by a firing yet.
    released: Vec<Value>,
    /// New input since the reactor last fired.
    pub fresh: bool,
    pub last_event: Option<Value>,
    pub last_event_at: Option<i64>,
    pub events: u64,
    /// Batch only: the current buffer window; bumped each time the buffer is released, so a
    /// flush timer of an older window does nothing.
    pub window: u64,
    /// Batch only: the flush timer of the current window.
    pub timer: Option<AbortHandle>,
}

impl AccumulatorState {
    pub fn new(name: &str, kind: AccumulatorKind) -> Self {
        Self {
            name: name.to_string(),
            kind,
            held: VecDeque::new(),
            released: Vec::new(),
            fresh: false,
            last_event: None,
            last_event_at: None,
            events: 0,
            window: 0,
            timer: None,
        }
    }

    /// Takes one event.
    pub fn push(&mut self, event: Value, now_ms: i64) -> PushEffect {
        self.last_event = Some(event.clone());
        self.last_event_at = Some(now_ms);
        self.events = self.events.saturating_add(1);
        match self.kind {
            AccumulatorKind::Passthrough => {
                self.held.clear();
                self.held.push_back(event);
                self.fresh = true;
                PushEffect::NewInput
            }
            AccumulatorKind::State { capacity } => {
                let capacity = usize::try_from(capacity.max(1)).unwrap_or(usize::MAX);
                self.held.push_back(event);
                while self.held.len() > capacity {
                    self.held.pop_front();
                }
                self.fresh = true;
                PushEffect::NewInput
            }
            AccumulatorKind::Batch {
                max_items,
                flush_interval_ms,
            } => {
                let max_items = usize::try_from(max_items.max(1)).unwrap_or(usize::MAX);
                self.held.push_back(event);
                if self.held.len() >= max_items {
                    self.release();
                    PushEffect::NewInput
                } else {
                    let start_timer = (self.held.len() == 1)
                        .then(|| (self.window, Duration::from_millis(flush_interval_ms.max(1))));
                    PushEffect::Buffered {
                        held: self.held.len(),
                        max_items,
                        start_timer,
                    }
                }
            }
        }
    }

    /// Batch: hands the buffer over to the reactor's cache and starts a new window.
    fn release(&mut self) {
        self.released.extend(self.held.drain(..));
        self.window = self.window.wrapping_add(1);
        self.fresh = true;
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }

    /// Batch: the flush timer of `window` went off. Releases the buffer when that window is
    /// still the current one and holds events; answers whether it did.
    pub fn flush(&mut self, window: u64) -> bool {
        if !matches!(self.kind, AccumulatorKind::Batch { .. }) || window != self.window {
            return false;
        }
        // The timer calling this is the one being retired: do not abort it.
        self.timer = None;
        if self.held.is_empty() {
            return false;
        }
        self.release();
        true
    }

    /// What this accumulator puts in the reactor's input cache; `None` when it has nothing.
    pub fn contribution(&self) -> Option<Value> {
        match self.kind {
            AccumulatorKind::Passthrough => self.held.back().cloned(),
            AccumulatorKind::State { .. } => {
                (!self.held.is_empty()).then(|| Value::Array(self.held.iter().cloned().collect()))
            }
            AccumulatorKind::Batch { .. } => {
                (!self.released.is_empty()).then(|| Value::Array(self.released.clone()))
            }
        }
    }

    /// The reactor fired with this accumulator's contribution.
    pub fn consumed(&mut self) {
        self.fresh = false;
        self.released.clear();
    }

    /// Events held: the latest value (0 or 1), the batch's buffered plus released-but-unconsumed
    /// events, or the history's length.
    pub fn depth(&self) -> usize {
        self.held.len() + self.released.len()
    }

    /// Batch: events buffered and not released yet.
    pub fn buffered(&self) -> usize {
        match self.kind {
            AccumulatorKind::Batch { .. } => self.held.len(),
            _ => 0,
        }
    }

    /// Stops the flush timer, if any (the reactor is stopping or being replaced).
    pub fn stop_timer(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passthrough_keeps_the_latest_value() {
        let mut a = AccumulatorState::new("spot", AccumulatorKind::Passthrough);
        assert_eq!(a.contribution(), None);
        assert_eq!(a.push(json!(1), 10), PushEffect::NewInput);
        assert_eq!(a.push(json!(2), 11), PushEffect::NewInput);
        assert_eq!(a.contribution(), Some(json!(2)));
        assert_eq!((a.depth(), a.events, a.last_event_at), (1, 2, Some(11)));
        a.consumed();
        assert!(!a.fresh);
        assert_eq!(
            a.contribution(),
            Some(json!(2)),
            "the latest value stays cached"
        );
    }

    #[test]
    fn state_keeps_a_bounded_history_newest_last() {
        let mut a = AccumulatorState::new("hist", AccumulatorKind::State { capacity: 3 });
        for i in 1..=5 {
            a.push(json!(i), i);
        }
        assert_eq!(a.contribution(), Some(json!([3, 4, 5])));
        assert_eq!(a.depth(), 3);
        a.consumed();
        assert_eq!(a.contribution(), Some(json!([3, 4, 5])));
    }

    #[test]
    fn batch_releases_when_full_or_flushed_and_firing_consumes_it() {
        let kind = AccumulatorKind::Batch {
            max_items: 3,
            flush_interval_ms: 1000,
        };
        let mut a = AccumulatorState::new("trades", kind);
        assert_eq!(
            a.push(json!(1), 1),
            PushEffect::Buffered {
                held: 1,
                max_items: 3,
                start_timer: Some((0, Duration::from_secs(1)))
            }
        );
        assert!(matches!(
            a.push(json!(2), 2),
            PushEffect::Buffered {
                start_timer: None,
                ..
            }
        ));
        assert!(!a.fresh);
        assert_eq!(a.contribution(), None);
        assert_eq!(a.push(json!(3), 3), PushEffect::NewInput);
        assert_eq!(a.contribution(), Some(json!([1, 2, 3])));
        assert!(!a.flush(0), "the window of the full buffer is gone");
        // A new window, flushed by its timer.
        assert!(matches!(
            a.push(json!(4), 4),
            PushEffect::Buffered {
                start_timer: Some((1, _)),
                ..
            }
        ));
        assert!(a.flush(1));
        assert_eq!(
            a.contribution(),
            Some(json!([1, 2, 3, 4])),
            "unconsumed items add up"
        );
        assert_eq!(a.depth(), 4);
        a.consumed();
        assert_eq!(a.contribution(), None);
        assert_eq!(a.depth(), 0);
        assert!(!a.flush(2), "nothing buffered");
    }
}
