//! Compile-time checks of a `#[workflow]` module's task graph: the same rules
//! `Workflow::new` enforces at run time, reported at the offending token instead.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::visit::Visit;
use syn::{Expr, ExprCall, ExprLit, Lit, Token};

use crate::args::{Dependency, Errors};
use cloacina_workflow::names::suggest;

/// What the checks need to know about one task of the module.
pub struct TaskNode {
    pub id: String,
    /// Where the id comes from: the `id = "..."` literal, or the function name.
    pub id_span: Span,
    /// The function name, for messages.
    pub fn_name: String,
    pub dependencies: Vec<Dependency>,
    pub trigger_rule: Option<Expr>,
}

/// Runs every check and returns all the errors found. Later checks only run when the graph
/// they need is well formed, so one mistake does not cascade into several reports.
pub fn check(tasks: &[TaskNode]) -> syn::Result<()> {
    let mut errors = Errors::default();

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        if let Some(&first) = index.get(task.id.as_str()) {
            errors.push(syn::Error::new(
                task.id_span,
                format!(
                    "duplicate task id '{}': `fn {}` already uses it; task ids must be unique within a workflow (rename the function or set `id = \"...\"`)",
                    task.id, tasks[first].fn_name
                ),
            ));
        } else {
            index.insert(&task.id, i);
        }
    }

    let known = || tasks.iter().map(|t| t.id.as_str());
    let mut edges: Vec<Vec<usize>> = Vec::with_capacity(tasks.len());
    for task in tasks {
        let mut deps = Vec::with_capacity(task.dependencies.len());
        for dep in &task.dependencies {
            match index.get(dep.name.as_str()) {
                Some(&d) => deps.push(d),
                None => errors.push(syn::Error::new(
                    dep.span,
                    format!(
                        "task '{}' depends on '{}', which is not a task of this workflow{}",
                        task.id,
                        dep.name,
                        did_you_mean(&dep.name, known())
                    ),
                )),
            }
        }
        edges.push(deps);
    }
    if !errors.is_empty() {
        return errors.finish();
    }

    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<&str> = cycle.path.iter().map(|&i| tasks[i].id.as_str()).collect();
        let span = tasks[cycle.task].dependencies[cycle.dependency].span;
        errors.push(syn::Error::new(
            span,
            format!("dependency cycle: {}", path.join(" -> ")),
        ));
        return errors.finish();
    }

    for (i, task) in tasks.iter().enumerate() {
        let Some(rule) = &task.trigger_rule else {
            continue;
        };
        for (reference, span) in trigger_references(rule) {
            match index.get(reference.as_str()) {
                None => errors.push(syn::Error::new(
                    span,
                    format!(
                        "trigger rule of task '{}' refers to '{reference}', which is not a task of this workflow{}",
                        task.id,
                        did_you_mean(&reference, known())
                    ),
                )),
                Some(&r) if r == i => errors.push(syn::Error::new(
                    span,
                    format!(
                        "trigger rule of task '{}' refers to the task itself; a trigger rule may only look at tasks that finish before it",
                        task.id
                    ),
                )),
                Some(&r) if !is_upstream(&edges, r, i) => errors.push(syn::Error::new(
                    span,
                    format!(
                        "trigger rule of task '{}' refers to '{reference}', which is not upstream of it; a trigger rule may only look at tasks that finish before it (add '{reference}' to its dependencies, directly or through another task)",
                        task.id
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    errors.finish()
}

fn did_you_mean<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> String {
    suggest(wanted, known)
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

/// A cycle, as a closed path in execution order (`a, b, a`), and the dependency whose
/// edge closes it: `tasks[task].dependencies[dependency]`.
struct Cycle {
    path: Vec<usize>,
    task: usize,
    dependency: usize,
}

/// Depth-first search over dependency edges, starting from each task in declaration order,
/// so the report is deterministic and matches `Workflow::new`.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Cycle> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }

    fn visit(
        node: usize,
        edges: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Cycle> {
        marks[node] = Mark::Active;
        stack.push(node);
        for (k, &dep) in edges[node].iter().enumerate() {
            match marks[dep] {
                Mark::New => {
                    if let Some(cycle) = visit(dep, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Active => {
                    // The stack from `dep` up is the cycle along dependency edges; reverse it
                    // into execution order (dependency first) and close it.
                    let start = stack.iter().position(|&n| n == dep).unwrap_or(0);
                    let mut path: Vec<usize> = stack[start..].iter().rev().copied().collect();
                    path.push(node);
                    return Some(Cycle {
                        path,
                        task: node,
                        dependency: k,
                    });
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[node] = Mark::Done;
        None
    }

    let mut marks = vec![Mark::New; edges.len()];
    let mut stack = Vec::new();
    (0..edges.len()).find_map(|start| {
        if marks[start] == Mark::New {
            visit(start, edges, &mut marks, &mut stack)
        } else {
            None
        }
    })
}

/// Whether `ancestor` is a transitive dependency of `task`.
fn is_upstream(edges: &[Vec<usize>], ancestor: usize, task: usize) -> bool {
    let mut seen = vec![false; edges.len()];
    let mut stack = vec![task];
    while let Some(n) = stack.pop() {
        for &d in &edges[n] {
            if d == ancestor {
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

/// Task names a trigger rule expression mentions: the string-literal first argument of every
/// `task_success`/`task_failed`/`task_skipped` call (or `TriggerRule::TaskSuccess(...)` etc.),
/// anywhere in the expression, including inside macros such as `vec![...]`. Names computed at
/// run time cannot be seen here; `Workflow::new` still checks them.
pub fn trigger_references(rule: &Expr) -> Vec<(String, Span)> {
    #[derive(Default)]
    struct Finder(Vec<(String, Span)>);

    fn string_literal(expr: &Expr) -> Option<&syn::LitStr> {
        match expr {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Some(s),
            Expr::Group(g) => string_literal(&g.expr),
            Expr::Paren(p) => string_literal(&p.expr),
            // "x".to_string(), "x".into(), "x".to_owned()
            Expr::MethodCall(m) if m.args.is_empty() => string_literal(&m.receiver),
            _ => None,
        }
    }

    impl<'ast> Visit<'ast> for Finder {
        fn visit_expr_call(&mut self, call: &'ast ExprCall) {
            if let Expr::Path(func) = &*call.func
                && let Some(last) = func.path.segments.last()
                && matches!(
                    last.ident.to_string().as_str(),
                    "task_success"
                        | "task_failed"
                        | "task_skipped"
                        | "TaskSuccess"
                        | "TaskFailed"
                        | "TaskSkipped"
                )
                && let Some(name) = call.args.first().and_then(string_literal)
            {
                self.0.push((name.value(), name.span()));
            }
            syn::visit::visit_expr_call(self, call);
        }

        fn visit_macro(&mut self, mac: &'ast syn::Macro) {
            if let Ok(exprs) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated)
            {
                exprs.iter().for_each(|e| self.visit_expr(e));
            }
        }
    }

    let mut finder = Finder::default();
    finder.visit_expr(rule);
    finder.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn node(id: &str, deps: &[&str]) -> TaskNode {
        TaskNode {
            id: id.to_string(),
            id_span: Span::call_site(),
            fn_name: id.to_string(),
            dependencies: deps
                .iter()
                .map(|d| Dependency {
                    name: d.to_string(),
                    span: Span::call_site(),
                })
                .collect(),
            trigger_rule: None,
        }
    }

    fn message(tasks: &[TaskNode]) -> String {
        check(tasks)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn cycles_match_the_runtime_report() {
        let tasks = [node("a", &["c"]), node("b", &["a"]), node("c", &["b"])];
        assert_eq!(message(&tasks), "dependency cycle: b -> c -> a -> b");
        assert_eq!(message(&[node("a", &["a"])]), "dependency cycle: a -> a");
        let diamond = [
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["a"]),
            node("d", &["b", "c"]),
        ];
        assert!(check(&diamond).is_ok());
    }

    #[test]
    fn missing_and_duplicate() {
        let tasks = [node("fetch", &[]), node("load", &["fetchh"])];
        assert_eq!(
            message(&tasks),
            "task 'load' depends on 'fetchh', which is not a task of this workflow (did you mean 'fetch'?)"
        );
        assert!(message(&[node("a", &[]), node("a", &[])]).starts_with("duplicate task id 'a'"));
    }

    #[test]
    fn trigger_references_are_found_anywhere() {
        let rule: Expr = parse_quote!(all([
            task_success("a"),
            any(vec![
                dsl::task_failed("b"),
                none([task_skipped("c".to_string())])
            ]),
            TriggerRule::TaskFailed("d".into()),
            context_value("task_success", ValueOp::Exists, 1),
        ]));
        let names: Vec<String> = trigger_references(&rule)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }

    #[test]
    fn trigger_rules_look_upstream_only() {
        let mut report = node("report", &["load"]);
        report.trigger_rule = Some(parse_quote!(any([task_failed("fetch")])));
        let ok = [node("fetch", &[]), node("load", &["fetch"]), report];
        assert!(check(&ok).is_ok());

        let mut side = node("side", &[]);
        side.trigger_rule = Some(parse_quote!(task_failed("fetch")));
        let bad = [node("fetch", &[]), side];
        assert!(message(&bad).contains("refers to 'fetch', which is not upstream of it"));
    }
}
