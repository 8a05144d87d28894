//! Trigger rules: the condition, evaluated once all of a task's dependencies have finished,
//! that decides whether the task runs or is skipped.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::Context;

/// How a finished dependency ended, as seen by a trigger rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    Completed,
    Failed,
    Skipped,
}

/// A comparison against a context value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueOp {
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    /// String contains a substring, or array contains an element.
    Contains,
    Exists,
    NotExists,
}

/// A task's trigger rule.
///
/// `Always` (the default) means "no condition beyond the default": the task runs when every
/// dependency completed, and is skipped when one failed or was skipped. Any other rule
/// *replaces* that default, so `any([task_failed("load")])` runs a clean-up task exactly when
/// `load` failed. Rules nest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rule", content = "args", rename_all = "snake_case")]
pub enum TriggerRule {
    #[default]
    Always,
    All(Vec<TriggerRule>),
    Any(Vec<TriggerRule>),
    None(Vec<TriggerRule>),
    TaskSuccess(String),
    TaskFailed(String),
    TaskSkipped(String),
    ContextValue {
        key: String,
        op: ValueOp,
        value: Value,
    },
}

impl TriggerRule {
    pub fn is_always(&self) -> bool {
        matches!(self, TriggerRule::Always)
    }

    /// Every task name the rule mentions, in order of appearance.
    pub fn referenced_tasks(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_tasks(&mut out);
        out
    }

    fn collect_tasks<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            TriggerRule::All(rules) | TriggerRule::Any(rules) | TriggerRule::None(rules) => {
                rules.iter().for_each(|r| r.collect_tasks(out))
            }
            TriggerRule::TaskSuccess(t)
            | TriggerRule::TaskFailed(t)
            | TriggerRule::TaskSkipped(t) => out.push(t),
            TriggerRule::Always | TriggerRule::ContextValue { .. } => {}
        }
    }

    /// Evaluates the rule. `outcome` gives how each finished task ended; `context` is the
    /// task's would-be input. The error is a human-readable reason for skipping.
    pub fn evaluate(
        &self,
        outcome: &dyn Fn(&str) -> Option<TaskOutcome>,
        context: &Context,
    ) -> Result<(), String> {
        if self.holds(outcome, context) {
            Ok(())
        } else {
            Err(format!("trigger rule not satisfied: {self}"))
        }
    }

    fn holds(&self, outcome: &dyn Fn(&str) -> Option<TaskOutcome>, context: &Context) -> bool {
        match self {
            TriggerRule::Always => true,
            TriggerRule::All(rules) => rules.iter().all(|r| r.holds(outcome, context)),
            TriggerRule::Any(rules) => rules.iter().any(|r| r.holds(outcome, context)),
            TriggerRule::None(rules) => !rules.iter().any(|r| r.holds(outcome, context)),
            TriggerRule::TaskSuccess(t) => outcome(t) == Some(TaskOutcome::Completed),
            TriggerRule::TaskFailed(t) => outcome(t) == Some(TaskOutcome::Failed),
            TriggerRule::TaskSkipped(t) => outcome(t) == Some(TaskOutcome::Skipped),
            TriggerRule::ContextValue { key, op, value } => {
                compare(context.get_value(key), *op, value)
            }
        }
    }
}

