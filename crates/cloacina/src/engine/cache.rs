//! Contexts this runner wrote or read, kept in memory. A context never changes once written
//! (an execution's input, a task's committed output), so a cached copy is always right; it
//! saves the database read of a task's inputs when its dependencies ran here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use uuid::Uuid;

use crate::workflow::Context;

pub(crate) struct ContextCache {
    map: HashMap<(Uuid, String), Arc<Context>>,
    order: VecDeque<(Uuid, String)>,
    capacity: usize,
}

impl ContextCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn get(&self, execution: Uuid, owner: &str) -> Option<Arc<Context>> {
        self.map.get(&(execution, owner.to_string())).cloned()
    }

    /// Adds a document, evicting the oldest beyond capacity.
    pub(crate) fn put(&mut self, execution: Uuid, owner: &str, ctx: Arc<Context>) {
        if self.capacity == 0 {
            return;
        }
        let key = (execution, owner.to_string());
        if self.map.insert(key.clone(), ctx).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_beyond_capacity() {
        let mut c = ContextCache::new(2);
        let id = Uuid::now_v7();
        for owner in ["a", "b", "c"] {
            c.put(id, owner, Arc::new(Context::new()));
        }
        assert!(c.get(id, "a").is_none());
        assert!(c.get(id, "b").is_some() && c.get(id, "c").is_some());
    }
}
