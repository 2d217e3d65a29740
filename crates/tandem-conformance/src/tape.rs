//! A minimal reference tape over plain tensors: it records ops run through [`Eval`] and
//! applies the shared gradient rules backwards. The conformance suite uses it to check the
//! rules themselves, independently of eager and graph mode.

use std::cell::{Cell, RefCell};
use tandem_ir::grad::{accumulate, backprop};
use tandem_ir::{Dim, Emit, Eval, Op};
use tandem_tensor::{DType, Error, Result, Tensor};

struct Node {
    op: Option<Op>,
    inputs: Vec<usize>,
    value: Tensor,
}

/// A value on the tape: its node id and its tensor.
#[derive(Clone, Debug)]
pub struct Var {
    /// Node id (nodes are numbered in the order they were recorded).
    pub id: usize,
    /// The value.
    pub value: Tensor,
}

/// Records ops in order; ids are a topological order by construction.
#[derive(Default)]
pub struct Tape {
    nodes: RefCell<Vec<Node>>,
    seed: Cell<u64>,
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Tape {
        Tape::default()
    }

    /// Records an input.
    pub fn leaf(&self, t: Tensor) -> Var {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            op: None,
            inputs: vec![],
            value: t.clone(),
        });
        Var {
            id: nodes.len() - 1,
            value: t,
        }
    }

    /// Vector-Jacobian product of `output` with `cotangent`, w.r.t. each of `wrt`.
    pub fn vjp(
        &self,
        output: &Var,
        cotangent: &Tensor,
        wrt: &[&Var],
    ) -> Result<Vec<Option<Tensor>>> {
        let e = Eval::default();
        let nodes = self.nodes.borrow();
        let mut grads: Vec<Option<Tensor>> = vec![None; nodes.len()];
        if cotangent.shape() != output.value.shape() {
            return Err(Error::shape_mismatch(
                "vjp",
                cotangent.shape(),
                output.value.shape(),
            ));
        }
        grads[output.id] = Some(cotangent.cast(output.value.dtype())?);
        for id in (0..=output.id).rev() {
            let Some(g) = grads[id].take() else { continue };
            let node = &nodes[id];
            let Some(op) = &node.op else {
                grads[id] = Some(g);
                continue;
            };
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|&i| &nodes[i].value).collect();
            let wanted: Vec<bool> = inputs.iter().map(|t| t.dtype().is_float()).collect();
            let gs = backprop(&e, op, &inputs, &node.value, &g, &wanted)?;
            for (k, gi) in gs.into_iter().enumerate() {
                if let Some(gi) = gi {
                    let src = node.inputs[k];
                    grads[src] = Some(accumulate(&e, grads[src].take(), gi)?);
                }
            }
        }
        Ok(wrt.iter().map(|v| grads[v.id].clone()).collect())
    }
}

impl Emit for Tape {
    type Value = Var;

    fn emit(&self, op: Op, inputs: &[&Var]) -> Result<Var> {
        let values: Vec<&Tensor> = inputs.iter().map(|v| &v.value).collect();
        let value = tandem_ir::eval(&op, &values)?;
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            op: Some(op),
            inputs: inputs.iter().map(|v| v.id).collect(),
            value: value.clone(),
        });
        Ok(Var {
            id: nodes.len() - 1,
            value,
        })
    }

    fn dtype(&self, v: &Var) -> DType {
        v.value.dtype()
    }

    fn rank(&self, v: &Var) -> usize {
        v.value.rank()
    }

    fn dim(&self, v: &Var, axis: usize) -> Dim {
        v.value.shape().get(axis).copied()
    }

    fn same_shape(&self, a: &Var, b: &Var) -> bool {
        a.value.shape() == b.value.shape()
    }

    fn next_seed(&self) -> u64 {
        let s = self.seed.get().wrapping_add(1);
        self.seed.set(s);
        s
    }
}
