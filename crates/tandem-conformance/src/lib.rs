//! # tandem-conformance
//!
//! The conformance suite shared by every execution mode: the PyTorch reference cases of
//! `tests/fixtures/parity` (see its README) mapped onto Tandem ops generically over
//! [`tandem_ir::Emit`], a reference [`tape::Tape`] that applies the shared gradient rules to
//! plain tensors, float64 finite differences, and comparison helpers.

pub mod apply;
pub mod check;
pub mod manifest;
pub mod tape;

pub use apply::apply;
pub use check::{assert_close, numerical_vjp, prepare_inputs};
pub use manifest::{parity_dir, Case, Manifest, OptimizerCase, Tolerance};
