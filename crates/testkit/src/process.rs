//! What every server a test starts needs: waiting until it answers, with a deadline, and
//! ending its process for good.

use std::future::Future;
use std::process::Child;
use std::time::{Duration, Instant};

/// Polls `ready` every `every` until it is true; panics with `what` once `within` has passed.
pub(crate) async fn wait_until<F, Fut>(within: Duration, every: Duration, what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ready().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(every).await;
    }
}

/// Kills the process (SIGKILL, which ends even a SIGSTOPped one) and waits until it is gone.
pub(crate) fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
