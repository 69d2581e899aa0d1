//! hyper's timer for main-lane connections: deadlines checked when the connection wakes, never
//! registered with tokio's timer wheel.
//!
//! # Why
//! hyper's header-read timeout makes a new timer for every request on a keep-alive connection
//! (it drops the last one when a head arrives), and a tokio timer is registered and removed
//! under the timer driver's lock. With two workers those locks contend: in a profile of the
//! client's `/fetch` the timer driver's lock was the largest source of futex calls, and the
//! header-read timer was one of three timers per request (issue 17).
//!
//! # What keeps it honest
//! A [`CoarseSleep`] never asks to be woken; it answers `Ready` once its deadline has passed,
//! whenever it is polled. hyper polls it each time the connection's task runs while a head
//! is being read: when a byte arrives (so a trickled header is cut at its first byte past the
//! deadline), and when the connection's idle clock ticks, which `accept` sets to every half of
//! the shorter of the two timeouts. A silent connection is therefore closed between one and
//! one and a half header-read timeouts after its head began, as the idle timeout already is.
//! Only the main lane has that clock; the overflow lane keeps tokio's timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CoarseTimer;

impl Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep { deadline })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(coarse) => coarse.get_mut().deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// Ready once `deadline` has passed, when polled; registers no waker.
#[derive(Debug)]
pub(super) struct CoarseSleep {
    deadline: Instant,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll(sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_sleep_is_ready_once_its_deadline_has_passed_and_reset_moves_it() {
        let timer = CoarseTimer;
        let mut passed = timer.sleep_until(Instant::now());
        assert!(poll(&mut passed).is_ready());

        let mut later = timer.sleep(Duration::from_secs(60));
        assert!(poll(&mut later).is_pending());
        timer.reset(&mut later, Instant::now());
        assert!(poll(&mut later).is_ready());
        timer.reset(&mut later, Instant::now() + Duration::from_secs(60));
        assert!(poll(&mut later).is_pending());
    }
}
