//! `#[task]` and `#[workflow]`: Cloacina's authoring macros.
//!
//! A workflow is an inline module marked `#[workflow]` whose `#[task]` functions form a DAG.
//! The graph is checked while your crate compiles (unknown or cyclic dependencies, duplicate
//! ids, trigger rules looking at tasks that have not run yet), with errors pointing at the
//! offending token, so `workflow()` cannot fail for a graph the compiler accepted.
//!
//! ```
//! use cloacina_macros::{task, workflow};
//!
//! #[workflow(name = "nightly_etl", description = "Fetch, transform and load the day's orders")]
//! mod nightly_etl {
//!     use cloacina_macros::task;
//!     use cloacina_workflow::{Context, TaskError};
//!
//!     #[task(retry_attempts = 3, retry_delay_ms = 500, timeout_ms = 30_000)]
//!     async fn fetch(ctx: &mut Context) -> Result<(), TaskError> {
//!         ctx.set("orders", vec![1, 2, 3])?;
//!         Ok(())
//!     }
//!
//!     #[task(dependencies = [fetch])]
//!     async fn load(ctx: &mut Context) -> Result<(), TaskError> {
//!         let orders: Vec<u32> = ctx.get("orders")?;
//!         ctx.set("loaded", orders.len())?;
//!         Ok(())
//!     }
//!
//!     #[task(
//!         dependencies = [load],
//!         trigger_rule = any([task_failed("fetch"), task_failed("load")]),
//!     )]
//!     async fn alert(_ctx: &mut Context) -> Result<(), TaskError> {
//!         Ok(())
//!     }
//! }
//!
//! let wf = nightly_etl::workflow().expect("checked at compile time");
//! assert_eq!(wf.name(), nightly_etl::WORKFLOW_NAME);
//! assert_eq!(wf.topological_order(), ["fetch", "load", "alert"]);
//! ```
//!
//! Generated code refers only to `::cloacina_workflow` (and `core`/`std`), so a package needs
//! no dependency but `cloacina-workflow` and this crate. When the workflow API is reached
//! through another path (a re-export), say so with `crate = path` on either macro.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Item, ItemFn, ItemMod, Meta, MetaList, Path};

mod args;
mod codegen;
mod dag;

use args::{Errors, TaskArgs, WorkflowArgs};

/// Declares a task: an `async fn` that transforms the workflow context.
///
/// ```
/// use cloacina_macros::task;
/// use cloacina_workflow::{Context, TaskError};
///
/// #[task(id = "fetch_orders", retry_attempts = 3, retry_backoff = "linear", timeout_ms = 10_000)]
/// pub async fn fetch(ctx: &mut Context) -> Result<(), TaskError> {
///     ctx.set("orders", 3)?;
///     Ok(())
/// }
///
/// let task = fetch_task(); // Arc<dyn cloacina_workflow::Task>
/// assert_eq!(task.spec().id, "fetch_orders");
/// assert_eq!(task.spec().retry.max_attempts, 3);
/// ```
///
/// # The function
///
/// It must be `async fn NAME(ctx: &mut Context) -> Result<(), TaskError>`: async, not generic,
/// exactly one parameter (the context), and a return type. The function is kept exactly as
/// written, so you can still call it directly (in unit tests, say). Its future must be `Send`.
///
/// # What it generates
///
/// Next to the function, with the function's visibility:
///
/// ```text
/// fn NAME_task() -> ::std::sync::Arc<dyn ::cloacina_workflow::Task>
/// ```
///
/// The returned task's `spec()` is the `cloacina_workflow::TaskSpec` described by the arguments below, built once
/// per call, and its `run(ctx)` runs `NAME(ctx)`. `spec().code_fingerprint` is the SHA-256 (hex)
/// of the function's source tokens, so editing the body changes the workflow's version.
///
/// # Arguments
///
/// All optional, written `key = value` and separated by commas. Unknown or repeated keys,
/// values of the wrong kind and values out of range are compile errors at that token.
///
/// | Argument | Value | Default | Meaning |
/// |---|---|---|---|
/// | `id` | string | the function name | The task id: unique in its workflow, no whitespace or `/`. |
/// | `dependencies` | `[a, "b", ...]` | `[]` | Ids of tasks that must finish first, as identifiers or string literals. Order matters: it is the order their output contexts are merged in. Each may appear once. |
/// | `retry_attempts` | integer ≥ 1 | `1` | Attempts in total, **the first included**: `1` means no retry, `3` means up to two retries. |
/// | `retry_backoff` | `"fixed"`, `"linear"`, `"exponential"` | `"exponential"` | How the delay grows between attempts. |
/// | `retry_delay_ms` | integer | `1000` | The fixed delay, or the first delay of a linear or exponential backoff. |
/// | `retry_increment_ms` | integer | `retry_delay_ms` | Linear only: added to the delay before each further retry. |
/// | `retry_multiplier` | number ≥ 1.0 | `2.0` | Exponential only: the delay is multiplied by this before each further retry. |
/// | `retry_max_delay_ms` | integer | `60000` | Cap on any delay, applied after jitter. |
/// | `retry_jitter` | number in `0.0..=1.0` | `0.0` | Fraction of the delay randomly added or removed. |
/// | `retry_on` | `"all"`, `"transient"`, `"never"` | `"all"` | Which errors are retried: all but `Permanent`/`Cancelled`; only `Transient` and `Timeout`; none. |
/// | `timeout_ms` | integer > 0 | none | Wall-clock limit per attempt. |
/// | `trigger_rule` | expression | `always()` | When the task runs once its dependencies finished; see below. |
/// | `description` | string | none | Shown by tools; part of the workflow version. |
/// | `crate` | path | `::cloacina_workflow` | Where the generated code finds the workflow API, for re-exports: `crate = ::cloacina::cloacina_workflow`. |
///
/// # Trigger rules
///
/// `trigger_rule` takes any Rust expression of type `cloacina_workflow::TriggerRule`, evaluated with
/// `use ::cloacina_workflow::trigger::dsl::*;` in scope, so the DSL reads naturally:
///
/// ```text
/// trigger_rule = any([task_failed("fetch"), context_value("rows", ValueOp::GreaterThan, 1000)])
/// ```
///
/// The DSL offers `all([...])`, `any([...])`, `none([...])`, `always()`,
/// `task_success("id")`, `task_failed("id")`, `task_skipped("id")` and
/// `context_value("key", ValueOp::..., value)`. Without a rule the task runs when all its
/// dependencies completed; a rule *replaces* that default. Inside a `#[workflow]`, every task
/// named by a string literal in `task_*` calls must be upstream of this task (a dependency,
/// directly or transitively): a rule may only look at tasks that have finished.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_task(attr.into(), item.into()).into()
}

