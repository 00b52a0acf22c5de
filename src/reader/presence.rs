//! Presence: turns "the reader saw tag T" reports into arrivals.
//!
//! A tag held on a reader is reported many times (every poll, or every
//! frame a push reader repeats); it is one tap. It counts as gone once it
//! has not been seen for `absence` (default 300 ms), tracked per tag, so
//! lifting it and tapping again is a new arrival. Pure: the caller passes
//! the time.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Presence {
    absence: Duration,
    last_seen: HashMap<Vec<u8>, Instant>,
}

impl Presence {
    #[must_use]
    pub fn new(absence: Duration) -> Self {
        Self {
            absence,
            last_seen: HashMap::new(),
        }
    }

    /// The reader saw `uid` at `now`. True if this is an arrival.
    pub fn seen(&mut self, uid: &[u8], now: Instant) -> bool {
        self.expire(now);
        self.last_seen.insert(uid.to_vec(), now).is_none()
    }

    /// Forget tags not seen for the absence time; returns how many left.
    pub fn expire(&mut self, now: Instant) -> usize {
        let absence = self.absence;
        let before = self.last_seen.len();
        self.last_seen
            .retain(|_, seen| now.duration_since(*seen) < absence);
        before - self.last_seen.len()
    }

    /// The reader says the tag was lifted (text sketches that report it).
    pub fn removed_all(&mut self) {
        self.last_seen.clear();
    }

    /// Tags currently on the reader.
    #[must_use]
    pub fn present(&self) -> usize {
        self.last_seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_tag_is_one_arrival_and_a_lifted_one_comes_back() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Presence::new(Duration::from_millis(300));
        assert!(p.seen(b"A", ms(0)));
        for n in (100..1000).step_by(100) {
            assert!(!p.seen(b"A", ms(n)), "held at {n} ms");
        }
        // Another tag at the same time is its own arrival.
        assert!(p.seen(b"B", ms(1100)));
        // Lifted: not seen from 900 until 1300 → gone.
        assert_eq!(p.expire(ms(1250)), 1);
        assert!(p.seen(b"A", ms(1300)));
        assert_eq!(p.present(), 2);
    }

    #[test]
    fn removal_report_clears() {
        let t0 = Instant::now();
        let mut p = Presence::new(Duration::from_secs(10));
        assert!(p.seen(b"A", t0));
        p.removed_all();
        assert!(p.seen(b"A", t0));
    }
}
