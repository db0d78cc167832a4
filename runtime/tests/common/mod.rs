//! Helpers shared by the runtime's integration tests.

/// A visible skip (see [`runtime::test_support::skip`]).
pub use runtime::test_support::skip;