/// Declares a workflow: an inline module whose `#[task]` functions form a DAG.
///
/// ```
/// use cloacina_macros::workflow;
///
/// #[workflow(name = "reports", description = "Daily reports")]
/// pub mod reports {
///     use cloacina_macros::task;
///     use cloacina_workflow::{Context, TaskError};
///
///     #[task]
///     async fn extract(_ctx: &mut Context) -> Result<(), TaskError> { Ok(()) }
///
///     #[task(dependencies = [extract])]
///     async fn summarize(_ctx: &mut Context) -> Result<(), TaskError> { Ok(()) }
/// }
///
/// let wf = reports::workflow().expect("valid");
/// assert_eq!(wf.roots(), ["extract"]);
/// ```
///
/// # Arguments
///
/// | Argument | Value | Default | Meaning |
/// |---|---|---|---|
/// | `name` | string | **required** | The workflow's name: no whitespace or `/`. |
/// | `description` | string | none | Shown by tools; part of the workflow version. |
/// | `crate` | path | `::cloacina_workflow` | Where the generated code finds the workflow API (e.g. `crate = ::cloacina::cloacina_workflow`). Passed on to the module's `#[task]`s that do not set their own. |
///
/// # The module
///
/// It must be inline (`mod name { ... }`) and contain at least one `#[task]` function; the
/// `task` attribute must be in scope inside it (`use cloacina_macros::task;` or
/// `use super::*;`). Other items are left alone.
///
/// # Compile-time checks
///
/// Each is reported at the offending token:
///
/// - two tasks with the same id (at the second);
/// - a dependency that is not a task of the module, with a "did you mean" when one is close;
/// - a dependency listed twice;
/// - a dependency cycle, reported as `dependency cycle: a -> b -> a` at a dependency on it;
/// - a trigger rule naming (with a string literal) a task that is not upstream of its task;
/// - a missing `name`, and a module without tasks.
///
/// # What it generates
///
/// Appended to the module:
///
/// ```text
/// pub const WORKFLOW_NAME: &str = "<name>";
/// pub fn workflow() -> ::core::result::Result<::cloacina_workflow::Workflow, ::cloacina_workflow::WorkflowError>
/// ```
///
/// `workflow()` calls `Workflow::new(WORKFLOW_NAME, description, vec![NAME_task(), ...])` with
/// the tasks in declaration order. Each task still gets its own `NAME_task()` from `#[task]`.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_workflow(attr.into(), item.into()).into()
}

fn expand_task(attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let fingerprint = codegen::fingerprint(&item);
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            let error = syn::Error::new(
                item.span(),
                "#[task] goes on an `async fn name(ctx: &mut Context) -> Result<(), TaskError>`",
            );
            let error = error.to_compile_error();
            return quote!(#error #item);
        }
    };
    let mut errors = Errors::default();
    let args = errors.take(TaskArgs::parse(attr.clone()));
    errors.take(args::check_signature(&func));
    match args {
        Some(args) if errors.is_empty() => codegen::task(&func, &args, &fingerprint),
        _ => {
            let krate = args::crate_path_lenient(attr);
            codegen::task_fallback(&func, krate.as_ref(), errors.to_compile_error())
        }
    }
}

