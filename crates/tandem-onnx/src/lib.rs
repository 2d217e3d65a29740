//! # tandem-onnx
//!
//! ONNX interchange for Tandem, written against `tandem-ir` so that every execution mode can
//! use it:
//! - [`mod@import`]: an `.onnx` model applied through any [`tandem_ir::Emit`]; graph inputs and
//!   initializers become values through [`ImportHooks`] (placeholders and variables in graph
//!   mode, fed tensors and constants in [`OnnxModel`], which runs models on plain tensors);
//! - [`mod@export`]: a neutral description of an inference graph ([`ExportGraph`], which
//!   [`Recorder`] builds from any code written against `EmitExt` / `Functional`) written as
//!   an ONNX model at opset 13 or 17;
//! - [`graph_bridge`]: `.onnx` to a `tandem_graph::Graph` (placeholders, trainable variables)
//!   and a graph with a session's variable values back to `.onnx`.
//!
//! The protobuf messages are declared in [`proto`] with `prost` (no `protoc` needed). Every
//! reader treats its input as hostile: a corrupt or truncated file, a lying tensor size or an
//! unsupported op is an error naming the tensor or node, never a panic.

pub mod export;
pub mod graph_bridge;
pub mod import;
mod model;
pub mod proto;
pub mod tensor_proto;

pub use export::{
    export, save, to_model_proto, ExportGraph, ExportInput, ExportNode, Recorded, Recorder,
    RecorderHooks, ValueRef,
};
pub use import::{
    import, import_bytes, parse, parse_file, GraphInput, ImportHooks, Imported, ParsedModel,
};
pub use model::{EvalHooks, OnnxModel};
