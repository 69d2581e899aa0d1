//! The future a [`super::CircuitBreaker`] call returns.
//!
//! Either a refusal that resolves at once, or the inner call, whose outcome is classified
//! and recorded when it completes. Dropping the future before that drops the permit, which
//! counts the call as ignored and frees its half-open slot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;

use super::classify::Classify;
use super::error::CircuitOpen;
use super::state::Permit;

pin_project! {
    /// Response future of [`super::CircuitBreaker`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Rejected {
            error: CircuitOpen,
        },
        Called {
            #[pin]
            future: F,
            // `None` once the outcome has been recorded.
            permit: Option<Permit>,
            started: Instant,
            classifier: C,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    /// A refusal: resolves at once to `Err(CircuitOpen)`.
    pub(super) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error },
        }
    }

    /// The inner call, admitted by `permit` at `started`.
    pub(super) fn called(future: F, permit: Permit, started: Instant, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                started,
                classifier,
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(*error))),
            KindProj::Called {
                future,
                permit,
                started,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                let now = Instant::now();
                if let Some(permit) = permit.take() {
                    let outcome = classifier.classify(result.as_ref());
                    permit.record(outcome, now.saturating_duration_since(*started), now);
                }
                Poll::Ready(result)
            }
        }
    }
}
