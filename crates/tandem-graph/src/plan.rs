//! Execution plans: what a session compiles for one (fetch set, feed set).
//!
//! # Plan format
//!
//! Compilation has three stages:
//!
//! 1. **Extraction**: the nodes the fetches need (through data and control inputs, stopping at
//!    fed nodes) are copied into a [`PlanGraph`], a mutable graph whose nodes are
//!    [`PlanNode`]s: a [`PlanOp`], data inputs, control inputs and the inferred
//!    [`ValueInfo`]. Fed nodes become [`PlanOp::Feed`] sources (feed `i` of the plan's feed
//!    list), variables become [`PlanOp::Variable`] reads.
//! 2. **Passes** ([`crate::passes`]): each rewrites the plan graph in place; a pass may add
//!    nodes (ids grow), redirect uses ([`PlanGraph::replace_uses`]) and remove nodes. A pass
//!    that replaces a subgraph by a fused kernel adds a [`PlanOp::Kernel`] node.
//! 3. **Scheduling**: a topological order of the live nodes becomes a flat list of [`Step`]s.
//!    Step `i` writes value slot `i`; `inputs` are slots; `free` lists the slots whose last
//!    use is this step, dropped right after it runs (unless fetched), so memory is released as
//!    soon as values are dead. `fetch_slots` are the slots returned by a run.
//!
//! The interpreter ([`crate::exec`]) walks the steps in order. Variable writes (assign,
//! optimizer updates, initialization) go to a per-run overlay and are committed together
//! after every step succeeded.

use crate::exec::Arena;
use crate::graph::{ApplyDef, AssignMode, GraphData, NodeKind, VariableDef};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use tandem_ir::infer::fmt_shape;
use tandem_ir::{Op, ValueInfo};
use tandem_tensor::{Error, Result, Tensor};

/// A kernel that a pass put in place of a subgraph (e.g. a fused elementwise chain).
pub trait Kernel: Send + Sync + fmt::Debug {
    /// Name shown in plan dumps.
    fn name(&self) -> &str;
    /// Computes the output from the inputs. `out` is a preallocated buffer of the output's
    /// shape and dtype the kernel may write into and return (memory planning passes one when
    /// it owns a reusable buffer for the step; `None` otherwise).
    fn run(&self, inputs: &[&Tensor], out: Option<Tensor>) -> Result<Tensor>;
}

/// What a plan node computes.
#[derive(Clone, Debug)]
pub enum PlanOp {
    /// Feed number `i` of the plan.
    Feed(usize),
    /// Reads the variable with this index.
    Variable(usize),
    /// An IR op.
    Op(Op),
    /// Passes its input through.
    Identity,
    /// Writes a variable (inputs `[var, value]`).
    Assign {
        /// Variable index.
        var: usize,
        /// Set, add or subtract.
        mode: AssignMode,
    },
    /// An optimizer update (inputs `[var, grad, slots..., iterations, lr?]`).
    Apply(ApplyDef),
    /// An optimizer update whose gradient is the matrix product `lhs @ rhs` (inputs `[var,
    /// lhs, rhs, slots..., iterations, lr?]`): a linear layer's weight gradient, computed
    /// inside the update (see [`crate::lower::fold_gradient_products`]).
    ApplyProduct(ApplyDef),
    /// Sets variables to their initial values.
    InitVariables(Vec<VariableDef>),
    /// Nothing (control dependencies only).
    NoOp,
    /// A kernel put in place by a pass.
    Kernel(Arc<dyn Kernel>),
}

impl PlanOp {
    /// A short name.
    pub fn name(&self) -> String {
        match self {
            PlanOp::Feed(i) => format!("feed[{i}]"),
            PlanOp::Variable(i) => format!("variable[{i}]"),
            PlanOp::Op(op) => op.to_string(),
            PlanOp::Identity => "identity".into(),
            PlanOp::Assign { mode, var } => format!("{mode:?}(var[{var}])").to_lowercase(),
            PlanOp::Apply(a) => a.update.name().into(),
            PlanOp::ApplyProduct(a) => format!("{}(matmul)", a.update.name()),
            PlanOp::InitVariables(v) => format!("init_variables({})", v.len()),
            PlanOp::NoOp => "no_op".into(),
            PlanOp::Kernel(k) => k.name().into(),
        }
    }

