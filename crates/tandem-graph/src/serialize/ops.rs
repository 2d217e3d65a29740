//! JSON encoding of ops (attributes only; constant tensors go to the file's tensor section).

use super::{bad, Obj};
use serde_json::{json, Value};
use tandem_ir::{Distribution, Op};
use tandem_tensor::{
    ArgReduceOp, BinaryOp, Conv2dParams, Pool2dParams, ReduceOp, Result, Tensor, UnaryOp,
};

/// Floats as strings so that infinities and NaN survive (`"inf"`, `"-inf"`, `"NaN"`).
pub(super) fn fl(v: f64) -> Value {
    Value::String(format!("{v:?}"))
}

fn conv(p: &Conv2dParams) -> Value {
    json!({"stride": p.stride, "padding": p.padding, "dilation": p.dilation, "groups": p.groups})
}

fn pool(p: &Pool2dParams) -> Value {
    json!({"kernel": p.kernel, "stride": p.stride, "padding": p.padding, "dilation": p.dilation,
           "ceil_mode": p.ceil_mode, "count_include_pad": p.count_include_pad})
}

fn slice_attrs(axis: usize, start: isize, end: isize, step: usize) -> Value {
    json!({"axis": axis, "start": start, "end": end, "step": step})
}

/// Encodes an op; a constant's tensor is handed to `tensor` which returns its key.
pub(super) fn encode(op: &Op, tensor: &mut dyn FnMut(&Tensor) -> String) -> Value {
    let (tag, attrs) = match op {
        Op::Constant(t) => ("constant", json!({"tensor": tensor(t)})),
        Op::Full {
            shape,
            value,
            dtype,
        } => (
            "full",
            json!({"shape": shape, "value": fl(*value), "dtype": dtype.name()}),
        ),
        Op::FullLike { value, dtype } => (
            "full_like",
            json!({"value": fl(*value), "dtype": dtype.map(|d| d.name())}),
        ),
        Op::Random { dist, seed } => {
            let d = match dist {
                Distribution::Uniform { low, high } => {
                    json!({"kind": "uniform", "a": fl(*low), "b": fl(*high)})
                }
                Distribution::Normal { mean, std } => {
                    json!({"kind": "normal", "a": fl(*mean), "b": fl(*std)})
                }
                Distribution::Bernoulli { p } => json!({"kind": "bernoulli", "a": fl(*p)}),
            };
            ("random", json!({"dist": d, "seed": seed.to_string()}))
        }
        Op::DimSize { axes, dtype } => ("dim_size", json!({"axes": axes, "dtype": dtype.name()})),
        Op::Unary(u) => ("unary", json!({"f": u.name()})),
        Op::Binary(b) => ("binary", json!({"f": b.name()})),
        Op::Scalar {
            op,
            value,
            scalar_on_left,
        } => (
            "scalar",
            json!({"f": op.name(), "value": fl(*value), "left": scalar_on_left}),
        ),
        Op::Where => ("where", json!({})),
        Op::Cast(d) => ("cast", json!({"dtype": d.name()})),
        Op::StopGradient => ("stop_gradient", json!({})),
        Op::Reduce { op, axes, keepdim } => (
            "reduce",
            json!({"f": op.name(), "axes": axes, "keepdim": keepdim}),
        ),
        Op::ArgReduce { op, axis, keepdim } => (
            "arg_reduce",
            json!({"f": op.name(), "axis": axis, "keepdim": keepdim}),
        ),
        Op::SumToLike => ("sum_to_like", json!({})),
        Op::Reshape(s) => ("reshape", json!({"shape": s})),
        Op::ReshapeLike => ("reshape_like", json!({})),
        Op::Flatten { start, end } => ("flatten", json!({"start": start, "end": end})),
        Op::Unsqueeze(a) => ("unsqueeze", json!({"axis": a})),
        Op::Squeeze(a) => ("squeeze", json!({"axis": a})),
        Op::Permute(p) => ("permute", json!({"perm": p})),
        Op::Expand(s) => ("expand", json!({"shape": s})),
        Op::ExpandLike => ("expand_like", json!({})),
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => ("slice", slice_attrs(*axis, *start, *end, *step)),
        Op::SliceBackward {
            axis,
            start,
            end,
            step,
        } => ("slice_backward", slice_attrs(*axis, *start, *end, *step)),
        Op::Pad { pads, value } => ("pad", json!({"pads": pads, "value": fl(*value)})),
        Op::Concat(a) => ("concat", json!({"axis": a})),
        Op::Gather(a) => ("gather", json!({"axis": a})),
        Op::ScatterAdd(a) => ("scatter_add", json!({"axis": a})),
        Op::IndexSelect(a) => ("index_select", json!({"axis": a})),
        Op::IndexAdd(a) => ("index_add", json!({"axis": a})),
        Op::MaskedSelect => ("masked_select", json!({})),
        Op::MaskedScatter => ("masked_scatter", json!({})),
        Op::OneHot {
            depth,
            on,
            off,
            dtype,
        } => (
            "one_hot",
            json!({"depth": depth, "on": fl(*on), "off": fl(*off), "dtype": dtype.name()}),
        ),
        Op::MatMul => ("matmul", json!({})),
        Op::Conv2d(p) => ("conv2d", conv(p)),
        Op::Conv2dInputGrad(p) => ("conv2d_input_grad", conv(p)),
        Op::Conv2dWeightGrad(p) => ("conv2d_weight_grad", conv(p)),
        Op::MaxPool2d(p) => ("max_pool2d", pool(p)),
        Op::MaxPool2dBackward(p) => ("max_pool2d_backward", pool(p)),
        Op::AvgPool2d(p) => ("avg_pool2d", pool(p)),
        Op::AvgPool2dBackward(p) => ("avg_pool2d_backward", pool(p)),
        Op::AdaptiveAvgPool2d(o) => ("adaptive_avg_pool2d", json!({"out": o})),
        Op::AdaptiveAvgPool2dBackward => ("adaptive_avg_pool2d_backward", json!({})),
        Op::Softmax(a) => ("softmax", json!({"axis": a})),
        Op::LogSoftmax(a) => ("log_softmax", json!({"axis": a})),
        Op::CrossEntropy {
            ignore_index,
            label_smoothing,
        } => (
            "cross_entropy",
            json!({"ignore_index": ignore_index, "label_smoothing": fl(*label_smoothing)}),
        ),
    };
    json!({"op": tag, "attrs": attrs})
}

