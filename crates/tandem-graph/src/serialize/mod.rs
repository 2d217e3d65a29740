//! The graph file: a graph built in one program, run in another.
//!
//! Layout (little-endian):
//! - 8 bytes magic `TDMGRAPH`;
//! - `u32` format version (currently 1);
//! - `u64` length `n` of the JSON section, then `n` bytes of JSON: `{"seed": .., "nodes":
//!   [{"name", "kind", "inputs", "control", "dtype", "shape"}]}` where `kind` encodes the node
//!   kind and op attributes (floats as strings so infinities survive);
//! - the rest: a safetensors section holding constant tensors and constant initial values,
//!   referenced from the JSON by key.
//!
//! Loading checks the magic, the version, the section sizes, every node's inputs (they must
//! name earlier nodes) and re-infers every op's output info, so a corrupt file is a clear
//! error, never a panic or a silently wrong graph.

mod ops;

use crate::graph::{ApplyDef, AssignMode, Graph, Node, NodeKind, VariableDef};
use crate::init::Initializer;
use crate::update::Update;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use tandem_ir::{infer, ValueInfo};
use tandem_tensor::io::{atomic_write, safetensors};
use tandem_tensor::ops::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use tandem_tensor::{DType, Error, Result, Tensor};

/// Magic bytes at the start of a graph file.
pub const MAGIC: &[u8; 8] = b"TDMGRAPH";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

pub(crate) fn bad(msg: impl Into<String>) -> Error {
    Error::format("tandem graph", msg)
}

/// Typed access to a JSON object with format errors.
pub(crate) struct Obj<'a>(pub(crate) &'a Value);

impl Obj<'_> {
    fn field(&self, k: &str) -> Result<&Value> {
        self.0
            .get(k)
            .ok_or_else(|| bad(format!("missing field `{k}`")))
    }
    pub(crate) fn str(&self, k: &str) -> Result<&str> {
        self.field(k)?
            .as_str()
            .ok_or_else(|| bad(format!("`{k}` is not a string")))
    }
    pub(crate) fn f64(&self, k: &str) -> Result<f64> {
        self.str(k)?
            .parse()
            .map_err(|_| bad(format!("`{k}` is not a number")))
    }
    pub(crate) fn bool(&self, k: &str) -> Result<bool> {
        self.field(k)?
            .as_bool()
            .ok_or_else(|| bad(format!("`{k}` is not a bool")))
    }
    pub(crate) fn usize(&self, k: &str) -> Result<usize> {
        self.field(k)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("`{k}` is not a count")))
    }
    pub(crate) fn isize(&self, k: &str) -> Result<isize> {
        self.field(k)?
            .as_i64()
            .map(|v| v as isize)
            .ok_or_else(|| bad(format!("`{k}` is not an integer")))
    }
    fn array(&self, k: &str) -> Result<&Vec<Value>> {
        self.field(k)?
            .as_array()
            .ok_or_else(|| bad(format!("`{k}` is not a list")))
    }
    pub(crate) fn usizes(&self, k: &str) -> Result<Vec<usize>> {
        self.array(k)?
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| bad(format!("`{k}` holds a non-count")))
            })
            .collect()
    }
    pub(crate) fn isizes(&self, k: &str) -> Result<Vec<isize>> {
        self.array(k)?
            .iter()
            .map(|v| {
                v.as_i64()
                    .map(|x| x as isize)
                    .ok_or_else(|| bad(format!("`{k}` holds a non-integer")))
            })
            .collect()
    }
    pub(crate) fn pair(&self, k: &str) -> Result<[usize; 2]> {
        match self.usizes(k)?.as_slice() {
            [a, b] => Ok([*a, *b]),
            _ => Err(bad(format!("`{k}` is not a pair"))),
        }
    }
    pub(crate) fn index_usize(&self, i: usize) -> Result<usize> {
        self.0
            .get(i)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad("bad pair"))
    }
    pub(crate) fn dtype(&self, k: &str) -> Result<DType> {
        let n = self.str(k)?;
        DType::from_name(n).ok_or_else(|| bad(format!("unknown dtype `{n}`")))
    }
}

