//! The trait through which ops are applied, and the typed builders on top of it.
//!
//! [`Emit`] has one required operation, `emit(op, inputs)`. Eager mode implements it by running
//! the kernel (and recording onto the tape), graph mode by appending a node, and [`crate::Eval`]
//! by running the kernel on plain tensors. Gradient rules and composite ops are written once
//! against [`EmitExt`], so they work in every mode.

use crate::infer::Dim;
use crate::op::{Distribution, Op};
use tandem_tensor::layout::normalize_axis;
use tandem_tensor::{
    ArgReduceOp, BinaryOp, Conv2dParams, DType, Error, Pool2dParams, ReduceOp, Result, Tensor,
    UnaryOp,
};

/// Applies ops to values of some kind (eager tensors, graph outputs, plain tensors).
pub trait Emit {
    /// The value type ops consume and produce.
    type Value: Clone;

    /// Applies `op` to `inputs`.
    fn emit(&self, op: Op, inputs: &[&Self::Value]) -> Result<Self::Value>;

    /// Element type of a value.
    fn dtype(&self, v: &Self::Value) -> DType;

    /// Number of dimensions of a value.
    fn rank(&self, v: &Self::Value) -> usize;

    /// Size of one dimension if known (always known in eager mode).
    fn dim(&self, v: &Self::Value, axis: usize) -> Dim;

    /// True when the two values certainly have the same shape.
    fn same_shape(&self, a: &Self::Value, b: &Self::Value) -> bool;

    /// A fresh seed for a random op.
    fn next_seed(&self) -> u64;

    /// The (partly known) shape of a value.
    fn shape(&self, v: &Self::Value) -> Vec<Dim> {
        (0..self.rank(v)).map(|a| self.dim(v, a)).collect()
    }

    /// A constant value.
    fn constant(&self, t: Tensor) -> Result<Self::Value> {
        self.emit(Op::Constant(t), &[])
    }

    /// `g * cast(x > c)` with the mask in `g`'s dtype: relu's gradient (`g` the output
    /// gradient, `x` the input). The default applies the comparison, cast and product
    /// ([`gt_mask_mul_ops`]), which graph mode's lowering turns back into one pass; an emitter
    /// that runs ops at once may run [`crate::fused::mask_mul`] instead (the same numbers).
    fn gt_mask_mul(&self, g: &Self::Value, x: &Self::Value, c: f64) -> Result<Self::Value> {
        gt_mask_mul_ops(self, g, x, c)
    }

    /// `x @ w^T + b` for a weight `w [out, in]` (`F.linear`). The default applies the ops
    /// ([`crate::composite::linear_ops`]: transpose, matmul, add), which graph mode's fusion
    /// pass turns into one kernel; an emitter that runs ops at once may run
    /// [`crate::fused::matmul_bias`] instead (the same numbers) when nothing records them.
    fn affine(
        &self,
        x: &Self::Value,
        w: &Self::Value,
        b: Option<&Self::Value>,
    ) -> Result<Self::Value> {
        crate::composite::linear_ops(self, x, w, b)
    }

    /// True when `v` is held as the transpose of a row-major matrix (a 2-D view with unit row
    /// stride, e.g. `w.t()` inside a linear layer; in graph mode, the output of a 2-D
    /// transpose). Gradient rules then compute its gradient transposed, so that it lands in the
    /// layout of the matrix underneath instead of being copied there later. The default
    /// answers false.
    fn is_transposed_view(&self, v: &Self::Value) -> bool {
        let _ = v;
        false
    }
}

/// True for a 2-D view that is exactly the transpose of a row-major matrix (strides `[1,
/// rows]`, more than one row and column): what [`Emit::is_transposed_view`] asks of eager values.
pub fn is_transposed_matrix(t: &Tensor) -> bool {
    matches!((t.shape(), t.strides()), (&[r, c], &[1, s]) if r > 1 && c > 1 && s == r)
}

/// [`Emit::gt_mask_mul`] as its three ops.
pub fn gt_mask_mul_ops<E: Emit + ?Sized>(
    e: &E,
    g: &E::Value,
    x: &E::Value,
    c: f64,
) -> Result<E::Value> {
    let mask = e.cast(&e.gt_scalar(x, c)?, e.dtype(g))?;
    e.mul(g, &mask)
}

