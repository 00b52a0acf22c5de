//! The replay ring: the latest taps announced, so an event stream that
//! reconnects with `Last-Event-ID` gets exactly the taps it missed (or,
//! when some are no longer kept, the whole state instead).

/// The latest taps announced, for event streams that reconnect with
/// `Last-Event-ID`: every tap with a seq in `(base, through]` is here, where
/// `base` is the seq before the oldest kept (or `through` when empty).
#[derive(Debug)]
pub struct TapRing<T> {
    items: std::collections::VecDeque<(u64, T)>,
    through: u64,
}

/// Taps kept for replay: a client away for longer gets the whole state.
pub const TAP_RING: usize = 1024;

impl<T: Clone> TapRing<T> {
    /// A ring that has seen every tap up to `through`, and keeps none.
    #[must_use]
    pub fn new(through: u64) -> Self {
        Self {
            items: std::collections::VecDeque::new(),
            through,
        }
    }

    pub fn push(&mut self, seq: u64, item: T) {
        self.items.push_back((seq, item));
        self.through = seq;
        if self.items.len() > TAP_RING {
            self.items.pop_front();
        }
    }

    /// The highest seq seen (`u64::MAX` after [`Self::break_off`], until
    /// the next push).
    #[must_use]
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Some taps were lost on the way here: nothing before the next one can
    /// be replayed.
    pub fn break_off(&mut self) {
        self.items.clear();
        self.through = u64::MAX;
    }

    /// The taps after `last`, or `None` when some of them are not kept.
    #[must_use]
    pub fn after(&self, last: u64) -> Option<Vec<T>> {
        let base = self.items.front().map_or(self.through, |(seq, _)| seq - 1);
        (base <= last && last <= self.through).then(|| {
            self.items
                .iter()
                .filter(|(seq, _)| *seq > last)
                .map(|(_, t)| t.clone())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_ring_replays_only_what_it_holds_whole() {
        let mut r: TapRing<u64> = TapRing::new(5);
        assert_eq!(r.after(5), Some(vec![]), "nothing missed");
        assert_eq!(r.after(4), None, "seq 5 is not kept");
        assert_eq!(r.after(6), None, "not announced yet");
        r.push(6, 6);
        r.push(7, 7);
        assert_eq!(r.after(5), Some(vec![6, 7]));
        assert_eq!(r.after(6), Some(vec![7]));
        assert_eq!(r.after(7), Some(vec![]));
        assert_eq!(r.after(4), None);
        for s in 8..8 + TAP_RING as u64 {
            r.push(s, s);
        }
        let oldest = 8 + TAP_RING as u64 - TAP_RING as u64;
        assert_eq!(r.after(oldest - 2), None, "fell out");
        assert_eq!(r.after(oldest - 1).map(|v| v.len()), Some(TAP_RING));
        // Taps lost on the way: nothing before the next one replays.
        r.break_off();
        let next = 8 + TAP_RING as u64;
        assert_eq!(r.after(next - 1), None);
        r.push(next, next);
        assert_eq!(r.after(next - 1), Some(vec![next]));
        assert_eq!(r.after(next - 2), None);
    }
}
