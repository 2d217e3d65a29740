//! Maps a PyTorch reference case (op name + attributes) onto Tandem ops, for any [`Emit`].
//! The same mapping runs in eager mode, graph mode and on the reference tape, so every mode is
//! checked against the same PyTorch values.

use crate::manifest::Case;
use serde_json::Value;
use tandem_ir::composite::{CrossEntropyOptions, Functional, Reduction};
use tandem_ir::{Emit, EmitExt, Op};
use tandem_tensor::{
    ArgReduceOp, BinaryOp, Conv2dParams, DType, Error, Pool2dParams, ReduceOp, Result, UnaryOp,
};

/// Typed access to a case's attributes.
pub struct Attrs<'a>(pub &'a Value);

impl Attrs<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    /// A float attribute.
    pub fn f64(&self, k: &str) -> Option<f64> {
        self.get(k).and_then(Value::as_f64)
    }
    /// A float attribute with a default.
    pub fn f64_or(&self, k: &str, d: f64) -> f64 {
        self.f64(k).unwrap_or(d)
    }
    /// An integer attribute.
    pub fn i64(&self, k: &str) -> Option<i64> {
        self.get(k).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_array().and_then(|a| a.first()).and_then(Value::as_i64))
        })
    }
    /// A boolean attribute with a default.
    pub fn bool_or(&self, k: &str, d: bool) -> bool {
        self.get(k).and_then(Value::as_bool).unwrap_or(d)
    }
    /// A string attribute.
    pub fn str(&self, k: &str) -> Option<&str> {
        self.get(k).and_then(Value::as_str)
    }
    /// An int or list of ints (`None` when absent or null).
    pub fn ints(&self, k: &str) -> Option<Vec<i64>> {
        let v = self.get(k)?;
        if let Some(i) = v.as_i64() {
            return Some(vec![i]);
        }
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
    }
    /// An int or pair of ints, as a pair.
    pub fn pair(&self, k: &str) -> Option<[usize; 2]> {
        let v = self.ints(k)?;
        match v.as_slice() {
            [a] => Some([*a as usize, *a as usize]),
            [a, b, ..] => Some([*a as usize, *b as usize]),
            [] => None,
        }
    }
    /// A reduction mode (default `mean`).
    pub fn reduction(&self) -> Result<Reduction> {
        let s = self.str("reduction").unwrap_or("mean");
        Reduction::parse(s).ok_or_else(|| Error::invalid("case", format!("unknown reduction {s}")))
    }
}

fn unsupported(case: &Case) -> Error {
    Error::invalid(
        "conformance",
        format!(
            "no mapping for op `{}` (case {}, call {})",
            case.op, case.name, case.call
        ),
    )
}

fn dims(v: Option<Vec<i64>>) -> Vec<isize> {
    v.unwrap_or_default()
        .into_iter()
        .map(|d| d as isize)
        .collect()
}

