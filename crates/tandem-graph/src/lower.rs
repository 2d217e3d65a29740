//! Lowering, run once after the optimizer passes: the 2-D float matrix products that no
//! fusion took become [`MatMulKernel`] steps, `g * cast(x > c)` (relu's gradient) becomes
//! one [`MaskMul`] pass over memory instead of three, a convolution read only by a relu
//! becomes one [`Conv2dRelu`] kernel, relu's gradient mask after a max-pooling gradient
//! joins that gradient's pass ([`MaxPoolBackwardMask`]), and a convolution's weight and bias
//! gradients from one output gradient become one step ([`ConvWeightBiasGrad`]). A kernel
//! step receives an output buffer from memory planning (a value that died earlier in the
//! run, or its own buffer of the previous run, see [`crate::exec::Arena`]), so a training
//! step's large products (a weight gradient is as big as the weight) are written into the
//! same memory every run instead of a fresh allocation.

use crate::fusion::{move_shape_uses, Uses};
use crate::plan::{Kernel, PlanGraph, PlanNode, PlanOp};
use crate::update::Update;
use std::collections::HashSet;
use std::sync::Arc;
use tandem_ir::{Op, ValueInfo};
use tandem_tensor::cpu::matmul::GemmScalar;
use tandem_tensor::{
    BinaryOp, Conv2dParams, DType, Error, Pool2dParams, ReduceOp, Result, Tensor, UnaryOp,
};

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

/// `relu(conv2d(x, w, b?))` (inputs `[x, w]` or `[x, w, b]`): [`Tensor::conv2d_relu`], the
/// activation applied to each sample's output while it is in cache, with the numbers of the
/// two ops.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dRelu {
    params: Conv2dParams,
}

impl Conv2dRelu {
    /// The kernel for a convolution with these parameters.
    pub fn new(params: Conv2dParams) -> Conv2dRelu {
        Conv2dRelu { params }
    }
}

impl Kernel for Conv2dRelu {
    fn name(&self) -> &str {
        "conv2d_relu"
    }

    fn run(&self, inputs: &[&Tensor], _out: Option<Tensor>) -> Result<Tensor> {
        match *inputs {
            [x, w] => x.conv2d_relu(w, None, &self.params),
            [x, w, b] => x.conv2d_relu(w, Some(b), &self.params),
            _ => Err(Error::Graph(format!(
                "conv2d_relu: expects 2 or 3 inputs, got {}",
                inputs.len()
            ))),
        }
    }
}

/// A convolution's weight and bias gradients from one output gradient (inputs `[x, g]`):
/// [`Tensor::conv2d_weight_bias_grad_packed`], the weight gradient flattened then the bias
/// gradient in one 1-D tensor, which the plan reads through two slices. The stride-1 `f32`
/// kernels sum the bias gradient while they copy `g` for the weight gradient.
#[derive(Clone, Debug)]
pub struct ConvWeightBiasGrad {
    params: Conv2dParams,
    weight_shape: Vec<usize>,
}

impl ConvWeightBiasGrad {
    /// The kernel for a convolution with these parameters and weight shape.
    pub fn new(params: Conv2dParams, weight_shape: Vec<usize>) -> ConvWeightBiasGrad {
        ConvWeightBiasGrad {
            params,
            weight_shape,
        }
    }
}

impl Kernel for ConvWeightBiasGrad {
    fn name(&self) -> &str {
        "conv2d_weight_bias_grad"
    }

    fn run(&self, inputs: &[&Tensor], _out: Option<Tensor>) -> Result<Tensor> {
        let &[x, g] = inputs else {
            return Err(Error::Graph(format!(
                "conv2d_weight_bias_grad: expects 2 inputs, got {}",
                inputs.len()
            )));
        };
        Tensor::conv2d_weight_bias_grad_packed(x, g, &self.weight_shape, &self.params)
    }
}

/// `max_pool2d_backward(g, x) * cast(x > c)` (inputs `[g, x]`): the gradient of a max
/// pooling whose input `x` is a relu's output, times that relu's gradient mask, in one pass
/// ([`Tensor::max_pool2d_backward_masked`], the numbers of the two ops).
#[derive(Clone, Copy, Debug)]
pub struct MaxPoolBackwardMask {
    params: Pool2dParams,
    threshold: f64,
}

impl MaxPoolBackwardMask {
    /// The kernel for a pooling with these parameters and the mask `x > threshold`.
    pub fn new(params: Pool2dParams, threshold: f64) -> MaxPoolBackwardMask {
        MaxPoolBackwardMask { params, threshold }
    }
}

impl Kernel for MaxPoolBackwardMask {
    fn name(&self) -> &str {
        "max_pool2d_backward_mask"
    }

