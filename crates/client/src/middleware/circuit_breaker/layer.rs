//! The [`tower::Layer`] that wraps a service in a [`CircuitBreaker`].

use std::sync::Arc;

use tower::Layer;

use super::service::CircuitBreaker;
use super::state::Breaker;

/// Wraps services in a [`CircuitBreaker`] sharing one [`Breaker`]: every service the layer
/// builds, and every clone of them, sees the same state.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer recording outcomes in `breaker` as `classifier` judges them.
    pub fn new(breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            breaker,
            classifier,
        }
    }

    /// The shared state, for `/status` and metrics.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, Arc::clone(&self.breaker), self.classifier.clone())
    }
}