    /// True for ops that write variables (never removed or merged by passes unless dead).
    pub fn has_side_effects(&self) -> bool {
        matches!(
            self,
            PlanOp::Assign { .. }
                | PlanOp::Apply(_)
                | PlanOp::ApplyProduct(_)
                | PlanOp::InitVariables(_)
        )
    }
}

/// A node of a [`PlanGraph`].
#[derive(Clone, Debug)]
pub struct PlanNode {
    /// Name (the graph node's name, or a pass-made name).
    pub name: String,
    /// What it computes.
    pub op: PlanOp,
    /// Data inputs (plan node ids).
    pub inputs: Vec<usize>,
    /// Nodes that must run first (plan node ids).
    pub control: Vec<usize>,
    /// Dtype and shape of the output.
    pub info: ValueInfo,
}

/// A fed value of a plan.
#[derive(Clone, Debug)]
pub struct FeedSpec {
    /// Graph node id.
    pub node: usize,
    /// Node name (for errors).
    pub name: String,
    /// What the fed tensor must admit.
    pub info: ValueInfo,
    /// Whether the fed node is a placeholder.
    pub placeholder: bool,
}

/// The mutable graph that passes rewrite. Removed nodes are `None`.
#[derive(Clone, Debug, Default)]
pub struct PlanGraph {
    /// Nodes by id.
    pub nodes: Vec<Option<PlanNode>>,
    /// The fetched nodes, in fetch order.
    pub outputs: Vec<usize>,
    /// The plan's feeds, in feed order.
    pub feeds: Vec<FeedSpec>,
}

impl PlanGraph {
    /// A live node.
    pub fn node(&self, id: usize) -> Option<&PlanNode> {
        self.nodes.get(id).and_then(Option::as_ref)
    }

    /// Adds a node and returns its id.
    pub fn add(&mut self, node: PlanNode) -> usize {
        self.nodes.push(Some(node));
        self.nodes.len() - 1
    }

    /// Ids of the live nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }

    /// True when no node is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every use of `old` (data inputs and fetches) use `new` instead; control edges
    /// to `old` move to `new` too. Returns whether anything changed.
    pub fn replace_uses(&mut self, old: usize, new: usize) -> bool {
        if old == new {
            return false;
        }
        let mut changed = false;
        for n in self.nodes.iter_mut().flatten() {
            for i in n.inputs.iter_mut().chain(n.control.iter_mut()) {
                if *i == old {
                    *i = new;
                    changed = true;
                }
            }
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
                changed = true;
            }
        }
        changed
    }

    /// Removes a node (its uses must have been redirected first).
    pub fn remove(&mut self, id: usize) {
        if let Some(slot) = self.nodes.get_mut(id) {
            *slot = None;
        }
    }

    /// Extracts what `fetches` need from a graph, with `feeds` (graph node ids) as sources.
    pub(crate) fn extract(g: &GraphData, fetches: &[usize], feeds: &[usize]) -> Result<PlanGraph> {
        let n = g.nodes.len();
        let bad = |id: usize| Error::Graph(format!("node id {id} is not in this graph"));
        let mut feed_index: HashMap<usize, usize> = HashMap::new();
        for (i, &f) in feeds.iter().enumerate() {
            if f >= n {
                return Err(bad(f));
            }
            if feed_index.insert(f, i).is_some() {
                return Err(Error::Graph(format!("`{}` is fed twice", g.nodes[f].name)));
            }
        }
        let mut needed = vec![false; n];
        // Who needs each node first (for the unfed-placeholder message).
        let mut needed_by: Vec<usize> = vec![usize::MAX; n];
        let mut stack = Vec::new();
        for &f in fetches {
            if f >= n {
                return Err(bad(f));
            }
            if !needed[f] {
                needed[f] = true;
                needed_by[f] = f;
                stack.push(f);
            }
        }
        while let Some(id) = stack.pop() {
            if feed_index.contains_key(&id) {
                continue;
            }
            let node = &g.nodes[id];
            for &i in node.inputs.iter().chain(&node.control_inputs) {
                if !needed[i] {
                    needed[i] = true;
                    needed_by[i] = needed_by[id];
                    stack.push(i);
                }
            }
        }
        let mut pg = PlanGraph::default();
        let mut map = vec![usize::MAX; n];
        for id in 0..n {
            if !needed[id] {
                continue;
            }
            let node = &g.nodes[id];
            let fed = feed_index.get(&id).copied();
            let op = match (fed, &node.kind) {
                (Some(i), _) => PlanOp::Feed(i),
                (None, NodeKind::Placeholder) => {
                    let by = g.nodes.get(needed_by[id]).map_or("?", |n| n.name.as_str());
                    return Err(Error::Graph(format!(
                        "placeholder `{}` ({} {}) must be fed: fetch `{by}` depends on it",
                        node.name,
                        node.info.dtype,
                        fmt_shape(&node.info.shape)
                    )));
                }
                (None, NodeKind::Op(op)) => PlanOp::Op(op.clone()),
                (None, NodeKind::Variable(v)) => PlanOp::Variable(v.index),
                (None, NodeKind::Assign { var, mode }) => PlanOp::Assign {
                    var: *var,
                    mode: *mode,
                },
                (None, NodeKind::Identity) => PlanOp::Identity,
                (None, NodeKind::NoOp) => PlanOp::NoOp,
                (None, NodeKind::InitVariables(vars)) => {
                    let mut defs = Vec::with_capacity(vars.len());
                    for &v in vars {
                        let vid = *g.variables.get(v).ok_or_else(|| bad(v))?;
                        if let NodeKind::Variable(def) = &g.nodes[vid].kind {
                            defs.push(def.clone());
                        }
                    }
                    PlanOp::InitVariables(defs)
                }
                (None, NodeKind::Apply(a)) => PlanOp::Apply(a.clone()),
            };
            let (inputs, control) = if fed.is_some() {
                (vec![], vec![])
            } else {
                (
                    node.inputs.iter().map(|&i| map[i]).collect(),
                    node.control_inputs.iter().map(|&i| map[i]).collect(),
                )
            };
            map[id] = pg.add(PlanNode {
                name: node.name.clone(),
                op,
                inputs,
                control,
                info: node.info.clone(),
            });
        }
        pg.outputs = fetches.iter().map(|&f| map[f]).collect();
        pg.feeds = feeds
            .iter()
            .map(|&f| FeedSpec {
                node: f,
                name: g.nodes[f].name.clone(),
                info: g.nodes[f].info.clone(),
                placeholder: matches!(g.nodes[f].kind, NodeKind::Placeholder),
            })
            .collect();
        Ok(pg)
    }
}