/// Runs a case's op on already prepared inputs (float inputs in the file's float dtype, masks
/// as bool). Returns the outputs in the order of `case.outputs`.
pub fn apply<E: Emit>(e: &E, case: &Case, x: &[E::Value]) -> Result<Vec<E::Value>> {
    let a = Attrs(&case.attributes);
    let need = |n: usize| -> Result<()> {
        if x.len() < n {
            return Err(Error::invalid(
                "conformance",
                format!("case {} has {} inputs, op needs {n}", case.name, x.len()),
            ));
        }
        Ok(())
    };
    need(1)?;
    let x0 = &x[0];
    let one = |v: E::Value| Ok(vec![v]);
    let unary = |u: UnaryOp| -> Result<Vec<E::Value>> { Ok(vec![e.unary(u, x0)?]) };
    match case.op.as_str() {
        "add" | "sub" | "mul" | "div" | "maximum" | "minimum" | "pow" | "rsub" => {
            let op = match case.op.as_str() {
                "add" => BinaryOp::Add,
                "sub" | "rsub" => BinaryOp::Sub,
                "mul" => BinaryOp::Mul,
                "div" => BinaryOp::Div,
                "maximum" => BinaryOp::Maximum,
                "minimum" => BinaryOp::Minimum,
                _ => BinaryOp::Pow,
            };
            if a.str("rounding_mode").is_some() {
                return Err(unsupported(case));
            }
            let scalar_right = a.f64("other").or_else(|| a.f64("exponent"));
            if let Some(v) = scalar_right {
                let alpha = a.f64_or("alpha", 1.0);
                return one(e.scalar(op, x0, v * alpha, case.op == "rsub")?);
            }
            if let Some(v) = a.f64("self") {
                return one(e.scalar(op, x0, v, true)?);
            }
            need(2)?;
            let mut rhs = x[1].clone();
            if let Some(alpha) = a.f64("alpha") {
                rhs = e.mul_scalar(&rhs, alpha)?;
            }
            let (l, r) = if case.op == "rsub" {
                (&rhs, x0)
            } else {
                (x0, &rhs)
            };
            one(e.binary(op, l, r)?)
        }
        "neg" => unary(UnaryOp::Neg),
        "abs" => unary(UnaryOp::Abs),
        "exp" => unary(UnaryOp::Exp),
        "log" => unary(UnaryOp::Log),
        "sqrt" => unary(UnaryOp::Sqrt),
        "rsqrt" => unary(UnaryOp::Rsqrt),
        "reciprocal" => unary(UnaryOp::Recip),
        "sin" => unary(UnaryOp::Sin),
        "cos" => unary(UnaryOp::Cos),
        "tanh" => unary(UnaryOp::Tanh),
        "sigmoid" => unary(UnaryOp::Sigmoid),
        "relu" => unary(UnaryOp::Relu),
        "erf" => unary(UnaryOp::Erf),
        "sign" => unary(UnaryOp::Sign),
        "floor" => unary(UnaryOp::Floor),
        "ceil" => unary(UnaryOp::Ceil),
        "round" => unary(UnaryOp::Round),
        "square" => unary(UnaryOp::Square),
        "log1p" => unary(UnaryOp::Log1p),
        "expm1" => unary(UnaryOp::Expm1),
        "leaky_relu" => one(e.leaky_relu(x0, a.f64_or("negative_slope", 0.01))?),
        "gelu" => one(e.gelu(x0, a.str("approximate") == Some("tanh"))?),
        "softplus" => one(e.softplus(x0, a.f64_or("beta", 1.0), a.f64_or("threshold", 20.0))?),
        "silu" => one(e.silu(x0)?),
        "elu" => one(e.elu(x0, a.f64_or("alpha", 1.0))?),
        "relu6" => one(e.clamp(x0, Some(0.0), Some(6.0))?),
        "hardtanh" => one(e.clamp(
            x0,
            Some(a.f64_or("min_val", -1.0)),
            Some(a.f64_or("max_val", 1.0)),
        )?),
        "logsigmoid" => one(e.neg(&e.softplus(&e.neg(x0)?, 1.0, 20.0)?)?),
        "clamp" | "clip" => one(e.clamp(x0, a.f64("min"), a.f64("max"))?),
        "clamp_min" => one(e.clamp(x0, a.f64("min"), None)?),
        "clamp_max" => one(e.clamp(x0, None, a.f64("max"))?),
        "sum" | "mean" | "amax" | "amin" | "prod" => {
            let op = match case.op.as_str() {
                "sum" => ReduceOp::Sum,
                "mean" => ReduceOp::Mean,
                "amax" => ReduceOp::Max,
                "amin" => ReduceOp::Min,
                _ => ReduceOp::Prod,
            };
            let d = dims(a.ints("dim"));
            one(e.reduce(op, x0, &d, a.bool_or("keepdim", false))?)
        }
        "max" | "min" => {
            let (rop, aop) = if case.op == "max" {
                (ReduceOp::Max, ArgReduceOp::ArgMax)
            } else {
                (ReduceOp::Min, ArgReduceOp::ArgMin)
            };
            if x.len() == 2 {
                let op = if case.op == "max" {
                    BinaryOp::Maximum
                } else {
                    BinaryOp::Minimum
                };
                return one(e.binary(op, x0, &x[1])?);
            }
            match a.i64("dim") {
                None => one(e.reduce(rop, x0, &[], false)?),
                Some(d) => {
                    let keep = a.bool_or("keepdim", false);
                    let v = e.reduce(rop, x0, &[d as isize], keep)?;
                    let axis =
                        tandem_tensor::layout::normalize_axis("max", d as isize, e.rank(x0))?;
                    let i = e.emit(
                        Op::ArgReduce {
                            op: aop,
                            axis,
                            keepdim: keep,
                        },
                        &[x0],
                    )?;
                    Ok(vec![v, i])
                }
            }
        }
        "argmax" | "argmin" => {
            let aop = if case.op == "argmax" {
                ArgReduceOp::ArgMax
            } else {
                ArgReduceOp::ArgMin
            };
            let keep = a.bool_or("keepdim", false);
            match a.i64("dim") {
                Some(d) => {
                    let axis =
                        tandem_tensor::layout::normalize_axis("argmax", d as isize, e.rank(x0))?;
                    one(e.emit(
                        Op::ArgReduce {
                            op: aop,
                            axis,
                            keepdim: keep,
                        },
                        &[x0],
                    )?)
                }
                None => {
                    let flat = e.reshape(x0, &[-1])?;
                    one(e.emit(
                        Op::ArgReduce {
                            op: aop,
                            axis: 0,
                            keepdim: false,
                        },
                        &[&flat],
                    )?)
                }
            }
        }
        "var" | "std" => {
            let d = dims(a.ints("dim"));
            let unbiased = match a.f64("correction") {
                Some(c) => c != 0.0,
                None => a.bool_or("unbiased", true),
            };
            let v = e.var(x0, &d, unbiased, a.bool_or("keepdim", false))?;
            one(if case.op == "std" { e.sqrt(&v)? } else { v })
        }
        "logsumexp" => one(e.logsumexp(x0, &dims(a.ints("dim")), a.bool_or("keepdim", false))?),
        "softmax" => one(e.softmax(x0, a.i64("dim").unwrap_or(-1) as isize)?),
        "log_softmax" => one(e.log_softmax(x0, a.i64("dim").unwrap_or(-1) as isize)?),
        "matmul" | "mm" | "bmm" => {
            need(2)?;
            one(e.matmul(x0, &x[1])?)
        }
        "linear" => {
            need(2)?;
            one(e.linear(x0, &x[1], x.get(2))?)
        }
        "transpose" => one(e.transpose(
            x0,
            a.i64("dim0").unwrap_or(0) as isize,
            a.i64("dim1").unwrap_or(1) as isize,
        )?),
        "t" => one(e.transpose(x0, 0, -1)?),
        "permute" => one(e.permute(x0, &dims(a.ints("dims")))?),
        "reshape" | "view" => {
            let src = match a.ints("dims") {
                Some(p) => e.permute(x0, &dims(Some(p)))?,
                None => x0.clone(),
            };
            one(e.reshape(&src, &dims(a.ints("shape")))?)
        }
        "flatten" => one(e.flatten(
            x0,
            a.i64("start_dim").unwrap_or(0) as isize,
            a.i64("end_dim").unwrap_or(-1) as isize,
        )?),
        "squeeze" => one(e.squeeze(x0, a.i64("dim").unwrap_or(0) as isize)?),
        "unsqueeze" => one(e.unsqueeze(x0, a.i64("dim").unwrap_or(0) as isize)?),
        "expand" => {
            let sizes = a
                .ints("size")
                .or_else(|| a.ints("shape"))
                .unwrap_or_default();
            let mut shape = Vec::new();
            let off = sizes.len().saturating_sub(e.rank(x0));
            for (i, s) in sizes.iter().enumerate() {
                shape.push(if *s == -1 {
                    e.dim(x0, i - off).unwrap_or(1)
                } else {
                    *s as usize
                });
            }
            one(e.expand(x0, &shape)?)
        }
        "cat" | "concat" | "concatenate" => {
            let refs: Vec<&E::Value> = x.iter().collect();
            one(e.concat(&refs, a.i64("dim").unwrap_or(0) as isize)?)
        }
        "stack" => {
            let refs: Vec<&E::Value> = x.iter().collect();
            one(e.stack(&refs, a.i64("dim").unwrap_or(0) as isize)?)
        }
        "narrow" => one(e.narrow(
            x0,
            a.i64("dim").unwrap_or(0) as isize,
            a.i64("start").unwrap_or(0) as usize,
            a.i64("length").unwrap_or(0) as usize,
        )?),
        "slice" => {
            let mut v = x0.clone();
            let slices = case
                .attributes
                .get("slices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (d, s) in slices.iter().enumerate() {
                let part = |i: usize| s.get(i).and_then(Value::as_i64);
                let (start, stop, step) = (part(0), part(1), part(2));
                if start.is_none() && stop.is_none() && step.unwrap_or(1) == 1 {
                    continue;
                }
                v = e.slice(
                    &v,
                    d as isize,
                    start.unwrap_or(0) as isize,
                    stop.map_or(isize::MAX, |s| s as isize),
                    step.unwrap_or(1) as usize,
                )?;
            }
            one(v)
        }
        "select" => one(e.select(
            x0,
            a.i64("dim").unwrap_or(0) as isize,
            a.i64("index").unwrap_or(0) as isize,
        )?),
        "index_select" => {
            need(2)?;
            one(e.index_select(x0, a.i64("dim").unwrap_or(0) as isize, &x[1])?)
        }
        "gather" => {
            need(2)?;
            one(e.gather(x0, a.i64("dim").unwrap_or(0) as isize, &x[1])?)
        }
        "scatter_add" => {
            need(3)?;
            let axis = tandem_tensor::layout::normalize_axis(
                "scatter_add",
                a.i64("dim").unwrap_or(0) as isize,
                e.rank(x0),
            )?;
            one(e.emit(Op::ScatterAdd(axis), &[x0, &x[1], &x[2]])?)
        }
        "embedding" => {
            need(2)?;
            one(e.embedding(x0, &x[1])?)
        }
        "where" => {
            need(3)?;
            one(e.where_(x0, &x[1], &x[2])?)
        }
        "masked_select" => {
            need(2)?;
            one(e.emit(Op::MaskedSelect, &[x0, &x[1]])?)
        }
        "masked_fill" => {
            need(2)?;
            one(e.masked_fill(x0, &x[1], a.f64_or("value", 0.0))?)
        }
        "one_hot" => one(e.one_hot(
            x0,
            a.i64("num_classes").unwrap_or(-1).max(0) as usize,
            DType::I64,
        )?),
        "cross_entropy" => {
            need(2)?;
            let o = CrossEntropyOptions {
                reduction: a.reduction()?,
                label_smoothing: a.f64_or("label_smoothing", 0.0),
                ignore_index: a.i64("ignore_index").unwrap_or(-100),
            };
            one(e.cross_entropy(x0, &x[1], o)?)
        }
        "nll_loss" => {
            need(2)?;
            one(e.nll_loss(
                x0,
                &x[1],
                a.reduction()?,
                a.i64("ignore_index").unwrap_or(-100),
            )?)
        }
        "mse_loss" => {
            need(2)?;
            one(e.mse_loss(x0, &x[1], a.reduction()?)?)
        }
        "l1_loss" => {
            need(2)?;
            one(e.l1_loss(x0, &x[1], a.reduction()?)?)
        }
        "smooth_l1_loss" | "huber_loss" => {
            need(2)?;
            let beta = a.f64("beta").or_else(|| a.f64("delta")).unwrap_or(1.0);
            one(e.smooth_l1_loss(x0, &x[1], a.reduction()?, beta, case.op == "huber_loss")?)
        }
        "binary_cross_entropy_with_logits" => {
            need(2)?;
            one(e.binary_cross_entropy_with_logits(x0, &x[1], a.reduction()?)?)
        }
        "binary_cross_entropy" => {
            need(2)?;
            one(e.binary_cross_entropy(x0, &x[1], a.reduction()?)?)
        }
        "conv2d" => {
            need(2)?;
            let p = Conv2dParams {
                stride: a.pair("stride").unwrap_or([1, 1]),
                padding: a.pair("padding").unwrap_or([0, 0]),
                dilation: a.pair("dilation").unwrap_or([1, 1]),
                groups: a.i64("groups").unwrap_or(1).max(1) as usize,
            };
            one(e.conv2d(x0, &x[1], x.get(2), p)?)
        }
        "max_pool2d" | "avg_pool2d" => {
            let k = a.pair("kernel_size").ok_or_else(|| unsupported(case))?;
            let p = Pool2dParams {
                kernel: k,
                stride: a.pair("stride").unwrap_or(k),
                padding: a.pair("padding").unwrap_or([0, 0]),
                dilation: a.pair("dilation").unwrap_or([1, 1]),
                ceil_mode: a.bool_or("ceil_mode", false),
                count_include_pad: a.bool_or("count_include_pad", true),
            };
            if case.op == "max_pool2d" {
                one(e.max_pool2d(x0, p)?)
            } else {
                one(e.avg_pool2d(x0, p)?)
            }
        }
        "adaptive_avg_pool2d" => {
            one(e.adaptive_avg_pool2d(x0, a.pair("output_size").ok_or_else(|| unsupported(case))?)?)
        }
        "batch_norm" => {
            let training = a.bool_or("training", false);
            let out = e.batch_norm(
                x0,
                x.get(1),
                x.get(2),
                x.get(3),
                x.get(4),
                training,
                a.f64_or("momentum", 0.1),
                a.f64_or("eps", 1e-5),
            )?;
            let mut v = vec![out.output];
            if let Some((m, s)) = out.running {
                v.push(m);
                v.push(s);
            }
            Ok(v)
        }
        "layer_norm" => {
            let n = a.ints("normalized_shape").map_or(1, |s| s.len());
            one(e.layer_norm(x0, n, x.get(1), x.get(2), a.f64_or("eps", 1e-5))?)
        }
        "dropout" => {
            let p = a.f64_or("p", 0.5);
            one(e.dropout(x0, p, a.bool_or("training", true) && p > 0.0)?)
        }
        _ => Err(unsupported(case)),
    }
}
