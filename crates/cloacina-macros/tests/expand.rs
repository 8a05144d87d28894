//! What `#[task]` and `#[workflow]` expand to, exercised through the public API.

use cloacina_macros::{task, workflow};
use cloacina_workflow::trigger::dsl::*;
use cloacina_workflow::{
    Backoff, Context, RetryCondition, RetryPolicy, Task, TaskError, TriggerRule, Workflow,
};

#[workflow(
    name = "diamond",
    description = "a fans out to b and c, which join in d"
)]
mod diamond {
    use super::*;

    /// Not a task: left alone by `#[workflow]`.
    pub const STEP: i64 = 10;

    #[task(description = "seeds the context")]
    pub async fn a(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set("n", 1)?;
        Ok(())
    }

    #[task(
        dependencies = [a],
        retry_attempts = 4,
        retry_backoff = "linear",
        retry_delay_ms = 100,
        retry_increment_ms = 50,
        timeout_ms = 2_000,
    )]
    pub async fn c(ctx: &mut Context) -> Result<(), TaskError> {
        let n: i64 = ctx.get("n")?;
        ctx.set("c", n * STEP)?;
        Ok(())
    }

    #[task(
        dependencies = ["a"],
        retry_attempts = 3,
        retry_backoff = "fixed",
        retry_delay_ms = 250,
        retry_on = "transient",
    )]
    pub async fn b(ctx: &mut Context) -> Result<(), TaskError> {
        let n: i64 = ctx.get("n")?;
        ctx.set("b", n + 1)?;
        Ok(())
    }

    #[task(
        id = "join",
        dependencies = [b, c],
        retry_attempts = 5,
        retry_multiplier = 3.0,
        retry_max_delay_ms = 5_000,
        retry_jitter = 0.25,
        trigger_rule = any([
            all([task_success("b"), task_success("c")]),
            task_failed("a"),
            context_value("force", ValueOp::Equals, true),
        ]),
    )]
    pub async fn d(ctx: &mut Context) -> Result<(), TaskError> {
        let b: i64 = ctx.get("b")?;
        let c: i64 = ctx.get("c")?;
        ctx.set("sum", b + c)?;
        Ok(())
    }
}

fn built() -> Workflow {
    diamond::workflow().expect("the diamond was validated at compile time")
}

fn ids<'a>(tasks: impl Iterator<Item = &'a std::sync::Arc<dyn Task>>) -> Vec<String> {
    tasks.map(|t| t.spec().id.clone()).collect()
}

#[test]
fn workflow_shape() {
    let wf = built();
    assert_eq!(diamond::WORKFLOW_NAME, "diamond");
    assert_eq!(wf.name(), "diamond");
    assert_eq!(
        wf.description_text(),
        Some("a fans out to b and c, which join in d")
    );
    assert_eq!(
        ids(wf.tasks()),
        ["a", "c", "b", "join"],
        "declaration order"
    );
    assert_eq!(wf.topological_order(), ["a", "c", "b", "join"]);
    assert_eq!(wf.roots(), ["a"]);
    assert_eq!(wf.leaves(), ["join"]);
    assert_eq!(wf.dependents("a"), ["c", "b"]);
    assert!(wf.is_upstream("a", "join"));
}

#[test]
fn specs() {
    let a = diamond::a_task();
    let spec = a.spec();
    assert_eq!(spec.id, "a");
    assert!(spec.dependencies.is_empty());
    assert_eq!(spec.description.as_deref(), Some("seeds the context"));
    assert_eq!(spec.timeout_ms, None);
    assert_eq!(spec.trigger_rule, TriggerRule::Always);
    assert_eq!(
        spec.retry,
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Exponential {
                initial_ms: 1000,
                multiplier: 2.0
            },
            max_delay_ms: 60_000,
            jitter: 0.0,
            conditions: vec![RetryCondition::AllErrors],
        }
    );

    let b = diamond::b_task();
    assert_eq!(b.spec().dependencies, ["a"]);
    assert_eq!(
        b.spec().retry,
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed { delay_ms: 250 },
            max_delay_ms: 60_000,
            jitter: 0.0,
            conditions: vec![RetryCondition::TransientOnly],
        }
    );

    let c = diamond::c_task();
    assert_eq!(c.spec().timeout_ms, Some(2_000));
    assert_eq!(
        c.spec().retry.backoff,
        Backoff::Linear {
            initial_ms: 100,
            increment_ms: 50
        }
    );
    assert_eq!(c.spec().retry.max_attempts, 4);

    let d = diamond::d_task();
    let spec = d.spec();
    assert_eq!(spec.id, "join");
    assert_eq!(spec.dependencies, ["b", "c"], "declared order is kept");
    assert_eq!(
        spec.retry,
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential {
                initial_ms: 1000,
                multiplier: 3.0
            },
            max_delay_ms: 5_000,
            jitter: 0.25,
            conditions: vec![RetryCondition::AllErrors],
        }
    );
    assert_eq!(
        spec.trigger_rule,
        any([
            all([task_success("b"), task_success("c")]),
            task_failed("a"),
            context_value("force", ValueOp::Equals, true),
        ])
    );
    assert_eq!(spec.trigger_rule.referenced_tasks(), ["b", "c", "a"]);
}