    fn run(&self, inputs: &[&Tensor], _out: Option<Tensor>) -> Result<Tensor> {
        let &[g, x] = inputs else {
            return Err(Error::Graph(format!(
                "max_pool2d_backward_mask: expects 2 inputs, got {}",
                inputs.len()
            )));
        };
        Tensor::max_pool2d_backward_masked(g, x, &self.params, self.threshold)
    }
}

/// Replaces every `g * cast(x > c)` whose `g` is `max_pool2d_backward(gy, x)` (the same `x`,
/// read by nothing else) by one [`MaxPoolBackwardMask`] kernel. `g * 0` and `0 * g` are the
/// same numbers, so the product's operand order does not matter here. Returns whether
/// anything changed.
pub fn lower_pool_masks(plan: &mut PlanGraph) -> bool {
    let uses = Uses::of(plan);
    let mut changed = false;
    for id in plan.live() {
        let Some(([g, x], c, _)) = mask_mul_of(plan, id) else {
            continue;
        };
        let Some(gnode) = plan.node(g) else { continue };
        let (PlanOp::Op(Op::MaxPool2dBackward(p)), &[gy, pooled]) =
            (&gnode.op, gnode.inputs.as_slice())
        else {
            continue;
        };
        let p = *p;
        let fits = pooled == x
            && gnode.control.is_empty()
            && !uses.pinned.contains(&g)
            && uses.data_users(plan, g) == [id];
        if !fits {
            continue;
        }
        if let Some(Some(n)) = plan.nodes.get_mut(id) {
            n.op = PlanOp::Kernel(Arc::new(MaxPoolBackwardMask::new(p, c)));
            n.inputs = vec![gy, x];
            changed = true;
        }
        move_shape_uses(plan, &uses, g, id);
        plan.remove(g);
    }
    changed
}

/// Replaces every f32/f64 `relu(conv2d(...))` whose convolution is read by nothing else (but
/// for its shape) by one [`Conv2dRelu`] kernel. Returns whether anything changed.
pub fn lower_conv_relus(plan: &mut PlanGraph) -> bool {
    let uses = Uses::of(plan);
    let mut changed = false;
    for id in plan.live() {
        let Some(node) = plan.node(id) else { continue };
        let (PlanOp::Op(Op::Unary(UnaryOp::Relu)), &[conv]) = (&node.op, node.inputs.as_slice())
        else {
            continue;
        };
        let Some(cnode) = plan.node(conv) else {
            continue;
        };
        let PlanOp::Op(Op::Conv2d(p)) = cnode.op else {
            continue;
        };
        let fits = node.control.is_empty()
            && cnode.control.is_empty()
            && matches!(node.info.dtype, DType::F32 | DType::F64)
            && cnode.info == node.info
            && !uses.pinned.contains(&conv)
            && uses.data_users(plan, conv) == [id];
        if !fits {
            continue;
        }
        let inputs = cnode.inputs.clone();
        if let Some(Some(n)) = plan.nodes.get_mut(id) {
            n.op = PlanOp::Kernel(Arc::new(Conv2dRelu::new(p)));
            n.inputs = inputs;
            changed = true;
        }
        move_shape_uses(plan, &uses, conv, id);
        plan.remove(conv);
    }
    changed
}