fn encode_init(init: &Initializer, tensor: &mut dyn FnMut(&Tensor) -> String) -> Value {
    let seed = |s: &Option<u64>| s.map(|s| s.to_string());
    match init {
        Initializer::Zeros => json!({"t": "zeros"}),
        Initializer::Ones => json!({"t": "ones"}),
        Initializer::Fill(v) => json!({"t": "fill", "value": ops::fl(*v)}),
        Initializer::Constant(t) => json!({"t": "constant", "tensor": tensor(t)}),
        Initializer::Uniform { low, high, seed: s } => {
            json!({"t": "uniform", "a": ops::fl(*low), "b": ops::fl(*high), "seed": seed(s)})
        }
        Initializer::Normal { mean, std, seed: s } => {
            json!({"t": "normal", "a": ops::fl(*mean), "b": ops::fl(*std), "seed": seed(s)})
        }
        Initializer::XavierUniform { seed: s } => json!({"t": "xavier_uniform", "seed": seed(s)}),
        Initializer::KaimingUniform { seed: s } => {
            json!({"t": "kaiming_uniform", "seed": seed(s)})
        }
    }
}

fn decode_init(v: &Value, tensor: &dyn Fn(&str) -> Result<Tensor>) -> Result<Initializer> {
    let o = Obj(v);
    let seed = || -> Result<Option<u64>> {
        match v.get("seed") {
            None | Some(Value::Null) => Ok(None),
            Some(s) => s
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| bad("bad seed")),
        }
    };
    Ok(match o.str("t")? {
        "zeros" => Initializer::Zeros,
        "ones" => Initializer::Ones,
        "fill" => Initializer::Fill(o.f64("value")?),
        "constant" => Initializer::Constant(tensor(o.str("tensor")?)?),
        "uniform" => Initializer::Uniform {
            low: o.f64("a")?,
            high: o.f64("b")?,
            seed: seed()?,
        },
        "normal" => Initializer::Normal {
            mean: o.f64("a")?,
            std: o.f64("b")?,
            seed: seed()?,
        },
        "xavier_uniform" => Initializer::XavierUniform { seed: seed()? },
        "kaiming_uniform" => Initializer::KaimingUniform { seed: seed()? },
        t => return Err(bad(format!("unknown initializer `{t}`"))),
    })
}

fn encode_update(u: &Update) -> Value {
    match u {
        Update::Sgd(c) => json!({"rule": "sgd", "lr": ops::fl(c.lr),
            "momentum": ops::fl(c.momentum), "dampening": ops::fl(c.dampening),
            "nesterov": c.nesterov, "weight_decay": ops::fl(c.weight_decay)}),
        Update::Adam(c) => json!({"rule": "adam", "lr": ops::fl(c.lr),
            "beta1": ops::fl(c.beta1), "beta2": ops::fl(c.beta2), "eps": ops::fl(c.eps),
            "weight_decay": ops::fl(c.weight_decay), "decoupled": c.decoupled}),
        Update::RmsProp(c) => json!({"rule": "rmsprop", "lr": ops::fl(c.lr),
            "alpha": ops::fl(c.alpha), "eps": ops::fl(c.eps),
            "weight_decay": ops::fl(c.weight_decay), "momentum": ops::fl(c.momentum),
            "centered": c.centered}),
    }
}

