//! The graph: an arena of named nodes, each with one output value.
//!
//! A [`Graph`] is a cheap-clone handle (`Arc` + lock) over the arena. A value is an
//! [`Output`]: the graph handle, the node id and the node's inferred [`ValueInfo`]. Nodes only
//! refer to nodes created before them, so node ids are a topological order.

use crate::init::Initializer;
use crate::update::Update;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tandem_ir::{infer, Dim, Emit, Op, ValueInfo};
use tandem_tensor::{DType, Error, Result, Tensor};

/// How an assign node combines the variable with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignMode {
    /// `var = value`
    Set,
    /// `var += value`
    Add,
    /// `var -= value`
    Sub,
}

/// A variable's definition: its slot in the session's variable store and how it starts.
#[derive(Clone, Debug)]
pub struct VariableDef {
    /// Index of the variable (order of creation).
    pub index: usize,
    /// Initial value.
    pub init: Initializer,
    /// Shape of the variable.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Whether `minimize` trains it by default.
    pub trainable: bool,
}

/// An optimizer update node: updates a variable (and its slot variables) in place.
#[derive(Clone, Debug)]
pub struct ApplyDef {
    /// The update rule (fused kernel and hyperparameters).
    pub update: Update,
    /// Variable index of the parameter.
    pub var: usize,
    /// Variable indices of the slots, in the order the update expects them.
    pub slots: Vec<usize>,
    /// Whether the last input is a learning-rate value that overrides the configured one.
    pub has_lr: bool,
}

/// What a node does.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// An op of the IR.
    Op(Op),
    /// A value fed at run time.
    Placeholder,
    /// A variable (its value lives in the session).
    Variable(VariableDef),
    /// Assigns input 1 to the variable of input 0; the output is the new value.
    Assign {
        /// Variable index.
        var: usize,
        /// Set, add or subtract.
        mode: AssignMode,
    },
    /// The input unchanged (its gradient passes through).
    Identity,
    /// Does nothing; groups control dependencies.
    NoOp,
    /// Sets the listed variables (indices) to their initial values.
    InitVariables(Vec<usize>),
    /// An optimizer update. Inputs: `[var, grad, slots..., iterations, lr?]`.
    Apply(ApplyDef),
}

impl NodeKind {
    /// A short name of the kind (the op name for ops).
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Op(op) => op.name(),
            NodeKind::Placeholder => "placeholder",
            NodeKind::Variable(_) => "variable",
            NodeKind::Assign { mode, .. } => match mode {
                AssignMode::Set => "assign",
                AssignMode::Add => "assign_add",
                AssignMode::Sub => "assign_sub",
            },
            NodeKind::Identity => "identity",
            NodeKind::NoOp => "no_op",
            NodeKind::InitVariables(_) => "init_variables",
            NodeKind::Apply(a) => a.update.name(),
        }
    }

    /// True for nodes that produce no value (fetching them yields the op marker).
    pub fn is_op_only(&self) -> bool {
        matches!(self, NodeKind::NoOp | NodeKind::InitVariables(_))
    }
}

/// One node of the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// Unique name (with its scope, e.g. `fc1/weight`).
    pub name: String,
    /// What the node does.
    pub kind: NodeKind,
    /// Data inputs (node ids).
    pub inputs: Vec<usize>,
    /// Nodes that must run before this one (node ids).
    pub control_inputs: Vec<usize>,
    /// Inferred dtype and shape of the output.
    pub info: ValueInfo,
}

#[derive(Default)]
pub(crate) struct GraphData {
    pub(crate) nodes: Vec<Node>,
    names: HashMap<String, usize>,
    scopes: Vec<String>,
    control: Vec<Vec<usize>>,
    seed: u64,
    /// Node id of each variable, by variable index.
    pub(crate) variables: Vec<usize>,
    pub(crate) global_step: Option<usize>,
}

impl GraphData {
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    fn prefix(&self) -> String {
        let mut p = String::new();
        for s in &self.scopes {
            p.push_str(s);
            p.push('/');
        }
        p
    }

    /// A unique name for `base` in the current scope (`add`, `add_1`, `add_2`, ...).
    fn unique_name(&self, base: &str) -> String {
        let full = format!("{}{base}", self.prefix());
        if !self.names.contains_key(&full) {
            return full;
        }
        let mut k = 1;
        loop {
            let candidate = format!("{full}_{k}");
            if !self.names.contains_key(&candidate) {
                return candidate;
            }
            k += 1;
        }
    }
}

