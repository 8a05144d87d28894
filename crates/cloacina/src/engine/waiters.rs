//! Who waits for which execution's end. The store's signal reaches every subscriber on every
//! end; a waiter subscribed to it would be woken by each of them (with 150 runs awaited at
//! once, 150 wake-ups per end). Instead the runner's signal loop wakes the waiters of the
//! execution that ended, and only those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

use crate::sync::lock;

#[derive(Default)]
pub(crate) struct Waiters {
    /// Per awaited execution: its wake-up channel (the value counts wake-ups) and how many
    /// wait on it.
    map: Mutex<HashMap<Uuid, (watch::Sender<u64>, usize)>>,
}

/// One waiter's registration; dropping it unregisters.
pub(crate) struct Waiter {
    waiters: Arc<Waiters>,
    id: Uuid,
    woken: watch::Receiver<u64>,
}

impl Waiters {
    /// Registers a wait on `id`. Register before reading the execution's status: an end
    /// signalled between the read and [`Waiter::woken`] is then not missed.
    pub(crate) fn register(self: &Arc<Self>, id: Uuid) -> Waiter {
        let mut map = lock(&self.map);
        let entry = map.entry(id).or_insert_with(|| (watch::channel(0).0, 0));
        entry.1 += 1;
        let woken = entry.0.subscribe();
        Waiter {
            waiters: self.clone(),
            id,
            woken,
        }
    }

    /// Wakes the waiters of `id` (if any).
    pub(crate) fn wake(&self, id: Uuid) {
        if let Some((tx, _)) = lock(&self.map).get(&id) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every waiter: signals may have been lost, each should look again.
    pub(crate) fn wake_all(&self) {
        for (tx, _) in lock(&self.map).values() {
            tx.send_modify(|n| *n += 1);
        }
    }
}

impl Waiter {
    /// Resolves once the execution was signalled as ended (or signals may have been lost)
    /// since the registration or the previous wake-up. Never resolves if the runner's signal
    /// loop is gone; callers keep a safety-net timer.
    pub(crate) async fn woken(&mut self) {
        if self.woken.changed().await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = lock(&self.waiters.map);
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken_within(w: &mut Waiter, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), w.woken())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_the_waiters_of_the_ended_execution_wake() {
        let waiters = Arc::new(Waiters::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut on_a = waiters.register(a);
        let mut also_on_a = waiters.register(a);
        let mut on_b = waiters.register(b);
        waiters.wake(a);
        assert!(woken_within(&mut on_a, 1000).await);
        assert!(woken_within(&mut also_on_a, 1000).await);
        assert!(!woken_within(&mut on_b, 50).await, "b did not end");
        waiters.wake_all();
        assert!(woken_within(&mut on_b, 1000).await);
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_the_last_waiter_unregisters() {
        let waiters = Arc::new(Waiters::default());
        let id = Uuid::new_v4();
        let mut w = waiters.register(id);
        waiters.wake(id);
        assert!(
            woken_within(&mut w, 1000).await,
            "woken although it waited late"
        );
        assert!(
            !woken_within(&mut w, 50).await,
            "one wake-up, one resolution"
        );
        let other = waiters.register(id);
        drop(w);
        assert_eq!(lock(&waiters.map).len(), 1);
        drop(other);
        assert!(lock(&waiters.map).is_empty());
    }
}
