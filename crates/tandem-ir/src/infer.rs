//! Shape and dtype inference for every op, over shapes whose dims may be unknown (`None`) until
//! a graph runs (e.g. the batch dimension of a placeholder).

use crate::op::Op;
use tandem_tensor::layout::infer_reshape;
use tandem_tensor::{BinaryOp, DType, Error, ReduceOp, Result, UnaryOp};

/// A dimension: `Some(size)` when known, `None` when only known at run time.
pub type Dim = Option<usize>;

/// Dtype and (partly known) shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueInfo {
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` where unknown.
    pub shape: Vec<Dim>,
}

impl ValueInfo {
    /// Info of a value with a fully known shape.
    pub fn known(dtype: DType, shape: &[usize]) -> ValueInfo {
        ValueInfo {
            dtype,
            shape: shape.iter().map(|&d| Some(d)).collect(),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape if every dim is known.
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.shape.iter().copied().collect()
    }

    /// True when `concrete` matches this (partly known) shape and dtype.
    pub fn admits(&self, dtype: DType, shape: &[usize]) -> bool {
        dtype == self.dtype
            && shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(d, &s)| d.is_none_or(|d| d == s))
    }
}

/// Formats a partly known shape as `[?, 784]`.
pub fn fmt_shape(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn mismatch(op: &'static str, a: &[Dim], b: &[Dim], hint: impl Into<String>) -> Error {
    match (
        a.iter().copied().collect::<Option<Vec<usize>>>(),
        b.iter().copied().collect::<Option<Vec<usize>>>(),
    ) {
        (Some(a), Some(b)) => Error::ShapeMismatch {
            op,
            lhs: a,
            rhs: b,
            hint: hint.into(),
        },
        _ => {
            let hint = hint.into();
            let suffix = if hint.is_empty() {
                String::new()
            } else {
                format!(" ({hint})")
            };
            Error::invalid(
                op,
                format!(
                    "shape mismatch: {} vs {}{suffix}",
                    fmt_shape(a),
                    fmt_shape(b)
                ),
            )
        }
    }
}

fn bad_shape(op: &'static str, shape: &[Dim], msg: impl Into<String>) -> Error {
    Error::invalid(
        op,
        format!("invalid shape {}: {}", fmt_shape(shape), msg.into()),
    )
}

/// NumPy broadcast of partly known shapes.
pub fn broadcast(op: &'static str, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            Some(1)
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            Some(1)
        };
        out.push(match (da, db) {
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(1), d) | (d, Some(1)) => d,
            (Some(x), Some(y)) => {
                return Err(mismatch(
                    op,
                    a,
                    b,
                    format!("dimension {i} of the broadcast: {x} vs {y} (sizes must match or one must be 1)"),
                ))
            }
            (None, Some(y)) | (Some(y), None) => Some(y),
            (None, None) => None,
        });
    }
    Ok(out)
}

fn same_dtype(op: &'static str, a: DType, b: DType) -> Result<()> {
    if a != b {
        return Err(Error::DTypeMismatch {
            op,
            expected: format!("{a} (the dtype of the first operand)"),
            got: b,
        });
    }
    Ok(())
}

fn need_float(op: &'static str, d: DType) -> Result<()> {
    if !d.is_float() {
        return Err(Error::DTypeMismatch {
            op,
            expected: "a float dtype".into(),
            got: d,
        });
    }
    Ok(())
}

fn need_int(op: &'static str, d: DType) -> Result<()> {
    if !matches!(d, DType::I64 | DType::I32) {
        return Err(Error::DTypeMismatch {
            op,
            expected: "int64 or int32 indices".into(),
            got: d,
        });
    }
    Ok(())
}

fn axis_ok(op: &'static str, axis: usize, rank: usize) -> Result<()> {
    if axis >= rank.max(1) {
        return Err(Error::BadAxis {
            op,
            axis: axis as isize,
            rank,
        });
    }
    Ok(())
}

fn need_rank(op: &'static str, v: &ValueInfo, rank: usize) -> Result<()> {
    if v.rank() != rank {
        return Err(bad_shape(op, &v.shape, format!("expected rank {rank}")));
    }
    Ok(())
}

/// Infers the dtype and shape of an op's output from its inputs' infos.
pub fn infer(op: &Op, inputs: &[ValueInfo]) -> Result<ValueInfo> {
    let name = op.name();
    if let Some(n) = op.arity() {
        if inputs.len() != n {
            return Err(Error::invalid(
                name,
                format!("expects {n} inputs, got {}", inputs.len()),
            ));
        }
    }
    let x = inputs.first();
    let input = |i: usize| -> Result<&ValueInfo> {
        inputs
            .get(i)
            .ok_or_else(|| Error::invalid(name, format!("missing input {i}")))
    };
    Ok(match op {
        Op::Constant(t) => ValueInfo::known(t.dtype(), t.shape()),
        Op::Full { shape, dtype, .. } => ValueInfo::known(*dtype, shape),
        Op::FullLike { dtype, .. } => {
            let x = input(0)?;
            ValueInfo {
                dtype: dtype.unwrap_or(x.dtype),
                shape: x.shape.clone(),
            }
        }
        Op::Random { .. } => {
            let x = input(0)?;
            need_float(name, x.dtype)?;
            x.clone()
        }
        Op::DimSize { axes, dtype } => {
            let x = input(0)?;
            for &a in axes {
                axis_ok(name, a, x.rank())?;
            }
            ValueInfo::known(*dtype, &[])
        }
        Op::Unary(u) => {
            let x = input(0)?;
            match u {
                UnaryOp::Not => {
                    if x.dtype != DType::Bool {
                        return Err(Error::DTypeMismatch {
                            op: name,
                            expected: "bool".into(),
                            got: x.dtype,
                        });
                    }
                }
                u if !u.supports_int() => need_float(name, x.dtype)?,
                _ => {
                    if x.dtype == DType::Bool {
                        return Err(Error::DTypeMismatch {
                            op: name,
                            expected: "a numeric dtype".into(),
                            got: x.dtype,
                        });
                    }
                }
            }
            x.clone()
        }
        Op::Binary(b) => {
            let (l, r) = (input(0)?, input(1)?);
            same_dtype(name, l.dtype, r.dtype)?;
            binary_dtype_ok(*b, l.dtype)?;
            ValueInfo {
                dtype: if b.is_comparison() {
                    DType::Bool
                } else {
                    l.dtype
                },
                shape: broadcast(name, &l.shape, &r.shape)?,
            }
        }
        Op::Scalar { op: b, .. } => {
            let x = input(0)?;
            binary_dtype_ok(*b, x.dtype)?;
            ValueInfo {
                dtype: if b.is_comparison() {
                    DType::Bool
                } else {
                    x.dtype
                },
                shape: x.shape.clone(),
            }
        }
        Op::Where => {
            let (c, a, b) = (input(0)?, input(1)?, input(2)?);
            if c.dtype != DType::Bool {
                return Err(Error::DTypeMismatch {
                    op: name,
                    expected: "bool condition".into(),
                    got: c.dtype,
                });
            }
            same_dtype(name, a.dtype, b.dtype)?;
            let s = broadcast(name, &a.shape, &b.shape)?;
            ValueInfo {
                dtype: a.dtype,
                shape: broadcast(name, &c.shape, &s)?,
            }
        }
        Op::StopGradient => input(0)?.clone(),
        Op::Cast(d) => ValueInfo {
            dtype: *d,
            shape: input(0)?.shape.clone(),
        },
        Op::Reduce {
            op: r,
            axes,
            keepdim,
        } => {
            let x = input(0)?;
            let mut seen = vec![false; x.rank().max(1)];
            for &a in axes {
                axis_ok(name, a, x.rank())?;
                if std::mem::replace(&mut seen[a], true) {
                    return Err(Error::invalid(
                        name,
                        format!("axis {a} repeated in {axes:?}"),
                    ));
                }
            }
            let dtype = match r {
                ReduceOp::Mean => {
                    need_float(name, x.dtype)?;
                    x.dtype
                }
                ReduceOp::Sum | ReduceOp::Prod if !x.dtype.is_float() => DType::I64,
                _ => x.dtype,
            };
            let shape = reduced_shape(&x.shape, axes, *keepdim);
            ValueInfo { dtype, shape }
        }
        Op::ArgReduce { axis, keepdim, .. } => {
            let x = input(0)?;
            axis_ok(name, *axis, x.rank())?;
            ValueInfo {
                dtype: DType::I64,
                shape: reduced_shape(&x.shape, &[*axis], *keepdim),
            }
        }
        Op::SumToLike | Op::ReshapeLike | Op::ExpandLike => {
            let (x, like) = (input(0)?, input(1)?);
            if matches!(op, Op::SumToLike | Op::ExpandLike) {
                // The like shape must broadcast to / from x.
                let (from, to) = if matches!(op, Op::SumToLike) {
                    (&like.shape, &x.shape)
                } else {
                    (&x.shape, &like.shape)
                };
                let b = broadcast(name, from, to)?;
                if b.len() != to.len()
                    || b.iter()
                        .zip(to.iter())
                        .any(|(p, q)| p.is_some() && q.is_some() && p != q)
                {
                    return Err(mismatch(
                        name,
                        from,
                        to,
                        "not broadcastable in that direction",
                    ));
                }
            } else if let (Some(a), Some(b)) = (x.concrete(), like.concrete()) {
                if a.iter().product::<usize>() != b.iter().product::<usize>() {
                    return Err(mismatch(
                        name,
                        &x.shape,
                        &like.shape,
                        "element counts differ",
                    ));
                }
            }
            ValueInfo {
                dtype: x.dtype,
                shape: like.shape.clone(),
            }
        }
        Op::Reshape(target) => {
            let x = input(0)?;
            let shape = match x.concrete() {
                Some(s) => infer_reshape(name, &s, target)?
                    .iter()
                    .map(|&d| Some(d))
                    .collect(),
                None => {
                    if target.iter().filter(|&&d| d == -1).count() > 1
                        || target.iter().any(|&d| d < -1)
                    {
                        return Err(Error::invalid(name, format!("bad target shape {target:?}")));
                    }
                    target
                        .iter()
                        .map(|&d| if d < 0 { None } else { Some(d as usize) })
                        .collect()
                }
            };
            ValueInfo {
                dtype: x.dtype,
                shape,
            }
        }
        Op::Flatten { start, end } => {
            let x = input(0)?;
            if x.rank() == 0 {
                return Ok(ValueInfo::known(x.dtype, &[1]).with_dtype(x.dtype));
            }
            if start > end || *end >= x.rank() {
                return Err(Error::invalid(
                    name,
                    format!("bad dims {start}..={end} for rank {}", x.rank()),
                ));
            }
            let mut shape = x.shape[..*start].to_vec();
            shape.push(
                x.shape[*start..=*end]
                    .iter()
                    .try_fold(1usize, |a, d| d.map(|d| a * d)),
            );
            shape.extend_from_slice(&x.shape[end + 1..]);
            ValueInfo {
                dtype: x.dtype,
                shape,
            }
        }
        Op::Unsqueeze(a) => {
            let x = input(0)?;
            if *a > x.rank() {
                return Err(Error::BadAxis {
                    op: name,
                    axis: *a as isize,
                    rank: x.rank() + 1,
                });
            }
            let mut shape = x.shape.clone();
            shape.insert(*a, Some(1));
            ValueInfo {
                dtype: x.dtype,
                shape,
            }
        }
        Op::Squeeze(a) => {
            let x = input(0)?;
            axis_ok(name, *a, x.rank())?;
            let mut shape = x.shape.clone();
            if !shape.is_empty() {
                if let Some(d) = shape[*a] {
                    if d != 1 {
                        return Err(bad_shape(
                            name,
                            &x.shape,
                            format!("dimension {a} has size {d}, not 1"),
                        ));
                    }
                }
                shape.remove(*a);
            }
            ValueInfo {
                dtype: x.dtype,
                shape,
            }
        }
        Op::Permute(perm) => {
            let x = input(0)?;
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank()
                || perm
                    .iter()
                    .any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
            {
                return Err(Error::invalid(
                    name,
                    format!(
                        "{perm:?} is not a permutation of the dims of {}",
                        fmt_shape(&x.shape)
                    ),
                ));
            }
            ValueInfo {
                dtype: x.dtype,
                shape: perm.iter().map(|&p| x.shape[p]).collect(),
            }
        }
        Op::Expand(target) => {
            let x = input(0)?;
            let t: Vec<Dim> = target.iter().map(|&d| Some(d)).collect();
            let b = broadcast(name, &x.shape, &t)?;
            if b != t {
                return Err(mismatch(name, &x.shape, &t, "cannot expand"));
            }
            ValueInfo {
                dtype: x.dtype,
                shape: t,
            }
        }
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => {
            let x = input(0)?;
            axis_ok(name, *axis, x.rank())?;
            if *step == 0 {
                return Err(Error::invalid(name, "step must be positive"));
            }
            let mut shape = x.shape.clone();
            if let Some(d) = shape.get(*axis).copied().flatten() {
                shape[*axis] = Some(tandem_tensor::slice_range(d, *start, *end, *step)?.1);
            }
            ValueInfo {
                dtype: x.dtype,
                shape,
            }
        }
        Op::SliceBackward { axis, .. } => {
            let (g, like) = (input(0)?, input(1)?);
            axis_ok(name, *axis, like.rank())?;
            if g.rank() != like.rank() {
                return Err(mismatch(name, &g.shape, &like.shape, "ranks differ"));
            }
            ValueInfo {
                dtype: g.dtype,
                shape: like.shape.clone(),
            }
        }
        Op::Pad { pads, .. } => {
            let x = input(0)?;
            if pads.len() != x.rank() {
                return Err(bad_shape(
                    name,
                    &x.shape,
                    format!("{} pads given for rank {}", pads.len(), x.rank()),
                ));
            }
            ValueInfo {
                dtype: x.dtype,
                shape: x
                    .shape
                    .iter()
                    .zip(pads)
                    .map(|(d, (a, b))| d.map(|d| d + a + b))
                    .collect(),
            }
        }
        Op::Concat(axis) => {
            let first = x.ok_or_else(|| Error::invalid(name, "needs at least one input"))?;
            axis_ok(name, *axis, first.rank())?;
            let mut shape = first.shape.clone();
            for v in &inputs[1..] {
                same_dtype(name, first.dtype, v.dtype)?;
                if v.rank() != first.rank() {
                    return Err(mismatch(name, &first.shape, &v.shape, "ranks differ"));
                }
                for d in 0..first.rank() {
                    if d == *axis {
                        shape[d] = match (shape[d], v.shape[d]) {
                            (Some(p), Some(q)) => Some(p + q),
                            _ => None,
                        };
                    } else if let (Some(p), Some(q)) = (shape[d], v.shape[d]) {
                        if p != q {
                            return Err(mismatch(
                                name,
                                &first.shape,
                                &v.shape,
                                format!("dimension {d} differs (concatenating along {axis})"),
                            ));
                        }
                    }
                }
            }
            ValueInfo {
                dtype: first.dtype,
                shape,
            }
        }
        Op::Gather(axis) => {
            let (x, idx) = (input(0)?, input(1)?);
            need_int(name, idx.dtype)?;
            axis_ok(name, *axis, x.rank())?;
            if idx.rank() != x.rank() {
                return Err(mismatch(
                    name,
                    &x.shape,
                    &idx.shape,
                    "index must have the rank of the input",
                ));
            }
            ValueInfo {
                dtype: x.dtype,
                shape: idx.shape.clone(),
            }
        }
        Op::ScatterAdd(axis) | Op::IndexAdd(axis) => {
            let (base, idx, src) = (input(0)?, input(1)?, input(2)?);
            need_int(name, idx.dtype)?;
            axis_ok(name, *axis, base.rank())?;
            same_dtype(name, base.dtype, src.dtype)?;
            base.clone()
        }
        Op::IndexSelect(axis) => {
            let (x, idx) = (input(0)?, input(1)?);
            need_int(name, idx.dtype)?;
            axis_ok(name, *axis, x.rank())?;
            need_rank(name, idx, 1)?;
            let mut shape = x.shape.clone();
            if !shape.is_empty() {
                shape[*axis] = idx.shape[0];
            }
            ValueInfo {
                dtype: x.dtype,
                shape,
            }
        }
        Op::MaskedSelect => {
            let (x, m) = (input(0)?, input(1)?);
            if m.dtype != DType::Bool {
                return Err(Error::DTypeMismatch {
                    op: name,
                    expected: "bool mask".into(),
                    got: m.dtype,
                });
            }
            broadcast(name, &x.shape, &m.shape)?;
            ValueInfo {
                dtype: x.dtype,
                shape: vec![None],
            }
        }
        Op::MaskedScatter => {
            let (base, m, src) = (input(0)?, input(1)?, input(2)?);
            if m.dtype != DType::Bool {
                return Err(Error::DTypeMismatch {
                    op: name,
                    expected: "bool mask".into(),
                    got: m.dtype,
                });
            }
            same_dtype(name, base.dtype, src.dtype)?;
            ValueInfo {
                dtype: base.dtype,
                shape: broadcast(name, &base.shape, &m.shape)?,
            }
        }
        Op::OneHot { depth, dtype, .. } => {
            let idx = input(0)?;
            need_int(name, idx.dtype)?;
            let mut shape = idx.shape.clone();
            shape.push(Some(*depth));
            ValueInfo {
                dtype: *dtype,
                shape,
            }
        }
        Op::MatMul => {
            let (a, b) = (input(0)?, input(1)?);
            same_dtype(name, a.dtype, b.dtype)?;
            if a.rank() < 2 || b.rank() < 2 {
                return Err(mismatch(
                    name,
                    &a.shape,
                    &b.shape,
                    "the matmul op needs rank >= 2 (use the matmul composite for vectors)",
                ));
            }
            let (m, k1) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
            let (k2, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
            if let (Some(p), Some(q)) = (k1, k2) {
                if p != q {
                    return Err(mismatch(
                        name,
                        &a.shape,
                        &b.shape,
                        format!("inner dimensions differ: {p} vs {q}"),
                    ));
                }
            }
            let mut shape = broadcast(name, &a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2])?;
            shape.push(m);
            shape.push(n);
            ValueInfo {
                dtype: a.dtype,
                shape,
            }
        }
        Op::Conv2d(p) => {
            if !(2..=3).contains(&inputs.len()) {
                return Err(Error::invalid(
                    name,
                    "expects [input, weight] or [input, weight, bias]",
                ));
            }
            let (x, w) = (input(0)?, input(1)?);
            need_float(name, x.dtype)?;
            same_dtype(name, x.dtype, w.dtype)?;
            need_rank(name, x, 4)?;
            need_rank(name, w, 4)?;
            if let (Some(c), Some(wc)) = (x.shape[1], w.shape[1]) {
                if c != wc * p.groups {
                    return Err(mismatch(
                        name,
                        &x.shape,
                        &w.shape,
                        format!(
                            "input has {c} channels, weight expects {} (groups {})",
                            wc * p.groups,
                            p.groups
                        ),
                    ));
                }
            }
            if let Some(b) = inputs.get(2) {
                same_dtype(name, x.dtype, b.dtype)?;
                need_rank(name, b, 1)?;
                if let (Some(o), Some(bo)) = (w.shape[0], b.shape[0]) {
                    if o != bo {
                        return Err(mismatch(
                            name,
                            &w.shape,
                            &b.shape,
                            "bias size differs from output channels",
                        ));
                    }
                }
            }
            let spatial = conv_out(
                p,
                [x.shape[2], x.shape[3]],
                [w.shape[2], w.shape[3]],
                name,
                &x.shape,
            )?;
            ValueInfo {
                dtype: x.dtype,
                shape: vec![x.shape[0], w.shape[0], spatial[0], spatial[1]],
            }
        }
        Op::Conv2dInputGrad(_) => {
            let (g, like) = (input(0)?, input(2)?);
            ValueInfo {
                dtype: g.dtype,
                shape: like.shape.clone(),
            }
        }
        Op::Conv2dWeightGrad(_) => {
            let (x, like) = (input(0)?, input(2)?);
            ValueInfo {
                dtype: x.dtype,
                shape: like.shape.clone(),
            }
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let x = input(0)?;
            need_float(name, x.dtype)?;
            need_rank(name, x, 4)?;
            let out = match (x.shape[2], x.shape[3]) {
                (Some(h), Some(w)) => {
                    let o = p.out_size([h, w]).ok_or_else(|| {
                        bad_shape(
                            name,
                            &x.shape,
                            format!(
                                "window {:?} (padding {:?}) is larger than the input",
                                p.kernel, p.padding
                            ),
                        )
                    })?;
                    [Some(o[0]), Some(o[1])]
                }
                _ => [None, None],
            };
            ValueInfo {
                dtype: x.dtype,
                shape: vec![x.shape[0], x.shape[1], out[0], out[1]],
            }
        }
        Op::AdaptiveAvgPool2d(o) => {
            let x = input(0)?;
            need_float(name, x.dtype)?;
            need_rank(name, x, 4)?;
            ValueInfo {
                dtype: x.dtype,
                shape: vec![x.shape[0], x.shape[1], Some(o[0]), Some(o[1])],
            }
        }
        Op::MaxPool2dBackward(_) | Op::AvgPool2dBackward(_) | Op::AdaptiveAvgPool2dBackward => {
            let (g, like) = (input(0)?, input(1)?);
            ValueInfo {
                dtype: g.dtype,
                shape: like.shape.clone(),
            }
        }
        Op::Softmax(axis) | Op::LogSoftmax(axis) => {
            let x = input(0)?;
            need_float(name, x.dtype)?;
            axis_ok(name, *axis, x.rank())?;
            x.clone()
        }
        Op::CrossEntropy { .. } => {
            let (l, t) = (input(0)?, input(1)?);
            need_float(name, l.dtype)?;
            need_int(name, t.dtype)?;
            let ok = if l.rank() == 1 {
                t.rank() == 0
            } else {
                t.rank() + 1 == l.rank()
                    && t.shape[0].zip(l.shape[0]).is_none_or(|(a, b)| a == b)
                    && t.shape[1..]
                        .iter()
                        .zip(&l.shape[2..])
                        .all(|(a, b)| a.zip(*b).is_none_or(|(a, b)| a == b))
            };
            if !ok {
                return Err(mismatch(
                    name,
                    &l.shape,
                    &t.shape,
                    "logits must be [N, C, ...] with targets [N, ...]",
                ));
            }
            ValueInfo {
                dtype: l.dtype,
                shape: t.shape.clone(),
            }
        }
    })
}

impl ValueInfo {
    fn with_dtype(mut self, d: DType) -> ValueInfo {
        self.dtype = d;
        self
    }
}

fn binary_dtype_ok(op: BinaryOp, d: DType) -> Result<()> {
    if op.is_logical() && d != DType::Bool {
        return Err(Error::DTypeMismatch {
            op: op.name(),
            expected: "bool".into(),
            got: d,
        });
    }
    if !op.is_logical() && !op.is_comparison() && d == DType::Bool {
        return Err(Error::DTypeMismatch {
            op: op.name(),
            expected: "a numeric dtype".into(),
            got: d,
        });
    }
    Ok(())
}

/// The shape left after reducing `axes`.
pub fn reduced_shape(shape: &[Dim], axes: &[usize], keepdim: bool) -> Vec<Dim> {
    let mut out = Vec::with_capacity(shape.len());
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            if keepdim {
                out.push(Some(1));
            }
        } else {
            out.push(d);
        }
    }
    out
}

fn conv_out(
    p: &tandem_tensor::Conv2dParams,
    input: [Dim; 2],
    kernel: [Dim; 2],
    name: &'static str,
    shape: &[Dim],
) -> Result<[Dim; 2]> {
    let mut out = [None, None];
    for i in 0..2 {
        if let (Some(x), Some(k)) = (input[i], kernel[i]) {
            let mut one = *p;
            let (iin, kk) = if i == 0 {
                ([x, 1], [k, 1])
            } else {
                ([1, x], [1, k])
            };
            one.padding[1 - i] = 0;
            one.stride[1 - i] = 1;
            one.dilation[1 - i] = 1;
            let o = one.out_size(iin, kk).ok_or_else(|| {
                bad_shape(name, shape, "the (padded) input is smaller than the kernel")
            })?;
            out[i] = Some(o[i]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vi(d: DType, s: &[Dim]) -> ValueInfo {
        ValueInfo {
            dtype: d,
            shape: s.to_vec(),
        }
    }

    #[test]
    fn broadcast_with_unknown_dims() {
        let a = [None, Some(784)];
        let b = [Some(784)];
        assert_eq!(broadcast("add", &a, &b).unwrap(), vec![None, Some(784)]);
        assert!(broadcast("add", &a, &[Some(3)]).is_err());
        let e = broadcast("add", &[Some(3)], &[Some(4)]).unwrap_err();
        assert!(e.to_string().contains("[3] vs [4]"));
    }

    #[test]
    fn matmul_and_reduce() {
        let x = vi(DType::F32, &[None, Some(784)]);
        let w = vi(DType::F32, &[Some(784), Some(128)]);
        let y = infer(&Op::MatMul, &[x.clone(), w]).unwrap();
        assert_eq!(y.shape, vec![None, Some(128)]);
        let bad = vi(DType::F32, &[Some(10), Some(5)]);
        let e = infer(&Op::MatMul, &[x.clone(), bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[?, 784]") && e.contains("[10, 5]"), "{e}");
        let s = infer(
            &Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![0],
                keepdim: false,
            },
            &[y],
        )
        .unwrap();
        assert_eq!(s.shape, vec![Some(128)]);
    }

    #[test]
    fn conv_and_pool_shapes() {
        let x = vi(DType::F32, &[None, Some(1), Some(28), Some(28)]);
        let w = vi(DType::F32, &[Some(6), Some(1), Some(5), Some(5)]);
        let p = tandem_tensor::Conv2dParams {
            padding: [2, 2],
            ..Default::default()
        };
        let y = infer(&Op::Conv2d(p), &[x, w]).unwrap();
        assert_eq!(y.shape, vec![None, Some(6), Some(28), Some(28)]);
        let y = infer(
            &Op::MaxPool2d(tandem_tensor::Pool2dParams::square(2, 2, 0)),
            &[y],
        )
        .unwrap();
        assert_eq!(y.shape, vec![None, Some(6), Some(14), Some(14)]);
    }

    #[test]
    fn dtype_errors() {
        let a = vi(DType::F32, &[Some(2)]);
        let b = vi(DType::I64, &[Some(2)]);
        assert!(infer(&Op::Binary(BinaryOp::Add), &[a.clone(), b.clone()]).is_err());
        assert!(infer(&Op::Unary(UnaryOp::Exp), std::slice::from_ref(&b)).is_err());
        let t = infer(
            &Op::CrossEntropy {
                ignore_index: -100,
                label_smoothing: 0.0,
            },
            &[vi(DType::F32, &[None, Some(10)]), vi(DType::I64, &[None])],
        )
        .unwrap();
        assert_eq!(t.shape, vec![None]);
        assert!(infer(
            &Op::CrossEntropy {
                ignore_index: -100,
                label_smoothing: 0.0
            },
            &[vi(DType::F32, &[None, Some(10)]), vi(DType::F32, &[None])]
        )
        .is_err());
    }

    #[test]
    fn reshape_with_unknown_batch() {
        let x = vi(DType::F32, &[None, Some(1), Some(28), Some(28)]);
        let y = infer(&Op::Reshape(vec![-1, 784]), std::slice::from_ref(&x)).unwrap();
        assert_eq!(y.shape, vec![None, Some(784)]);
        let y = infer(&Op::Flatten { start: 1, end: 3 }, &[x]).unwrap();
        assert_eq!(y.shape, vec![None, Some(784)]);
    }
}
