//! One node being imported: its attributes, its inputs (values plus whatever is known about
//! them at import time) and the dispatch from `op_type` to the mapping functions.

use super::{
    ops_convt, ops_einsum, ops_extra, ops_math, ops_nn, ops_pad, ops_resize, ops_rnn, ops_shape,
};
use crate::proto::{attr_type, AttributeProto, NodeProto, TensorProto};
use tandem_ir::Emit;
use tandem_tensor::{DType, Error, Result, Tensor};

/// What is known about a value at import time.
#[derive(Clone, Debug)]
pub(crate) enum Known {
    /// The whole tensor (constants, initializers, folded results).
    Full(Tensor),
    /// A 1-D integer vector (a shape) with some entries only known at run time.
    Partial(Vec<PDim>),
}

/// One entry of a partly known shape vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PDim {
    /// Known at import time.
    Val(i64),
    /// Dim `axis` of the value named `of`, known only at run time (e.g. the batch).
    Dim(String, usize),
    /// Known only at run time, from arithmetic on dims (`batch * heads`).
    Unknown,
}

/// An input of a node: its value in the emitter and what is known about it.
#[derive(Clone)]
pub(crate) struct Arg<V> {
    pub value: V,
    pub known: Option<Known>,
    /// For a partly known shape vector: the values its run-time entries are dims of.
    pub sources: Vec<(String, V)>,
}

/// Outputs of a node: each value with what is known about it.
pub(crate) type Outs<V> = Vec<(V, Option<Known>)>;

/// The ops the importer maps (default domain).
pub(crate) const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "CumSum",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// The node being imported, with attribute accessors.
pub(crate) struct NodeCtx<'a> {
    pub proto: &'a NodeProto,
    pub opset: i64,
}

fn type_name(t: i32) -> &'static str {
    match t {
        attr_type::FLOAT => "float",
        attr_type::INT => "int",
        attr_type::STRING => "string",
        attr_type::TENSOR => "tensor",
        attr_type::GRAPH => "graph",
        attr_type::FLOATS => "floats",
        attr_type::INTS => "ints",
        attr_type::STRINGS => "strings",
        _ => "other",
    }
}

impl NodeCtx<'_> {
    /// An error about this node (the caller adds the node's name and op type).
    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::format("onnx", msg)
    }

    fn attr(&self, name: &str, want: i32) -> Result<Option<&AttributeProto>> {
        match self.proto.attribute.iter().find(|a| a.name == name) {
            None => Ok(None),
            // type 0 is accepted for files written before the type field existed.
            Some(a) if a.r#type == want || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(self.err(format!(
                "attribute '{name}' should be of type {} but is {}",
                type_name(want),
                type_name(a.r#type)
            ))),
        }
    }

    /// An int attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.attr(name, attr_type::INT)?.map_or(default, |a| a.i))
    }

    /// A float attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.attr(name, attr_type::FLOAT)?.map_or(default, |a| a.f))
    }

    /// An ints attribute, if present.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.attr(name, attr_type::INTS)?.map(|a| a.ints.clone()))
    }

    /// A floats attribute, if present.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .attr(name, attr_type::FLOATS)?
            .map(|a| a.floats.clone()))
    }

    /// A string attribute, if present.
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .attr(name, attr_type::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    /// A strings attribute, if present.
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        Ok(self.attr(name, attr_type::STRINGS)?.map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        }))
    }

    /// A tensor attribute, if present.
    pub fn tensor(&self, name: &str) -> Result<Option<&TensorProto>> {
        Ok(self
            .attr(name, attr_type::TENSOR)?
            .and_then(|a| a.t.as_ref()))
    }

    /// True when an attribute of that name is present.
    pub fn has(&self, name: &str) -> bool {
        self.proto.attribute.iter().any(|a| a.name == name)
    }
}

/// The `i`-th input, which must be present.
pub(crate) fn req<'a, V>(
    ctx: &NodeCtx<'_>,
    args: &'a [Option<Arg<V>>],
    i: usize,
) -> Result<&'a Arg<V>> {
    args.get(i)
        .and_then(|a| a.as_ref())
        .ok_or_else(|| ctx.err(format!("input {i} is missing")))
}