/// One step of a compiled plan.
#[derive(Clone, Debug)]
pub struct Step {
    /// Name of the node it came from.
    pub name: String,
    /// What it computes.
    pub op: PlanOp,
    /// Input slots.
    pub inputs: Vec<usize>,
    /// Slots to drop after this step (their last use).
    pub free: Vec<usize>,
    /// A dead slot whose buffer this step writes its output into (memory planning): set
    /// for kernels that accept an output buffer, when an earlier step's value of the same
    /// dtype and shape died before this step. The interpreter passes the buffer only when
    /// the run owns it alone (otherwise the kernel allocates).
    pub reuse: Option<usize>,
    /// Dtype and shape of the output.
    pub info: ValueInfo,
}

/// A compiled plan: steps over value slots (step `i` writes slot `i`).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The steps in execution order.
    pub steps: Vec<Step>,
    /// Slots returned by a run, in fetch order.
    pub fetch_slots: Vec<usize>,
    /// The feeds, in the order a run takes them.
    pub feeds: Vec<FeedSpec>,
    /// Whether any step writes variables.
    pub writes_variables: bool,
    /// Per step: an optimizer update whose result nobody reads and whose variables no later
    /// step touches. Such updates are validated when their step runs and applied in place at
    /// commit time, under the variable write lock, after every step succeeded (so a failed
    /// run still changes nothing, and no copy of the parameter and slots is made).
    pub deferred: Vec<bool>,
    /// Per slot: whether its value, once dead, is kept for a later step's [`Step::reuse`]
    /// instead of being dropped.
    pub donors: Vec<bool>,
    /// Per slot: the first slot of its buffer's [`Step::reuse`] chain (itself when the step
    /// reuses nothing). A kernel's dead buffer is kept in [`Plan::arena`] under this slot, so
    /// that the next run's first kernel of the chain writes into it again.
    pub home: Vec<usize>,
    /// Kernel output buffers kept from one run to the next.
    pub arena: Arena,
}

