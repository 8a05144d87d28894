//! Computation graphs: small DAGs of pure node functions from JSON to JSON, run in process,
//! deterministically (nodes in topological order, ties in declaration order).
//!
//! A graph is bound to a reactor (it runs on every firing with a snapshot of the reactor's
//! input cache) or trigger-less (invoked by a task or the API with any JSON input).
//!
//! ```
//! use cloacina_workflow::graph::{ComputationGraph, GraphNode, NodeInput};
//! use cloacina_workflow::TaskError;
//! use serde_json::{json, Value};
//!
//! fn double(input: &NodeInput<'_>) -> Result<Value, TaskError> {
//!     let n: i64 = input.field("n")?;
//!     Ok(json!(n * 2))
//! }
//! fn plus_one(input: &NodeInput<'_>) -> Result<Value, TaskError> {
//!     let d: i64 = input.get("double")?;
//!     Ok(json!(d + 1))
//! }
//!
//! pub const MATH: ComputationGraph = ComputationGraph::new(
//!     "math",
//!     &[GraphNode::new("double", &[], double), GraphNode::new("plus_one", &["double"], plus_one)],
//! );
//!
//! let out = MATH.run(json!({"n": 20})).expect("runs");
//! assert_eq!(out.result(), Some(&json!(41)));
//! ```

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::TaskError;
use crate::package::{GraphDescription, describe_graph};

/// A node function: maps its inputs to one JSON output. Keep it pure: the same inputs must give
/// the same output.
pub type NodeFn = fn(&NodeInput<'_>) -> Result<Value, TaskError>;

/// One node of a graph: its id, the nodes it takes input from, and its function.
#[derive(Clone, Copy)]
pub struct GraphNode {
    pub id: &'static str,
    pub inputs: &'static [&'static str],
    pub run: NodeFn,
}

impl std::fmt::Debug for GraphNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphNode")
            .field("id", &self.id)
            .field("inputs", &self.inputs)
            .finish()
    }
}

impl GraphNode {
    pub const fn new(id: &'static str, inputs: &'static [&'static str], run: NodeFn) -> Self {
        Self { id, inputs, run }
    }
}

/// A computation graph declaration.
#[derive(Debug, Clone, Copy)]
pub struct ComputationGraph {
    pub name: &'static str,
    /// The reactor this graph is bound to: `"name"` (own tenant, then `public`), or
    /// `"tenant/name"`; `None` for a trigger-less graph.
    pub reactor: Option<&'static str>,
    pub nodes: &'static [GraphNode],
}

/// Why a graph run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("graph '{graph}' is not valid: {message}")]
    Invalid { graph: String, message: String },
    #[error("graph '{graph}', node '{node}': {error}")]
    Node {
        graph: String,
        node: String,
        error: Box<TaskError>,
    },
}

impl GraphError {
    /// The stable machine code (documented in the host's docs/errors.md).
    pub fn code(&self) -> &'static str {
        match self {
            GraphError::Invalid { .. } => "graph_invalid",
            GraphError::Node { .. } => "graph_failed",
        }
    }
}

impl From<GraphError> for TaskError {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Invalid { .. } => TaskError::Permanent(e.to_string()),
            GraphError::Node { ref error, .. } => match **error {
                TaskError::Transient(_) => TaskError::Transient(e.to_string()),
                TaskError::Permanent(_) => TaskError::Permanent(e.to_string()),
                _ => TaskError::Failed(e.to_string()),
            },
        }
    }
}

/// The result of a graph run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphOutput {
    pub graph: String,
    /// Node ids in the order they ran.
    pub order: Vec<String>,
    /// Every node's output.
    pub outputs: BTreeMap<String, Value>,
    /// Nodes no other node takes input from, in declaration order.
    pub sinks: Vec<String>,
}

impl GraphOutput {
    /// The output of the only sink node; `None` when the graph has several sinks.
    pub fn result(&self) -> Option<&Value> {
        match self.sinks.as_slice() {
            [only] => self.outputs.get(only),
            _ => None,
        }
    }

    pub fn output(&self, node: &str) -> Option<&Value> {
        self.outputs.get(node)
    }
}

/// What a node function sees: the graph's input, and the outputs of the nodes it takes input
/// from.
#[derive(Debug)]
pub struct NodeInput<'a> {
    node: &'a str,
    input: &'a Value,
    upstream: BTreeMap<&'a str, &'a Value>,
}

impl<'a> NodeInput<'a> {
    /// The id of the node being run.
    pub fn node(&self) -> &str {
        self.node
    }

    /// The graph's input: for a reactor-bound graph, the reactor's cache snapshot (an object
    /// keyed by accumulator name); for a trigger-less graph, what the caller passed.
    pub fn input(&self) -> &Value {
        self.input
    }

    /// A field of the graph's input object, decoded.
    pub fn field<T: DeserializeOwned>(&self, key: &str) -> Result<T, TaskError> {
        let v = self
            .input
            .get(key)
            .ok_or_else(|| TaskError::Failed(format!("the graph input has no field '{key}'")))?;
        T::deserialize(v).map_err(|e| TaskError::Failed(format!("graph input field '{key}': {e}")))
    }

