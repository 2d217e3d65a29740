//! The op vocabulary.
//!
//! Every computation in Tandem, eager or graph, is a sequence of these ops. Primitive ops are
//! few; a handful of fused ops (matmul, conv, pooling, softmax, cross-entropy) have their own
//! kernels because their decompositions are slow. Everything else (gelu, mse, linear, layer
//! norm, ...) is a composite in [`crate::composite`], written once over [`crate::Emit`].
//!
//! All ops have exactly one output. Ops whose name ends in `Like` take an extra last input
//! whose only role is to supply a shape at run time, so that gradient rules work in graph mode
//! where some dimensions (the batch) are unknown until the graph runs.

use std::fmt;
use tandem_tensor::{
    ArgReduceOp, BinaryOp, Conv2dParams, DType, Pool2dParams, ReduceOp, Tensor, UnaryOp,
};

/// A probability distribution for [`Op::Random`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound (exclusive).
        high: f64,
    },
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// 1 with probability `p`, else 0.
    Bernoulli {
        /// Probability of a 1.
        p: f64,
    },
}

/// One op of the vocabulary, with its attributes. Inputs are passed separately.
#[derive(Clone, Debug)]
pub enum Op {
    // ---- sources ----
    /// A constant tensor (graph constants, folded values). No inputs.
    Constant(Tensor),
    /// A tensor of `shape` filled with `value`. No inputs.
    Full {
        /// Shape of the result.
        shape: Vec<usize>,
        /// Fill value.
        value: f64,
        /// Element type.
        dtype: DType,
    },
    /// A tensor shaped like the input filled with `value`; dtype of the input unless given.
    FullLike {
        /// Fill value.
        value: f64,
        /// Element type (default: the input's).
        dtype: Option<DType>,
    },
    /// Random values shaped like the input (its dtype, which must be float). The stream is a
    /// function of `seed` (graph sessions also mix in the run counter).
    Random {
        /// The distribution.
        dist: Distribution,
        /// Seed of the stream.
        seed: u64,
    },
    /// Product of the input's dims over `axes` as a 0-d tensor of `dtype` (a run-time count,
    /// e.g. the batch size in graph mode).
    DimSize {
        /// Axes whose sizes are multiplied.
        axes: Vec<usize>,
        /// Element type of the result.
        dtype: DType,
    },

    // ---- elementwise ----
    /// Elementwise function of one tensor.
    Unary(UnaryOp),
    /// Elementwise function of two tensors of the same dtype, with broadcasting.
    Binary(BinaryOp),
    /// `x op value`, or `value op x` when `scalar_on_left`.
    Scalar {
        /// The binary function.
        op: BinaryOp,
        /// The scalar operand.
        value: f64,
        /// The scalar is the left operand.
        scalar_on_left: bool,
    },
    /// `where(cond, a, b)` with broadcasting; cond is bool.
    Where,
    /// Dtype conversion.
    Cast(DType),
    /// Identity whose gradient is zero (`tf.stop_gradient`, `tensor.detach()` inside
    /// composites).
    StopGradient,

    // ---- reductions ----
    /// Reduction over axes (non-negative, sorted).
    Reduce {
        /// Sum, mean, max, min or prod.
        op: ReduceOp,
        /// Reduced axes.
        axes: Vec<usize>,
        /// Keep reduced axes with size 1.
        keepdim: bool,
    },
    /// Index of the max/min along one axis (int64).
    ArgReduce {
        /// Argmax or argmin.
        op: ArgReduceOp,
        /// The axis.
        axis: usize,
        /// Keep the axis with size 1.
        keepdim: bool,
    },
    /// Sums input 0 down to the shape of input 1 (undoes broadcasting).
    SumToLike,

    // ---- movement (views when possible) ----
    /// Reshape to a target with at most one -1.
    Reshape(Vec<isize>),
    /// Reshape input 0 to the shape of input 1.
    ReshapeLike,
    /// Merge dims `start..=end` into one.
    Flatten {
        /// First merged dim.
        start: usize,
        /// Last merged dim.
        end: usize,
    },
    /// Insert a size-1 dim at `axis`.
    Unsqueeze(usize),
    /// Remove the size-1 dim at `axis`.
    Squeeze(usize),
    /// Reorder dims: output dim i is input dim `perm[i]`.
    Permute(Vec<usize>),
    /// Broadcast to a shape.
    Expand(Vec<usize>),
    /// Broadcast input 0 to the shape of input 1.
    ExpandLike,
    /// Python-style slice of one axis (`start`/`end` may be negative; clamped like Python).
    Slice {
        /// The axis.
        axis: usize,
        /// Start (inclusive).
        start: isize,
        /// End (exclusive).
        end: isize,
        /// Step (positive).
        step: usize,
    },
    /// Inverse of [`Op::Slice`]: zeros shaped like input 1 with input 0 written into the slice.
    SliceBackward {
        /// The axis.
        axis: usize,
        /// Start (inclusive).
        start: isize,
        /// End (exclusive).
        end: isize,
        /// Step (positive).
        step: usize,
    },
    /// Constant padding: `(before, after)` for every dim.
    Pad {
        /// Padding per dim.
        pads: Vec<(usize, usize)>,
        /// Fill value.
        value: f64,
    },
    /// Concatenation of all inputs along an axis.
    Concat(usize),