/// Variables a step reads or writes (by variable index).
fn touched(op: &PlanOp) -> Vec<usize> {
    match op {
        PlanOp::Variable(v) => vec![*v],
        PlanOp::Assign { var, .. } => vec![*var],
        PlanOp::Apply(a) | PlanOp::ApplyProduct(a) => std::iter::once(a.var)
            .chain(a.slots.iter().copied())
            .collect(),
        PlanOp::InitVariables(defs) => defs.iter().map(|d| d.index).collect(),
        _ => vec![],
    }
}

/// Whether a step's output is a buffer the run allocates itself (so that, once dead, it may
/// be written again): not a feed, a variable, a constant, a pass-through or a view.
pub(crate) fn owns_output(op: &PlanOp) -> bool {
    match op {
        PlanOp::Kernel(_) => true,
        PlanOp::Op(op) => !matches!(
            op,
            Op::Constant(_)
                | Op::Reshape(_)
                | Op::ReshapeLike
                | Op::Flatten { .. }
                | Op::Squeeze(_)
                | Op::Unsqueeze(_)
                | Op::Permute(_)
                | Op::Expand(_)
                | Op::ExpandLike
                | Op::Slice { .. }
                | Op::SumToLike
                | Op::StopGradient
        ),
        _ => false,
    }
}

/// Memory planning: gives each kernel step that accepts an output buffer
/// ([`PlanOp::Kernel`]) a value that died at an earlier step with the same dtype and shape
/// (greedy, in step order, each dead value used once; the reused output may die and be
/// reused again). Returns which slots donate their buffer ([`Plan::donors`]).
fn plan_reuse(steps: &mut [Step]) -> Vec<bool> {
    let n = steps.len();
    let mut donors = vec![false; n];
    // A view (or pass-through) may share its input's buffer: the buffer is dead only when
    // the value and every value that may alias it are dead.
    let mut root: Vec<usize> = (0..n).collect();
    for s in 0..n {
        let aliases =
            !owns_output(&steps[s].op) && matches!(steps[s].op, PlanOp::Op(_) | PlanOp::Identity);
        if let (true, Some(&i)) = (aliases, steps[s].inputs.first()) {
            root[s] = root.get(i).copied().unwrap_or(s);
        }
    }
    let mut death = vec![usize::MAX; n];
    for (at, st) in steps.iter().enumerate() {
        for &f in &st.free {
            if let Some(d) = death.get_mut(f) {
                *d = at;
            }
        }
    }
    // The step after which each buffer is dead (`usize::MAX`: never, e.g. fetched).
    let mut buffer_death = vec![0usize; n];
    for s in 0..n {
        let r = root[s];
        buffer_death[r] = buffer_death[r].max(death[s]);
    }
    let mut dies_at: Vec<Vec<usize>> = vec![Vec::new(); n];
    for s in 0..n {
        if root[s] == s && owns_output(&steps[s].op) {
            if let Some(list) = dies_at.get_mut(buffer_death[s]) {
                list.push(s);
            }
        }
    }
    let mut pool: Vec<usize> = Vec::new();
    for s in 0..n {
        if matches!(steps[s].op, PlanOp::Kernel(_)) {
            let info = &steps[s].info;
            if let Some(k) = pool.iter().position(|&d| steps[d].info == *info) {
                let d = pool.swap_remove(k);
                donors[d] = true;
                steps[s].reuse = Some(d);
            }
        }
        pool.extend(dies_at[s].iter().copied().filter(|&f| f != s));
    }
    donors
}

/// Which steps [`Plan::deferred`] marks.
fn deferrable(steps: &[Step], fetch_slots: &[usize]) -> Vec<bool> {
    let mut read = vec![false; steps.len()];
    for st in steps {
        for &i in &st.inputs {
            if let Some(r) = read.get_mut(i) {
                *r = true;
            }
        }
    }
    for &f in fetch_slots {
        if let Some(r) = read.get_mut(f) {
            *r = true;
        }
    }
    // Walk backwards, remembering the variables later steps touch.
    let mut later: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut out = vec![false; steps.len()];
    for (s, st) in steps.iter().enumerate().rev() {
        let vars = touched(&st.op);
        if matches!(st.op, PlanOp::Apply(_) | PlanOp::ApplyProduct(_)) && !read[s] {
            out[s] = vars.iter().all(|v| !later.contains(v));
        }
        later.extend(vars);
    }
    out
}

