//! When each request is due, and from when its latency counts.
//!
//! # Why latency is measured from the intended send time
//! A closed-loop generator (each connection sends its next request when the previous answer
//! arrives) slows down exactly when the server stalls, so it sends few requests during the
//! stall and records only one slow one: *coordinated omission* (Gil Tene). The open-loop mode
//! decides up front that request *i* is due at `start + i / rate`; if the server (or a busy
//! connection) makes it leave late, the wait counts as latency, as a real user arriving at
//! that moment would have experienced it. This is what wrk2 does.
//!
//! A connection that was idle when its request fell due waits on a timer, and tokio's timers
//! fire on a 1 ms tick: the send leaves up to a millisecond late through no fault of the
//! server. Such a request's latency counts from when it actually left; only a request that
//! was already overdue when a connection became free (the server kept every connection busy)
//! counts from its due time.

use std::time::Duration;

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Each connection sends as soon as its previous answer arrives.
    Closed,
    /// Requests are due at a constant rate, whatever the answers do.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

impl Schedule {
    /// When request `index` is due, relative to the start; `None` means "now".
    pub fn due(&self, index: u64) -> Option<Duration> {
        match self {
            Self::Closed => None,
            Self::Open { rate } => Some(Duration::from_secs_f64(index as f64 / rate)),
        }
    }

    /// The latency of a request that was due at `due`, taken by a free connection at `claimed`,
    /// sent at `sent` and answered at `done`, all relative to the start.
    pub fn latency(
        due: Option<Duration>,
        claimed: Duration,
        sent: Duration,
        done: Duration,
    ) -> Duration {
        match due {
            Some(due) if claimed >= due => done.saturating_sub(due),
            _ => done.saturating_sub(sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_requests_are_due_at_a_constant_rate() {
        let schedule = Schedule::Open { rate: 200.0 };
        assert_eq!(schedule.due(0), Some(Duration::ZERO));
        assert_eq!(schedule.due(1), Some(Duration::from_millis(5)));
        assert_eq!(schedule.due(200), Some(Duration::from_secs(1)));
        assert_eq!(Schedule::Closed.due(7), None);
    }

    #[test]
    fn a_late_send_counts_the_wait_as_latency() {
        // Due at 100 ms, sent at 400 ms because the connection was stuck, answered at 401 ms.
        let ms = Duration::from_millis;
        let due = Some(ms(100));
        assert_eq!(Schedule::latency(due, ms(400), ms(400), ms(401)), ms(301));
        // A closed loop only sees the 1 ms the server took.
        assert_eq!(Schedule::latency(None, ms(400), ms(400), ms(401)), ms(1));
    }

    #[test]
    fn a_late_timer_on_an_idle_connection_is_not_latency() {
        // Taken at 50 ms, due at 100 ms, the timer fired at 101 ms, answered at 101.2 ms.
        let ms = Duration::from_millis;
        let latency = Schedule::latency(
            Some(ms(100)),
            ms(50),
            ms(101),
            Duration::from_micros(101_200),
        );
        assert_eq!(latency, Duration::from_micros(200));
    }

    /// One connection, 100 requests/s for 2 s, and a server that answers in 1 ms except for one
    /// 1 s stall at t = 0.5 s. The open loop records the ~100 requests that queued behind the
    /// stall; the closed loop records a single slow request.
    #[test]
    fn a_stall_is_seen_by_the_open_loop_and_hidden_by_the_closed_loop() {
        let service = |sent: Duration| {
            if sent >= Duration::from_millis(500) && sent < Duration::from_millis(510) {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(1)
            }
        };
        let slow = Duration::from_millis(100);

        let open = Schedule::Open { rate: 100.0 };
        let mut free_at = Duration::ZERO;
        let mut open_slow = 0;
        for index in 0..200 {
            let due = open.due(index);
            let sent = due.unwrap_or_default().max(free_at);
            let done = sent + service(sent);
            let claimed = free_at;
            free_at = done;
            if Schedule::latency(due, claimed, sent, done) > slow {
                open_slow += 1;
            }
        }

        let mut now = Duration::ZERO;
        let mut closed_slow = 0;
        while now < Duration::from_secs(2) {
            let done = now + service(now);
            if Schedule::latency(None, now, now, done) > slow {
                closed_slow += 1;
            }
            now = done;
        }

        assert!(open_slow >= 80, "open loop saw {open_slow} slow requests");
        assert_eq!(closed_slow, 1);
    }
}
