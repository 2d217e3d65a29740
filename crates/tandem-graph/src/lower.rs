//! Lowering, run once after the optimizer passes: the 2-D float matrix products that no
//! fusion took become [`MatMulKernel`] steps, and `g * cast(x > c)` (relu's gradient) becomes
//! one [`MaskMul`] pass over memory instead of three. A kernel step receives an output buffer from
//! memory planning (a value that died earlier in the run, or its own buffer of the previous
//! run, see [`crate::exec::Arena`]), so a training step's large products (a weight gradient
//! is as big as the weight) are written into the same memory every run instead of a fresh
//! allocation.

use crate::plan::{Kernel, PlanGraph, PlanOp};
use std::sync::Arc;
use tandem_ir::Op;
use tandem_tensor::cpu::matmul::GemmScalar;
use tandem_tensor::{BinaryOp, DType, Error, Result, Tensor};

/// `x @ w` for 2-D `x [M, K]` and `w [K, N]` (f32 or f64): the same `gemm` call as
/// [`Tensor::matmul`] (so the same numbers), written into the buffer it is given when that
/// buffer has the output's shape and dtype. Other dtypes and devices run
/// [`Tensor::matmul`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MatMulKernel;

impl MatMulKernel {
    fn run_typed<T: GemmScalar>(x: &Tensor, w: &Tensor, out: Option<Tensor>) -> Result<Tensor> {
        let (&[m, k], &[k2, n]) = (x.shape(), w.shape()) else {
            return x.matmul(w);
        };
        if k != k2 {
            // Tensor::matmul words the error.
            return x.matmul(w);
        }
        tandem_ir::fused::product_into::<T>(x, w, [m, k, n], out, "matmul")
    }
}

impl Kernel for MatMulKernel {
    fn name(&self) -> &str {
        "matmul_into"
    }

    fn run(&self, inputs: &[&Tensor], out: Option<Tensor>) -> Result<Tensor> {
        let &[x, w] = inputs else {
            return Err(Error::Graph(format!(
                "matmul kernel: expects 2 inputs, got {}",
                inputs.len()
            )));
        };
        let host = x.device().is_cpu() && w.device().is_cpu();
        match (x.dtype(), w.dtype()) {
            (DType::F32, DType::F32) if host => MatMulKernel::run_typed::<f32>(x, w, out),
            (DType::F64, DType::F64) if host => MatMulKernel::run_typed::<f64>(x, w, out),
            _ => x.matmul(w),
        }
    }
}

/// `g * cast(x > c)` (inputs `[g, x]`, `g` and `x` of one float dtype): relu's gradient
/// mask and product in one pass. Same-shape contiguous f32/f64 inputs on the CPU run a fused
/// loop (`g * 1` or `g * 0`, exactly the unfused numbers); anything else runs the three ops.
#[derive(Clone, Copy, Debug)]
pub struct MaskMul {
    threshold: f64,
    mask_first: bool,
}

impl MaskMul {
    /// The kernel for `g * cast(x > threshold)`, or `cast(x > threshold) * g` when
    /// `mask_first` (the product's operand order, kept for exactness).
    pub fn new(threshold: f64, mask_first: bool) -> MaskMul {
        MaskMul {
            threshold,
            mask_first,
        }
    }
}

impl Kernel for MaskMul {
    fn name(&self) -> &str {
        "mask_mul"
    }

    fn run(&self, inputs: &[&Tensor], out: Option<Tensor>) -> Result<Tensor> {
        let &[g, x] = inputs else {
            return Err(Error::Graph(format!(
                "mask_mul: expects 2 inputs, got {}",
                inputs.len()
            )));
        };
        tandem_ir::fused::mask_mul(g, x, self.threshold, self.mask_first, out)
    }
}

/// The `[g, x]`, threshold and operand order of a `g * cast(x > c)` node, when it is one.
fn mask_mul_of(plan: &PlanGraph, id: usize) -> Option<([usize; 2], f64, bool)> {
    let node = plan.node(id)?;
    if !matches!(node.op, PlanOp::Op(Op::Binary(BinaryOp::Mul)))
        || !node.control.is_empty()
        || !matches!(node.info.dtype, DType::F32 | DType::F64)
    {
        return None;
    }
    let &[p, q] = node.inputs.as_slice() else {
        return None;
    };
    for (g, k, mask_first) in [(p, q, false), (q, p, true)] {
        let cast = plan.node(k)?;
        let (PlanOp::Op(Op::Cast(d)), &[cmp]) = (&cast.op, cast.inputs.as_slice()) else {
            continue;
        };
        let cmp_node = plan.node(cmp)?;
        let (
            PlanOp::Op(Op::Scalar {
                op: BinaryOp::Gt,
                value,
                scalar_on_left: false,
            }),
            &[x],
        ) = (&cmp_node.op, cmp_node.inputs.as_slice())
        else {
            continue;
        };
        let same = |i: usize| plan.node(i).is_some_and(|n| n.info == node.info);
        if *d == node.info.dtype && same(g) && same(x) && cast.control.is_empty() {
            return Some(([g, x], *value, mask_first));
        }
    }
    None
}

/// Replaces every `g * cast(x > c)` node (g, x and the product of one float dtype and shape)
/// by a [`MaskMul`] kernel. The comparison and cast stay in the plan graph; scheduling drops
/// them when nothing else reads them. Returns whether anything changed.
pub fn lower_mask_muls(plan: &mut PlanGraph) -> bool {
    let mut changed = false;
    for id in plan.live() {
        let Some((inputs, c, first)) = mask_mul_of(plan, id) else {
            continue;
        };
        if let Some(Some(n)) = plan.nodes.get_mut(id) {
            n.op = PlanOp::Kernel(Arc::new(MaskMul::new(c, first)));
            n.inputs = inputs.to_vec();
            changed = true;
        }
    }
    changed
}

/// Runs every lowering of this module. Returns whether anything changed.
pub fn lower(plan: &mut PlanGraph) -> bool {
    let a = lower_mask_muls(plan);
    let b = lower_matmuls(plan);
    a | b
}

/// Replaces every 2-D f32/f64 `matmul` node without control inputs by a [`MatMulKernel`].
/// Returns whether anything changed.
pub fn lower_matmuls(plan: &mut PlanGraph) -> bool {
    let mut changed = false;
    for id in plan.live() {
        let two_d = |i: usize| plan.node(i).is_some_and(|n| n.info.shape.len() == 2);
        let Some(node) = plan.node(id) else { continue };
        let fits = matches!(node.op, PlanOp::Op(Op::MatMul))
            && node.control.is_empty()
            && matches!(node.info.dtype, DType::F32 | DType::F64)
            && node.inputs.len() == 2
            && node.inputs.iter().all(|&i| two_d(i));
        if !fits {
            continue;
        }
        if let Some(Some(n)) = plan.nodes.get_mut(id) {
            n.op = PlanOp::Kernel(Arc::new(MatMulKernel));
            changed = true;
        }
    }
    changed
}
