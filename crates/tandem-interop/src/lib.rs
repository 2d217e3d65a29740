//! # tandem-interop
//!
//! Moving data and models between Tandem's eager and graph modes.
//!
//! - [`crossing`]: eager tensors fed to a [`tandem_graph::Session`] and fetched values used
//!   eagerly without copying elements ([`run_eager`]).
//! - [`trace`](mod@trace): record what eager code does into a graph ([`trace()`],
//!   [`trace_module`], [`trace_with`]); inputs become placeholders with an unknown batch
//!   dimension, parameters variables named after the module (`fc1/weight`).
//! - [`state`]: state dicts between eager modules and graph variables, both ways.
//! - [`export`]: a graph (e.g. a traced model) to ONNX ([`export_onnx`]).
//!
//! ```
//! use tandem_eager::nn::{Linear, Module};
//! use tandem_eager::Tensor;
//! use tandem_graph::Session;
//! use tandem_interop::{run_eager, trace_module};
//!
//! let fc = Linear::new(4, 2, true)?;
//! let x = Tensor::ones(&[3, 4], tandem_eager::DType::F32);
//! let traced = trace_module(&fc, &x)?;
//! let sess = Session::new(&traced.graph)?;
//! let y = run_eager(&sess, &[&traced.outputs[0]], &[(&traced.inputs[0], &x)])?;
//! assert_eq!(y[0].to_vec::<f32>()?, fc.forward(&x)?.to_vec::<f32>()?);
//! # Ok::<(), tandem_eager::Error>(())
//! ```

pub mod crossing;
pub mod export;
pub mod state;
pub mod trace;

pub use crossing::{from_fetch, run_eager, to_feed};
pub use export::{export_onnx, to_export_graph};
pub use state::{graph_state_dict, load_state_dict_into_session, variables_from_state_dict};
pub use trace::{eager_name, graph_name, trace, trace_module, trace_with, TraceOptions, Traced};