fn decode_update(v: &Value) -> Result<Update> {
    let o = Obj(v);
    Ok(match o.str("rule")? {
        "sgd" => Update::Sgd(SgdConfig {
            lr: o.f64("lr")?,
            momentum: o.f64("momentum")?,
            dampening: o.f64("dampening")?,
            nesterov: o.bool("nesterov")?,
            weight_decay: o.f64("weight_decay")?,
        }),
        "adam" => Update::Adam(AdamConfig {
            lr: o.f64("lr")?,
            beta1: o.f64("beta1")?,
            beta2: o.f64("beta2")?,
            eps: o.f64("eps")?,
            weight_decay: o.f64("weight_decay")?,
            decoupled: o.bool("decoupled")?,
        }),
        "rmsprop" => Update::RmsProp(RmsPropConfig {
            lr: o.f64("lr")?,
            alpha: o.f64("alpha")?,
            eps: o.f64("eps")?,
            weight_decay: o.f64("weight_decay")?,
            momentum: o.f64("momentum")?,
            centered: o.bool("centered")?,
        }),
        r => return Err(bad(format!("unknown update rule `{r}`"))),
    })
}

fn mode_name(m: AssignMode) -> &'static str {
    match m {
        AssignMode::Set => "set",
        AssignMode::Add => "add",
        AssignMode::Sub => "sub",
    }
}

fn encode_kind(k: &NodeKind, tensor: &mut dyn FnMut(&Tensor) -> String) -> Value {
    match k {
        NodeKind::Op(op) => json!({"t": "op", "op": ops::encode(op, tensor)}),
        NodeKind::Placeholder => json!({"t": "placeholder"}),
        NodeKind::Variable(d) => json!({"t": "variable", "index": d.index,
            "init": encode_init(&d.init, tensor), "shape": d.shape, "dtype": d.dtype.name(),
            "trainable": d.trainable}),
        NodeKind::Assign { var, mode } => {
            json!({"t": "assign", "var": var, "mode": mode_name(*mode)})
        }
        NodeKind::Identity => json!({"t": "identity"}),
        NodeKind::NoOp => json!({"t": "no_op"}),
        NodeKind::InitVariables(v) => json!({"t": "init_variables", "vars": v}),
        NodeKind::Apply(a) => json!({"t": "apply", "update": encode_update(&a.update),
            "var": a.var, "slots": a.slots, "has_lr": a.has_lr}),
    }
}

fn decode_kind(v: &Value, tensor: &dyn Fn(&str) -> Result<Tensor>) -> Result<NodeKind> {
    let o = Obj(v);
    Ok(match o.str("t")? {
        "op" => NodeKind::Op(ops::decode(o.field("op")?, tensor)?),
        "placeholder" => NodeKind::Placeholder,
        "variable" => NodeKind::Variable(VariableDef {
            index: o.usize("index")?,
            init: decode_init(o.field("init")?, tensor)?,
            shape: o.usizes("shape")?,
            dtype: o.dtype("dtype")?,
            trainable: o.bool("trainable")?,
        }),
        "assign" => NodeKind::Assign {
            var: o.usize("var")?,
            mode: match o.str("mode")? {
                "set" => AssignMode::Set,
                "add" => AssignMode::Add,
                "sub" => AssignMode::Sub,
                m => return Err(bad(format!("unknown assign mode `{m}`"))),
            },
        },
        "identity" => NodeKind::Identity,
        "no_op" => NodeKind::NoOp,
        "init_variables" => NodeKind::InitVariables(o.usizes("vars")?),
        "apply" => NodeKind::Apply(ApplyDef {
            update: decode_update(o.field("update")?)?,
            var: o.usize("var")?,
            slots: o.usizes("slots")?,
            has_lr: o.bool("has_lr")?,
        }),
        t => return Err(bad(format!("unknown node kind `{t}`"))),
    })
}