#[test]
fn fingerprints_identify_the_code() {
    let wf = built();
    let prints: Vec<String> = wf
        .tasks()
        .map(|t| t.spec().code_fingerprint.clone().expect("set by #[task]"))
        .collect();
    for p in &prints {
        assert_eq!(p.len(), 64);
        assert!(p.chars().all(|c| c.is_ascii_hexdigit()));
    }
    let mut unique = prints.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), prints.len(), "each body hashes differently");
}

#[test]
fn version_is_stable() {
    let (first, second) = (built(), built());
    assert_eq!(first.version(), second.version());
    assert_eq!(first.version().len(), 64);
    assert_eq!(first.description(), second.description());
}

#[tokio::test]
async fn tasks_run_their_bodies() {
    let mut ctx = Context::new();
    diamond::a_task().run(&mut ctx).await.expect("a runs");
    assert_eq!(ctx.get::<i64>("n").expect("set by a"), 1);
    diamond::b_task().run(&mut ctx).await.expect("b runs");
    diamond::c_task().run(&mut ctx).await.expect("c runs");
    diamond::d_task().run(&mut ctx).await.expect("d runs");
    assert_eq!(ctx.get::<i64>("sum").expect("set by d"), 2 + 10);

    let err = diamond::b_task()
        .run(&mut Context::new())
        .await
        .expect_err("no input");
    assert_eq!(err.kind(), "context");
}

#[tokio::test]
async fn functions_stay_callable() {
    let mut ctx = Context::new();
    diamond::a(&mut ctx).await.expect("direct call");
    diamond::b(&mut ctx).await.expect("direct call");
    assert_eq!(ctx.get::<i64>("b").expect("set by b"), 2);
}

/// A task on its own, outside any workflow.
#[task(
    id = "standalone",
    retry_attempts = 2,
    retry_backoff = "exponential",
    retry_delay_ms = 10,
    retry_multiplier = 1.5,
    retry_on = "never",
    timeout_ms = 1500,
    trigger_rule = context_value("go", ValueOp::Exists, serde_json::Value::Null),
    crate = ::cloacina_workflow,
)]
async fn lonely(ctx: &mut Context) -> Result<(), TaskError> {
    let visits = ctx.get_opt::<u32>("visits")?.unwrap_or(0);
    ctx.set("visits", visits + 1)?;
    if visits >= 1 {
        return Err(TaskError::permanent("visited twice"));
    }
    Ok(())
}

#[tokio::test]
async fn standalone_task() {
    let t = lonely_task();
    let spec = t.spec();
    assert_eq!(spec.id, "standalone");
    assert_eq!(spec.timeout_ms, Some(1500));
    assert_eq!(
        spec.retry.backoff,
        Backoff::Exponential {
            initial_ms: 10,
            multiplier: 1.5
        }
    );
    assert_eq!(spec.retry.conditions, [RetryCondition::Never]);
    assert_eq!(
        spec.trigger_rule,
        context_value("go", ValueOp::Exists, serde_json::Value::Null)
    );

    let mut ctx = Context::new();
    t.run(&mut ctx).await.expect("first run");
    lonely(&mut ctx)
        .await
        .expect_err("second run, called directly");
    assert_eq!(ctx.get::<u32>("visits").expect("counted"), 2);

    // Hand-assembled workflows accept macro-built tasks too.
    let wf = Workflow::new("single", None, vec![lonely_task()]).expect("valid");
    assert_eq!(wf.topological_order(), ["standalone"]);
}
