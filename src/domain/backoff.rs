//! Capped doubling back-off, the one used by every retry loop (readers,
//! D-Bus watchers, identity lookups, XMPP, herd links).
//!
//! Pure arithmetic: the caller sleeps, and passes in jitter if it wants any.

use std::time::Duration;

/// Waits that start at `first`, double after each failure up to `max`, and
/// start over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The wait before the next attempt, without counting a failure.
    #[must_use]
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// An attempt failed: the wait before the next one (and double it).
    pub fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// An attempt worked: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Whether the next wait is back at the start.
    #[must_use]
    pub fn is_reset(&self) -> bool {
        self.next == self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_starts_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let waits: Vec<Duration> = (0..5).map(|_| b.fail()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(b.peek(), ms(500));
        b.reset();
        assert!(b.is_reset());
        assert_eq!(b.fail(), ms(100));
    }
}
