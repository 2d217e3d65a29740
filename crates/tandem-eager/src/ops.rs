//! Tensor methods: thin calls into the shared builders ([`EmitExt`], [`Functional`]) on the
//! [`Eager`] emitter, so each op has one implementation and one gradient rule.

use crate::emitter::Eager;
use crate::tensor::Tensor;
use tandem_ir::{Emit, EmitExt, Functional, Op};
use tandem_tensor::{ArgReduceOp, BinaryOp, DType, Result, UnaryOp};

const E: Eager = Eager;

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $u:ident;)*) => {
        $( $(#[$doc])* pub fn $name(&self) -> Result<Tensor> { E.unary(UnaryOp::$u, self) } )*
    };
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $b:ident;)*) => {
        $( $(#[$doc])* pub fn $name(&self, other: &Tensor) -> Result<Tensor> {
            E.binary(BinaryOp::$b, self, other)
        } )*
    };
}

macro_rules! scalar_methods {
    ($($(#[$doc:meta])* $name:ident => $b:ident;)*) => {
        $( $(#[$doc])* pub fn $name(&self, v: f64) -> Result<Tensor> {
            E.scalar(BinaryOp::$b, self, v, false)
        } )*
    };
}

impl Tensor {
    unary_methods! {
        /// `-x`.
        neg => Neg;
        /// `|x|`.
        abs => Abs;
        /// `e^x`.
        exp => Exp;
        /// Natural logarithm.
        log => Log;
        /// Square root.
        sqrt => Sqrt;
        /// `1 / sqrt(x)`.
        rsqrt => Rsqrt;
        /// `1 / x`.
        recip => Recip;
        /// Sine.
        sin => Sin;
        /// Cosine.
        cos => Cos;
        /// Hyperbolic tangent.
        tanh => Tanh;
        /// Logistic sigmoid.
        sigmoid => Sigmoid;
        /// `max(x, 0)`.
        relu => Relu;
        /// Error function.
        erf => Erf;
        /// Sign (-1, 0 or 1).
        sign => Sign;
        /// Round down.
        floor => Floor;
        /// Round up.
        ceil => Ceil;
        /// Round half to even.
        round => Round;
        /// `x * x`.
        square => Square;
        /// `ln(1 + x)`.
        log1p => Log1p;
        /// `e^x - 1`.
        expm1 => Expm1;
        /// Logical not of a bool tensor.
        logical_not => Not;
    }

    binary_methods! {
        /// `self + other` with broadcasting (also the `+` operator).
        add => Add;
        /// `self - other` with broadcasting.
        sub => Sub;
        /// `self * other` with broadcasting.
        mul => Mul;
        /// `self / other` with broadcasting (integers divide to float).
        div => Div;
        /// `self ^ other` elementwise.
        pow_tensor => Pow;
        /// Elementwise maximum.
        maximum => Maximum;
        /// Elementwise minimum.
        minimum => Minimum;
        /// `self == other` (bool).
        eq => Eq;
        /// `self != other` (bool).
        ne => Ne;
        /// `self < other` (bool).
        lt => Lt;
        /// `self <= other` (bool).
        le => Le;
        /// `self > other` (bool).
        gt => Gt;
        /// `self >= other` (bool).
        ge => Ge;
        /// Logical and of bool tensors.
        logical_and => And;
        /// Logical or of bool tensors.
        logical_or => Or;
    }

    scalar_methods! {
        /// `self + v`.
        add_scalar => Add;
        /// `self - v`.
        sub_scalar => Sub;
        /// `self * v`.
        mul_scalar => Mul;
        /// `self / v`.
        div_scalar => Div;
        /// `self ^ v`.
        pow => Pow;
        /// `self == v` (bool).
        eq_scalar => Eq;
        /// `self != v` (bool).
        ne_scalar => Ne;
        /// `self < v` (bool).
        lt_scalar => Lt;
        /// `self <= v` (bool).
        le_scalar => Le;
        /// `self > v` (bool).
        gt_scalar => Gt;
        /// `self >= v` (bool).
        ge_scalar => Ge;
    }

    /// `v - self`.
    pub fn rsub_scalar(&self, v: f64) -> Result<Tensor> {
        E.rsub_scalar(self, v)
    }

    /// `v / self`.
    pub fn rdiv_scalar(&self, v: f64) -> Result<Tensor> {
        E.scalar(BinaryOp::Div, self, v, true)
    }

    /// `clamp(self, min, max)` with optional bounds.
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Result<Tensor> {
        E.clamp(self, min, max)
    }

    /// `where(cond, a, b)`: elements of `a` where `cond` is true, else of `b`.
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        E.where_(cond, a, b)
    }

    /// Elements of `self` with `value` where `mask` is true.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        E.masked_fill(self, mask, value)
    }

    /// Converts to another dtype (the same tensor when it already has it).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        E.cast(self, dtype)
    }

    // ---- reductions ----

    /// Sum over `dims` (empty = all).
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        E.sum(self, dims, keepdim)
    }
    /// Sum of all elements (0-d).
    pub fn sum_all(&self) -> Result<Tensor> {
        E.sum(self, &[], false)
    }
    /// Mean over `dims` (empty = all).
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        E.mean(self, dims, keepdim)
    }
    /// Mean of all elements (0-d).
    pub fn mean_all(&self) -> Result<Tensor> {
        E.mean(self, &[], false)
    }
    /// Max over `dims` (empty = all).
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        E.max(self, dims, keepdim)
    }
    /// Min over `dims` (empty = all).
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        E.reduce(tandem_tensor::ReduceOp::Min, self, dims, keepdim)
    }
    /// Product over `dims` (empty = all).
    pub fn prod(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        E.reduce(tandem_tensor::ReduceOp::Prod, self, dims, keepdim)
    }
    /// Index of the max along `dim` (int64).
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        E.argmax(self, dim, keepdim)
    }
    /// Index of the min along `dim` (int64).
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let axis = tandem_tensor::layout::normalize_axis("argmin", dim, self.rank())?;
        E.emit(
            Op::ArgReduce {
                op: ArgReduceOp::ArgMin,
                axis,
                keepdim,
            },
            &[self],
        )
    }
    /// Variance over `dims` (`unbiased` divides by n - 1, PyTorch's default).
    pub fn var(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        E.var(self, dims, unbiased, keepdim)
    }
    /// Standard deviation over `dims`.
    pub fn std(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        E.sqrt(&E.var(self, dims, unbiased, keepdim)?)
    }
    /// `log(sum(exp(x)))` over `dims`, computed stably.
    pub fn logsumexp(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        E.logsumexp(self, dims, keepdim)
    }
    /// Softmax along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        E.softmax(self, dim)
    }
    /// Log-softmax along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        E.log_softmax(self, dim)
    }

    // ---- views and movement ----

    /// Reshape (at most one -1); a view when the layout allows.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        E.reshape(self, shape)
    }
    /// Same as [`Tensor::reshape`] (PyTorch's `view`).
    pub fn view(&self, shape: &[isize]) -> Result<Tensor> {
        E.reshape(self, shape)
    }
    /// Reorder dims.
    pub fn permute(&self, perm: &[isize]) -> Result<Tensor> {
        E.permute(self, perm)
    }
    /// Swap two dims.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        E.transpose(self, a, b)
    }
    /// Transpose of a matrix (the last two dims).
    pub fn t(&self) -> Result<Tensor> {
        E.transpose(self, -2, -1)
    }
    /// Remove the size-1 dim `dim`.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        E.squeeze(self, dim)
    }
    /// Insert a size-1 dim at `dim`.
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        E.unsqueeze(self, dim)
    }
    /// Merge dims `start..=end`.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        E.flatten(self, start, end)
    }
    /// `len` entries of `dim` from `start`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        E.narrow(self, dim, start, len)
    }
    /// Python-style slice `start:end:step` of `dim`.
    pub fn slice(&self, dim: isize, start: isize, end: isize, step: usize) -> Result<Tensor> {
        E.slice(self, dim, start, end, step)
    }
    /// Entry `index` of `dim`, removing the dim (`x[i]` for dim 0).
    pub fn select(&self, dim: isize, index: isize) -> Result<Tensor> {
        E.select(self, dim, index)
    }
    /// Broadcast to `shape`.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        E.expand(self, shape)
    }
    /// Broadcast to the shape of `other`.
    pub fn expand_as(&self, other: &Tensor) -> Result<Tensor> {
        E.expand_like(self, other)
    }
    /// Constant padding: `(before, after)` for every dim.
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Result<Tensor> {
        E.emit(
            Op::Pad {
                pads: pads.to_vec(),
                value,
            },
            &[self],
        )
    }
    /// A contiguous copy when needed (gradients flow through).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.value_ref().is_contiguous() {
            return Ok(self.clone());
        }
        E.emit(Op::Reshape(vec![-1]), &[self])?
            .reshape(&self.dims().iter().map(|&d| d as isize).collect::<Vec<_>>())
    }

    /// Concatenation along `dim`.
    pub fn cat(xs: &[&Tensor], dim: isize) -> Result<Tensor> {
        E.concat(xs, dim)
    }
    /// Stack along a new `dim`.
    pub fn stack(xs: &[&Tensor], dim: isize) -> Result<Tensor> {
        E.stack(xs, dim)
    }

    // ---- indexing ----

    /// `torch.gather(self, dim, index)`.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        E.gather(self, dim, index)
    }
    /// `torch.index_select(self, dim, index)`.
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        E.index_select(self, dim, index)
    }
    /// `self.scatter_add(dim, index, src)`.
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let axis = tandem_tensor::layout::normalize_axis("scatter_add", dim, self.rank())?;
        E.emit(Op::ScatterAdd(axis), &[self, index, src])
    }
    /// `self.index_add(dim, index, src)`.
    pub fn index_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let axis = tandem_tensor::layout::normalize_axis("index_add", dim, self.rank())?;
        E.emit(Op::IndexAdd(axis), &[self, index, src])
    }
    /// Elements where `mask` is true, as a 1-D tensor.
    pub fn masked_select(&self, mask: &Tensor) -> Result<Tensor> {
        E.emit(Op::MaskedSelect, &[self, mask])
    }
    /// One-hot encoding of an integer tensor (int64 like PyTorch).
    pub fn one_hot(&self, classes: usize) -> Result<Tensor> {
        E.one_hot(self, classes, DType::I64)
    }

    // ---- linear algebra ----

    /// `torch.matmul` (1-D operands promoted, batch dims broadcast).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        E.matmul(self, other)
    }
}
