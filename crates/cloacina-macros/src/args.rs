//! Parsing and validating macro arguments: the `key = value` lists of `#[task(...)]` and
//! `#[workflow(...)]`, and the signature of a `#[task]` function.
//!
//! Everything here reports problems as [`syn::Error`]s spanning the offending key or value, and
//! collects as many of them as it can so that one compile shows them all.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, FnArg, Ident, ItemFn, Lit, LitStr, Path, ReturnType, Token};

/// The arguments `#[task(...)]` accepts.
const TASK_KEYS: &[&str] = &[
    "id",
    "dependencies",
    "retry_attempts",
    "retry_backoff",
    "retry_delay_ms",
    "retry_increment_ms",
    "retry_multiplier",
    "retry_max_delay_ms",
    "retry_jitter",
    "retry_on",
    "timeout_ms",
    "trigger_rule",
    "description",
    "crate",
];

/// The arguments `#[workflow(...)]` accepts.
const WORKFLOW_KEYS: &[&str] = &["name", "description", "crate"];

const BACKOFFS: &[&str] = &["fixed", "linear", "exponential"];
const RETRY_ON: &[&str] = &["all", "transient", "never"];

/// Accumulates errors so that a single compile reports every problem found.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Records the error of `result`, if any, and returns its value otherwise.
    pub fn take<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    pub fn to_compile_error(&self) -> TokenStream {
        self.0
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

/// One `key = value` argument, before its value is interpreted.
pub struct RawArg {
    pub key: Ident,
    /// The key as written, without any `r#` prefix.
    pub name: String,
    pub value: Expr,
}

/// Parses `key = value, ...` syntactically; keys are not checked.
fn parse_raw(tokens: TokenStream, what: &str) -> syn::Result<Vec<RawArg>> {
    let parser = |input: ParseStream<'_>| {
        let mut args = Vec::new();
        while !input.is_empty() {
            let key = input.call(Ident::parse_any).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "expected an argument name: {what} arguments are written `key = value`"
                    ),
                )
            })?;
            let name = key.unraw().to_string();
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "expected `{name} = <value>`: {what} arguments are written `key = value`"
                    ),
                ));
            }
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            args.push(RawArg { key, name, value });
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    };
    parser.parse2(tokens)
}

/// Checks every key against `known`, and that none is given twice.
fn check_keys(args: &[RawArg], known: &[&str], what: &str, errors: &mut Errors) {
    for (i, arg) in args.iter().enumerate() {
        if !known.contains(&arg.name.as_str()) {
            let hint = cloacina_workflow::names::suggest(&arg.name, known.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let expected = known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(syn::Error::new(
                arg.key.span(),
                format!(
                    "unknown {what} argument `{}`{hint}; expected one of: {expected}",
                    arg.name
                ),
            ));
        } else if args[..i].iter().any(|a| a.name == arg.name) {
            errors.push(syn::Error::new(
                arg.key.span(),
                format!(
                    "duplicate {what} argument `{}`: give each argument at most once",
                    arg.name
                ),
            ));
        }
    }
}

/// Checks a workflow or task name the way `Workflow::new` will, but at compile time.
pub fn check_name(what: &str, name: &str, span: Span) -> syn::Result<()> {
    match cloacina_workflow::names::name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(syn::Error::new(
            span,
            format!("invalid {what} '{name}': {reason}"),
        )),
    }
}

/// Strips the invisible groups `macro_rules!` wraps around `$e:expr` fragments.
fn peel(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => peel(&g.expr),
        other => other,
    }
}

fn expect_str(arg: &RawArg, example: &str) -> syn::Result<LitStr> {
    match peel(&arg.value) {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "`{}` expects a string literal, e.g. `{} = {example}`",
                arg.name, arg.name
            ),
        )),
    }
}

fn expect_int<T>(arg: &RawArg, example: &str) -> syn::Result<(T, Span)>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match peel(&arg.value) {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => Ok((i.base10_parse::<T>()?, i.span())),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "`{}` expects a non-negative integer literal, e.g. `{} = {example}`",
                arg.name, arg.name
            ),
        )),
    }
}

