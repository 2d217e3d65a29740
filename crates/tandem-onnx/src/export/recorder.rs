//! [`Recorder`]: an [`Emit`] that records ops into an [`ExportGraph`].

use super::{ExportGraph, ExportInput, ExportNode, ValueRef};
use crate::import::ImportHooks;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use tandem_ir::{infer, Dim, Emit, Op, ValueInfo};
use tandem_tensor::{DType, Result, Tensor};

/// A value recorded by a [`Recorder`]: where it lives in the graph and its inferred dtype and
/// (partly known) shape.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The value in the graph.
    pub at: ValueRef,
    /// Its dtype and shape.
    pub info: Arc<ValueInfo>,
}

/// An [`Emit`] that records every op into an [`ExportGraph`] instead of running it. Shapes
/// and dtypes are inferred as ops are recorded, so shape errors surface at once.
#[derive(Debug, Default)]
pub struct Recorder {
    graph: RefCell<ExportGraph>,
    seed: Cell<u64>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Adds a graph input (`None` dims are dynamic).
    pub fn input(&self, name: &str, dtype: DType, dims: &[Dim]) -> Recorded {
        let mut g = self.graph.borrow_mut();
        g.inputs.push(ExportInput {
            name: name.to_string(),
            dtype,
            dims: dims.to_vec(),
        });
        Recorded {
            at: ValueRef::Input(g.inputs.len() - 1),
            info: Arc::new(ValueInfo {
                dtype,
                shape: dims.to_vec(),
            }),
        }
    }

    /// Adds a named initializer (a weight).
    pub fn initializer(&self, name: &str, tensor: Tensor) -> Recorded {
        let info = ValueInfo::known(tensor.dtype(), tensor.shape());
        let mut g = self.graph.borrow_mut();
        g.initializers.push((name.to_string(), tensor));
        Recorded {
            at: ValueRef::Initializer(g.initializers.len() - 1),
            info: Arc::new(info),
        }
    }

    /// Marks `value` as the graph output `name`.
    pub fn output(&self, name: &str, value: &Recorded) {
        self.graph
            .borrow_mut()
            .outputs
            .push((name.to_string(), value.at));
    }

    /// Renames the node that produced `value` (node names become ONNX node and value names).
    pub fn name_node(&self, value: &Recorded, name: &str) {
        if let ValueRef::Node(i) = value.at {
            if let Some(n) = self.graph.borrow_mut().nodes.get_mut(i) {
                n.name = name.to_string();
            }
        }
    }

    /// A copy of the graph recorded so far.
    pub fn graph(&self) -> ExportGraph {
        self.graph.borrow().clone()
    }

    /// The recorded graph.
    pub fn finish(self) -> ExportGraph {
        self.graph.into_inner()
    }
}

impl Emit for Recorder {
    type Value = Recorded;

    fn emit(&self, op: Op, inputs: &[&Recorded]) -> Result<Recorded> {
        let infos: Vec<ValueInfo> = inputs.iter().map(|v| (*v.info).clone()).collect();
        let info = infer(&op, &infos)?;
        let mut g = self.graph.borrow_mut();
        let name = format!("{}_{}", op.name(), g.nodes.len());
        g.nodes.push(ExportNode {
            name,
            op,
            inputs: inputs.iter().map(|v| v.at).collect(),
        });
        Ok(Recorded {
            at: ValueRef::Node(g.nodes.len() - 1),
            info: Arc::new(info),
        })
    }

    fn dtype(&self, v: &Recorded) -> DType {
        v.info.dtype
    }

    fn rank(&self, v: &Recorded) -> usize {
        v.info.rank()
    }

    fn dim(&self, v: &Recorded, axis: usize) -> Dim {
        v.info.shape.get(axis).copied().flatten()
    }

    fn same_shape(&self, a: &Recorded, b: &Recorded) -> bool {
        a.at == b.at || (a.info.shape == b.info.shape && a.info.concrete().is_some())
    }

    fn next_seed(&self) -> u64 {
        let s = self.seed.get();
        self.seed.set(s.wrapping_add(0x9E37_79B9_7F4A_7C15));
        s
    }
}

/// [`ImportHooks`] that import an ONNX model into a [`Recorder`] (graph inputs become
/// recorder inputs, initializers stay initializers), e.g. to re-export it.
#[derive(Debug, Default)]
pub struct RecorderHooks;

impl ImportHooks<Recorder> for RecorderHooks {
    fn placeholder(
        &mut self,
        r: &Recorder,
        name: &str,
        dtype: DType,
        dims: &[Dim],
    ) -> Result<Recorded> {
        Ok(r.input(name, dtype, dims))
    }

    fn initializer(&mut self, r: &Recorder, name: &str, tensor: &Tensor) -> Result<Recorded> {
        Ok(r.initializer(name, tensor.clone()))
    }
}
