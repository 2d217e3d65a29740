//! Export: a neutral description of an inference graph ([`ExportGraph`]) written as ONNX.
//!
//! An [`ExportGraph`] is a list of graph inputs (name, dtype, dims with `None` = dynamic),
//! initializers (named tensors: the weights), nodes (a Tandem [`Op`] applied to earlier
//! values) and named outputs. Graph mode produces one from its graphs; [`Recorder`] builds one
//! from any code written against `EmitExt` / `Functional`, so a model's forward function can be
//! recorded and exported directly:
//!
//! ```
//! use tandem_ir::{EmitExt, Functional};
//! use tandem_onnx::{export, Recorder};
//! use tandem_tensor::{DType, Tensor};
//! let rec = Recorder::new();
//! let x = rec.input("input", DType::F32, &[None, Some(4)]);
//! let w = rec.initializer("fc.weight", Tensor::zeros(&[2, 4], DType::F32));
//! let b = rec.initializer("fc.bias", Tensor::zeros(&[2], DType::F32));
//! let y = rec.linear(&x, &w, Some(&b)).unwrap();
//! rec.output("logits", &y);
//! let bytes = export(&rec.finish(), 17).unwrap();
//! assert!(!bytes.is_empty());
//! ```

mod lower;
mod recorder;
mod write;

pub use recorder::{Recorded, Recorder, RecorderHooks};
pub use write::{export, save, to_model_proto};

use tandem_ir::{Dim, Op};
use tandem_tensor::{DType, Tensor};

/// A reference to a value of an [`ExportGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueRef {
    /// Graph input `i`.
    Input(usize),
    /// Initializer `i`.
    Initializer(usize),
    /// The output of node `i` (nodes have one output).
    Node(usize),
}

/// A graph input: name, element type and dims (`None` = dynamic, e.g. the batch).
#[derive(Clone, Debug, PartialEq)]
pub struct ExportInput {
    /// The input's name in the ONNX file.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dims; `None` where dynamic (written as a symbolic dim, `N` for the first one).
    pub dims: Vec<Dim>,
}

/// One op applied to earlier values.
#[derive(Clone, Debug)]
pub struct ExportNode {
    /// The node's name (used for ONNX node and value names, and in errors).
    pub name: String,
    /// The op.
    pub op: Op,
    /// Its inputs, which must be graph inputs, initializers or earlier nodes.
    pub inputs: Vec<ValueRef>,
}

/// A neutral inference graph, ready for [`export`].
#[derive(Clone, Debug, Default)]
pub struct ExportGraph {
    /// Graph inputs, in order.
    pub inputs: Vec<ExportInput>,
    /// Named initializers (weights), in order.
    pub initializers: Vec<(String, Tensor)>,
    /// Nodes in topological order.
    pub nodes: Vec<ExportNode>,
    /// Named graph outputs, in order.
    pub outputs: Vec<(String, ValueRef)>,
}
