//! The service gives every press a fresh UUID and its producer is
//! idempotent, so two records with one `request_id` come from something
//! else writing to the topic (a replay, a buggy producer). The reducer
//! remembers the last `window` ids it applied and sends a repeat to the
//! dead-letter topic instead of counting it.
//!
//! The window lives in memory: it starts empty after a restart, and is
//! cleared when the reducer rewinds, since the records it re-reads then
//! are ones it dropped, not repeats. Exactly-once for the service's own
//! records never depends on it (offsets do that).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct RecentIds {
    window: usize,
    // One allocation per id, shared by the order and the set.
    order: VecDeque<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

impl RecentIds {
    pub fn new(window: usize) -> RecentIds {
        RecentIds {
            window,
            ..RecentIds::default()
        }
    }

    /// Records `id`; false when it is already in the window.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.window == 0 {
            return true;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.window
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.order.push_back(id.clone());
        self.seen.insert(id);
        true
    }

    pub fn clear(&mut self) {
        self.order.clear();
        self.seen.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_caught_and_old_ids_forgotten() {
        let mut r = RecentIds::new(2);
        assert!(r.first_time("a"));
        assert!(!r.first_time("a"));
        assert!(r.first_time("b"));
        assert!(r.first_time("c")); // "a" leaves the window
        assert!(r.first_time("a"));
        assert!(!r.first_time("c"));
        r.clear();
        assert!(r.first_time("c"));
    }

    #[test]
    fn a_zero_window_is_off() {
        let mut r = RecentIds::new(0);
        assert!(r.first_time("a") && r.first_time("a"));
    }
}