/// Where a convolution's weight gradient `conv2d_weight_grad(x, g, w)` and its bias
/// gradient `sum(g, axes=[0, 2, 3])` read the same `g` (both of one float dtype, the weight's
/// shape known), computes both in one [`ConvWeightBiasGrad`] step: the weight gradient node
/// becomes a view of the packed result's first `O * C/groups * kh * kw` elements (reshaped to
/// the weight's shape) and the sum a view of its last `O`, so their readers (and a fetch of
/// either) are unchanged. Returns whether anything changed.
pub fn fuse_conv_bias_grads(plan: &mut PlanGraph) -> bool {
    let uses = Uses::of(plan);
    let mut changed = false;
    for w_id in plan.live() {
        let Some(wnode) = plan.node(w_id) else {
            continue;
        };
        let (PlanOp::Op(Op::Conv2dWeightGrad(p)), &[x, g, _]) =
            (&wnode.op, wnode.inputs.as_slice())
        else {
            continue;
        };
        let p = *p;
        let (dtype, Some(wshape)) = (wnode.info.dtype, wnode.info.concrete()) else {
            continue;
        };
        let is_bias_sum = |id: usize| {
            plan.node(id).is_some_and(|n| {
                matches!(&n.op, PlanOp::Op(Op::Reduce { op: ReduceOp::Sum, axes, .. })
                    if axes.as_slice() == [0, 2, 3])
                    && n.inputs.as_slice() == [g]
                    && n.control.is_empty()
                    && n.info.dtype == dtype
            })
        };
        let Some(s_id) = uses
            .data_users(plan, g)
            .into_iter()
            .find(|&u| is_bias_sum(u))
        else {
            continue;
        };
        let fits = dtype.is_float() && wshape.len() == 4 && wnode.control.is_empty();
        let Some(sinfo) = plan.node(s_id).map(|n| n.info.clone()) else {
            continue;
        };
        if !fits {
            continue;
        }
        let (w_len, o) = (wshape.iter().product::<usize>(), wshape[0]);
        let name = wnode.name.clone();
        let view = |input: usize, name: String, op: Op, shape: &[usize]| PlanNode {
            name,
            op: PlanOp::Op(op),
            inputs: vec![input],
            control: Vec::new(),
            info: ValueInfo::known(dtype, shape),
        };
        let slice = |start: usize, end: usize| Op::Slice {
            axis: 0,
            start: start as isize,
            end: end as isize,
            step: 1,
        };
        let packed = plan.add(PlanNode {
            name: format!("{name}/with_bias"),
            op: PlanOp::Kernel(Arc::new(ConvWeightBiasGrad::new(p, wshape.clone()))),
            inputs: vec![x, g],
            control: Vec::new(),
            info: ValueInfo::known(dtype, &[w_len + o]),
        });
        let w_flat = plan.add(view(
            packed,
            format!("{name}/weight"),
            slice(0, w_len),
            &[w_len],
        ));
        let b_flat = if sinfo.shape.len() == 1 {
            packed
        } else {
            plan.add(view(
                packed,
                format!("{name}/bias"),
                slice(w_len, w_len + o),
                &[o],
            ))
        };
        let reshape = |shape: &[usize]| Op::Reshape(shape.iter().map(|&d| d as isize).collect());
        if let Some(Some(n)) = plan.nodes.get_mut(w_id) {
            n.op = PlanOp::Op(reshape(&wshape));
            n.inputs = vec![w_flat];
        }
        if let Some(Some(n)) = plan.nodes.get_mut(s_id) {
            // `[O]`: a slice of the packed result; `[1, O, 1, 1]` (keepdim): a reshape of one.
            n.op = PlanOp::Op(if b_flat == packed {
                slice(w_len, w_len + o)
            } else {
                reshape(&[1, o, 1, 1])
            });
            n.inputs = vec![b_flat];
        }
        changed = true;
    }
    changed
}

/// Runs every lowering of this module. Returns whether anything changed.
pub fn lower(plan: &mut PlanGraph) -> bool {
    let a = lower_pool_masks(plan);
    let b = lower_mask_muls(plan);
    let c = lower_conv_relus(plan);
    let d = fold_gradient_products(plan);
    let e = lower_matmuls(plan);
    let f = fuse_conv_bias_grads(plan);
    a | b | c | d | e | f
}

/// Folds the product into the update where an Adam update's gradient is a 2-D f32/f64
/// `matmul` that nothing else reads (a linear layer's weight gradient, `dY^T @ X`): the
/// update becomes a [`PlanOp::ApplyProduct`] with the two factors as inputs and the product
/// node goes. Applied at commit on the CPU, the update then computes the gradient block by
/// block, each block while the rows it updates are in the same core's cache
/// ([`tandem_tensor::ops::optim::adam_step_product`]): the gradient never goes through
/// memory whole, and the product and the update do not wait for each other. Other devices
/// compute the product when the update is validated. Returns whether anything changed.
pub fn fold_gradient_products(plan: &mut PlanGraph) -> bool {
    let uses = Uses::of(plan);
    let mut changed = false;
    for id in plan.live() {
        let Some(node) = plan.node(id) else { continue };
        let PlanOp::Apply(def) = &node.op else {
            continue;
        };
        let Some(&g) = node.inputs.get(1) else {
            continue;
        };
        let two_d = |i: usize| plan.node(i).is_some_and(|n| n.info.shape.len() == 2);
        let fits = matches!(def.update, Update::Adam(_))
            && plan.node(g).is_some_and(|n| {
                matches!(n.op, PlanOp::Op(Op::MatMul))
                    && n.control.is_empty()
                    && matches!(n.info.dtype, DType::F32 | DType::F64)
                    && n.inputs.len() == 2
                    && n.inputs.iter().all(|&i| two_d(i))
            })
            && uses.only_inside(g, &HashSet::from([id]))
            // The gradient is read once (not as two inputs of the update).
            && node.inputs.iter().filter(|&&i| i == g).count() == 1;
        if !fits {
            continue;
        }
        let Some(factors) = plan.node(g).map(|n| n.inputs.clone()) else {
            continue;
        };
        let def = def.clone();
        if let Some(Some(n)) = plan.nodes.get_mut(id) {
            n.op = PlanOp::ApplyProduct(def);
            n.inputs.splice(1..2, factors);
            changed = true;
        }
        plan.remove(g);
    }
    changed
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
