//! A computation graph known to the registry: trigger-less (registered, invoked by tasks or
//! the API) or bound to a reactor (run on every firing), with its run statistics.

use std::sync::Arc;

use cloacina_workflow::GraphOutput;
use cloacina_workflow::package::GraphDescription;
use serde_json::{Map, Value};

use super::Owner;
use super::reactor::Key;
use crate::package::loader::LoadedPackage;

pub(crate) struct GraphEntry {
    pub tenant: String,
    pub name: String,
    pub owner: Owner,
    pub package: Arc<LoadedPackage>,
    /// The reactor it is bound to, `(tenant, name)`; `None` for a trigger-less graph.
    pub binding: Option<Key>,
    pub runs: u64,
    pub last_run_at: Option<i64>,
    pub last_error: Option<String>,
}

impl std::fmt::Debug for GraphEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphEntry")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("binding", &self.binding)
            .field("runs", &self.runs)
            .finish()
    }
}

impl GraphEntry {
    pub fn new(
        tenant: &str,
        owner: &Owner,
        package: Arc<LoadedPackage>,
        description: &GraphDescription,
        binding: Option<Key>,
    ) -> Self {
        Self {
            tenant: tenant.to_string(),
            name: description.name.clone(),
            owner: owner.clone(),
            package,
            binding,
            runs: 0,
            last_run_at: None,
            last_error: None,
        }
    }

    /// Records the end of one run.
    pub fn record(&mut self, at_ms: i64, error: Option<String>) {
        self.runs = self.runs.saturating_add(1);
        self.last_run_at = Some(at_ms);
        self.last_error = error;
    }
}

/// What a graph run gives its caller: the output of the only sink node, or, for a graph with
/// several sinks, an object of every sink's output keyed by node id.
pub(crate) fn graph_result(output: &GraphOutput) -> Value {
    match output.result() {
        Some(v) => v.clone(),
        None => Value::Object(
            output
                .sinks
                .iter()
                .map(|s| (s.clone(), output.output(s).cloned().unwrap_or(Value::Null)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// `name` when `tenant` is `home`, else `tenant/name`.
pub(crate) fn qualified(home: &str, tenant: &str, name: &str) -> String {
    if home == tenant {
        name.to_string()
    } else {
        format!("{tenant}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn result_of_one_or_several_sinks() {
        let mut outputs = BTreeMap::new();
        outputs.insert("a".to_string(), json!(1));
        outputs.insert("b".to_string(), json!(2));
        let one = GraphOutput {
            graph: "g".into(),
            order: vec!["a".into(), "b".into()],
            outputs: outputs.clone(),
            sinks: vec!["b".into()],
        };
        assert_eq!(graph_result(&one), json!(2));
        let two = GraphOutput {
            sinks: vec!["a".into(), "b".into()],
            ..one
        };
        assert_eq!(graph_result(&two), json!({"a": 1, "b": 2}));
        assert_eq!(qualified("t", "t", "g"), "g");
        assert_eq!(qualified("t", "u", "g"), "u/g");
    }
}
