//! The one place that maps an op to its kernel: running an [`Op`] on concrete tensors. Eager
//! mode calls it for every op, graph sessions for every node of a plan. Kernels pick the device
//! and dtype implementation; unsupported combinations are errors naming the op, dtype and
//! device.
//!
//! Devices: every value an op creates (`full_like`, `dim_size`, random values) is created on
//! the device of its operand. Operands of one op must share a device, with one exception
//! taken from PyTorch: a 0-d CPU tensor combines with a tensor on any device as a scalar (so
//! the constant `n` of `mean`'s gradient, built without an operand, works on a GPU).

use crate::emit::Emit;
use crate::infer::Dim;
use crate::op::{Distribution, Op};
use tandem_tensor::random::Rng;
use tandem_tensor::{BinaryOp, DType, Device, Error, Result, Tensor};

fn arity_error(op: &Op, got: usize) -> Error {
    Error::invalid(
        op.name(),
        match op.arity() {
            Some(n) => format!("expects {n} inputs, got {got}"),
            None => format!("got {got} inputs"),
        },
    )
}

/// Runs `op` on `inputs`.
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Tensor> {
    if let Some(n) = op.arity() {
        if inputs.len() != n {
            return Err(arity_error(op, inputs.len()));
        }
    }
    let x = || inputs[0];
    match op {
        Op::Constant(t) => Ok(t.clone()),
        Op::Full {
            shape,
            value,
            dtype,
        } => Ok(Tensor::full(shape, *value, *dtype)),
        Op::FullLike { value, dtype } => Tensor::full_on(
            x().shape(),
            *value,
            dtype.unwrap_or(x().dtype()),
            x().device(),
        ),
        Op::Random { dist, seed } => random(x(), *dist, *seed),
        Op::DimSize { axes, dtype } => {
            let mut n = 1usize;
            for &a in axes {
                n *= *x().shape().get(a).ok_or(Error::BadAxis {
                    op: "dim_size",
                    axis: a as isize,
                    rank: x().rank(),
                })?;
            }
            Tensor::full_on(&[], n as f64, *dtype, x().device())
        }
        Op::Unary(u) => x().unary(*u),
        Op::Binary(b) => binary(*b, x(), inputs[1]),
        Op::Scalar {
            op,
            value,
            scalar_on_left,
        } => x().scalar_op(*op, *value, *scalar_on_left),
        Op::Where => Tensor::where_cond(inputs[0], inputs[1], inputs[2]),
        Op::Cast(d) => x().cast(*d),
        Op::StopGradient => Ok(x().clone()),
        Op::Reduce { op, axes, keepdim } => x().reduce(*op, axes, *keepdim),
        Op::ArgReduce { op, axis, keepdim } => x().arg_reduce(*op, *axis, *keepdim),
        Op::SumToLike => x().sum_to_shape(inputs[1].shape()),
        Op::Reshape(s) => x().reshape(s),
        Op::ReshapeLike => x().reshape_to(inputs[1].shape()),
        Op::Flatten { start, end } => x().flatten(*start as isize, *end as isize),
        Op::Unsqueeze(a) => x().unsqueeze(*a as isize),
        Op::Squeeze(a) => x().squeeze(*a as isize),
        Op::Permute(p) => {
            let p: Vec<isize> = p.iter().map(|&a| a as isize).collect();
            x().permute(&p)
        }
        Op::Expand(s) => x().expand(s),
        Op::ExpandLike => x().expand(inputs[1].shape()),
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => x().slice(*axis as isize, *start, *end, *step),
        Op::SliceBackward {
            axis,
            start,
            end,
            step,
        } => {
            let like = inputs[1];
            let dim = *like.shape().get(*axis).ok_or(Error::BadAxis {
                op: "slice_backward",
                axis: *axis as isize,
                rank: like.rank(),
            })?;
            let (s, _) = tandem_tensor::slice_range(dim, *start, *end, *step)?;
            x().slice_backward(like.shape(), *axis, s, *step)
        }
        Op::Pad { pads, value } => x().pad(pads, *value),
        Op::Concat(axis) => {
            if inputs.is_empty() {
                return Err(arity_error(op, 0));
            }
            Tensor::cat(inputs, *axis)
        }
        Op::Gather(a) => x().gather(*a, inputs[1]),
        Op::ScatterAdd(a) => x().scatter_add(*a, inputs[1], inputs[2]),
        Op::IndexSelect(a) => x().index_select(*a, inputs[1]),
        Op::IndexAdd(a) => x().index_add(*a, inputs[1], inputs[2]),
        Op::MaskedSelect => x().masked_select(inputs[1]),
        Op::MaskedScatter => x().masked_scatter(inputs[1], inputs[2]),
        Op::OneHot {
            depth,
            on,
            off,
            dtype,
        } => x().one_hot(*depth, *on, *off, *dtype),
        Op::MatMul => x().matmul(inputs[1]),
        Op::Conv2d(p) => match inputs.len() {
            2 => x().conv2d(inputs[1], None, p),
            3 => x().conv2d(inputs[1], Some(inputs[2]), p),
            n => Err(arity_error(op, n)),
        },
        Op::Conv2dInputGrad(p) => {
            Tensor::conv2d_input_grad(inputs[0], inputs[1], inputs[2].shape(), p)
        }
        Op::Conv2dWeightGrad(p) => {
            Tensor::conv2d_weight_grad(inputs[0], inputs[1], inputs[2].shape(), p)
        }
        Op::MaxPool2d(p) => x().max_pool2d(p),
        Op::MaxPool2dBackward(p) => Tensor::max_pool2d_backward(inputs[0], inputs[1], p),
        Op::AvgPool2d(p) => x().avg_pool2d(p),
        Op::AvgPool2dBackward(p) => Tensor::avg_pool2d_backward(inputs[0], inputs[1].shape(), p),
        Op::AdaptiveAvgPool2d(o) => x().adaptive_avg_pool2d(*o),
        Op::AdaptiveAvgPool2dBackward => {
            Tensor::adaptive_avg_pool2d_backward(inputs[0], inputs[1].shape())
        }
        Op::Softmax(a) => x().softmax(*a),
        Op::LogSoftmax(a) => x().log_softmax(*a),
        Op::CrossEntropy {
            ignore_index,
            label_smoothing,
        } => x().cross_entropy(inputs[1], *ignore_index, *label_smoothing),
    }
}

