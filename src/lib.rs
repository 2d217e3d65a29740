//! # Tandem
//!
//! A Rust deep-learning framework with two execution modes over one op vocabulary, one set of
//! gradient rules and one set of kernels.
pub use tandem_graph as graph;
pub use tandem_tensor as tensor;