    // ---- indexing ----
    /// `torch.gather(x, axis, index)`; inputs `[x, index]`.
    Gather(usize),
    /// Copy of input 0 with input 2 added at the positions of index input 1.
    ScatterAdd(usize),
    /// `torch.index_select(x, axis, index)`; inputs `[x, index]`.
    IndexSelect(usize),
    /// Copy of input 0 with input 2 added at the rows of index input 1.
    IndexAdd(usize),
    /// `torch.masked_select(x, mask)`; inputs `[x, mask]`; a 1-D result.
    MaskedSelect,
    /// Copy of input 0 whose masked positions (mask input 1) take the elements of input 2.
    MaskedScatter,
    /// One-hot encoding of an integer tensor along a new last axis.
    OneHot {
        /// Number of classes.
        depth: usize,
        /// Value at the index.
        on: f64,
        /// Value elsewhere.
        off: f64,
        /// Element type of the result.
        dtype: DType,
    },

    // ---- linear algebra and neural-network kernels ----
    /// Batched matrix product of two tensors of rank >= 2 with broadcast batch dims.
    MatMul,
    /// 2-D convolution; inputs `[x, weight]` or `[x, weight, bias]`.
    Conv2d(Conv2dParams),
    /// Gradient of conv2d w.r.t. its input; inputs `[grad, weight, x_like]`.
    Conv2dInputGrad(Conv2dParams),
    /// Gradient of conv2d w.r.t. its weight; inputs `[x, grad, weight_like]`.
    Conv2dWeightGrad(Conv2dParams),
    /// Max pooling over NCHW.
    MaxPool2d(Pool2dParams),
    /// Gradient of max pooling; inputs `[grad, x]`.
    MaxPool2dBackward(Pool2dParams),
    /// Average pooling over NCHW.
    AvgPool2d(Pool2dParams),
    /// Gradient of average pooling; inputs `[grad, x_like]`.
    AvgPool2dBackward(Pool2dParams),
    /// Adaptive average pooling to a fixed output size.
    AdaptiveAvgPool2d([usize; 2]),
    /// Gradient of adaptive average pooling; inputs `[grad, x_like]`.
    AdaptiveAvgPool2dBackward,
    /// Softmax along an axis.
    Softmax(usize),
    /// Log-softmax along an axis.
    LogSoftmax(usize),
    /// Per-sample cross-entropy from logits (class axis 1) and integer targets.
    CrossEntropy {
        /// Target value whose samples give 0 loss.
        ignore_index: i64,
        /// Label smoothing epsilon.
        label_smoothing: f64,
    },
}

