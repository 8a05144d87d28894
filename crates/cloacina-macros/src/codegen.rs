//! Code generation: the `NAME_task()` constructor of a `#[task]`, and the `workflow()` and
//! `WORKFLOW_NAME` items of a `#[workflow]` module. Generated code names only paths under the
//! configured crate (`::cloacina_workflow` by default) and `::core`/`::std`.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use sha2::{Digest, Sha256};
use syn::{Ident, ItemFn, LitStr, Path, parse_quote};

use crate::args::{BackoffSpec, RetryOn, RetrySpec, TaskArgs};

/// The crate generated code refers to, unless `crate = path` says otherwise.
pub fn crate_path(krate: Option<&Path>) -> Path {
    krate
        .cloned()
        .unwrap_or_else(|| parse_quote!(::cloacina_workflow))
}

/// The name of the constructor `#[task]` generates for `fn name`.
pub fn task_constructor(fn_name: &Ident) -> Ident {
    format_ident!("{}_task", fn_name)
}

/// Hex SHA-256 of a task function's tokens: it changes whenever the function's code does.
pub fn fingerprint(tokens: &TokenStream) -> String {
    hex::encode(Sha256::digest(tokens.to_string().as_bytes()))
}

/// The original function, untouched, followed by its `NAME_task()` constructor.
pub fn task(func: &ItemFn, args: &TaskArgs, fingerprint: &str) -> TokenStream {
    let krate = crate_path(args.krate.as_ref());
    let name = &func.sig.ident;
    let vis = &func.vis;
    let constructor = task_constructor(name);
    let id = args.id.as_ref().map_or_else(
        || syn::ext::IdentExt::unraw(name).to_string(),
        LitStr::value,
    );
    let deps = args.dependencies.iter().map(|d| &d.name);
    let retry = retry_policy(&krate, &args.retry);
    let timeout = option(args.timeout_ms.map(|ms| {
        let ms = Literal::u64_suffixed(ms);
        quote!(#ms)
    }));
    let trigger_rule = match &args.trigger_rule {
        Some(rule) => quote! {{
            #[allow(unused_imports)]
            use #krate::trigger::dsl::*;
            #rule
        }},
        None => quote!(#krate::TriggerRule::Always),
    };
    let description = option(
        args.description
            .as_ref()
            .map(|d| quote!(::std::string::String::from(#d))),
    );
    // The call is spanned at the function name so that, e.g., a non-`Send` body is reported
    // there. The parameter gets the same span, so both resolve with the same hygiene even when
    // the function comes from a `macro_rules!` expansion.
    let ctx = Ident::new("ctx", name.span());
    let call = quote_spanned!(name.span()=> ::std::boxed::Box::pin(#name(#ctx)));
    let doc = format!(
        "The task declared by `#[task]` on [`{name}`] (id `{id}`), ready to add to a workflow."
    );

    quote! {
        #func

        #[doc = #doc]
        #[allow(dead_code)]
        #vis fn #constructor() -> ::std::sync::Arc<dyn #krate::Task> {
            struct GeneratedTask {
                spec: #krate::TaskSpec,
            }

            impl #krate::Task for GeneratedTask {
                fn spec(&self) -> &#krate::TaskSpec {
                    &self.spec
                }

                fn run<'a>(
                    &'a self,
                    #ctx: &'a mut #krate::Context,
                ) -> #krate::BoxFuture<'a, ::core::result::Result<(), #krate::TaskError>> {
                    #call
                }
            }

            ::std::sync::Arc::new(GeneratedTask {
                spec: #krate::TaskSpec {
                    id: ::std::string::String::from(#id),
                    dependencies: ::std::vec![#(::std::string::String::from(#deps)),*],
                    retry: #retry,
                    timeout_ms: #timeout,
                    trigger_rule: #trigger_rule,
                    description: #description,
                    code_fingerprint: ::core::option::Option::Some(
                        ::std::string::String::from(#fingerprint),
                    ),
                },
            })
        }
    }
}

/// What `#[task]` emits when its arguments or signature are wrong: the function, the errors,
/// and a stand-in constructor so that a `#[workflow]` calling it adds no errors of its own.
pub fn task_fallback(func: &ItemFn, krate: Option<&Path>, errors: TokenStream) -> TokenStream {
    let krate = crate_path(krate);
    let vis = &func.vis;
    let constructor = task_constructor(&func.sig.ident);
    quote! {
        #func
        #errors
        #[allow(dead_code)]
        #vis fn #constructor() -> ::std::sync::Arc<dyn #krate::Task> {
            ::core::unreachable!("this #[task] did not compile")
        }
    }
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn retry_policy(krate: &Path, retry: &RetrySpec) -> TokenStream {
    let max_attempts = Literal::u32_suffixed(retry.max_attempts);
    let backoff = match retry.backoff {
        BackoffSpec::Fixed { delay_ms } => {
            let delay_ms = Literal::u64_suffixed(delay_ms);
            quote!(#krate::Backoff::Fixed { delay_ms: #delay_ms })
        }
        BackoffSpec::Linear {
            initial_ms,
            increment_ms,
        } => {
            let initial_ms = Literal::u64_suffixed(initial_ms);
            let increment_ms = Literal::u64_suffixed(increment_ms);
            quote!(#krate::Backoff::Linear { initial_ms: #initial_ms, increment_ms: #increment_ms })
        }
        BackoffSpec::Exponential {
            initial_ms,
            multiplier,
        } => {
            let initial_ms = Literal::u64_suffixed(initial_ms);
            let multiplier = Literal::f64_suffixed(multiplier);
            quote!(#krate::Backoff::Exponential { initial_ms: #initial_ms, multiplier: #multiplier })
        }
    };
    let max_delay_ms = Literal::u64_suffixed(retry.max_delay_ms);
    let jitter = Literal::f64_suffixed(retry.jitter);
    let condition = match retry.on {
        RetryOn::All => quote!(AllErrors),
        RetryOn::Transient => quote!(TransientOnly),
        RetryOn::Never => quote!(Never),
    };
    quote! {
        #krate::RetryPolicy {
            max_attempts: #max_attempts,
            backoff: #backoff,
            max_delay_ms: #max_delay_ms,
            jitter: #jitter,
            conditions: ::std::vec![#krate::RetryCondition::#condition],
        }
    }
}

/// The items `#[workflow]` appends to its module: `WORKFLOW_NAME` and `workflow()`, which adds
/// the tasks in declaration order.
pub fn workflow_items(
    krate: Option<&Path>,
    name: &str,
    description: Option<&LitStr>,
    task_fns: &[Ident],
) -> Vec<syn::Item> {
    let krate = crate_path(krate);
    let constructors = task_fns.iter().map(task_constructor);
    let description = option(description.map(|d| quote!(::std::string::String::from(#d))));
    let task_list = task_fns
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let doc = format!(
        "Builds the `{name}` workflow from its tasks ({task_list}), in declaration order. \
         The graph was checked when this crate compiled; `Workflow::new` checks it again."
    );
    vec![
        parse_quote! {
            /// The workflow's name, as given to `#[workflow(name = "...")]`.
            #[allow(dead_code)]
            pub const WORKFLOW_NAME: &str = #name;
        },
        parse_quote! {
            #[doc = #doc]
            #[allow(dead_code)]
            pub fn workflow() -> ::core::result::Result<#krate::Workflow, #krate::WorkflowError> {
                #krate::Workflow::new(
                    WORKFLOW_NAME,
                    #description,
                    ::std::vec![#(#constructors()),*],
                )
            }
        },
    ]
}