/// A TensorFlow 1.x style graph: build once, run many times in a [`crate::Session`].
///
/// ```
/// use tandem_graph::{Graph, Session};
/// use tandem_tensor::Tensor;
/// let g = Graph::new();
/// let a = g.constant_scalar(3.0f32).unwrap();
/// let b = g.constant_scalar(4.0f32).unwrap();
/// let c = (&a + &b).unwrap();
/// let s = Session::new(&g).unwrap();
/// let out = s.run(&[&c], &[]).unwrap();
/// assert_eq!(out[0].item().unwrap(), 7.0);
/// ```
#[derive(Clone, Default)]
pub struct Graph {
    inner: Arc<RwLock<GraphData>>,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.read() {
            Ok(d) => write!(f, "Graph({} nodes)", d.nodes.len()),
            Err(_) => f.write_str("Graph(poisoned)"),
        }
    }
}

fn poisoned() -> Error {
    Error::Graph("the graph's lock is poisoned (a thread panicked while building)".into())
}

/// A value of a graph: the output of one node.
#[derive(Clone)]
pub struct Output {
    graph: Graph,
    id: usize,
    info: Arc<ValueInfo>,
    name: Arc<str>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Output({}: {} {})",
            self.name,
            self.info.dtype,
            tandem_ir::infer::fmt_shape(&self.info.shape)
        )
    }
}

impl Output {
    /// The node id.
    pub fn id(&self) -> usize {
        self.id
    }
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Dtype and (partly known) shape.
    pub fn info(&self) -> &ValueInfo {
        &self.info
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.info.dtype
    }
    /// Shape, `None` for dims known only at run time.
    pub fn shape(&self) -> &[Dim] {
        &self.info.shape
    }
    /// The graph the value belongs to.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

/// Restores the previous name scope when dropped (see [`Graph::scope`]).
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    graph: Graph,
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if let Ok(mut d) = self.graph.inner.write() {
            d.scopes.pop();
        }
    }
}

/// Restores the enclosing scopes when dropped (see [`Graph::root_scope`]).
#[must_use = "the scope ends when the guard is dropped"]
pub struct RootScopeGuard {
    graph: Graph,
    saved: Vec<String>,
}

impl Drop for RootScopeGuard {
    fn drop(&mut self) {
        if let Ok(mut d) = self.graph.inner.write() {
            d.scopes = std::mem::take(&mut self.saved);
        }
    }
}

/// Ends a `control_dependencies` block when dropped (see [`Graph::control_dependencies`]).
#[must_use = "the control dependencies end when the guard is dropped"]
pub struct ControlGuard {
    graph: Graph,
}

impl Drop for ControlGuard {
    fn drop(&mut self) {
        if let Ok(mut d) = self.graph.inner.write() {
            d.control.pop();
        }
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, GraphData>> {
        self.inner.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, GraphData>> {
        self.inner.write().map_err(|_| poisoned())
    }

    /// True when both handles name the same graph.
    pub fn same(&self, other: &Graph) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.read().map(|d| d.nodes.len()).unwrap_or(0)
    }

    /// True when the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of one node.
    pub fn node(&self, id: usize) -> Result<Node> {
        self.read()?
            .nodes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Graph(format!("no node with id {id} in this graph")))
    }

    /// The value of the node with this exact name.
    pub fn get(&self, name: &str) -> Result<Output> {
        let d = self.read()?;
        let id = *d
            .names
            .get(name)
            .ok_or_else(|| Error::Graph(format!("no node named `{name}` in this graph")))?;
        Ok(self.output_of(&d, id))
    }

    pub(crate) fn output_of(&self, d: &GraphData, id: usize) -> Output {
        let n = &d.nodes[id];
        Output {
            graph: self.clone(),
            id,
            info: Arc::new(n.info.clone()),
            name: Arc::from(n.name.as_str()),
        }
    }

    /// Sets the seed from which random ops and initializers without a seed draw theirs.
    pub fn set_seed(&self, seed: u64) -> Result<()> {
        self.write()?.seed = seed;
        Ok(())
    }

    /// Opens a name scope: nodes created while the guard lives get names `name/...`.
    pub fn scope(&self, name: &str) -> ScopeGuard {
        if let Ok(mut d) = self.inner.write() {
            d.scopes.push(name.to_string());
        }
        ScopeGuard {
            graph: self.clone(),
        }
    }

    /// Opens a scope that ignores the enclosing scopes (names are absolute), e.g. for slot
    /// variables named after their variable.
    pub fn root_scope(&self, name: &str) -> RootScopeGuard {
        let saved = match self.inner.write() {
            Ok(mut d) => {
                let scopes = if name.is_empty() {
                    vec![]
                } else {
                    vec![name.to_string()]
                };
                std::mem::replace(&mut d.scopes, scopes)
            }
            Err(_) => vec![],
        };
        RootScopeGuard {
            graph: self.clone(),
            saved,
        }
    }