fn expand_workflow(attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::default();
    let args = errors
        .take(WorkflowArgs::parse(attr.clone(), Span::call_site()))
        .unwrap_or_else(|| WorkflowArgs::lenient(attr));

    let mut module = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Mod(module)) if module.content.is_some() => module,
        Ok(Item::Mod(module)) => {
            errors.push(syn::Error::new(
                module.semi.span(),
                "#[workflow] needs an inline module: write `mod name { ... }` with the tasks inside",
            ));
            let errors = errors.to_compile_error();
            return quote!(#errors #module);
        }
        _ => {
            errors.push(syn::Error::new(
                item.span(),
                "#[workflow] goes on an inline module containing `#[task]` functions: `mod name { ... }`",
            ));
            let errors = errors.to_compile_error();
            return quote!(#errors #item);
        }
    };

    let (task_fns, nodes) = collect_tasks(&mut module, args.krate.as_ref());
    if task_fns.is_empty() {
        errors.push(syn::Error::new(
            module.ident.span(),
            format!(
                "workflow module `{}` has no tasks: add at least one `#[task] async fn` inside it",
                module.ident
            ),
        ));
    } else if let Some(nodes) = nodes {
        errors.take(dag::check(&nodes));
    }

    let name = args.name.as_ref().map(|n| n.value()).unwrap_or_default();
    let items = codegen::workflow_items(
        args.krate.as_ref(),
        &name,
        args.description.as_ref(),
        &task_fns,
    );
    if let Some((_, content)) = &mut module.content {
        content.extend(items);
    }
    let errors = errors.to_compile_error();
    quote!(#module #errors)
}

/// Finds the module's `#[task]` functions. Returns their names in declaration order, and the
/// graph to check, which is `None` when some task's arguments are invalid: that task's own
/// `#[task]` expansion reports them, and a partial graph would only add confusing errors.
///
/// When the workflow sets `crate = path`, it is passed on to tasks that do not set their own.
fn collect_tasks(
    module: &mut ItemMod,
    krate: Option<&Path>,
) -> (Vec<syn::Ident>, Option<Vec<dag::TaskNode>>) {
    let mut task_fns = Vec::new();
    let mut nodes = Some(Vec::new());
    let Some((_, content)) = &mut module.content else {
        return (task_fns, None);
    };
    for item in content.iter_mut() {
        let Item::Fn(func) = item else { continue };
        let Some(attr) = func.attrs.iter_mut().find(|a| is_task_attr(a)) else {
            continue;
        };
        task_fns.push(func.sig.ident.clone());
        let parsed = task_attr_tokens(attr).and_then(TaskArgs::parse);
        let Ok(task_args) = parsed else {
            nodes = None;
            continue;
        };
        if let (Some(krate), None) = (krate, &task_args.krate) {
            pass_crate_path(attr, krate);
        }
        let (id, id_span) = match &task_args.id {
            Some(lit) => (lit.value(), lit.span()),
            None => (func.sig.ident.unraw().to_string(), func.sig.ident.span()),
        };
        if let Some(nodes) = &mut nodes {
            nodes.push(dag::TaskNode {
                id,
                id_span,
                fn_name: func.sig.ident.to_string(),
                dependencies: task_args.dependencies,
                trigger_rule: task_args.trigger_rule,
            });
        }
    }
    (task_fns, nodes)
}

/// `#[task]`, `#[task(...)]`, or the same through a path (`#[cloacina_macros::task]`).
fn is_task_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "task")
}

fn task_attr_tokens(attr: &Attribute) -> syn::Result<TokenStream2> {
    match &attr.meta {
        Meta::Path(_) => Ok(TokenStream2::new()),
        Meta::List(list) => Ok(list.tokens.clone()),
        Meta::NameValue(nv) => Err(syn::Error::new(
            nv.eq_token.span,
            "write `#[task(key = value, ...)]`",
        )),
    }
}

/// Appends `crate = path` to a `#[task]` attribute's arguments.
fn pass_crate_path(attr: &mut Attribute, krate: &Path) {
    let (path, tokens) = match &attr.meta {
        Meta::Path(path) => (path.clone(), TokenStream2::new()),
        Meta::List(list) => (list.path.clone(), list.tokens.clone()),
        Meta::NameValue(_) => return,
    };
    let trailing_comma = matches!(
        tokens.clone().into_iter().last(),
        Some(proc_macro2::TokenTree::Punct(p)) if p.as_char() == ','
    );
    let tokens = if tokens.is_empty() || trailing_comma {
        quote!(#tokens crate = #krate)
    } else {
        quote!(#tokens, crate = #krate)
    };
    attr.meta = Meta::List(MetaList {
        path,
        delimiter: syn::MacroDelimiter::Paren(Default::default()),
        tokens,
    });
}