/// A float (or integer) literal, optionally negated.
fn expect_number(arg: &RawArg, example: &str) -> syn::Result<(f64, Span)> {
    fn number(expr: &Expr) -> Option<syn::Result<f64>> {
        match peel(expr) {
            Expr::Lit(ExprLit {
                lit: Lit::Float(f), ..
            }) => Some(f.base10_parse::<f64>()),
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => Some(i.base10_parse::<f64>()),
            Expr::Unary(ExprUnary {
                op: syn::UnOp::Neg(_),
                expr,
                ..
            }) => number(expr).map(|r| r.map(|v| -v)),
            _ => None,
        }
    }
    let value = peel(&arg.value);
    match number(value) {
        Some(result) => Ok((result?, value.span())),
        None => Err(syn::Error::new(
            value.span(),
            format!(
                "`{}` expects a number literal, e.g. `{} = {example}`",
                arg.name, arg.name
            ),
        )),
    }
}

/// One of `allowed`, as a string literal.
fn expect_choice(arg: &RawArg, allowed: &[&str]) -> syn::Result<(String, Span)> {
    let quoted = |list: &[&str]| {
        list.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lit = expect_str(arg, &format!("\"{}\"", allowed[0]))?;
    let value = lit.value();
    if allowed.contains(&value.as_str()) {
        return Ok((value, lit.span()));
    }
    let hint = cloacina_workflow::names::suggest(&value, allowed.iter().copied())
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    Err(syn::Error::new(
        lit.span(),
        format!(
            "unknown `{}` value \"{value}\"{hint}; expected one of: {}",
            arg.name,
            quoted(allowed)
        ),
    ))
}

fn expect_path(arg: &RawArg) -> syn::Result<Path> {
    match peel(&arg.value) {
        Expr::Path(p) if p.qself.is_none() => Ok(p.path.clone()),
        other => Err(syn::Error::new(
            other.span(),
            "`crate` expects a path to the `cloacina_workflow` crate, e.g. `crate = ::cloacina_workflow`",
        )),
    }
}

/// Finds `crate = path` in an argument list without validating anything else, so that error
/// recovery can still name the right crate.
pub fn crate_path_lenient(tokens: TokenStream) -> Option<Path> {
    parse_raw(tokens, "")
        .ok()?
        .iter()
        .find(|a| a.name == "crate")
        .and_then(|a| expect_path(a).ok())
}

/// A task id named in `dependencies = [...]`.
#[derive(Clone)]
pub struct Dependency {
    pub name: String,
    pub span: Span,
}

fn expect_dependencies(arg: &RawArg) -> syn::Result<Vec<Dependency>> {
    let Expr::Array(array) = peel(&arg.value) else {
        return Err(syn::Error::new(
            arg.value.span(),
            "`dependencies` expects a list of task ids, e.g. `dependencies = [fetch, \"load\"]`",
        ));
    };
    let mut deps: Vec<Dependency> = Vec::new();
    let mut errors = Errors::default();
    for elem in &array.elems {
        let dep = match peel(elem) {
            Expr::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => {
                p.path.get_ident().map(|ident| Dependency {
                    name: ident.unraw().to_string(),
                    span: ident.span(),
                })
            }
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Some(Dependency {
                name: s.value(),
                span: s.span(),
            }),
            _ => None,
        };
        let Some(dep) = dep else {
            errors.push(syn::Error::new(
                elem.span(),
                "a dependency is a task id, written as an identifier (`fetch`) or a string literal (`\"fetch\"`)",
            ));
            continue;
        };
        if deps.iter().any(|d| d.name == dep.name) {
            errors.push(syn::Error::new(
                dep.span,
                format!(
                    "dependency '{}' is listed twice; list each dependency once (their order is the merge order)",
                    dep.name
                ),
            ));
        } else if let Err(e) = check_name("dependency", &dep.name, dep.span) {
            errors.push(e);
        } else {
            deps.push(dep);
        }
    }
    errors.finish()?;
    Ok(deps)
}

/// How the delay between attempts grows (`RetryPolicy::backoff`).
pub enum BackoffSpec {
    Fixed { delay_ms: u64 },
    Linear { initial_ms: u64, increment_ms: u64 },
    Exponential { initial_ms: u64, multiplier: f64 },
}

/// Which failures are retried (`RetryPolicy::conditions`).
pub enum RetryOn {
    All,
    Transient,
    Never,
}

/// A fully resolved, validated `RetryPolicy`.
pub struct RetrySpec {
    pub max_attempts: u32,
    pub backoff: BackoffSpec,
    pub max_delay_ms: u64,
    pub jitter: f64,
    pub on: RetryOn,
}

/// The validated arguments of one `#[task(...)]`.
pub struct TaskArgs {
    /// `id = "..."`; the function name when absent.
    pub id: Option<LitStr>,
    pub dependencies: Vec<Dependency>,
    pub retry: RetrySpec,
    pub timeout_ms: Option<u64>,
    pub trigger_rule: Option<Expr>,
    pub description: Option<LitStr>,
    pub krate: Option<Path>,
}

impl TaskArgs {
    pub fn parse(tokens: TokenStream) -> syn::Result<TaskArgs> {
        let raw = parse_raw(tokens, "#[task]")?;
        let mut errors = Errors::default();
        check_keys(&raw, TASK_KEYS, "#[task]", &mut errors);

        let mut args = TaskArgs {
            id: None,
            dependencies: Vec::new(),
            retry: RetrySpec {
                max_attempts: 1,
                backoff: BackoffSpec::Fixed { delay_ms: 0 },
                max_delay_ms: 60_000,
                jitter: 0.0,
                on: RetryOn::All,
            },
            timeout_ms: None,
            trigger_rule: None,
            description: None,
            krate: None,
        };
        // Retry settings are resolved together once all are known.
        let mut backoff: Option<(String, Span)> = None;
        let mut delay_ms = 1000;
        let mut increment: Option<(u64, &RawArg)> = None;
        let mut multiplier: Option<(f64, &RawArg)> = None;

        for arg in &raw {
            match arg.name.as_str() {
                "id" => {
                    if let Some(id) = errors.take(expect_str(arg, "\"fetch\"")) {
                        errors.take(check_name("task id", &id.value(), id.span()));
                        args.id = Some(id);
                    }
                }
                "dependencies" => {
                    if let Some(deps) = errors.take(expect_dependencies(arg)) {
                        args.dependencies = deps;
                    }
                }
                "retry_attempts" => {
                    if let Some((n, span)) = errors.take(expect_int::<u32>(arg, "3")) {
                        if n == 0 {
                            errors.push(syn::Error::new(
                                span,
                                "`retry_attempts` must be at least 1: it counts every attempt, the first included (1 means no retries, 3 means up to two retries)",
                            ));
                        }
                        args.retry.max_attempts = n;
                    }
                }
                "retry_backoff" => backoff = errors.take(expect_choice(arg, BACKOFFS)),
                "retry_delay_ms" => {
                    if let Some((n, _)) = errors.take(expect_int::<u64>(arg, "1000")) {
                        delay_ms = n;
                    }
                }
                "retry_increment_ms" => {
                    if let Some((n, _)) = errors.take(expect_int::<u64>(arg, "500")) {
                        increment = Some((n, arg));
                    }
                }
                "retry_multiplier" => {
                    if let Some((m, span)) = errors.take(expect_number(arg, "2.0")) {
                        if m.is_nan() || m < 1.0 {
                            errors.push(syn::Error::new(
                                span,
                                format!("`retry_multiplier` must be at least 1.0 so that delays never shrink, got {m}"),
                            ));
                        }
                        multiplier = Some((m, arg));
                    }
                }
                "retry_max_delay_ms" => {
                    if let Some((n, _)) = errors.take(expect_int::<u64>(arg, "60000")) {
                        args.retry.max_delay_ms = n;
                    }
                }
                "retry_jitter" => {
                    if let Some((j, span)) = errors.take(expect_number(arg, "0.1")) {
                        if !(0.0..=1.0).contains(&j) {
                            errors.push(syn::Error::new(
                                span,
                                format!("`retry_jitter` is the fraction of the delay randomly added or removed and must be between 0.0 and 1.0, got {j}"),
                            ));
                        }
                        args.retry.jitter = j;
                    }
                }
                "retry_on" => {
                    if let Some((on, _)) = errors.take(expect_choice(arg, RETRY_ON)) {
                        args.retry.on = match on.as_str() {
                            "transient" => RetryOn::Transient,
                            "never" => RetryOn::Never,
                            _ => RetryOn::All,
                        };
                    }
                }
                "timeout_ms" => {
                    if let Some((n, span)) = errors.take(expect_int::<u64>(arg, "30000")) {
                        if n == 0 {
                            errors.push(syn::Error::new(
                                span,
                                "`timeout_ms` must be greater than 0; leave it out for no timeout",
                            ));
                        }
                        args.timeout_ms = Some(n);
                    }
                }
                "trigger_rule" => args.trigger_rule = Some(arg.value.clone()),
                "description" => {
                    args.description = errors.take(expect_str(arg, "\"what this task does\""))
                }
                "crate" => args.krate = errors.take(expect_path(arg)),
                _ => {} // reported by check_keys
            }
        }

        let kind = backoff.as_ref().map_or("exponential", |(k, _)| k.as_str());
        if let Some((_, arg)) = increment
            && kind != "linear"
        {
            errors.push(syn::Error::new(
                arg.key.span(),
                format!("`retry_increment_ms` only applies to `retry_backoff = \"linear\"`, but the backoff here is \"{kind}\""),
            ));
        }
        if let Some((_, arg)) = multiplier
            && kind != "exponential"
        {
            errors.push(syn::Error::new(
                arg.key.span(),
                format!("`retry_multiplier` only applies to `retry_backoff = \"exponential\"`, but the backoff here is \"{kind}\""),
            ));
        }
        args.retry.backoff = match kind {
            "fixed" => BackoffSpec::Fixed { delay_ms },
            "linear" => BackoffSpec::Linear {
                initial_ms: delay_ms,
                increment_ms: increment.map_or(delay_ms, |(n, _)| n),
            },
            _ => BackoffSpec::Exponential {
                initial_ms: delay_ms,
                multiplier: multiplier.map_or(2.0, |(m, _)| m),
            },
        };

        errors.finish()?;
        Ok(args)
    }
}

/// The validated arguments of `#[workflow(...)]`.
#[derive(Default)]
pub struct WorkflowArgs {
    pub name: Option<LitStr>,
    pub description: Option<LitStr>,
    pub krate: Option<Path>,
}

impl WorkflowArgs {
    /// Parses the arguments; a missing `name` is reported at `attr_span` (the attribute).
    pub fn parse(tokens: TokenStream, attr_span: Span) -> syn::Result<WorkflowArgs> {
        let raw = parse_raw(tokens, "#[workflow]")?;
        let mut errors = Errors::default();
        check_keys(&raw, WORKFLOW_KEYS, "#[workflow]", &mut errors);
        let mut args = WorkflowArgs::default();
        for arg in &raw {
            match arg.name.as_str() {
                "name" => {
                    if let Some(name) = errors.take(expect_str(arg, "\"nightly_etl\"")) {
                        errors.take(check_name("workflow name", &name.value(), name.span()));
                        args.name = Some(name);
                    }
                }
                "description" => {
                    args.description = errors.take(expect_str(arg, "\"what this workflow does\""))
                }
                "crate" => args.krate = errors.take(expect_path(arg)),
                _ => {} // reported by check_keys
            }
        }
        if args.name.is_none() && errors.is_empty() {
            errors.push(syn::Error::new(
                attr_span,
                "#[workflow] needs a name: add `name = \"...\"`, e.g. `#[workflow(name = \"nightly_etl\")]`",
            ));
        }
        errors.finish()?;
        Ok(args)
    }

    /// The partial arguments to keep generating code with when `parse` failed.
    pub fn lenient(tokens: TokenStream) -> WorkflowArgs {
        WorkflowArgs {
            krate: crate_path_lenient(tokens),
            ..WorkflowArgs::default()
        }
    }
}

/// Checks that a `#[task]` function has the shape the generated code calls:
/// `async fn name(ctx: &mut Context) -> Result<(), TaskError>`.
pub fn check_signature(func: &ItemFn) -> syn::Result<()> {
    const SHAPE: &str = "`async fn name(ctx: &mut Context) -> Result<(), TaskError>`";
    let sig = &func.sig;
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            format!("#[task] functions must be async: write {SHAPE}"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new(
            unsafety.span,
            "#[task] functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new(
            abi.span(),
            "#[task] functions cannot have an `extern` ABI",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            format!("#[task] functions cannot be generic: write {SHAPE}"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new(
            variadic.span(),
            "#[task] functions cannot be variadic",
        ));
    }
    match sig.inputs.len() {
        1 => {
            if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
                errors.push(syn::Error::new(
                    r.span(),
                    format!("#[task] functions cannot take `self`: write a free function, {SHAPE}"),
                ));
            }
        }
        n => {
            // Point at the empty parentheses, or at the first parameter too many.
            let span = sig
                .inputs
                .iter()
                .nth(1)
                .map_or_else(|| sig.paren_token.span.join(), Spanned::span);
            errors.push(syn::Error::new(
                span,
                format!("#[task] functions take exactly one parameter, the context (found {n}): write {SHAPE}"),
            ));
        }
    }
    if let ReturnType::Default = sig.output {
        errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            format!("#[task] functions must return `Result<(), TaskError>`: write {SHAPE}"),
        ));
    }
    errors.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn defaults() {
        let args = TaskArgs::parse(quote!()).expect("empty is valid");
        assert!(args.id.is_none());
        assert_eq!(args.retry.max_attempts, 1);
        assert!(matches!(
            args.retry.backoff,
            BackoffSpec::Exponential {
                initial_ms: 1000,
                multiplier
            } if multiplier == 2.0
        ));
        assert_eq!(args.retry.max_delay_ms, 60_000);
        assert_eq!(args.retry.jitter, 0.0);
    }

    #[test]
    fn linear_increment_defaults_to_delay() {
        let args = TaskArgs::parse(quote!(
            retry_attempts = 4,
            retry_backoff = "linear",
            retry_delay_ms = 250,
        ))
        .expect("valid");
        assert!(matches!(
            args.retry.backoff,
            BackoffSpec::Linear {
                initial_ms: 250,
                increment_ms: 250
            }
        ));
    }

    #[test]
    fn errors_are_collected() {
        let err = TaskArgs::parse(quote!(
            retry_attempt = 3,
            retry_jitter = 1.5,
            id = 7,
            id = "x"
        ))
        .err()
        .expect("invalid");
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(messages[0].contains("did you mean `retry_attempts`?"));
        assert!(messages[1].starts_with("duplicate #[task] argument `id`"));
    }

    #[test]
    fn dependencies_and_choices() {
        let args = TaskArgs::parse(quote!(
            dependencies = [a, r#type, "c-d"],
            retry_on = "never"
        ))
        .expect("valid");
        let names: Vec<&str> = args.dependencies.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "type", "c-d"]);
        let err = TaskArgs::parse(quote!(retry_backoff = "linaer"))
            .err()
            .expect("invalid");
        assert!(
            err.to_string().contains("did you mean \"linear\"?"),
            "{err}"
        );
        let err = TaskArgs::parse(quote!(dependencies = [a, b, a]))
            .err()
            .expect("invalid");
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn workflow_args() {
        let args = WorkflowArgs::parse(
            quote!(name = "etl", crate = ::cloacina::cloacina_workflow),
            Span::call_site(),
        )
        .expect("valid");
        assert_eq!(args.name.map(|n| n.value()).as_deref(), Some("etl"));
        assert!(args.krate.is_some());
        let err = WorkflowArgs::parse(quote!(description = "x"), Span::call_site())
            .err()
            .expect("no name");
        assert!(err.to_string().contains("needs a name"), "{err}");
    }
}