fn by_name<T: Copy>(all: &[T], name: &str, f: impl Fn(T) -> &'static str) -> Result<T> {
    all.iter()
        .copied()
        .find(|&x| f(x) == name)
        .ok_or_else(|| bad(format!("unknown function `{name}`")))
}

fn conv_of(a: &Obj) -> Result<Conv2dParams> {
    Ok(Conv2dParams {
        stride: a.pair("stride")?,
        padding: a.pair("padding")?,
        dilation: a.pair("dilation")?,
        groups: a.usize("groups")?,
    })
}

fn pool_of(a: &Obj) -> Result<Pool2dParams> {
    Ok(Pool2dParams {
        kernel: a.pair("kernel")?,
        stride: a.pair("stride")?,
        padding: a.pair("padding")?,
        dilation: a.pair("dilation")?,
        ceil_mode: a.bool("ceil_mode")?,
        count_include_pad: a.bool("count_include_pad")?,
    })
}

const REDUCE: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Mean,
    ReduceOp::Max,
    ReduceOp::Min,
    ReduceOp::Prod,
];

/// Decodes an op; `tensor` resolves a constant's key.
pub(super) fn decode(v: &Value, tensor: &dyn Fn(&str) -> Result<Tensor>) -> Result<Op> {
    let o = Obj(v);
    let tag = o.str("op")?;
    let a = Obj(v.get("attrs").ok_or_else(|| bad("op without attrs"))?);
    let slice = || -> Result<(usize, isize, isize, usize)> {
        Ok((
            a.usize("axis")?,
            a.isize("start")?,
            a.isize("end")?,
            a.usize("step")?,
        ))
    };
    Ok(match tag {
        "constant" => Op::Constant(tensor(a.str("tensor")?)?),
        "full" => Op::Full {
            shape: a.usizes("shape")?,
            value: a.f64("value")?,
            dtype: a.dtype("dtype")?,
        },
        "full_like" => Op::FullLike {
            value: a.f64("value")?,
            dtype: match a.0.get("dtype") {
                Some(Value::Null) | None => None,
                Some(_) => Some(a.dtype("dtype")?),
            },
        },
        "random" => {
            let d = Obj(a.0.get("dist").ok_or_else(|| bad("random without dist"))?);
            let dist = match d.str("kind")? {
                "uniform" => Distribution::Uniform {
                    low: d.f64("a")?,
                    high: d.f64("b")?,
                },
                "normal" => Distribution::Normal {
                    mean: d.f64("a")?,
                    std: d.f64("b")?,
                },
                "bernoulli" => Distribution::Bernoulli { p: d.f64("a")? },
                k => return Err(bad(format!("unknown distribution `{k}`"))),
            };
            let seed = a
                .str("seed")?
                .parse()
                .map_err(|_| bad("random seed is not a u64"))?;
            Op::Random { dist, seed }
        }
        "dim_size" => Op::DimSize {
            axes: a.usizes("axes")?,
            dtype: a.dtype("dtype")?,
        },
        "unary" => Op::Unary(by_name(&UnaryOp::ALL, a.str("f")?, UnaryOp::name)?),
        "binary" => Op::Binary(by_name(&BinaryOp::ALL, a.str("f")?, BinaryOp::name)?),
        "scalar" => Op::Scalar {
            op: by_name(&BinaryOp::ALL, a.str("f")?, BinaryOp::name)?,
            value: a.f64("value")?,
            scalar_on_left: a.bool("left")?,
        },
        "where" => Op::Where,
        "cast" => Op::Cast(a.dtype("dtype")?),
        "stop_gradient" => Op::StopGradient,
        "reduce" => Op::Reduce {
            op: by_name(&REDUCE, a.str("f")?, ReduceOp::name)?,
            axes: a.usizes("axes")?,
            keepdim: a.bool("keepdim")?,
        },
        "arg_reduce" => Op::ArgReduce {
            op: by_name(
                &[ArgReduceOp::ArgMax, ArgReduceOp::ArgMin],
                a.str("f")?,
                ArgReduceOp::name,
            )?,
            axis: a.usize("axis")?,
            keepdim: a.bool("keepdim")?,
        },
        "sum_to_like" => Op::SumToLike,
        "reshape" => Op::Reshape(a.isizes("shape")?),
        "reshape_like" => Op::ReshapeLike,
        "flatten" => Op::Flatten {
            start: a.usize("start")?,
            end: a.usize("end")?,
        },
        "unsqueeze" => Op::Unsqueeze(a.usize("axis")?),
        "squeeze" => Op::Squeeze(a.usize("axis")?),
        "permute" => Op::Permute(a.usizes("perm")?),
        "expand" => Op::Expand(a.usizes("shape")?),
        "expand_like" => Op::ExpandLike,
        "slice" => {
            let (axis, start, end, step) = slice()?;
            Op::Slice {
                axis,
                start,
                end,
                step,
            }
        }
        "slice_backward" => {
            let (axis, start, end, step) = slice()?;
            Op::SliceBackward {
                axis,
                start,
                end,
                step,
            }
        }
        "pad" => {
            let flat =
                a.0.get("pads")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("pad without pads"))?;
            let mut pads = Vec::with_capacity(flat.len());
            for p in flat {
                let p = Obj(p);
                pads.push((p.index_usize(0)?, p.index_usize(1)?));
            }
            Op::Pad {
                pads,
                value: a.f64("value")?,
            }
        }
        "concat" => Op::Concat(a.usize("axis")?),
        "gather" => Op::Gather(a.usize("axis")?),
        "scatter_add" => Op::ScatterAdd(a.usize("axis")?),
        "index_select" => Op::IndexSelect(a.usize("axis")?),
        "index_add" => Op::IndexAdd(a.usize("axis")?),
        "masked_select" => Op::MaskedSelect,
        "masked_scatter" => Op::MaskedScatter,
        "one_hot" => Op::OneHot {
            depth: a.usize("depth")?,
            on: a.f64("on")?,
            off: a.f64("off")?,
            dtype: a.dtype("dtype")?,
        },
        "matmul" => Op::MatMul,
        "conv2d" => Op::Conv2d(conv_of(&a)?),
        "conv2d_input_grad" => Op::Conv2dInputGrad(conv_of(&a)?),
        "conv2d_weight_grad" => Op::Conv2dWeightGrad(conv_of(&a)?),
        "max_pool2d" => Op::MaxPool2d(pool_of(&a)?),
        "max_pool2d_backward" => Op::MaxPool2dBackward(pool_of(&a)?),
        "avg_pool2d" => Op::AvgPool2d(pool_of(&a)?),
        "avg_pool2d_backward" => Op::AvgPool2dBackward(pool_of(&a)?),
        "adaptive_avg_pool2d" => Op::AdaptiveAvgPool2d(a.pair("out")?),
        "adaptive_avg_pool2d_backward" => Op::AdaptiveAvgPool2dBackward,
        "softmax" => Op::Softmax(a.usize("axis")?),
        "log_softmax" => Op::LogSoftmax(a.usize("axis")?),
        "cross_entropy" => Op::CrossEntropy {
            ignore_index: a
                .0
                .get("ignore_index")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("cross_entropy without ignore_index"))?,
            label_smoothing: a.f64("label_smoothing")?,
        },
        other => return Err(bad(format!("unknown op `{other}`"))),
    })
}
