//! The error a call gets when the breaker refuses it.
//!
//! A unit struct, so the HTTP edge can recognise it by downcasting the `BoxError` a stack
//! returns (`error.downcast_ref::<CircuitOpen>()`) and answer 503 without a backend call.

/// The circuit is open (or half-open with every trial slot taken): the call was refused
/// without reaching the inner service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, thiserror::Error)]
#[error("circuit open")]
pub struct CircuitOpen;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_reads_circuit_open() {
        assert_eq!(CircuitOpen.to_string(), "circuit open");
    }

    #[test]
    fn a_boxed_refusal_can_be_recognised_by_downcasting() {
        let error: tower::BoxError = Box::new(CircuitOpen);
        assert!(error.downcast_ref::<CircuitOpen>().is_some());
    }
}
