//! A running reactor: its accumulators, input cache, criterion, pause state, bound graphs
//! (in binding order) and firing statistics.

use std::sync::Arc;

use cloacina_workflow::package::{Criterion, ReactorDescription};
use serde_json::{Map, Value};

use super::Owner;
use super::accumulator::AccumulatorState;

/// `(tenant, name)`.
pub(crate) type Key = (String, String);

#[derive(Debug)]
pub(crate) struct ReactorState {
    pub tenant: String,
    pub name: String,
    pub owner: Owner,
    pub criterion: Criterion,
    pub workflows: Vec<String>,
    pub accumulators: Vec<AccumulatorState>,
    pub paused: bool,
    /// Bound graphs, `(graph tenant, graph name)`, in binding order.
    pub subscribers: Vec<Key>,
    pub fires: u64,
    pub last_fired_at: Option<i64>,
    /// Errors of the last firing (graph runs, workflow starts), joined; `None` when it was clean.
    pub last_error: Option<String>,
    /// Changes when the reactor is (re)started, so timers of a previous incarnation stop.
    pub generation: u64,
    /// Serializes this reactor's firings: one event (or flush) is applied and its firing run
    /// to the end before the next, so graphs see firings in order.
    pub fire_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ReactorState {
    pub fn new(
        tenant: &str,
        owner: &Owner,
        description: &ReactorDescription,
        generation: u64,
    ) -> Self {
        Self {
            tenant: tenant.to_string(),
            name: description.name.clone(),
            owner: owner.clone(),
            criterion: description.criterion,
            workflows: description.workflows.clone(),
            accumulators: description
                .accumulators
                .iter()
                .map(|a| AccumulatorState::new(&a.name, a.kind))
                .collect(),
            paused: false,
            subscribers: Vec::new(),
            fires: 0,
            last_fired_at: None,
            last_error: None,
            generation,
            fire_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn accumulator_mut(&mut self, name: &str) -> Option<&mut AccumulatorState> {
        self.accumulators.iter_mut().find(|a| a.name == name)
    }

    pub fn accumulator_names(&self) -> Vec<String> {
        self.accumulators.iter().map(|a| a.name.clone()).collect()
    }

    /// Whether the criterion holds: any (`when_any`) or every (`when_all`) accumulator has new
    /// input since the last firing.
    pub fn ready(&self) -> bool {
        match self.criterion {
            Criterion::WhenAny => self.accumulators.iter().any(|a| a.fresh),
            Criterion::WhenAll => {
                !self.accumulators.is_empty() && self.accumulators.iter().all(|a| a.fresh)
            }
        }
    }

    /// Accumulators without new input since the last firing, in declaration order.
    pub fn waiting_for(&self) -> Vec<&str> {
        self.accumulators
            .iter()
            .filter(|a| !a.fresh)
            .map(|a| a.name.as_str())
            .collect()
    }

    /// The input cache: each accumulator's current contribution, keyed by name (accumulators
    /// with nothing to contribute are left out).
    pub fn snapshot(&self) -> Map<String, Value> {
        self.accumulators
            .iter()
            .filter_map(|a| a.contribution().map(|v| (a.name.clone(), v)))
            .collect()
    }

    /// Fires: takes the snapshot, marks every accumulator's input consumed, and counts the
    /// firing. Returns the firing's sequence number and the snapshot.
    pub fn fire(&mut self, now_ms: i64) -> (u64, Map<String, Value>) {
        let snapshot = self.snapshot();
        for a in &mut self.accumulators {
            a.consumed();
        }
        self.fires = self.fires.saturating_add(1);
        self.last_fired_at = Some(now_ms);
        (self.fires, snapshot)
    }

    /// Stops every flush timer.
    pub fn stop_timers(&mut self) {
        for a in &mut self.accumulators {
            a.stop_timer();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloacina_workflow::package::{AccumulatorDescription, AccumulatorKind};
    use serde_json::json;

    fn reactor(criterion: Criterion) -> ReactorState {
        let description = ReactorDescription {
            name: "r".into(),
            accumulators: vec![
                AccumulatorDescription {
                    name: "a".into(),
                    kind: AccumulatorKind::Passthrough,
                },
                AccumulatorDescription {
                    name: "b".into(),
                    kind: AccumulatorKind::State { capacity: 2 },
                },
            ],
            criterion,
            workflows: vec![],
        };
        let owner = Owner {
            package_id: "id".into(),
            package: "p".into(),
            version: "1".into(),
        };
        ReactorState::new("t", &owner, &description, 1)
    }

    #[test]
    fn when_any_and_when_all() {
        let mut any = reactor(Criterion::WhenAny);
        assert!(!any.ready());
        any.accumulator_mut("a").expect("a").push(json!(1), 1);
        assert!(any.ready());
        let (seq, snap) = any.fire(5);
        assert_eq!((seq, any.last_fired_at), (1, Some(5)));
        assert_eq!(Value::Object(snap), json!({"a": 1}));
        assert!(!any.ready());

        let mut all = reactor(Criterion::WhenAll);
        all.accumulator_mut("a").expect("a").push(json!(1), 1);
        assert!(!all.ready());
        assert_eq!(all.waiting_for(), ["b"]);
        all.accumulator_mut("b").expect("b").push(json!(2), 2);
        assert!(all.ready());
        let (_, snap) = all.fire(3);
        assert_eq!(Value::Object(snap), json!({"a": 1, "b": [2]}));
        assert_eq!(all.waiting_for(), ["a", "b"]);
    }
}
