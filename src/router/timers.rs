//! The router core's timers. The core does no I/O and reads no clock of its
//! own accord: it takes the time from its [`Clock`] (the system clock in a
//! running router, a hand-moved one in tests and the fuzz target), and the
//! shard's timer task calls [`Router::on_time`](super::Router::on_time) when
//! [`Router::next_deadline`](super::Router::next_deadline) has come. So
//! timeouts are tested without sockets and without sleeping.
//!
//! Timers are kept in deadline order in a B-tree and removed as soon as what
//! they time out is over (a call answered, a caller gone), so the table never
//! holds more than what is pending.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::wamp::Id;

/// Where the core takes the time from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `Instant::now()`.
    #[default]
    System,
    /// A clock moved by hand (tests, fuzzing).
    Manual(Rc<Cell<Instant>>),
}

impl Clock {
    /// A hand-moved clock starting now, and the handle that moves it.
    pub fn manual() -> (Clock, Rc<Cell<Instant>>) {
        let cell = Rc::new(Cell::new(Instant::now()));
        (Clock::Manual(cell.clone()), cell)
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(t) => t.get(),
        }
    }
}

/// What a timer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// A call's `timeout`: (caller session, CALL request ID).
    CallTimeout { caller: Id, request: Id },
    /// A scatter/gather's deadline.
    Gather { id: u64 },
    /// A killed session's connection that has not answered GOODBYE.
    Closing { conn: u64 },
    /// A login that has not completed its CHALLENGE / AUTHENTICATE.
    AuthTimeout { conn: u64 },
    /// One of the router's own calls (authenticator, authorizer).
    RouterCall { request: u64 },
}

/// The key of one timer: its deadline, then a sequence number.
pub(super) type TimerKey = (Instant, u64);

/// Pending timers of one shard.
#[derive(Debug, Default)]
pub(super) struct Timers {
    due: BTreeMap<TimerKey, Due>,
    seq: u64,
    /// The shard's timer task, to wake when an earlier deadline appears.
    waker: Option<Waker>,
}

impl Timers {
    /// Starts a timer; returns its key, for [`Timers::cancel`].
    pub(super) fn start(&mut self, now: Instant, after: Duration, what: Due) -> TimerKey {
        self.seq += 1;
        let deadline = now.checked_add(after).unwrap_or(now + Duration::from_secs(86_400 * 365 * 100));
        let key = (deadline, self.seq);
        let earliest = self.due.keys().next().map(|k| k.0);
        self.due.insert(key, what);
        if earliest.is_none_or(|e| deadline < e) {
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
        key
    }

    /// Stops a timer that has not fired.
    pub(super) fn cancel(&mut self, key: TimerKey) {
        self.due.remove(&key);
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.due.keys().next().map(|k| k.0)
    }

    /// Takes the next timer due at `now`, if any.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        let (&key, _) = self.due.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.due.remove(&key)
    }

    /// The timer task to wake when an earlier deadline is set.
    pub(super) fn set_waker(&mut self, waker: &Waker) {
        self.waker = Some(waker.clone());
    }

    /// Number of pending timers.
    pub(super) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_never() {
        let (clock, hand) = Clock::manual();
        let t0 = clock.now();
        let mut timers = Timers::default();
        let a = Due::CallTimeout { caller: 1, request: 1 };
        let b = Due::CallTimeout { caller: 1, request: 2 };
        let c = Due::CallTimeout { caller: 2, request: 1 };
        timers.start(t0, Duration::from_millis(30), a);
        let kb = timers.start(t0, Duration::from_millis(10), b);
        timers.start(t0, Duration::from_millis(20), c);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(10)));
        timers.cancel(kb);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(timers.pop_due(clock.now()), None, "nothing is due at the start");
        hand.set(t0 + Duration::from_millis(25));
        assert_eq!(timers.pop_due(clock.now()), Some(c));
        assert_eq!(timers.pop_due(clock.now()), None);
        hand.set(t0 + Duration::from_secs(1));
        assert_eq!(timers.pop_due(clock.now()), Some(a));
        assert_eq!(timers.len(), 0);
        // a timeout beyond what an Instant holds is pushed far out, not a panic
        timers.start(t0, Duration::from_millis(u64::MAX), a);
        assert_eq!(timers.pop_due(clock.now()), None);
    }
}