    /// Nodes created while the guard lives run after all of `deps`.
    pub fn control_dependencies(&self, deps: &[&Output]) -> Result<ControlGuard> {
        self.check_all(deps)?;
        let ids = deps.iter().map(|o| o.id).collect();
        self.write()?.control.push(ids);
        Ok(ControlGuard {
            graph: self.clone(),
        })
    }

    fn check_all(&self, values: &[&Output]) -> Result<()> {
        for v in values {
            if !self.same(&v.graph) {
                return Err(Error::Graph(format!(
                    "`{}` belongs to another graph",
                    v.name
                )));
            }
        }
        Ok(())
    }

    /// Appends a node. `base` is the name before scoping and numbering; `infer_info` computes
    /// the output info (its error is reported with the node's name).
    pub(crate) fn add_node(
        &self,
        base: &str,
        kind: NodeKind,
        inputs: &[&Output],
        control: &[&Output],
        infer_info: impl FnOnce() -> Result<ValueInfo>,
    ) -> Result<Output> {
        self.check_all(inputs)?;
        self.check_all(control)?;
        let mut d = self.write()?;
        let name = d.unique_name(base);
        let info = infer_info().map_err(|e| e.context(name.clone()))?;
        // Sources (placeholders, variables) never wait for anything.
        let source = matches!(kind, NodeKind::Placeholder | NodeKind::Variable(_));
        let mut control_inputs: Vec<usize> = if source {
            vec![]
        } else {
            d.control.iter().flatten().copied().collect()
        };
        control_inputs.extend(control.iter().map(|o| o.id));
        control_inputs.sort_unstable();
        control_inputs.dedup();
        let id = d.nodes.len();
        let mut kind = kind;
        if let NodeKind::Variable(v) = &mut kind {
            v.index = d.variables.len();
            d.variables.push(id);
        }
        d.nodes.push(Node {
            name: name.clone(),
            kind,
            inputs: inputs.iter().map(|o| o.id).collect(),
            control_inputs,
            info: info.clone(),
        });
        d.names.insert(name.clone(), id);
        Ok(Output {
            graph: self.clone(),
            id,
            info: Arc::new(info),
            name: Arc::from(name.as_str()),
        })
    }

    /// A graph from nodes (checked: unique names, inputs that name earlier nodes, variable
    /// indices in creation order, assigns and updates that name variables).
    pub(crate) fn from_nodes(nodes: Vec<Node>, seed: u64) -> Result<Graph> {
        let mut d = GraphData {
            seed,
            ..GraphData::default()
        };
        let bad = |msg: String| Error::format("tandem graph", msg);
        for (id, n) in nodes.into_iter().enumerate() {
            if n.inputs.iter().chain(&n.control_inputs).any(|&i| i >= id) {
                return Err(bad(format!("node `{}` refers to a later node", n.name)));
            }
            if d.names.insert(n.name.clone(), id).is_some() {
                return Err(bad(format!("two nodes are named `{}`", n.name)));
            }
            if let NodeKind::Variable(v) = &n.kind {
                if v.index != d.variables.len() {
                    return Err(bad(format!("variable `{}` is out of order", n.name)));
                }
                if n.name == "global_step" {
                    d.global_step = Some(id);
                }
                d.variables.push(id);
            }
            let vars_named: Vec<usize> = match &n.kind {
                NodeKind::Assign { var, .. } => vec![*var],
                NodeKind::Apply(a) => std::iter::once(a.var).chain(a.slots.clone()).collect(),
                NodeKind::InitVariables(v) => v.clone(),
                _ => vec![],
            };
            if vars_named.iter().any(|&v| v >= d.variables.len()) {
                return Err(bad(format!("node `{}` names an unknown variable", n.name)));
            }
            d.nodes.push(n);
        }
        Ok(Graph {
            inner: Arc::new(RwLock::new(d)),
        })
    }

    /// A constant.
    pub fn constant(&self, t: Tensor) -> Result<Output> {
        self.emit(Op::Constant(t), &[])
    }

    /// A 0-d constant.
    pub fn constant_scalar<T: tandem_tensor::Element>(&self, v: T) -> Result<Output> {
        self.constant(Tensor::scalar(v))
    }

    /// A placeholder: a value fed at run time. `None` dims (e.g. the batch) may take any size.
    pub fn placeholder(&self, name: &str, dtype: DType, shape: &[Dim]) -> Result<Output> {
        let info = ValueInfo {
            dtype,
            shape: shape.to_vec(),
        };
        self.add_node(name, NodeKind::Placeholder, &[], &[], || Ok(info))
    }

