//! The client's HTTP routes, one module per area, composed in [`crate::app`].

pub mod api_paths;
pub mod book;
pub mod fetch;
pub mod load;
pub mod proxy;
pub mod security_headers;
pub mod status;
pub mod stream;