/// `a op b`, where a 0-d CPU operand of the other operand's dtype combines with a tensor on
/// another device as a scalar (PyTorch's rule); any other device mix is the kernel's error.
fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.device() != b.device() && a.dtype() == b.dtype() {
        if b.rank() == 0 && b.device() == Device::Cpu {
            return a.scalar_op(op, b.item()?, false);
        }
        if a.rank() == 0 && a.device() == Device::Cpu {
            return b.scalar_op(op, a.item()?, true);
        }
    }
    a.binary(op, b)
}

/// Random values shaped like `like` (its dtype) from the stream of `seed`, on `like`'s device.
/// The values are drawn on the host (the same stream on every device) and copied.
pub fn random(like: &Tensor, dist: Distribution, seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let (shape, dtype) = (like.shape(), like.dtype());
    let host = match dist {
        Distribution::Uniform { low, high } => {
            Tensor::rand_uniform(shape, low, high, dtype, &mut rng)
        }
        Distribution::Normal { mean, std } => Tensor::randn(shape, mean, std, dtype, &mut rng),
        Distribution::Bernoulli { p } => Tensor::bernoulli(shape, p, dtype, &mut rng),
    }?;
    host.to_device(like.device())
}

/// An [`Emit`] that runs every op at once on plain tensors, with no autograd. Gradient rules
/// applied through it give concrete gradients (used to check rules by finite differences).
#[derive(Debug, Default)]
pub struct Eval {
    seed: std::sync::atomic::AtomicU64,
}

impl Eval {
    /// An evaluator whose random ops draw seeds from `seed` onwards.
    pub fn with_seed(seed: u64) -> Eval {
        Eval {
            seed: std::sync::atomic::AtomicU64::new(seed),
        }
    }
}

impl Emit for Eval {
    type Value = Tensor;

    fn emit(&self, op: Op, inputs: &[&Tensor]) -> Result<Tensor> {
        eval(&op, inputs)
    }

    fn dtype(&self, v: &Tensor) -> DType {
        v.dtype()
    }

    fn rank(&self, v: &Tensor) -> usize {
        v.rank()
    }

    fn dim(&self, v: &Tensor, axis: usize) -> Dim {
        v.shape().get(axis).copied()
    }

    fn same_shape(&self, a: &Tensor, b: &Tensor) -> bool {
        a.shape() == b.shape()
    }

    fn next_seed(&self) -> u64 {
        self.seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed)
    }

    fn constant(&self, t: Tensor) -> Result<Tensor> {
        Ok(t)
    }

    fn gt_mask_mul(&self, g: &Tensor, x: &Tensor, c: f64) -> Result<Tensor> {
        crate::fused::mask_mul(g, x, c, false, None)
    }

    fn is_transposed_view(&self, v: &Tensor) -> bool {
        crate::emit::is_transposed_matrix(v)
    }
}
