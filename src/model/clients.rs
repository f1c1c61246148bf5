//! Client connections: how many are open (for `--max-clients`, drain and
//! status) and the ids sessions take.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub struct Clients {
    open: AtomicUsize,
    next_id: AtomicU64,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients {
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        }
    }
}

impl Clients {
    /// Counts a new connection unless `max` are open already.
    pub fn try_open(&self, max: usize) -> bool {
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn close(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_max_and_frees_on_close() {
        let c = Clients::default();
        assert!(c.try_open(2));
        assert!(c.try_open(2));
        assert!(!c.try_open(2));
        assert_eq!(c.open(), 2);
        c.close();
        assert!(c.try_open(2));
        assert_eq!((c.next_id(), c.next_id()), (1, 2));
    }
}
