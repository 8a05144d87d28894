//! A workflow: a named, validated DAG of tasks with a stable content version.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::retry::RetryPolicyError;
use crate::task::{Task, TaskSpec};

/// Why a workflow was rejected at registration. Each message names the task at fault and,
/// where possible, what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow '{workflow}' has no tasks; add at least one task")]
    Empty { workflow: String },
    #[error("invalid {what} name '{name}': {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("workflow '{workflow}' declares task '{task}' more than once; task ids must be unique")]
    DuplicateTask { workflow: String, task: String },
    #[error(
        "task '{task}' in workflow '{workflow}' depends on '{dependency}', which is not a task of this workflow{}",
        suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default()
    )]
    MissingDependency {
        workflow: String,
        task: String,
        dependency: String,
        suggestion: Option<String>,
    },
    #[error("task '{task}' in workflow '{workflow}' lists dependency '{dependency}' twice")]
    DuplicateDependency {
        workflow: String,
        task: String,
        dependency: String,
    },
    #[error("workflow '{workflow}' has a dependency cycle: {}", path.join(" -> "))]
    Cycle { workflow: String, path: Vec<String> },
    #[error(
        "trigger rule of task '{task}' in workflow '{workflow}' refers to '{reference}', which is not upstream of it; a rule may only look at tasks that finish before it (add '{reference}' to its dependencies)"
    )]
    TriggerReference {
        workflow: String,
        task: String,
        reference: String,
    },
    /// The message includes the policy's error, so it is not also the `source()`.
    #[error("retry policy of task '{task}' in workflow '{workflow}': {cause}")]
    RetryPolicy {
        workflow: String,
        task: String,
        cause: RetryPolicyError,
    },
}

impl WorkflowError {
    /// The stable machine code (documented in the host's docs/errors.md).
    pub fn code(&self) -> &'static str {
        "workflow_invalid"
    }
}

/// The serializable description of a workflow: what a package tells the host, and what the
/// version hash is computed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDescription {
    pub name: String,
    pub description: Option<String>,
    pub tasks: Vec<TaskSpec>,
}

/// A validated DAG of tasks. Construct with [`Workflow::builder`] or `#[workflow]`.
#[derive(Clone)]
pub struct Workflow {
    name: String,
    description: Option<String>,
    tasks: Vec<Arc<dyn Task>>,
    index: HashMap<String, usize>,
    topo: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    version: String,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("tasks", &self.topological_order())
            .finish()
    }
}

/// Collects tasks, then validates them all at once in [`WorkflowBuilder::build`].
pub struct WorkflowBuilder {
    name: String,
    description: Option<String>,
    tasks: Vec<Arc<dyn Task>>,
}

impl WorkflowBuilder {
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    pub fn task(mut self, task: impl Task) -> Self {
        self.tasks.push(Arc::new(task));
        self
    }

    pub fn task_arc(mut self, task: Arc<dyn Task>) -> Self {
        self.tasks.push(task);
        self
    }

    pub fn build(self) -> Result<Workflow, WorkflowError> {
        Workflow::new(self.name, self.description, self.tasks)
    }
}

impl Workflow {
    pub fn builder(name: impl Into<String>) -> WorkflowBuilder {
        WorkflowBuilder {
            name: name.into(),
            description: None,
            tasks: Vec::new(),
        }
    }