impl Op {
    /// The op's name (snake_case), used in errors, graph dumps and kernel names.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Constant(_) => "constant",
            Op::Full { .. } => "full",
            Op::FullLike { .. } => "full_like",
            Op::Random { .. } => "random",
            Op::DimSize { .. } => "dim_size",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Scalar { op, .. } => match op {
                BinaryOp::Add => "add_scalar",
                BinaryOp::Sub => "sub_scalar",
                BinaryOp::Mul => "mul_scalar",
                BinaryOp::Div => "div_scalar",
                BinaryOp::Pow => "pow_scalar",
                BinaryOp::Maximum => "maximum_scalar",
                BinaryOp::Minimum => "minimum_scalar",
                BinaryOp::Eq => "eq_scalar",
                BinaryOp::Ne => "ne_scalar",
                BinaryOp::Lt => "lt_scalar",
                BinaryOp::Le => "le_scalar",
                BinaryOp::Gt => "gt_scalar",
                BinaryOp::Ge => "ge_scalar",
                BinaryOp::And => "logical_and_scalar",
                BinaryOp::Or => "logical_or_scalar",
            },
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::StopGradient => "stop_gradient",
            Op::Reduce { op, .. } => op.name(),
            Op::ArgReduce { op, .. } => op.name(),
            Op::SumToLike => "sum_to_like",
            Op::Reshape(_) => "reshape",
            Op::ReshapeLike => "reshape_like",
            Op::Flatten { .. } => "flatten",
            Op::Unsqueeze(_) => "unsqueeze",
            Op::Squeeze(_) => "squeeze",
            Op::Permute(_) => "permute",
            Op::Expand(_) => "expand",
            Op::ExpandLike => "expand_like",
            Op::Slice { .. } => "slice",
            Op::SliceBackward { .. } => "slice_backward",
            Op::Pad { .. } => "pad",
            Op::Concat(_) => "concat",
            Op::Gather(_) => "gather",
            Op::ScatterAdd(_) => "scatter_add",
            Op::IndexSelect(_) => "index_select",
            Op::IndexAdd(_) => "index_add",
            Op::MaskedSelect => "masked_select",
            Op::MaskedScatter => "masked_scatter",
            Op::OneHot { .. } => "one_hot",
            Op::MatMul => "matmul",
            Op::Conv2d(_) => "conv2d",
            Op::Conv2dInputGrad(_) => "conv2d_input_grad",
            Op::Conv2dWeightGrad(_) => "conv2d_weight_grad",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::MaxPool2dBackward(_) => "max_pool2d_backward",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::AvgPool2dBackward(_) => "avg_pool2d_backward",
            Op::AdaptiveAvgPool2d(_) => "adaptive_avg_pool2d",
            Op::AdaptiveAvgPool2dBackward => "adaptive_avg_pool2d_backward",
            Op::Softmax(_) => "softmax",
            Op::LogSoftmax(_) => "log_softmax",
            Op::CrossEntropy { .. } => "cross_entropy",
        }
    }

    /// The number of inputs the op takes, or `None` when variable (concat, conv2d bias,
    /// fused programs).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Constant(_) | Op::Full { .. } => 0,
            Op::FullLike { .. }
            | Op::Random { .. }
            | Op::DimSize { .. }
            | Op::Unary(_)
            | Op::Scalar { .. }
            | Op::Cast(_)
            | Op::StopGradient
            | Op::Reduce { .. }
            | Op::ArgReduce { .. }
            | Op::Reshape(_)
            | Op::Flatten { .. }
            | Op::Unsqueeze(_)
            | Op::Squeeze(_)
            | Op::Permute(_)
            | Op::Expand(_)
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::OneHot { .. }
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::AdaptiveAvgPool2d(_)
            | Op::Softmax(_)
            | Op::LogSoftmax(_) => 1,
            Op::Binary(_)
            | Op::SumToLike
            | Op::ReshapeLike
            | Op::ExpandLike
            | Op::SliceBackward { .. }
            | Op::Gather(_)
            | Op::IndexSelect(_)
            | Op::MaskedSelect
            | Op::MatMul
            | Op::MaxPool2dBackward(_)
            | Op::AvgPool2dBackward(_)
            | Op::AdaptiveAvgPool2dBackward
            | Op::CrossEntropy { .. } => 2,
            Op::Where
            | Op::ScatterAdd(_)
            | Op::IndexAdd(_)
            | Op::MaskedScatter
            | Op::Conv2dInputGrad(_)
            | Op::Conv2dWeightGrad(_) => 3,
            Op::Concat(_) | Op::Conv2d(_) => return None,
        })
    }

    /// True for ops that compute each output element from the input elements at the same
    /// (broadcast) position: the ops the graph compiler may fuse into one pass.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Scalar { .. } | Op::Where | Op::Cast(_)
        )
    }

    /// True for ops that only change the layout (no arithmetic): reshape, permute, expand,
    /// slice, squeeze, ...
    pub fn is_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape(_)
                | Op::ReshapeLike
                | Op::Flatten { .. }
                | Op::Unsqueeze(_)
                | Op::Squeeze(_)
                | Op::Permute(_)
                | Op::Expand(_)
                | Op::ExpandLike
                | Op::Slice { .. }
        )
    }

    /// True for ops whose result changes from run to run (random), which must not be folded
    /// or deduplicated.
    pub fn is_random(&self) -> bool {
        matches!(self, Op::Random { .. })
    }

    /// A string that is equal for two ops exactly when they compute the same function
    /// (used to deduplicate common subexpressions).
    pub fn key(&self) -> String {
        match self {
            Op::Constant(t) => format!("constant@{:p}", std::sync::Arc::as_ptr(t.storage())),
            other => format!("{other:?}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Constant(t) => write!(f, "constant{:?}", t.shape()),
            Op::Full {
                shape,
                value,
                dtype,
            } => write!(f, "full({value}, {shape:?}, {dtype})"),
            Op::FullLike { value, .. } => write!(f, "full_like({value})"),
            Op::Scalar {
                op,
                value,
                scalar_on_left,
            } => {
                if *scalar_on_left {
                    write!(f, "{}({value}, x)", op.name())
                } else {
                    write!(f, "{}(x, {value})", op.name())
                }
            }
            Op::Cast(d) => write!(f, "cast({d})"),
            Op::Reduce { op, axes, keepdim } => {
                write!(f, "{}(axes={axes:?}, keepdim={keepdim})", op.name())
            }
            Op::ArgReduce { op, axis, keepdim } => {
                write!(f, "{}(axis={axis}, keepdim={keepdim})", op.name())
            }
            Op::Reshape(s) => write!(f, "reshape({s:?})"),
            Op::Permute(p) => write!(f, "permute({p:?})"),
            Op::Expand(s) => write!(f, "expand({s:?})"),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => write!(f, "slice(axis={axis}, {start}:{end}:{step})"),
            Op::Concat(a) => write!(f, "concat(axis={a})"),
            Op::Softmax(a) => write!(f, "softmax(axis={a})"),
            Op::LogSoftmax(a) => write!(f, "log_softmax(axis={a})"),
            other => f.write_str(other.name()),
        }
    }
}