impl Plan {
    /// Schedules a plan graph: topological order of what the outputs need, slots, last uses.
    pub fn schedule(pg: &PlanGraph) -> Result<Plan> {
        let n = pg.nodes.len();
        // Iterative post-order DFS from the outputs.
        let mut state = vec![0u8; n]; // 0 new, 1 open, 2 done
        let mut order = Vec::new();
        for &o in &pg.outputs {
            let mut stack: Vec<(usize, usize)> = vec![(o, 0)];
            while let Some((id, k)) = stack.pop() {
                let node = pg.node(id).ok_or_else(|| {
                    Error::Graph(format!("plan: node {id} was removed but is still used"))
                })?;
                if k == 0 {
                    match state[id] {
                        2 => continue,
                        1 => return Err(Error::Graph(format!("plan: cycle at `{}`", node.name))),
                        _ => state[id] = 1,
                    }
                }
                let deps = node.inputs.len() + node.control.len();
                if k < deps {
                    stack.push((id, k + 1));
                    let d = if k < node.inputs.len() {
                        node.inputs[k]
                    } else {
                        node.control[k - node.inputs.len()]
                    };
                    match state.get(d) {
                        Some(0) => stack.push((d, 0)),
                        Some(1) => {
                            return Err(Error::Graph(format!("plan: cycle at `{}`", node.name)))
                        }
                        _ => {}
                    }
                } else {
                    state[id] = 2;
                    order.push(id);
                }
            }
        }
        let mut slot = vec![usize::MAX; n];
        for (s, &id) in order.iter().enumerate() {
            slot[id] = s;
        }
        let fetch_slots: Vec<usize> = pg.outputs.iter().map(|&o| slot[o]).collect();
        let mut last_use = vec![usize::MAX; order.len()];
        let mut steps: Vec<Step> = Vec::with_capacity(order.len());
        for (s, &id) in order.iter().enumerate() {
            let node = pg
                .node(id)
                .ok_or_else(|| Error::Graph("plan: lost node".into()))?;
            let inputs: Vec<usize> = node.inputs.iter().map(|&i| slot[i]).collect();
            for &i in &inputs {
                last_use[i] = s;
            }
            steps.push(Step {
                name: node.name.clone(),
                op: node.op.clone(),
                inputs,
                free: vec![],
                reuse: None,
                info: node.info.clone(),
            });
        }
        let mut fetched = vec![false; order.len()];
        for &f in &fetch_slots {
            fetched[f] = true;
        }
        for (s, &l) in last_use.iter().enumerate() {
            if fetched[s] {
                continue;
            }
            // Values nobody reads are dropped right after they are made.
            let at = if l == usize::MAX { s } else { l };
            steps[at].free.push(s);
        }
        let writes_variables = steps.iter().any(|s| s.op.has_side_effects());
        let deferred = deferrable(&steps, &fetch_slots);
        let donors = plan_reuse(&mut steps);
        let mut home: Vec<usize> = (0..steps.len()).collect();
        for s in 0..steps.len() {
            if let Some(d) = steps[s].reuse {
                home[s] = home.get(d).copied().unwrap_or(s);
            }
        }
        Ok(Plan {
            steps,
            fetch_slots,
            feeds: pg.feeds.clone(),
            writes_variables,
            deferred,
            donors,
            home,
            arena: Arena::default(),
        })
    }

    /// The plan as text, one line per step: slot, name, op, input slots, dtype and shape.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for (i, st) in self.steps.iter().enumerate() {
            let ins: Vec<String> = st.inputs.iter().map(|i| format!("%{i}")).collect();
            let how = if self.deferred.get(i) == Some(&true) {
                ", in place at commit"
            } else {
                ""
            };
            let reuse = match st.reuse {
                Some(d) => format!(", reuses %{d}"),
                None => String::new(),
            };
            s.push_str(&format!(
                "%{i} = {} [{}{how}{reuse}]({}) : {} {}\n",
                st.name,
                st.op.name(),
                ins.join(", "),
                st.info.dtype,
                fmt_shape(&st.info.shape)
            ));
        }
        let f: Vec<String> = self.fetch_slots.iter().map(|i| format!("%{i}")).collect();
        s.push_str(&format!("fetch {}\n", f.join(", ")));
        s
    }
}