    /// Validates and assembles a workflow. Checks, in order: names, duplicates, missing or
    /// repeated dependencies, cycles, retry policies, trigger-rule references.
    pub fn new(
        name: impl Into<String>,
        description: Option<String>,
        tasks: Vec<Arc<dyn Task>>,
    ) -> Result<Workflow, WorkflowError> {
        let name = name.into();
        validate_name("workflow", &name)?;
        if tasks.is_empty() {
            return Err(WorkflowError::Empty { workflow: name });
        }
        let mut index = HashMap::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            let id = &t.spec().id;
            validate_name("task", id)?;
            if index.insert(id.clone(), i).is_some() {
                return Err(WorkflowError::DuplicateTask {
                    workflow: name,
                    task: id.clone(),
                });
            }
        }
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            let spec = t.spec();
            for (k, dep) in spec.dependencies.iter().enumerate() {
                let Some(&d) = index.get(dep) else {
                    return Err(WorkflowError::MissingDependency {
                        workflow: name,
                        task: spec.id.clone(),
                        dependency: dep.clone(),
                        suggestion: crate::names::suggest(dep, index.keys().map(String::as_str)),
                    });
                };
                if spec.dependencies[..k].contains(dep) {
                    return Err(WorkflowError::DuplicateDependency {
                        workflow: name,
                        task: spec.id.clone(),
                        dependency: dep.clone(),
                    });
                }
                dependents[d].push(i);
            }
        }
        if let Some(path) = find_cycle(&tasks, &index) {
            return Err(WorkflowError::Cycle {
                workflow: name,
                path,
            });
        }
        let topo = topological(&tasks, &index, &dependents);
        for t in &tasks {
            let spec = t.spec();
            spec.retry
                .validate()
                .map_err(|cause| WorkflowError::RetryPolicy {
                    workflow: name.clone(),
                    task: spec.id.clone(),
                    cause,
                })?;
        }
        let wf = Workflow {
            version: String::new(),
            name,
            description,
            tasks,
            index,
            topo,
            dependents,
        };
        for t in &wf.tasks {
            let spec = t.spec();
            for reference in spec.trigger_rule.referenced_tasks() {
                if !wf.is_upstream(reference, &spec.id) {
                    return Err(WorkflowError::TriggerReference {
                        workflow: wf.name.clone(),
                        task: spec.id.clone(),
                        reference: reference.to_string(),
                    });
                }
            }
        }
        let version = version_of(&wf.description());
        Ok(Workflow { version, ..wf })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// SHA-256 (hex) of the canonical description: same structure, same version, on every
    /// machine and every build.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Tasks in declaration order.
    pub fn tasks(&self) -> impl Iterator<Item = &Arc<dyn Task>> {
        self.tasks.iter()
    }

    pub fn task(&self, id: &str) -> Option<&Arc<dyn Task>> {
        self.index.get(id).map(|&i| &self.tasks[i])
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Task ids in a topological order; ties keep declaration order, so it is deterministic.
    pub fn topological_order(&self) -> Vec<&str> {
        self.topo
            .iter()
            .map(|&i| self.tasks[i].spec().id.as_str())
            .collect()
    }

    /// Tasks that list `id` as a dependency, in declaration order.
    pub fn dependents(&self, id: &str) -> Vec<&str> {
        self.index
            .get(id)
            .map(|&i| {
                self.dependents[i]
                    .iter()
                    .map(|&d| self.tasks[d].spec().id.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tasks with no dependencies: runnable as soon as the workflow starts.
    pub fn roots(&self) -> Vec<&str> {
        self.topo
            .iter()
            .filter(|&&i| self.tasks[i].spec().dependencies.is_empty())
            .map(|&i| self.tasks[i].spec().id.as_str())
            .collect()
    }

    /// Tasks nothing depends on, in topological order: their outputs merge into the final context.
    pub fn leaves(&self) -> Vec<&str> {
        self.topo
            .iter()
            .filter(|&&i| self.dependents[i].is_empty())
            .map(|&i| self.tasks[i].spec().id.as_str())
            .collect()
    }

    /// Whether `ancestor` must finish before `task` can start (transitively).
    pub fn is_upstream(&self, ancestor: &str, task: &str) -> bool {
        let (Some(&a), Some(&t)) = (self.index.get(ancestor), self.index.get(task)) else {
            return false;
        };
        let mut stack = vec![t];
        let mut seen = vec![false; self.tasks.len()];
        while let Some(n) = stack.pop() {
            for dep in &self.tasks[n].spec().dependencies {
                let d = self.index[dep];
                if d == a {
                    return true;
                }
                if !seen[d] {
                    seen[d] = true;
                    stack.push(d);
                }
            }
        }
        false
    }

    pub fn description(&self) -> WorkflowDescription {
        WorkflowDescription {
            name: self.name.clone(),
            description: self.description.clone(),
            tasks: self.tasks.iter().map(|t| t.spec().clone()).collect(),
        }
    }
}

fn validate_name(what: &'static str, name: &str) -> Result<(), WorkflowError> {
    match crate::names::name_problem(name) {
        Some(reason) => Err(WorkflowError::InvalidName {
            what,
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Depth-first search for a cycle; returns it as a closed path (`a, b, a`).
fn find_cycle(tasks: &[Arc<dyn Task>], index: &HashMap<String, usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; tasks.len()];
    for start in 0..tasks.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency index to visit).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &tasks[node].spec().dependencies;
            if *next < deps.len() {
                let d = index[&deps[*next]];
                *next += 1;
                match marks[d] {
                    Mark::New => {
                        marks[d] = Mark::Active;
                        stack.push((d, 0));
                    }
                    Mark::Active => {
                        // The stack from `d` to the top is the cycle, following dependency edges;
                        // report it in execution order (dependency first).
                        let pos = stack.iter().position(|&(n, _)| n == d).unwrap_or(0);
                        let mut path: Vec<String> = stack[pos..]
                            .iter()
                            .map(|&(n, _)| tasks[n].spec().id.clone())
                            .collect();
                        path.reverse();
                        path.push(path[0].clone());
                        return Some(path);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Kahn's algorithm, always taking the ready task declared first.
fn topological(
    tasks: &[Arc<dyn Task>],
    index: &HashMap<String, usize>,
    dependents: &[Vec<usize>],
) -> Vec<usize> {
    let mut indegree: Vec<usize> = tasks.iter().map(|t| t.spec().dependencies.len()).collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..tasks.len()).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(n) = ready.pop_first() {
        out.push(n);
        for &d in &dependents[n] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    debug_assert_eq!(out.len(), tasks.len(), "cycle check runs first");
    let _ = index;
    out
}

/// SHA-256 over the canonical JSON of the description, tasks sorted by id so declaration order
/// does not matter.
fn version_of(desc: &WorkflowDescription) -> String {
    let tasks: BTreeMap<&str, &TaskSpec> = desc.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let canonical = serde_json::json!({
        "name": desc.name,
        "description": desc.description,
        "tasks": tasks,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, FnTask, TaskError};
    use proptest::prelude::*;

    fn noop(id: &str, deps: &[&str]) -> Arc<dyn Task> {
        Arc::new(FnTask::new(
            TaskSpec::new(id).depends_on(deps.iter().copied()),
            |_ctx: &mut Context| Box::pin(async { Ok::<(), TaskError>(()) }),
        ))
    }

    fn wf(tasks: &[(&str, &[&str])]) -> Result<Workflow, WorkflowError> {
        Workflow::new(
            "wf",
            None,
            tasks.iter().map(|(id, deps)| noop(id, deps)).collect(),
        )
    }

    #[test]
    fn precise_errors() {
        let e = wf(&[("fetch", &[]), ("load", &["fetchh"])]).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "task 'load' in workflow 'wf' depends on 'fetchh', which is not a task of this workflow (did you mean 'fetch'?)"
        );
        let e = wf(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"])]).expect_err("cycle");
        assert_eq!(
            e.to_string(),
            "workflow 'wf' has a dependency cycle: b -> c -> a -> b"
        );
        let e = wf(&[("a", &["a"])]).expect_err("self cycle");
        assert_eq!(
            e.to_string(),
            "workflow 'wf' has a dependency cycle: a -> a"
        );
        let e = wf(&[("a", &[]), ("a", &[])]).expect_err("dup");
        assert!(matches!(e, WorkflowError::DuplicateTask { .. }));
        let e = wf(&[]).expect_err("empty");
        assert!(matches!(e, WorkflowError::Empty { .. }));
        let e = wf(&[("a b", &[])]).expect_err("bad name");
        assert!(e.to_string().contains("whitespace"), "{e}");
    }

    #[test]
    fn trigger_rules_may_only_look_upstream() {
        use crate::trigger::dsl::*;
        let t = |id: &str, deps: &[&str], rule| -> Arc<dyn Task> {
            Arc::new(FnTask::new(
                TaskSpec::new(id)
                    .depends_on(deps.iter().copied())
                    .trigger_rule(rule),
                |_ctx: &mut Context| Box::pin(async { Ok::<(), TaskError>(()) }),
            ))
        };
        let ok = Workflow::new(
            "wf",
            None,
            vec![
                t("a", &[], always()),
                t("b", &["a"], always()),
                t("c", &["b"], any([task_failed("a")])),
            ],
        );
        assert!(ok.is_ok());
        let err = Workflow::new(
            "wf",
            None,
            vec![t("a", &[], always()), t("c", &[], task_failed("a"))],
        )
        .expect_err("not upstream");
        assert!(
            err.to_string()
                .contains("refers to 'a', which is not upstream"),
            "{err}"
        );
    }

    #[test]
    fn order_roots_leaves_version() {
        let w = wf(&[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])]).expect("valid");
        assert_eq!(w.topological_order(), vec!["a", "b", "c", "d"]);
        assert_eq!(w.roots(), vec!["a"]);
        assert_eq!(w.leaves(), vec!["d"]);
        assert_eq!(w.dependents("a"), vec!["b", "c"]);
        let same =
            wf(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]).expect("valid");
        assert_eq!(
            w.version(),
            same.version(),
            "declaration order does not change the version"
        );
        assert_eq!(w.version().len(), 64);
        let other =
            wf(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["c", "b"])]).expect("valid");
        assert_ne!(
            w.version(),
            other.version(),
            "dependency order is the merge order"
        );
    }

    /// A random DAG: task i may depend only on tasks with a smaller index.
    fn arb_dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..12).prop_flat_map(|n| {
            (0..n)
                .map(|i| {
                    prop::collection::btree_set(0..i.max(1), 0..=i.min(3))
                        .prop_map(move |s| s.into_iter().filter(|&d| d < i).collect::<Vec<_>>())
                })
                .collect::<Vec<_>>()
        })
    }

    fn build(dag: &[Vec<usize>], order: &[usize]) -> Result<Workflow, WorkflowError> {
        let names: Vec<String> = (0..dag.len()).map(|i| format!("t{i}")).collect();
        let tasks = order
            .iter()
            .map(|&i| {
                let deps: Vec<&str> = dag[i].iter().map(|&d| names[d].as_str()).collect();
                noop(&names[i], &deps)
            })
            .collect();
        Workflow::new("wf", None, tasks)
    }

    proptest! {
        /// Every acyclic graph validates, its order respects every edge, and the version does
        /// not depend on declaration order.
        #[test]
        fn dags_validate(dag in arb_dag(), seed in any::<u64>()) {
            let forward: Vec<usize> = (0..dag.len()).collect();
            let mut shuffled = forward.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let a = build(&dag, &forward).expect("acyclic");
            let b = build(&dag, &shuffled).expect("acyclic");
            prop_assert_eq!(a.version(), b.version());
            let order = b.topological_order();
            let pos: HashMap<&str, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
            for (i, deps) in dag.iter().enumerate() {
                for d in deps {
                    let (ti, td) = (format!("t{i}"), format!("t{d}"));
                    prop_assert!(pos[td.as_str()] < pos[ti.as_str()]);
                }
            }
        }

        /// Adding a back edge to any path makes the graph cyclic, and the reported cycle is a
        /// real closed path of existing edges.
        #[test]
        fn back_edges_are_cycles(dag in arb_dag(), pick in any::<prop::sample::Index>()) {
            let edges: Vec<(usize, usize)> = dag.iter().enumerate().flat_map(|(i, ds)| ds.iter().map(move |&d| (i, d))).collect();
            prop_assume!(!edges.is_empty());
            let (child, parent) = edges[pick.index(edges.len())];
            let mut cyclic = dag.clone();
            cyclic[parent].push(child);
            let order: Vec<usize> = (0..cyclic.len()).collect();
            match build(&cyclic, &order) {
                Err(WorkflowError::Cycle { path, .. }) => {
                    prop_assert!(path.len() >= 3);
                    prop_assert_eq!(path.first(), path.last());
                    for w in path.windows(2) {
                        // Each step goes from a dependency to its dependent.
                        let from: usize = w[0][1..].parse().expect("name");
                        let to: usize = w[1][1..].parse().expect("name");
                        prop_assert!(cyclic[to].contains(&from), "edge {} -> {} not in graph", w[0], w[1]);
                    }
                }
                other => prop_assert!(false, "expected a cycle, got {:?}", other.map(|w| w.name().to_string())),
            }
        }
    }
}