/// The `i`-th input if present.
pub(crate) fn opt<V>(args: &[Option<Arg<V>>], i: usize) -> Option<&Arg<V>> {
    args.get(i).and_then(|a| a.as_ref())
}

/// The entries of a vector input known at import time, fully or partly.
pub(crate) fn known_dims<V>(ctx: &NodeCtx<'_>, arg: &Arg<V>, what: &str) -> Result<Vec<PDim>> {
    match &arg.known {
        Some(Known::Full(t)) => {
            if t.rank() > 1 {
                return Err(ctx.err(format!(
                    "{what} must be a vector, got shape {:?}",
                    t.shape()
                )));
            }
            Ok(t.cast(DType::I64)?
                .to_vec::<i64>()?
                .into_iter()
                .map(PDim::Val)
                .collect())
        }
        Some(Known::Partial(v)) => Ok(v.clone()),
        None => Err(ctx.err(format!(
            "{what} must be computable when the model is imported (a constant, an initializer \
             or a shape computation), but it depends on run-time data"
        ))),
    }
}

/// Integer entries of an input that must be fully known at import time.
pub(crate) fn const_ints<V>(ctx: &NodeCtx<'_>, arg: &Arg<V>, what: &str) -> Result<Vec<i64>> {
    known_dims(ctx, arg, what)?
        .into_iter()
        .map(|d| match d {
            PDim::Val(v) => Some(v),
            PDim::Dim(..) | PDim::Unknown => None,
        })
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| {
            ctx.err(format!(
                "{what} depends on a dimension only known at run time"
            ))
        })
}

/// A tensor input known at import time, if it is.
pub(crate) fn const_tensor<V>(arg: &Arg<V>) -> Option<&Tensor> {
    match &arg.known {
        Some(Known::Full(t)) => Some(t),
        _ => None,
    }
}

/// Most elements a tensor whose shape comes from values in the file (ConstantOfShape,
/// Expand, Pad) may have: a lying file must not trigger an absurd allocation.
pub(crate) const MAX_CREATED_ELEMENTS: usize = 1 << 28;

/// Checks that a tensor of `dims` (unknown dims ignored) stays under
/// [`MAX_CREATED_ELEMENTS`].
pub(crate) fn check_created(ctx: &NodeCtx<'_>, what: &str, dims: &[Option<usize>]) -> Result<()> {
    let n = dims
        .iter()
        .flatten()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if n.is_none_or(|n| n > MAX_CREATED_ELEMENTS) {
        return Err(ctx.err(format!(
            "{what} of shape {} is too large (limit {MAX_CREATED_ELEMENTS} elements)",
            tandem_ir::infer::fmt_shape(dims)
        )));
    }
    Ok(())
}

/// Normalizes an ONNX axis (negative counts from the end) against `rank`.
pub(crate) fn axis(ctx: &NodeCtx<'_>, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        return Err(ctx.err(format!("axis {a} is out of range for rank {rank}")));
    }
    Ok(v as usize)
}

/// Wraps a single plain output.
pub(crate) fn one<V>(v: V) -> Result<Outs<V>> {
    Ok(vec![(v, None)])
}

/// The inputs of a node as its op functions take them (`None` for an omitted optional one).
pub(crate) type Args<V> = [Option<Arg<V>>];

/// An op family's matcher (`ops_math::apply`, ...): the node's outputs if `op` belongs to
/// the family, `None` otherwise.
type Family<F> = fn(
    &str,
    &NodeCtx<'_>,
    &F,
    &Args<<F as Emit>::Value>,
) -> Option<Result<Outs<<F as Emit>::Value>>>;

/// Maps one node to ops of `f`.
pub(crate) fn apply_node<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let op = ctx.proto.op_type.as_str();
    let families: [Family<F>; 9] = [
        ops_math::apply,
        ops_shape::apply,
        ops_nn::apply,
        ops_pad::apply,
        ops_convt::apply,
        ops_resize::apply,
        ops_extra::apply,
        ops_einsum::apply,
        ops_rnn::apply,
    ];
    for family in families {
        if let Some(r) = family(op, ctx, f, args) {
            return r;
        }
    }
    Err(ctx.err(format!("op {op} is not supported at opset {}", ctx.opset)))
}
