//! The JSON context that flows along a workflow's edges, and the one merge rule.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Why a context operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context key '{key}' already exists; use `update` or `set` to replace it")]
    KeyExists { key: String },
    #[error("context key '{key}' not found; available keys: [{available}]")]
    KeyNotFound { key: String, available: String },
    #[error("context key '{key}' holds {found}, which is not a {expected}: {message}")]
    TypeMismatch {
        key: String,
        expected: &'static str,
        found: String,
        message: String,
    },
    #[error("value for context key '{key}' cannot be stored as JSON: {message}")]
    Serialize { key: String, message: String },
    #[error("a context must be a JSON object, got {found}")]
    NotAnObject { found: &'static str },
}

impl ContextError {
    /// The stable machine code (documented in the host's docs/errors.md).
    pub fn code(&self) -> &'static str {
        "context_invalid"
    }
}

/// A task's working data: a JSON object, committed with the task's result.
///
/// Keys are kept sorted (serde_json's default map), so a context serializes the same way
/// every time; that makes hashes and stored rows reproducible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Context {
    data: Map<String, Value>,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps a JSON value, which must be an object.
    pub fn from_value(value: Value) -> Result<Self, ContextError> {
        match value {
            Value::Object(data) => Ok(Self { data }),
            other => Err(ContextError::NotAnObject {
                found: json_kind(&other),
            }),
        }
    }

    pub fn from_map(data: Map<String, Value>) -> Self {
        Self { data }
    }

    /// Parses a JSON document, which must be an object.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.data.clone()).to_string()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.data
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.data
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.data)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.data.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }

    /// The raw JSON value under `key`.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// Reads `key` as `T`; a missing key or a value of another shape is an error that names both.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, ContextError> {
        let value = self.data.get(key).ok_or_else(|| self.not_found(key))?;
        decode(key, value)
    }

    /// Reads `key` as `T`, or `None` when it is absent (a present value of the wrong shape is
    /// still an error: silently ignoring it would hide a bug).
    pub fn get_opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ContextError> {
        self.data.get(key).map(|v| decode(key, v)).transpose()
    }

    /// Adds a new key; refuses to overwrite, so two tasks cannot clobber each other by accident.
    pub fn insert<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), ContextError> {
        let key = key.into();
        if self.data.contains_key(&key) {
            return Err(ContextError::KeyExists { key });
        }
        let value = encode(&key, value)?;
        self.data.insert(key, value);
        Ok(())
    }

    /// Replaces an existing key; refuses to create one, so a typo does not pass silently.
    pub fn update<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), ContextError> {
        let key = key.into();
        if !self.data.contains_key(&key) {
            return Err(self.not_found(&key));
        }
        let value = encode(&key, value)?;
        self.data.insert(key, value);
        Ok(())
    }

    /// Inserts or replaces `key`.
    pub fn set<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), ContextError> {
        let key = key.into();
        let value = encode(&key, value)?;
        self.data.insert(key, value);
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.data.remove(key)
    }

    /// Applies `other` on top of this context with [`merge_maps`].
    pub fn merge(&mut self, other: &Context) {
        merge_maps(&mut self.data, &other.data);
    }

    /// Merges contexts in the given order with [`merge_maps`]: the input of a task (workflow input,
    /// then each dependency's output in declared dependency order) and a workflow's final
    /// context (its leaf tasks' outputs in topological order).
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Context>) -> Context {
        let mut out = Context::new();
        for part in parts {
            out.merge(part);
        }
        out
    }

    fn not_found(&self, key: &str) -> ContextError {
        ContextError::KeyNotFound {
            key: key.to_string(),
            available: self
                .data
                .keys()
                .map(|k| format!("'{k}'"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl From<Map<String, Value>> for Context {
    fn from(data: Map<String, Value>) -> Self {
        Self { data }
    }
}

/// The single merge rule used everywhere: objects merge key by key, recursively; for any other
/// pair of values (scalars, arrays, or an object meeting a non-object) the later value wins.
pub fn merge_maps(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => {
                merge_maps(existing, incoming)
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

fn encode<T: Serialize>(key: &str, value: T) -> Result<Value, ContextError> {
    serde_json::to_value(value).map_err(|e| ContextError::Serialize {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(key: &str, value: &Value) -> Result<T, ContextError> {
    T::deserialize(value).map_err(|e| ContextError::TypeMismatch {
        key: key.to_string(),
        expected: std::any::type_name::<T>(),
        found: json_kind(value).to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx(v: Value) -> Context {
        Context::from_value(v).expect("object")
    }

    #[test]
    fn typed_access_and_errors() {
        let mut c = Context::new();
        c.insert("n", 3).expect("insert");
        assert_eq!(c.get::<i64>("n").expect("get"), 3);
        assert!(matches!(
            c.insert("n", 4),
            Err(ContextError::KeyExists { .. })
        ));
        c.update("n", 5).expect("update");
        assert_eq!(c.get::<i64>("n").expect("get"), 5);
        let err = c.update("missing", 1).expect_err("update of missing key");
        assert_eq!(
            err.to_string(),
            "context key 'missing' not found; available keys: ['n']"
        );
        let err = c.get::<String>("n").expect_err("type mismatch");
        assert!(err.to_string().contains("holds a number"), "{err}");
        assert_eq!(c.get_opt::<i64>("absent").expect("opt"), None);
        assert!(Context::from_value(json!([1])).is_err());
    }

    #[test]
    fn merge_is_not_associative_across_kinds() {
        // Found by the property tests: an array between two objects resets the key.
        let (a, b, c) = (
            ctx(json!({"d": {"b": null}})),
            ctx(json!({"d": []})),
            ctx(json!({"d": {}})),
        );
        assert_eq!(Context::merged([&a, &b, &c]).into_value(), json!({"d": {}}));
        assert_eq!(
            Context::merged([&a, &Context::merged([&b, &c])]).into_value(),
            json!({"d": {"b": null}})
        );
    }

    #[test]
    fn merge_is_deep_and_later_wins() {
        let mut a = ctx(json!({"x": {"a": 1, "b": 2}, "list": [1, 2], "s": "old"}));
        a.merge(&ctx(
            json!({"x": {"b": 3, "c": 4}, "list": [9], "s": {"now": "object"}}),
        ));
        assert_eq!(
            a.into_value(),
            json!({"x": {"a": 1, "b": 3, "c": 4}, "list": [9], "s": {"now": "object"}})
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_ctx() -> impl Strategy<Value = Context> {
        prop::collection::btree_map("[a-d]", arb_json(), 0..4)
            .prop_map(|m| Context::from_map(m.into_iter().collect()))
    }

    proptest! {
        /// Merging is a left fold: merging a list equals merging the merge of its prefix with the
        /// rest, so a partial merge can be cached. (The rule is *not* associative in general: a
        /// scalar or array between two objects resets the key, so order of grouping matters and
        /// the engine always folds left in declared order.)
        #[test]
        fn merge_is_a_left_fold(a in arb_ctx(), b in arb_ctx(), c in arb_ctx()) {
            let all = Context::merged([&a, &b, &c]);
            let prefix = Context::merged([&Context::merged([&a, &b]), &c]);
            prop_assert_eq!(all, prefix);
        }

        /// Associative whenever no key holds an object in one context and a non-object in another
        /// at the same path (here: flat contexts of scalars).
        #[test]
        fn merge_is_associative_for_flat_contexts(
            a in prop::collection::btree_map("[a-d]", any::<i32>(), 0..4),
            b in prop::collection::btree_map("[a-d]", any::<i32>(), 0..4),
            c in prop::collection::btree_map("[a-d]", any::<i32>(), 0..4),
        ) {
            let to_ctx = |m: std::collections::BTreeMap<String, i32>| Context::from_map(m.into_iter().map(|(k, v)| (k, json!(v))).collect());
            let (a, b, c) = (to_ctx(a), to_ctx(b), to_ctx(c));
            prop_assert_eq!(Context::merged([&Context::merged([&a, &b]), &c]), Context::merged([&a, &Context::merged([&b, &c])]));
        }

        /// Every top-level key of the later context is present in the result with a value that
        /// is at least the later value (deep-merged when both are objects).
        #[test]
        fn later_value_wins(a in arb_ctx(), b in arb_ctx()) {
            let m = Context::merged([&a, &b]);
            for (k, v) in b.as_map() {
                let got = m.get_value(k).expect("key kept");
                match (a.get_value(k), v) {
                    (Some(Value::Object(_)), Value::Object(_)) => prop_assert!(got.is_object()),
                    _ => prop_assert_eq!(got, v),
                }
            }
            for k in a.keys() {
                prop_assert!(m.contains_key(k));
            }
        }

        /// Idempotent: applying the same overlay twice changes nothing more.
        #[test]
        fn merge_is_idempotent(a in arb_ctx(), b in arb_ctx()) {
            let once = Context::merged([&a, &b]);
            let twice = Context::merged([&once, &b]);
            prop_assert_eq!(once, twice);
        }

        /// Deterministic serialization: the same merge gives the same bytes.
        #[test]
        fn merge_is_deterministic(a in arb_ctx(), b in arb_ctx()) {
            prop_assert_eq!(Context::merged([&a, &b]).to_json(), Context::merged([&a, &b]).to_json());
        }
    }
}
