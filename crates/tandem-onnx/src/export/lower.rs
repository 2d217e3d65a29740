//! Lowering of one Tandem op to ONNX nodes (opsets 13 and 17 share these forms).

use super::write::{a_int, a_ints, a_tensor, Builder};
use crate::tensor_proto::dtype_to_onnx;
use tandem_ir::{Op, ValueInfo};
use tandem_tensor::{ArgReduceOp, BinaryOp, DType, Error, ReduceOp, Result, Tensor, UnaryOp};

fn no_mapping(op: &Op) -> Error {
    Error::invalid(
        "onnx export",
        format!(
            "op {} has no ONNX mapping (only inference ops can be exported)",
            op.name()
        ),
    )
}

fn unary_name(u: UnaryOp) -> Option<&'static str> {
    Some(match u {
        UnaryOp::Neg => "Neg",
        UnaryOp::Abs => "Abs",
        UnaryOp::Exp => "Exp",
        UnaryOp::Log => "Log",
        UnaryOp::Sqrt => "Sqrt",
        UnaryOp::Recip => "Reciprocal",
        UnaryOp::Sin => "Sin",
        UnaryOp::Cos => "Cos",
        UnaryOp::Tanh => "Tanh",
        UnaryOp::Sigmoid => "Sigmoid",
        UnaryOp::Relu => "Relu",
        UnaryOp::Erf => "Erf",
        UnaryOp::Sign => "Sign",
        UnaryOp::Floor => "Floor",
        UnaryOp::Ceil => "Ceil",
        UnaryOp::Round => "Round",
        UnaryOp::Not => "Not",
        _ => return None,
    })
}

/// ONNX op for a binary op, and whether the result is negated (`!=`).
fn binary_name(b: BinaryOp) -> (&'static str, bool) {
    match b {
        BinaryOp::Add => ("Add", false),
        BinaryOp::Sub => ("Sub", false),
        BinaryOp::Mul => ("Mul", false),
        BinaryOp::Div => ("Div", false),
        BinaryOp::Pow => ("Pow", false),
        BinaryOp::Maximum => ("Max", false),
        BinaryOp::Minimum => ("Min", false),
        BinaryOp::Eq => ("Equal", false),
        BinaryOp::Ne => ("Equal", true),
        BinaryOp::Lt => ("Less", false),
        BinaryOp::Le => ("LessOrEqual", false),
        BinaryOp::Gt => ("Greater", false),
        BinaryOp::Ge => ("GreaterOrEqual", false),
        BinaryOp::And => ("And", false),
        BinaryOp::Or => ("Or", false),
    }
}

fn binary(b: &mut Builder, op: BinaryOp, l: String, r: String, out: &str) {
    let (name, negate) = binary_name(op);
    if negate {
        let t = b.tmp(out, name, vec![l, r], vec![]);
        b.node("Not", vec![t], out, vec![]);
    } else {
        b.node(name, vec![l, r], out, vec![]);
    }
}

fn reduce_name(r: ReduceOp) -> &'static str {
    match r {
        ReduceOp::Sum => "ReduceSum",
        ReduceOp::Mean => "ReduceMean",
        ReduceOp::Max => "ReduceMax",
        ReduceOp::Min => "ReduceMin",
        ReduceOp::Prod => "ReduceProd",
    }
}

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// `Shape(x)` as a new value.
fn shape_of(b: &mut Builder, x: &str, out: &str) -> String {
    b.tmp(out, "Shape", vec![x.to_string()], vec![])
}