/// The dtype PyTorch gives to `a op b` (float beats int beats bool; wider wins; a 0-d operand
/// does not widen a dimensioned operand of the same kind).
pub fn promote(a: DType, a_rank: usize, b: DType, b_rank: usize) -> DType {
    if a == b {
        return a;
    }
    fn kind(d: DType) -> u8 {
        if d.is_float() {
            2
        } else if d == DType::Bool {
            0
        } else {
            1
        }
    }
    let (ka, kb) = (kind(a), kind(b));
    if ka != kb {
        return if ka > kb { a } else { b };
    }
    // Same kind: a 0-d operand defers to a dimensioned one.
    if a_rank == 0 && b_rank > 0 {
        return b;
    }
    if b_rank == 0 && a_rank > 0 {
        return a;
    }
    match (a, b) {
        (DType::F16, DType::BF16) | (DType::BF16, DType::F16) => DType::F32,
        _ => {
            if a.size_in_bytes() >= b.size_in_bytes() {
                a
            } else {
                b
            }
        }
    }
}

fn reduce_axes<E: Emit + ?Sized>(
    e: &E,
    x: &E::Value,
    axes: &[isize],
    op: &'static str,
) -> Result<Vec<usize>> {
    let rank = e.rank(x);
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| normalize_axis(op, a, rank))
        .collect::<Result<_>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(op, format!("repeated axis in {axes:?}")));
    }
    if rank == 0 {
        out.clear();
    }
    Ok(out)
}