    /// A field of the graph's input object, decoded, or `None` when absent.
    pub fn field_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, TaskError> {
        match self.input.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.field(key).map(Some),
        }
    }

    /// The output of upstream node `node`, decoded.
    pub fn get<T: DeserializeOwned>(&self, node: &str) -> Result<T, TaskError> {
        let v = self.value(node).ok_or_else(|| {
            TaskError::Failed(format!(
                "no input from '{node}'; this node's inputs are [{}]",
                self.upstream.keys().copied().collect::<Vec<_>>().join(", ")
            ))
        })?;
        T::deserialize(v).map_err(|e| TaskError::Failed(format!("output of '{node}': {e}")))
    }

    /// The raw output of upstream node `node`.
    pub fn value(&self, node: &str) -> Option<&'a Value> {
        self.upstream.get(node).copied()
    }
}

impl ComputationGraph {
    /// A trigger-less graph; bind it to a reactor with [`ComputationGraph::bound_to`].
    pub const fn new(name: &'static str, nodes: &'static [GraphNode]) -> Self {
        Self {
            name,
            reactor: None,
            nodes,
        }
    }

    /// Binds the graph to a reactor: `"name"` or `"tenant/name"`.
    pub const fn bound_to(mut self, reactor: &'static str) -> Self {
        self.reactor = Some(reactor);
        self
    }

    pub fn describe(&self) -> GraphDescription {
        describe_graph(self)
    }

    /// Runs every node once, in topological order (ties in declaration order). Root nodes
    /// see only the graph's input; the others also see their upstream outputs. The first
    /// failing node stops the run.
    pub fn run(&self, input: Value) -> Result<GraphOutput, GraphError> {
        let description = self.describe();
        let order = description
            .execution_order()
            .map_err(|message| GraphError::Invalid {
                graph: self.name.to_string(),
                message,
            })?;
        let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
        for id in &order {
            let Some(node) = self.nodes.iter().find(|n| n.id == id) else {
                continue;
            };
            let upstream = node
                .inputs
                .iter()
                .filter_map(|i| outputs.get(*i).map(|v| (*i, v)))
                .collect();
            let ni = NodeInput {
                node: node.id,
                input: &input,
                upstream,
            };
            let out = (node.run)(&ni).map_err(|error| GraphError::Node {
                graph: self.name.to_string(),
                node: node.id.to_string(),
                error: Box::new(error),
            })?;
            outputs.insert(node.id.to_string(), out);
        }
        Ok(GraphOutput {
            graph: self.name.to_string(),
            order,
            outputs,
            sinks: description.sinks(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src(i: &NodeInput<'_>) -> Result<Value, TaskError> {
        Ok(json!(i.field::<i64>("x")?))
    }
    fn left(i: &NodeInput<'_>) -> Result<Value, TaskError> {
        Ok(json!(i.get::<i64>("src")? + 1))
    }
    fn right(i: &NodeInput<'_>) -> Result<Value, TaskError> {
        Ok(json!(i.get::<i64>("src")? * 10))
    }
    fn join(i: &NodeInput<'_>) -> Result<Value, TaskError> {
        Ok(json!([i.get::<i64>("right")?, i.get::<i64>("left")?]))
    }
    fn bad(i: &NodeInput<'_>) -> Result<Value, TaskError> {
        i.get::<i64>("nowhere").map(|v| json!(v))
    }

    const DIAMOND: ComputationGraph = ComputationGraph::new(
        "diamond",
        &[
            GraphNode::new("join", &["right", "left"], join),
            GraphNode::new("src", &[], src),
            GraphNode::new("right", &["src"], right),
            GraphNode::new("left", &["src"], left),
        ],
    );

    #[test]
    fn runs_in_topological_order_deterministically() {
        let out = DIAMOND.run(json!({"x": 4})).expect("runs");
        assert_eq!(out.order, ["src", "right", "left", "join"]);
        assert_eq!(out.result(), Some(&json!([40, 5])));
        assert_eq!(out.sinks, ["join"]);
        assert_eq!(DIAMOND.run(json!({"x": 4})).expect("again"), out);
    }

    #[test]
    fn errors_name_graph_and_node() {
        let e = DIAMOND.run(json!({})).expect_err("missing x");
        assert_eq!(
            e.to_string(),
            "graph 'diamond', node 'src': the graph input has no field 'x'"
        );
        const CYCLE: ComputationGraph = ComputationGraph::new(
            "cyc",
            &[
                GraphNode::new("a", &["b"], bad),
                GraphNode::new("b", &["a"], bad),
            ],
        );
        let e = CYCLE.run(json!({})).expect_err("cycle");
        assert!(
            e.to_string().contains("has a cycle among nodes [a, b]"),
            "{e}"
        );
        const MISSING: ComputationGraph =
            ComputationGraph::new("m", &[GraphNode::new("a", &["z"], bad)]).bound_to("r");
        let e = MISSING.run(json!({})).expect_err("unknown input");
        assert!(e.to_string().contains("takes input from 'z'"), "{e}");
        assert_eq!(MISSING.describe().reactor.as_deref(), Some("r"));
    }
}