    /// A trainable variable that starts as `value`.
    pub fn variable(&self, name: &str, value: Tensor) -> Result<Output> {
        let (shape, dtype) = (value.shape().to_vec(), value.dtype());
        self.variable_with(name, &shape, dtype, Initializer::Constant(value), true)
    }

    /// A variable of a given shape and dtype with an initializer; `trainable` says whether
    /// [`crate::Optimizer::minimize`] trains it by default.
    pub fn variable_with(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        init: Initializer,
        trainable: bool,
    ) -> Result<Output> {
        init.check(shape, dtype)
            .map_err(|e| e.context(name.to_string()))?;
        let init = init.with_seed_from(|| self.next_seed());
        let def = VariableDef {
            index: 0, // set when the node is added
            init,
            shape: shape.to_vec(),
            dtype,
            trainable,
        };
        let info = ValueInfo::known(dtype, shape);
        self.add_node(name, NodeKind::Variable(def), &[], &[], || Ok(info))
    }

    /// Definitions of every variable, by variable index, with their node names.
    pub fn variables(&self) -> Result<Vec<(Output, VariableDef)>> {
        let d = self.read()?;
        let mut out = Vec::with_capacity(d.variables.len());
        for &id in &d.variables {
            if let NodeKind::Variable(v) = &d.nodes[id].kind {
                out.push((self.output_of(&d, id), v.clone()));
            }
        }
        Ok(out)
    }

    /// The trainable variables.
    pub fn trainable_variables(&self) -> Result<Vec<Output>> {
        Ok(self
            .variables()?
            .into_iter()
            .filter(|(_, v)| v.trainable)
            .map(|(o, _)| o)
            .collect())
    }

    /// The variable definition behind a value, if it is a variable.
    pub fn variable_def(&self, v: &Output) -> Result<VariableDef> {
        match self.node(v.id)?.kind {
            NodeKind::Variable(def) => Ok(def),
            _ => Err(Error::Graph(format!("`{}` is not a variable", v.name))),
        }
    }

    /// The global step (an int64 non-trainable variable named `global_step`), created on
    /// first use; `minimize` increments it.
    pub fn global_step(&self) -> Result<Output> {
        {
            let d = self.read()?;
            if let Some(id) = d.global_step {
                return Ok(self.output_of(&d, id));
            }
        }
        let _root = self.root_scope("");
        let v = self.variable_with("global_step", &[], DType::I64, Initializer::Zeros, false)?;
        self.write()?.global_step = Some(v.id);
        Ok(v)
    }

    fn assign_impl(&self, var: &Output, value: &Output, mode: AssignMode) -> Result<Output> {
        let def = self.variable_def(var)?;
        let base = NodeKind::Assign {
            var: def.index,
            mode,
        };
        let name = base.name();
        let (vi, xi) = (var.info.clone(), value.info.clone());
        self.add_node(name, base, &[var, value], &[], move || {
            if xi.dtype != vi.dtype || !shapes_compatible(&xi.shape, &vi.shape) {
                return Err(Error::Graph(format!(
                    "cannot assign a {} {} value to a {} {} variable",
                    xi.dtype,
                    tandem_ir::infer::fmt_shape(&xi.shape),
                    vi.dtype,
                    tandem_ir::infer::fmt_shape(&vi.shape)
                )));
            }
            Ok((*vi).clone())
        })
    }

    /// `var = value` (the output is the new value).
    pub fn assign(&self, var: &Output, value: &Output) -> Result<Output> {
        self.assign_impl(var, value, AssignMode::Set)
    }

    /// `var += value`.
    pub fn assign_add(&self, var: &Output, value: &Output) -> Result<Output> {
        self.assign_impl(var, value, AssignMode::Add)
    }

    /// `var -= value`.
    pub fn assign_sub(&self, var: &Output, value: &Output) -> Result<Output> {
        self.assign_impl(var, value, AssignMode::Sub)
    }

    /// An op that runs all of `deps` (fetching it yields the op marker, see
    /// [`crate::is_op_marker`]).
    pub fn group(&self, deps: &[&Output]) -> Result<Output> {
        self.add_node("group", NodeKind::NoOp, &[], deps, || {
            Ok(ValueInfo::known(DType::F32, &[0]))
        })
    }

    /// An op that does nothing (useful with control dependencies).
    pub fn no_op(&self) -> Result<Output> {
        self.add_node("NoOp", NodeKind::NoOp, &[], &[], || {
            Ok(ValueInfo::known(DType::F32, &[0]))
        })
    }