/// Typed builders for every op, with PyTorch-style dtype promotion and negative axes.
/// Implemented for every [`Emit`].
pub trait EmitExt: Emit {
    /// Elementwise unary op.
    fn unary(&self, op: UnaryOp, x: &Self::Value) -> Result<Self::Value> {
        self.emit(Op::Unary(op), &[x])
    }
    /// -x
    fn neg(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Neg, x)
    }
    /// |x|
    fn abs(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Abs, x)
    }
    /// e^x
    fn exp(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Exp, x)
    }
    /// ln x
    fn log(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Log, x)
    }
    /// sqrt x
    fn sqrt(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Sqrt, x)
    }
    /// 1/sqrt x
    fn rsqrt(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Rsqrt, x)
    }
    /// 1/x
    fn recip(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Recip, x)
    }
    /// tanh x
    fn tanh(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Tanh, x)
    }
    /// sigmoid x
    fn sigmoid(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Sigmoid, x)
    }
    /// max(x, 0)
    fn relu(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Relu, x)
    }
    /// x*x
    fn square(&self, x: &Self::Value) -> Result<Self::Value> {
        self.unary(UnaryOp::Square, x)
    }

    /// Elementwise binary op with broadcasting and dtype promotion.
    fn binary(&self, op: BinaryOp, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        let (da, db) = (self.dtype(a), self.dtype(b));
        let true_div = op == BinaryOp::Div && !da.is_float() && !db.is_float();
        if da == db && !true_div {
            return self.emit(Op::Binary(op), &[a, b]);
        }
        let d = if true_div {
            DType::F32
        } else {
            promote(da, self.rank(a), db, self.rank(b))
        };
        let a2 = if da != d { self.cast(a, d)? } else { a.clone() };
        let b2 = if db != d { self.cast(b, d)? } else { b.clone() };
        self.emit(Op::Binary(op), &[&a2, &b2])
    }
    /// a + b
    fn add(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        self.binary(BinaryOp::Add, a, b)
    }
    /// a - b
    fn sub(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        self.binary(BinaryOp::Sub, a, b)
    }
    /// a * b
    fn mul(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        self.binary(BinaryOp::Mul, a, b)
    }
    /// a / b
    fn div(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        self.binary(BinaryOp::Div, a, b)
    }
    /// a == b (bool)
    fn eq(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        self.binary(BinaryOp::Eq, a, b)
    }

    /// `x op value` (or `value op x`). An integer tensor with a fractional scalar, or divided
    /// by a scalar, is promoted to float first, as in PyTorch.
    fn scalar(
        &self,
        op: BinaryOp,
        x: &Self::Value,
        value: f64,
        scalar_on_left: bool,
    ) -> Result<Self::Value> {
        let d = self.dtype(x);
        let int_needs_float = !d.is_float()
            && !op.is_logical()
            && (value.fract() != 0.0 || !value.is_finite() || op == BinaryOp::Div);
        if int_needs_float {
            let to = if op.is_comparison() {
                DType::F64
            } else {
                DType::F32
            };
            let xf = self.cast(x, to)?;
            return self.emit(
                Op::Scalar {
                    op,
                    value,
                    scalar_on_left,
                },
                &[&xf],
            );
        }
        self.emit(
            Op::Scalar {
                op,
                value,
                scalar_on_left,
            },
            &[x],
        )
    }
    /// x + v
    fn add_scalar(&self, x: &Self::Value, v: f64) -> Result<Self::Value> {
        self.scalar(BinaryOp::Add, x, v, false)
    }
    /// x * v
    fn mul_scalar(&self, x: &Self::Value, v: f64) -> Result<Self::Value> {
        self.scalar(BinaryOp::Mul, x, v, false)
    }
    /// x ^ v
    fn pow_scalar(&self, x: &Self::Value, v: f64) -> Result<Self::Value> {
        self.scalar(BinaryOp::Pow, x, v, false)
    }
    /// v - x
    fn rsub_scalar(&self, x: &Self::Value, v: f64) -> Result<Self::Value> {
        self.scalar(BinaryOp::Sub, x, v, true)
    }
    /// x > v (bool)
    fn gt_scalar(&self, x: &Self::Value, v: f64) -> Result<Self::Value> {
        self.scalar(BinaryOp::Gt, x, v, false)
    }

    /// `where(cond, a, b)`; a non-bool cond is compared with zero; a and b are promoted.
    fn where_(&self, cond: &Self::Value, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        let c = if self.dtype(cond) != DType::Bool {
            self.scalar(BinaryOp::Ne, cond, 0.0, false)?
        } else {
            cond.clone()
        };
        let (da, db) = (self.dtype(a), self.dtype(b));
        if da == db {
            return self.emit(Op::Where, &[&c, a, b]);
        }
        let d = promote(da, self.rank(a), db, self.rank(b));
        let a2 = self.cast(a, d)?;
        let b2 = self.cast(b, d)?;
        self.emit(Op::Where, &[&c, &a2, &b2])
    }

    /// Dtype conversion (the same value when the dtype already matches).
    fn cast(&self, x: &Self::Value, dtype: DType) -> Result<Self::Value> {
        if self.dtype(x) == dtype {
            return Ok(x.clone());
        }
        self.emit(Op::Cast(dtype), &[x])
    }

    /// Reduction over `axes` (negative allowed; empty = all axes).
    fn reduce(
        &self,
        op: ReduceOp,
        x: &Self::Value,
        axes: &[isize],
        keepdim: bool,
    ) -> Result<Self::Value> {
        let axes = if axes.is_empty() {
            (0..self.rank(x)).collect()
        } else {
            reduce_axes(self, x, axes, op.name())?
        };
        self.emit(Op::Reduce { op, axes, keepdim }, &[x])
    }
    /// Sum over `axes` (empty = all).
    fn sum(&self, x: &Self::Value, axes: &[isize], keepdim: bool) -> Result<Self::Value> {
        self.reduce(ReduceOp::Sum, x, axes, keepdim)
    }
    /// Mean over `axes` (empty = all).
    fn mean(&self, x: &Self::Value, axes: &[isize], keepdim: bool) -> Result<Self::Value> {
        self.reduce(ReduceOp::Mean, x, axes, keepdim)
    }
    /// Max over `axes` (empty = all).
    fn max(&self, x: &Self::Value, axes: &[isize], keepdim: bool) -> Result<Self::Value> {
        self.reduce(ReduceOp::Max, x, axes, keepdim)
    }
    /// Index of the max along `axis` (int64).
    fn argmax(&self, x: &Self::Value, axis: isize, keepdim: bool) -> Result<Self::Value> {
        let axis = normalize_axis("argmax", axis, self.rank(x))?;
        self.emit(
            Op::ArgReduce {
                op: ArgReduceOp::ArgMax,
                axis,
                keepdim,
            },
            &[x],
        )
    }

    /// Sum `x` down to the shape of `like` (undo broadcasting).
    fn sum_to_like(&self, x: &Self::Value, like: &Self::Value) -> Result<Self::Value> {
        if self.same_shape(x, like) {
            return Ok(x.clone());
        }
        self.emit(Op::SumToLike, &[x, like])
    }
    /// Broadcast `x` to the shape of `like`.
    fn expand_like(&self, x: &Self::Value, like: &Self::Value) -> Result<Self::Value> {
        if self.same_shape(x, like) {
            return Ok(x.clone());
        }
        self.emit(Op::ExpandLike, &[x, like])
    }
    /// Reshape `x` to the shape of `like`.
    fn reshape_like(&self, x: &Self::Value, like: &Self::Value) -> Result<Self::Value> {
        if self.same_shape(x, like) {
            return Ok(x.clone());
        }
        self.emit(Op::ReshapeLike, &[x, like])
    }
    /// Reshape with at most one -1.
    fn reshape(&self, x: &Self::Value, shape: &[isize]) -> Result<Self::Value> {
        self.emit(Op::Reshape(shape.to_vec()), &[x])
    }
    /// Merge dims `start..=end` (negative allowed).
    fn flatten(&self, x: &Self::Value, start: isize, end: isize) -> Result<Self::Value> {
        let r = self.rank(x);
        let start = normalize_axis("flatten", start, r)?;
        let end = normalize_axis("flatten", end, r)?;
        self.emit(Op::Flatten { start, end }, &[x])
    }
    /// Insert a size-1 dim (axis in `-(rank+1)..=rank`).
    fn unsqueeze(&self, x: &Self::Value, axis: isize) -> Result<Self::Value> {
        let a = normalize_axis("unsqueeze", axis, self.rank(x) + 1)?;
        self.emit(Op::Unsqueeze(a), &[x])
    }
    /// Remove a size-1 dim.
    fn squeeze(&self, x: &Self::Value, axis: isize) -> Result<Self::Value> {
        let a = normalize_axis("squeeze", axis, self.rank(x))?;
        self.emit(Op::Squeeze(a), &[x])
    }
    /// Reorder dims (negative allowed).
    fn permute(&self, x: &Self::Value, perm: &[isize]) -> Result<Self::Value> {
        let r = self.rank(x);
        let p = perm
            .iter()
            .map(|&a| normalize_axis("permute", a, r))
            .collect::<Result<Vec<_>>>()?;
        self.emit(Op::Permute(p), &[x])
    }
    /// Swap two dims.
    fn transpose(&self, x: &Self::Value, a: isize, b: isize) -> Result<Self::Value> {
        let r = self.rank(x);
        let a = normalize_axis("transpose", a, r)?;
        let b = normalize_axis("transpose", b, r)?;
        let mut p: Vec<usize> = (0..r).collect();
        if r >= 2 {
            p.swap(a, b);
        }
        self.emit(Op::Permute(p), &[x])
    }
    /// Broadcast to a shape.
    fn expand(&self, x: &Self::Value, shape: &[usize]) -> Result<Self::Value> {
        self.emit(Op::Expand(shape.to_vec()), &[x])
    }
    /// Python-style slice of one axis.
    fn slice(
        &self,
        x: &Self::Value,
        axis: isize,
        start: isize,
        end: isize,
        step: usize,
    ) -> Result<Self::Value> {
        let axis = normalize_axis("slice", axis, self.rank(x))?;
        self.emit(
            Op::Slice {
                axis,
                start,
                end,
                step,
            },
            &[x],
        )
    }
    /// `len` elements of `axis` from `start`.
    fn narrow(
        &self,
        x: &Self::Value,
        axis: isize,
        start: usize,
        len: usize,
    ) -> Result<Self::Value> {
        self.slice(x, axis, start as isize, (start + len) as isize, 1)
    }
    /// Index `index` of `axis`, removing the axis.
    fn select(&self, x: &Self::Value, axis: isize, index: isize) -> Result<Self::Value> {
        let a = normalize_axis("select", axis, self.rank(x))?;
        if let Some(d) = self.dim(x, a) {
            let i = if index < 0 { index + d as isize } else { index };
            if i < 0 || i as usize >= d {
                return Err(Error::IndexOutOfRange {
                    op: "select",
                    index: index as i64,
                    size: d,
                });
            }
            let s = self.slice(x, a as isize, i, i + 1, 1)?;
            return self.squeeze(&s, a as isize);
        }
        let end = if index == -1 { isize::MAX } else { index + 1 };
        let s = self.slice(x, a as isize, index, end, 1)?;
        self.squeeze(&s, a as isize)
    }
    /// Concatenate along an axis (inputs promoted to a common dtype).
    fn concat(&self, xs: &[&Self::Value], axis: isize) -> Result<Self::Value> {
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("concat", "needs at least one tensor"))?;
        let axis = normalize_axis("concat", axis, self.rank(first))?;
        self.emit(Op::Concat(axis), xs)
    }
    /// Stack along a new axis.
    fn stack(&self, xs: &[&Self::Value], axis: isize) -> Result<Self::Value> {
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("stack", "needs at least one tensor"))?;
        let a = normalize_axis("stack", axis, self.rank(first) + 1)?;
        let us = xs
            .iter()
            .map(|x| self.emit(Op::Unsqueeze(a), &[x]))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Self::Value> = us.iter().collect();
        self.emit(Op::Concat(a), &refs)
    }

    /// Matrix product of rank >= 2 operands (the primitive; see `Functional::matmul` for
    /// vectors).
    fn matmul2(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        self.emit(Op::MatMul, &[a, b])
    }
    /// 2-D convolution with optional bias.
    fn conv2d(
        &self,
        x: &Self::Value,
        w: &Self::Value,
        b: Option<&Self::Value>,
        p: Conv2dParams,
    ) -> Result<Self::Value> {
        match b {
            Some(b) => self.emit(Op::Conv2d(p), &[x, w, b]),
            None => self.emit(Op::Conv2d(p), &[x, w]),
        }
    }
    /// Max pooling.
    fn max_pool2d(&self, x: &Self::Value, p: Pool2dParams) -> Result<Self::Value> {
        self.emit(Op::MaxPool2d(p), &[x])
    }
    /// Average pooling.
    fn avg_pool2d(&self, x: &Self::Value, p: Pool2dParams) -> Result<Self::Value> {
        self.emit(Op::AvgPool2d(p), &[x])
    }
    /// Softmax along an axis (negative allowed).
    fn softmax(&self, x: &Self::Value, axis: isize) -> Result<Self::Value> {
        let a = normalize_axis("softmax", axis, self.rank(x))?;
        self.emit(Op::Softmax(a), &[x])
    }
    /// Log-softmax along an axis (negative allowed).
    fn log_softmax(&self, x: &Self::Value, axis: isize) -> Result<Self::Value> {
        let a = normalize_axis("log_softmax", axis, self.rank(x))?;
        self.emit(Op::LogSoftmax(a), &[x])
    }

    /// Gather along an axis.
    fn gather(&self, x: &Self::Value, axis: isize, index: &Self::Value) -> Result<Self::Value> {
        let a = normalize_axis("gather", axis, self.rank(x))?;
        self.emit(Op::Gather(a), &[x, index])
    }
    /// Select entries of an axis by a 1-D index.
    fn index_select(
        &self,
        x: &Self::Value,
        axis: isize,
        index: &Self::Value,
    ) -> Result<Self::Value> {
        let a = normalize_axis("index_select", axis, self.rank(x))?;
        self.emit(Op::IndexSelect(a), &[x, index])
    }

    /// A tensor shaped like `x` filled with `value` (dtype of `x` unless given).
    fn full_like(&self, x: &Self::Value, value: f64, dtype: Option<DType>) -> Result<Self::Value> {
        self.emit(Op::FullLike { value, dtype }, &[x])
    }
    /// Zeros shaped like `x`.
    fn zeros_like(&self, x: &Self::Value) -> Result<Self::Value> {
        self.full_like(x, 0.0, None)
    }
    /// A tensor of a known shape filled with `value`.
    fn full(&self, shape: &[usize], value: f64, dtype: DType) -> Result<Self::Value> {
        self.emit(
            Op::Full {
                shape: shape.to_vec(),
                value,
                dtype,
            },
            &[],
        )
    }
    /// Product of the sizes of `axes` of `x`, as a 0-d tensor (known at run time in graphs).
    fn dim_size(&self, x: &Self::Value, axes: &[usize], dtype: DType) -> Result<Self::Value> {
        let known: Option<usize> = axes.iter().map(|&a| self.dim(x, a)).product();
        match known {
            Some(n) => self.full(&[], n as f64, dtype),
            None => self.emit(
                Op::DimSize {
                    axes: axes.to_vec(),
                    dtype,
                },
                &[x],
            ),
        }
    }
    /// Random values shaped like `x`.
    fn random_like(&self, x: &Self::Value, dist: Distribution) -> Result<Self::Value> {
        let seed = self.next_seed();
        self.emit(Op::Random { dist, seed }, &[x])
    }
}

impl<E: Emit + ?Sized> EmitExt for E {}