/// Writes nodes computing `op` on `ins` into the value `out`.
pub(super) fn lower(
    b: &mut Builder,
    op: &Op,
    ins: &[(String, ValueInfo)],
    out: &str,
) -> Result<()> {
    let arity_ok = op.arity().is_none_or(|n| n == ins.len()) && !ins.is_empty()
        || matches!(op, Op::Full { .. } | Op::Constant(_));
    if !arity_ok {
        return Err(Error::invalid(
            op.name(),
            format!("got {} inputs", ins.len()),
        ));
    }
    let name = |i: usize| ins.get(i).map(|(n, _)| n.clone()).unwrap_or_default();
    let info = |i: usize| ins.get(i).map(|(_, v)| v.clone());
    let x = name(0);
    let xdt = info(0).map_or(DType::F32, |v| v.dtype);
    match op {
        Op::Constant(t) => {
            let attr = a_tensor("value", t)?;
            b.node("Constant", vec![], out, vec![attr]);
        }
        Op::Full {
            shape,
            value,
            dtype,
        } => {
            let s = b.ints(&format!("{out}/shape"), &ints(shape))?;
            let v = a_tensor("value", &Tensor::full(&[1], *value, *dtype))?;
            b.node("ConstantOfShape", vec![s], out, vec![v]);
        }
        Op::FullLike { value, dtype } => {
            let s = shape_of(b, &x, out);
            let v = a_tensor("value", &Tensor::full(&[1], *value, dtype.unwrap_or(xdt)))?;
            b.node("ConstantOfShape", vec![s], out, vec![v]);
        }
        Op::DimSize { axes, dtype } => {
            let s = shape_of(b, &x, out);
            let idx = b.ints(&format!("{out}/axes"), &ints(axes))?;
            let picked = b.tmp(out, "Gather", vec![s, idx], vec![a_int("axis", 0)]);
            let prod = b.tmp(out, "ReduceProd", vec![picked], vec![a_int("keepdims", 0)]);
            b.node(
                "Cast",
                vec![prod],
                out,
                vec![a_int("to", dtype_to_onnx(*dtype) as i64)],
            );
        }
        Op::Unary(u) => match (u, unary_name(*u)) {
            (_, Some(n)) => b.node(n, vec![x], out, vec![]),
            (UnaryOp::Rsqrt, _) => {
                let s = b.tmp(out, "Sqrt", vec![x], vec![]);
                b.node("Reciprocal", vec![s], out, vec![]);
            }
            (UnaryOp::Square, _) => b.node("Mul", vec![x.clone(), x], out, vec![]),
            (UnaryOp::Log1p, _) => {
                let one = b.scalar(&format!("{out}/one"), 1.0, xdt)?;
                let s = b.tmp(out, "Add", vec![x, one], vec![]);
                b.node("Log", vec![s], out, vec![]);
            }
            (UnaryOp::Expm1, _) => {
                let one = b.scalar(&format!("{out}/one"), 1.0, xdt)?;
                let e = b.tmp(out, "Exp", vec![x], vec![]);
                b.node("Sub", vec![e, one], out, vec![]);
            }
            _ => return Err(no_mapping(op)),
        },
        Op::Binary(o) => binary(b, *o, x, name(1), out),
        Op::Scalar {
            op: o,
            value,
            scalar_on_left,
        } => {
            let dt = if o.is_logical() { DType::Bool } else { xdt };
            let c = b.scalar(&format!("{out}/scalar"), *value, dt)?;
            let (l, r) = if *scalar_on_left { (c, x) } else { (x, c) };
            binary(b, *o, l, r, out);
        }
        Op::Where => b.node("Where", vec![x, name(1), name(2)], out, vec![]),
        Op::Cast(d) => b.node(
            "Cast",
            vec![x],
            out,
            vec![a_int("to", dtype_to_onnx(*d) as i64)],
        ),
        Op::StopGradient => b.node("Identity", vec![x], out, vec![]),
        Op::Reduce {
            op: r,
            axes,
            keepdim,
        } => {
            let keep = a_int("keepdims", *keepdim as i64);
            if axes.is_empty() {
                b.node("Identity", vec![x], out, vec![]);
            } else if *r == ReduceOp::Sum {
                let a = b.ints(&format!("{out}/axes"), &ints(axes))?;
                b.node("ReduceSum", vec![x, a], out, vec![keep]);
            } else {
                b.node(
                    reduce_name(*r),
                    vec![x],
                    out,
                    vec![a_ints("axes", &ints(axes)), keep],
                );
            }
        }
        Op::ArgReduce {
            op: r,
            axis,
            keepdim,
        } => {
            let n = match r {
                ArgReduceOp::ArgMax => "ArgMax",
                ArgReduceOp::ArgMin => "ArgMin",
            };
            let attrs = vec![
                a_int("axis", *axis as i64),
                a_int("keepdims", *keepdim as i64),
            ];
            b.node(n, vec![x], out, attrs);
        }
        Op::Reshape(shape) => {
            let mut attrs = vec![];
            if shape.contains(&0) {
                if b.opset < 14 {
                    return Err(Error::invalid(
                        "onnx export",
                        "reshape to a shape with a 0 dim needs opset >= 14",
                    ));
                }
                attrs.push(a_int("allowzero", 1));
            }
            let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let s = b.ints(&format!("{out}/shape"), &s)?;
            b.node("Reshape", vec![x, s], out, attrs);
        }
        Op::ReshapeLike => {
            let s = shape_of(b, &name(1), out);
            b.node("Reshape", vec![x, s], out, vec![]);
        }
        Op::Flatten { start, end } => {
            let xi = info(0).unwrap_or(ValueInfo {
                dtype: xdt,
                shape: vec![],
            });
            let r = xi.rank();
            if start >= end || r == 0 {
                b.node("Identity", vec![x], out, vec![]);
                return Ok(());
            }
            // Dims before `start` are copied (0), the merged ones inferred (-1); dims after
            // `end` must be known.
            let mut target: Vec<i64> = vec![0; *start];
            target.push(-1);
            for d in xi.shape.iter().skip(end + 1) {
                target.push(d.ok_or_else(|| {
                    Error::invalid(
                        "onnx export",
                        "flatten with an unknown dim after the merged range",
                    )
                })? as i64);
            }
            let s = b.ints(&format!("{out}/shape"), &target)?;
            b.node("Reshape", vec![x, s], out, vec![]);
        }
        Op::Unsqueeze(a) => {
            let ax = b.ints(&format!("{out}/axes"), &[*a as i64])?;
            b.node("Unsqueeze", vec![x, ax], out, vec![]);
        }
        Op::Squeeze(a) => {
            let ax = b.ints(&format!("{out}/axes"), &[*a as i64])?;
            b.node("Squeeze", vec![x, ax], out, vec![]);
        }
        Op::Permute(p) => b.node("Transpose", vec![x], out, vec![a_ints("perm", &ints(p))]),
        Op::Expand(shape) => {
            let s = b.ints(&format!("{out}/shape"), &ints(shape))?;
            b.node("Expand", vec![x, s], out, vec![]);
        }
        Op::ExpandLike => {
            let s = shape_of(b, &name(1), out);
            b.node("Expand", vec![x, s], out, vec![]);
        }
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => {
            let s = b.ints(&format!("{out}/starts"), &[*start as i64])?;
            let e = b.ints(&format!("{out}/ends"), &[*end as i64])?;
            let a = b.ints(&format!("{out}/axes"), &[*axis as i64])?;
            let st = b.ints(&format!("{out}/steps"), &[*step as i64])?;
            b.node("Slice", vec![x, s, e, a, st], out, vec![]);
        }
        Op::Pad { pads, value } => {
            let mut p: Vec<i64> = pads.iter().map(|&(a, _)| a as i64).collect();
            p.extend(pads.iter().map(|&(_, z)| z as i64));
            let p = b.ints(&format!("{out}/pads"), &p)?;
            let v = b.scalar(&format!("{out}/value"), *value, xdt)?;
            b.node("Pad", vec![x, p, v], out, vec![]);
        }
        Op::Concat(a) => {
            let all: Vec<String> = ins.iter().map(|(n, _)| n.clone()).collect();
            b.node("Concat", all, out, vec![a_int("axis", *a as i64)]);
        }
        Op::Gather(a) => b.node(
            "GatherElements",
            vec![x, name(1)],
            out,
            vec![a_int("axis", *a as i64)],
        ),
        Op::IndexSelect(a) => b.node(
            "Gather",
            vec![x, name(1)],
            out,
            vec![a_int("axis", *a as i64)],
        ),
        Op::OneHot {
            depth,
            on,
            off,
            dtype,
        } => {
            let d = b.constant(&format!("{out}/depth"), &Tensor::scalar(*depth as i64))?;
            let vals = Tensor::from_vec(vec![*off, *on], &[2])?.cast(*dtype)?;
            let v = b.constant(&format!("{out}/values"), &vals)?;
            b.node("OneHot", vec![x, d, v], out, vec![a_int("axis", -1)]);
        }
        Op::MatMul => b.node("MatMul", vec![x, name(1)], out, vec![]),
        Op::Conv2d(p) => {
            let w = info(1).map(|i| i.shape).unwrap_or_default();
            let kernel: Vec<i64> = w
                .iter()
                .skip(2)
                .map(|d| d.map(|d| d as i64))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::invalid("onnx export", "conv weight shape must be known"))?;
            let attrs = vec![
                a_ints("kernel_shape", &kernel),
                a_ints("strides", &ints(&p.stride)),
                a_ints("dilations", &ints(&p.dilation)),
                a_ints(
                    "pads",
                    &ints(&[p.padding[0], p.padding[1], p.padding[0], p.padding[1]]),
                ),
                a_int("group", p.groups as i64),
            ];
            let all: Vec<String> = ins.iter().map(|(n, _)| n.clone()).collect();
            b.node("Conv", all, out, attrs);
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let max = matches!(op, Op::MaxPool2d(_));
            let mut attrs = vec![
                a_ints("kernel_shape", &ints(&p.kernel)),
                a_ints("strides", &ints(&p.stride)),
                a_ints(
                    "pads",
                    &ints(&[p.padding[0], p.padding[1], p.padding[0], p.padding[1]]),
                ),
                a_int("ceil_mode", p.ceil_mode as i64),
            ];
            if max {
                attrs.push(a_ints("dilations", &ints(&p.dilation)));
                b.node("MaxPool", vec![x], out, attrs);
            } else {
                if p.dilation != [1, 1] {
                    return Err(Error::invalid("onnx export", "dilated average pooling"));
                }
                attrs.push(a_int("count_include_pad", p.count_include_pad as i64));
                b.node("AveragePool", vec![x], out, attrs);
            }
        }
        Op::AdaptiveAvgPool2d(o) => {
            if *o == [1, 1] {
                b.node("GlobalAveragePool", vec![x], out, vec![]);
                return Ok(());
            }
            let s = info(0).map(|i| i.shape).unwrap_or_default();
            let hw = match (s.get(2).copied().flatten(), s.get(3).copied().flatten()) {
                (Some(h), Some(w)) if o[0] > 0 && o[1] > 0 && h % o[0] == 0 && w % o[1] == 0 => {
                    [h / o[0], w / o[1]]
                }
                _ => {
                    return Err(Error::invalid(
                        "onnx export",
                        "adaptive average pooling needs a known input size divisible by the output size",
                    ))
                }
            };
            let attrs = vec![
                a_ints("kernel_shape", &ints(&hw)),
                a_ints("strides", &ints(&hw)),
            ];
            b.node("AveragePool", vec![x], out, attrs);
        }
        Op::Softmax(a) => b.node("Softmax", vec![x], out, vec![a_int("axis", *a as i64)]),
        Op::LogSoftmax(a) => b.node("LogSoftmax", vec![x], out, vec![a_int("axis", *a as i64)]),
        _ => return Err(no_mapping(op)),
    }
    Ok(())
}
