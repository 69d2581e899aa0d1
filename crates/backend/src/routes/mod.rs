//! The HTTP routes, one module per area, composed in [`crate::app`].

pub mod admin;
pub mod data;
pub mod extract;
pub mod faults;
pub mod health;
pub mod messages;
pub mod slow;
pub mod stream;