fn compare(actual: Option<&Value>, op: ValueOp, expected: &Value) -> bool {
    match (op, actual) {
        (ValueOp::Exists, a) => a.is_some(),
        (ValueOp::NotExists, a) => a.is_none(),
        (_, None) => false,
        (ValueOp::Equals, Some(a)) => a == expected,
        (ValueOp::NotEquals, Some(a)) => a != expected,
        (ValueOp::GreaterThan, Some(a)) => order(a, expected) == Some(std::cmp::Ordering::Greater),
        (ValueOp::LessThan, Some(a)) => order(a, expected) == Some(std::cmp::Ordering::Less),
        (ValueOp::Contains, Some(Value::String(s))) => {
            expected.as_str().is_some_and(|e| s.contains(e))
        }
        (ValueOp::Contains, Some(Value::Array(items))) => items.contains(expected),
        (ValueOp::Contains, Some(_)) => false,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl std::fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, name: &str, rules: &[TriggerRule]| {
            write!(f, "{name}(")?;
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{r}")?;
            }
            write!(f, ")")
        };
        match self {
            TriggerRule::Always => write!(f, "always"),
            TriggerRule::All(r) => list(f, "all", r),
            TriggerRule::Any(r) => list(f, "any", r),
            TriggerRule::None(r) => list(f, "none", r),
            TriggerRule::TaskSuccess(t) => write!(f, "task_success('{t}')"),
            TriggerRule::TaskFailed(t) => write!(f, "task_failed('{t}')"),
            TriggerRule::TaskSkipped(t) => write!(f, "task_skipped('{t}')"),
            TriggerRule::ContextValue { key, op, value } => {
                write!(f, "context_value('{key}', {op:?}, {value})")
            }
        }
    }
}

/// Short constructors, so a rule reads like the design's notation:
/// `all([task_success("a"), context_value("n", ValueOp::GreaterThan, 3)])`.
pub mod dsl {
    use super::TriggerRule;
    pub use super::ValueOp;
    use serde_json::Value;

    pub fn always() -> TriggerRule {
        TriggerRule::Always
    }
    pub fn all(rules: impl IntoIterator<Item = TriggerRule>) -> TriggerRule {
        TriggerRule::All(rules.into_iter().collect())
    }
    pub fn any(rules: impl IntoIterator<Item = TriggerRule>) -> TriggerRule {
        TriggerRule::Any(rules.into_iter().collect())
    }
    pub fn none(rules: impl IntoIterator<Item = TriggerRule>) -> TriggerRule {
        TriggerRule::None(rules.into_iter().collect())
    }
    pub fn task_success(task: &str) -> TriggerRule {
        TriggerRule::TaskSuccess(task.to_string())
    }
    pub fn task_failed(task: &str) -> TriggerRule {
        TriggerRule::TaskFailed(task.to_string())
    }
    pub fn task_skipped(task: &str) -> TriggerRule {
        TriggerRule::TaskSkipped(task.to_string())
    }
    pub fn context_value(key: &str, op: ValueOp, value: impl Into<Value>) -> TriggerRule {
        TriggerRule::ContextValue {
            key: key.to_string(),
            op,
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dsl::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_rules() {
        let ctx =
            Context::from_value(json!({"n": 5, "tags": ["a", "b"], "name": "hello"})).expect("ctx");
        let outcomes = |t: &str| match t {
            "a" => Some(TaskOutcome::Completed),
            "b" => Some(TaskOutcome::Failed),
            _ => None,
        };
        let rule = all([
            task_success("a"),
            any([task_failed("b"), task_skipped("c")]),
            none([context_value("n", ValueOp::LessThan, 3)]),
            context_value("tags", ValueOp::Contains, "b"),
            context_value("name", ValueOp::Contains, "ell"),
        ]);
        assert!(rule.evaluate(&outcomes, &ctx).is_ok());
        let rule = all([task_success("b")]);
        let reason = rule.evaluate(&outcomes, &ctx).expect_err("not satisfied");
        assert_eq!(reason, "trigger rule not satisfied: all(task_success('b'))");
        assert!(
            context_value("missing", ValueOp::NotExists, Value::Null)
                .evaluate(&outcomes, &ctx)
                .is_ok()
        );
        assert_eq!(rule.referenced_tasks(), vec!["b"]);
    }

    #[test]
    fn serde_round_trip() {
        let rule = any([task_failed("x"), context_value("k", ValueOp::Equals, 1)]);
        let text = serde_json::to_string(&rule).expect("ser");
        assert_eq!(
            serde_json::from_str::<TriggerRule>(&text).expect("de"),
            rule
        );
    }
}
