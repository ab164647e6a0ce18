//! One NetworkPolicy review at a time per namespace. The rules judge a change
//! against the rest of its namespace, so two reviews in one namespace that
//! overlap could each pass against a state without the other's change.
//! Reviews in different namespaces never wait for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Mutex as TurnMutex, OwnedMutexGuard};

/// Per-namespace async locks, created on first use and removed when no
/// review holds or waits for them, so the map holds only busy namespaces.
#[derive(Debug)]
pub struct NamespaceLocks {
    locks: Mutex<HashMap<String, Arc<TurnMutex<()>>>>,
    wait: Histogram,
}

/// A namespace's turn: held while a review is judged and recorded.
#[derive(Debug)]
pub struct NamespaceTurn<'a> {
    locks: &'a NamespaceLocks,
    namespace: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl NamespaceLocks {
    /// Locks that record in `wait` how long reviews that found their
    /// namespace busy waited.
    pub fn new(wait: Histogram) -> NamespaceLocks {
        NamespaceLocks {
            locks: Mutex::new(HashMap::new()),
            wait,
        }
    }

    /// Waits for `namespace`'s turn (first come, first served). Dropping the
    /// future while it waits gives the place up.
    pub async fn lock(&self, namespace: &str) -> NamespaceTurn<'_> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(namespace.to_string()).or_default())
        };
        let guard = match Arc::clone(&mutex).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                let started = Instant::now();
                let guard = mutex.lock_owned().await;
                self.wait.observe(started.elapsed().as_secs_f64());
                guard
            }
        };
        NamespaceTurn {
            locks: self,
            namespace: namespace.to_string(),
            guard: Some(guard),
        }
    }

    /// How many namespaces have a review holding or waiting for their lock.
    pub fn busy(&self) -> usize {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for NamespaceTurn<'_> {
    fn drop(&mut self) {
        // Under the map's lock nobody can pick up the namespace's mutex, so a
        // count of one (the map's own) means nobody holds or waits for it.
        let mut locks = self.locks.locks.lock().unwrap_or_else(PoisonError::into_inner);
        drop(self.guard.take());
        if locks
            .get(&self.namespace)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            locks.remove(&self.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::metrics::OverlayMetrics;

    fn waited(locks: &NamespaceLocks) -> u64 {
        // The histogram's count, read through its exposition.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("wait", "", locks.wait.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("wait_count "))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    // A current-thread runtime: the spawned review runs exactly when the test yields.
    #[tokio::test]
    async fn a_second_review_in_the_namespace_waits_and_the_map_empties() {
        let locks = Arc::new(NamespaceLocks::new(OverlayMetrics::default().lock_wait));
        let first = locks.lock("shop").await;
        let other = locks.lock("bank").await;
        assert_eq!(waited(&locks), 0, "free namespaces do not wait");
        drop(other);
        assert_eq!(locks.busy(), 1);

        let (entered_tx, mut entered) = tokio::sync::oneshot::channel();
        let second = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move {
                let _turn = locks.lock("shop").await;
                let _ = entered_tx.send(());
            }
        });
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        assert!(entered.try_recv().is_err(), "the second review must wait for the first");
        assert_eq!(locks.busy(), 1);
        drop(first);
        second.await.unwrap();
        assert!(entered.try_recv().is_ok());
        assert_eq!(waited(&locks), 1);
        assert_eq!(locks.busy(), 0, "no entry is left behind");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_entry() {
        let locks = Arc::new(NamespaceLocks::new(OverlayMetrics::default().lock_wait));
        let first = locks.lock("shop").await;
        let waiter = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move {
                let _turn = locks.lock("shop").await;
            }
        });
        tokio::task::yield_now().await;
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        drop(first);
        assert_eq!(locks.busy(), 0);
    }
}