impl Graph {
    /// The graph as the bytes of a graph file (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let nodes = self.nodes()?;
        let seed = self.read()?.seed();
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut json_nodes = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let mut put = |t: &Tensor| {
                let key = format!("t{}", tensors.len());
                tensors.push((key.clone(), t.clone()));
                key
            };
            let shape: Vec<Value> = n
                .info
                .shape
                .iter()
                .map(|d| d.map_or(Value::Null, |d| json!(d)))
                .collect();
            json_nodes.push(
                json!({"name": n.name, "kind": encode_kind(&n.kind, &mut put),
                "inputs": n.inputs, "control": n.control_inputs, "dtype": n.info.dtype.name(),
                "shape": shape}),
            );
        }
        let text = json!({"seed": seed.to_string(), "nodes": json_nodes}).to_string();
        let contiguous: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.contiguous()?)))
            .collect::<Result<_>>()?;
        let refs: Vec<(&str, &Tensor)> = contiguous.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let st = safetensors::to_bytes(&refs, None)?;
        let mut out = Vec::with_capacity(20 + text.len() + st.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&st);
        Ok(out)
    }

    /// Writes the graph file atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        atomic_write(path, |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(|e| Error::Io {
                path: path.display().to_string(),
                source: e,
            })
        })
    }

    /// Reads a graph file.
    pub fn load(path: impl AsRef<Path>) -> Result<Graph> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Graph::from_bytes(&bytes).map_err(|e| match e {
            Error::Format { format, msg, .. } => Error::Format {
                format,
                path: Some(path.display().to_string()),
                msg,
            },
            e => e,
        })
    }

    /// A graph from the bytes of a graph file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Graph> {
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(bad("not a Tandem graph file (bad magic)"));
        }
        let mut v4 = [0u8; 4];
        v4.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(v4);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version} is not supported (this build reads version {VERSION})"
            )));
        }
        let mut v8 = [0u8; 8];
        v8.copy_from_slice(&bytes[12..20]);
        let n = u64::from_le_bytes(v8);
        let rest = &bytes[20..];
        if n > rest.len() as u64 {
            return Err(bad(format!(
                "JSON section of {n} bytes but only {} bytes follow",
                rest.len()
            )));
        }
        let (text, st) = rest.split_at(n as usize);
        let doc: Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        let tensors: HashMap<String, Tensor> = safetensors::from_bytes(st)?.into_iter().collect();
        let tensor = |k: &str| -> Result<Tensor> {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| bad(format!("missing tensor `{k}`")))
        };
        let o = Obj(&doc);
        let seed: u64 = o.str("seed")?.parse().map_err(|_| bad("bad seed"))?;
        let mut nodes: Vec<Node> = Vec::new();
        for (id, nv) in o.array("nodes")?.iter().enumerate() {
            let no = Obj(nv);
            let name = o_name(&no)?;
            let kind = decode_kind(no.field("kind")?, &tensor)?;
            let inputs = no.usizes("inputs")?;
            let control = no.usizes("control")?;
            if inputs.iter().chain(&control).any(|&i| i >= id) {
                return Err(bad(format!("node `{name}` refers to a later node")));
            }
            let shape: Vec<Option<usize>> = no
                .array("shape")?
                .iter()
                .map(|d| match d {
                    Value::Null => Ok(None),
                    d => d
                        .as_u64()
                        .map(|x| Some(x as usize))
                        .ok_or_else(|| bad("bad dim")),
                })
                .collect::<Result<_>>()?;
            let info = ValueInfo {
                dtype: no.dtype("dtype")?,
                shape,
            };
            if let NodeKind::Op(op) = &kind {
                let ins: Vec<ValueInfo> = inputs.iter().map(|&i| nodes[i].info.clone()).collect();
                let inferred = infer(op, &ins).map_err(|e| e.context(name.clone()))?;
                if inferred != info {
                    return Err(bad(format!(
                        "node `{name}`: stored info differs from its op's"
                    )));
                }
            }
            nodes.push(Node {
                name,
                kind,
                inputs,
                control_inputs: control,
                info,
            });
        }
        Graph::from_nodes(nodes, seed)
    }
}

fn o_name(o: &Obj) -> Result<String> {
    Ok(o.str("name")?.to_string())
}
