//! The bound-subscriber guard: a reactor is not torn down while computation graphs of *other*
//! packages are bound to it. Its refusal has one exact text, shown verbatim by the server and
//! the CLI:
//!
//! ```text
//! reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first
//! ```
//!
//! The subscribers are listed in binding order; a graph of another tenant is written
//! `tenant/name`. A package's own graphs (same package name, any version) never block it:
//! they are unbound at step 2 of its own unload.

use std::collections::BTreeMap;

use serde::Serialize;

use super::graph::GraphEntry;
use super::reactor::{Key, ReactorState};

/// One reactor the guard refuses to tear down, and the foreign graphs bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundSubscribers {
    pub tenant: String,
    pub reactor: String,
    /// Graph names in binding order (`tenant/name` for a graph of another tenant).
    pub subscribers: Vec<String>,
}

impl std::fmt::Display for BoundSubscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reactor '{}' has {} bound subscriber(s): [{}]; unbind them first",
            self.reactor,
            self.subscribers.len(),
            self.subscribers
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The guard's refusal. Its text is the exact wire format; with several reactors refused,
/// their sentences are joined with `"; "`, in reactor-name order. Code `guard_refused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", .refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct GuardRefusal {
    pub refusals: Vec<BoundSubscribers>,
}

impl crate::error::ErrorCode for GuardRefusal {
    fn code(&self) -> &'static str {
        "guard_refused"
    }
}

/// The graphs bound to `reactor` that belong to another package than its owner, in binding
/// order, by bare name: the unload guide's exact wire format names them so whatever tenant
/// they are in (`graph status` and `package inspect` give their tenants).
pub(crate) fn foreign_subscribers(
    reactor: &ReactorState,
    graphs: &BTreeMap<Key, GraphEntry>,
) -> Vec<String> {
    reactor
        .subscribers
        .iter()
        .filter_map(|key| graphs.get(key))
        .filter(|g| g.owner.package != reactor.owner.package)
        .map(|g| g.name.clone())
        .collect()
}

/// The guard's verdict over the reactors owned by `package_id` in `tenant`.
pub(crate) fn check(
    reactors: &BTreeMap<Key, ReactorState>,
    graphs: &BTreeMap<Key, GraphEntry>,
    tenant: &str,
    package_id: &str,
) -> Result<(), GuardRefusal> {
    let refusals: Vec<BoundSubscribers> = reactors
        .values()
        .filter(|r| r.tenant == tenant && r.owner.package_id == package_id)
        .filter_map(|r| {
            let subscribers = foreign_subscribers(r, graphs);
            (!subscribers.is_empty()).then(|| BoundSubscribers {
                tenant: r.tenant.clone(),
                reactor: r.name.clone(),
                subscribers,
            })
        })
        .collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(GuardRefusal { refusals })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_text() {
        let e = GuardRefusal {
            refusals: vec![BoundSubscribers {
                tenant: "public".into(),
                reactor: "price_reactor".into(),
                subscribers: vec!["analyzer_v1".into(), "aggregator".into()],
            }],
        };
        assert_eq!(
            e.to_string(),
            "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first"
        );
        let one = BoundSubscribers {
            tenant: "t".into(),
            reactor: "R".into(),
            subscribers: vec!["bar".into()],
        };
        assert_eq!(
            one.to_string(),
            "reactor 'R' has 1 bound subscriber(s): ['bar']; unbind them first"
        );
    }
}