    /// The input unchanged (a new node, e.g. to name a value or attach control dependencies).
    pub fn identity(&self, x: &Output) -> Result<Output> {
        let info = (*x.info).clone();
        self.add_node("Identity", NodeKind::Identity, &[x], &[], || Ok(info))
    }

    /// An op that sets every variable created so far to its initial value
    /// (`tf.global_variables_initializer()`).
    pub fn global_variables_initializer(&self) -> Result<Output> {
        let n = self.read()?.variables.len();
        self.add_node(
            "init",
            NodeKind::InitVariables((0..n).collect()),
            &[],
            &[],
            || Ok(ValueInfo::known(DType::F32, &[0])),
        )
    }

    /// Appends an optimizer update node.
    pub(crate) fn apply_update(&self, def: ApplyDef, inputs: &[&Output]) -> Result<Output> {
        let info = inputs
            .first()
            .map(|v| (*v.info).clone())
            .ok_or_else(|| Error::Graph("an update needs its variable".into()))?;
        let base = camel(def.update.name());
        self.add_node(&base, NodeKind::Apply(def), inputs, &[], || Ok(info))
    }

    /// A snapshot of all nodes (for passes, serialization and dumps).
    pub fn nodes(&self) -> Result<Vec<Node>> {
        Ok(self.read()?.nodes.clone())
    }

    /// The graph in Graphviz dot format.
    pub fn to_dot(&self) -> Result<String> {
        let d = self.read()?;
        let mut s = String::from("digraph tandem {\n  rankdir=TB;\n  node [shape=box];\n");
        for (id, n) in d.nodes.iter().enumerate() {
            let shape = match n.kind {
                NodeKind::Placeholder => "ellipse",
                NodeKind::Variable(_) => "cylinder",
                NodeKind::Op(Op::Constant(_)) => "note",
                _ => "box",
            };
            s.push_str(&format!(
                "  n{id} [label=\"{}\\n{} {} {}\", shape={shape}];\n",
                escape(&n.name),
                n.kind.name(),
                n.info.dtype,
                tandem_ir::infer::fmt_shape(&n.info.shape)
            ));
            for &i in &n.inputs {
                s.push_str(&format!("  n{i} -> n{id};\n"));
            }
            for &i in &n.control_inputs {
                s.push_str(&format!("  n{i} -> n{id} [style=dashed];\n"));
            }
        }
        s.push_str("}\n");
        Ok(s)
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// True when two partly known shapes could be equal.
pub(crate) fn shapes_compatible(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.is_none() || y.is_none() || x == y)
}

/// `max_pool2d` -> `MaxPool2d`, `matmul` -> `MatMul` (TensorFlow-style node names).
pub(crate) fn camel(op: &str) -> String {
    if op == "matmul" {
        return "MatMul".into();
    }
    op.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

impl Emit for Graph {
    type Value = Output;

    fn emit(&self, op: Op, inputs: &[&Output]) -> Result<Output> {
        let infos: Vec<ValueInfo> = inputs.iter().map(|o| (*o.info).clone()).collect();
        let base = camel(op.name());
        let op2 = op.clone();
        self.add_node(&base, NodeKind::Op(op), inputs, &[], move || {
            infer(&op2, &infos)
        })
    }

    fn dtype(&self, v: &Output) -> DType {
        v.info.dtype
    }

    fn rank(&self, v: &Output) -> usize {
        v.info.shape.len()
    }

    fn dim(&self, v: &Output, axis: usize) -> Dim {
        v.info.shape.get(axis).copied().flatten()
    }

    fn same_shape(&self, a: &Output, b: &Output) -> bool {
        a.id == b.id || (a.info.shape == b.info.shape && a.info.shape.iter().all(Option::is_some))
    }

    /// The output of a 2-D `permute([1, 0])` (how `linear` uses its weight). Its gradient is
    /// then built as eager mode builds it, `(g^T x)^T`: the product packs the small gradient
    /// instead of the transposed batch, and the weight's gradient comes out in its layout.
    fn is_transposed_view(&self, v: &Output) -> bool {
        v.info.shape.len() == 2
            && self.read().is_ok_and(|d| {
                d.nodes.get(v.id).is_some_and(
                    |n| matches!(&n.kind, NodeKind::Op(Op::Permute(p)) if p.as_slice() == [1, 0]),
                )
            })
    }

    fn next_seed(&self) -> u64 {
        match self.inner.write() {
            Ok(mut d) => {
                d.seed = d.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                d.seed
            }
            Err(_) => 0,
        }
    }
}
