//! Compiler passes over a [`PlanGraph`].
//!
//! Each pass is a small struct behind the [`Pass`] trait; [`run_passes`] applies a list in
//! order, again and again until none changes anything. Passes never touch nodes with side
//! effects (assign, optimizer updates, initializers) except to prune them when nothing needs
//! them, never fold or merge random ops, and never fold variables or feeds.

use crate::plan::{PlanGraph, PlanNode, PlanOp};
use std::collections::HashMap;
use tandem_ir::{eval, Op};
use tandem_tensor::{BinaryOp, Result, Tensor, UnaryOp};

/// A rewrite of a plan graph.
pub trait Pass: Send + Sync {
    /// Name (for dumps and tests).
    fn name(&self) -> &str;
    /// Rewrites the plan graph; returns whether anything changed.
    fn run(&self, plan: &mut PlanGraph) -> Result<bool>;
}

/// The passes a session runs by default: pruning, constant folding, algebraic simplification,
/// common-subexpression elimination, then matmul + bias (+ relu) fusion and elementwise
/// fusion ([`crate::fusion`]).
pub fn default_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(Prune),
        Box::new(ConstantFolding),
        Box::new(AlgebraicSimplification),
        Box::new(CommonSubexpressionElimination),
        Box::new(TransposedProduct),
        Box::new(crate::fusion::MatMulBiasFusion),
        Box::new(crate::fusion::ElementwiseFusion),
    ]
}

/// Most rounds of the pass list before giving up on reaching a fixed point.
const MAX_ROUNDS: usize = 32;

/// Runs `passes` in order until a whole round changes nothing. Returns the number of rounds.
pub fn run_passes(plan: &mut PlanGraph, passes: &[Box<dyn Pass>]) -> Result<usize> {
    for round in 1..=MAX_ROUNDS {
        let mut changed = false;
        for p in passes {
            changed |= p.run(plan)?;
        }
        if !changed {
            return Ok(round);
        }
    }
    Ok(MAX_ROUNDS)
}

/// Removes every node the fetches do not need (through data or control inputs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Prune;

impl Pass for Prune {
    fn name(&self) -> &str {
        "prune"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let n = plan.nodes.len();
        let mut keep = vec![false; n];
        let mut stack: Vec<usize> = plan.outputs.clone();
        while let Some(id) = stack.pop() {
            if id >= n || keep[id] {
                continue;
            }
            keep[id] = true;
            if let Some(node) = plan.node(id) {
                stack.extend(node.inputs.iter().chain(&node.control));
            }
        }
        let mut changed = false;
        for (id, k) in keep.iter().enumerate() {
            if !k && plan.nodes[id].is_some() {
                plan.remove(id);
                changed = true;
            }
        }
        Ok(changed)
    }
}

fn constant_of(plan: &PlanGraph, id: usize) -> Option<&Tensor> {
    match plan.node(id).map(|n| &n.op) {
        Some(PlanOp::Op(Op::Constant(t))) => Some(t),
        _ => None,
    }
}

/// Runs ops whose inputs are all constants once, at compile time (never random ops, never
/// variables or feeds). Shape-only ops (`dim_size`, `full_like`) fold as soon as the shape
/// they read is known.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConstantFolding;

/// Largest result (elements) constant folding materializes.
const FOLD_LIMIT: usize = 1 << 20;

impl Pass for ConstantFolding {
    fn name(&self) -> &str {
        "constant_folding"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let mut changed = false;
        for id in plan.live() {
            let Some(node) = plan.node(id) else { continue };
            let PlanOp::Op(op) = &node.op else { continue };
            if matches!(op, Op::Constant(_)) || op.is_random() || !node.control.is_empty() {
                continue;
            }
            let too_big = node
                .info
                .concrete()
                .is_none_or(|s| s.iter().product::<usize>() > FOLD_LIMIT);
            if too_big {
                continue;
            }
            let shape_only = matches!(op, Op::DimSize { .. } | Op::FullLike { .. });
            let value = if shape_only {
                let Some(x) = node.inputs.first().and_then(|&i| plan.node(i)) else {
                    continue;
                };
                let Some(shape) = x.info.concrete() else {
                    continue;
                };
                // The kernel reads only the input's shape (and dtype): run it on a stand-in.
                let stand_in = Tensor::zeros(&[], x.info.dtype).expand(&shape)?;
                eval(op, &[&stand_in])
            } else {
                let consts: Option<Vec<&Tensor>> =
                    node.inputs.iter().map(|&i| constant_of(plan, i)).collect();
                let Some(consts) = consts else { continue };
                eval(op, &consts)
            };
            // An op that fails on constants is left for run time, where it reports its error.
            let Ok(value) = value else { continue };
            let value = value.contiguous()?;
            if let Some(Some(n)) = plan.nodes.get_mut(id) {
                n.op = PlanOp::Op(Op::Constant(value));
                n.inputs.clear();
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// Merges nodes that compute the same op (same `Op::key()`) on the same inputs.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommonSubexpressionElimination;

impl Pass for CommonSubexpressionElimination {
    fn name(&self) -> &str {
        "cse"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let mut seen: HashMap<(String, Vec<usize>, Vec<usize>), usize> = HashMap::new();
        let mut changed = false;
        for id in plan.live() {
            let Some(node) = plan.node(id) else { continue };
            let key = match &node.op {
                PlanOp::Op(op) if !op.is_random() => op.key(),
                PlanOp::Identity => "identity".to_string(),
                _ => continue,
            };
            let key = (key, node.inputs.clone(), node.control.clone());
            match seen.get(&key) {
                Some(&first) => {
                    plan.replace_uses(id, first);
                    plan.remove(id);
                    changed = true;
                }
                None => {
                    seen.insert(key, id);
                }
            }
        }
        Ok(changed)
    }
}

/// Algebraic identities: `x*1`, `1*x`, `x+0`, `0+x`, `x-0`, `x/1`, permute of permute,
/// reshape chains, cast to the same dtype, expand / sum-to to the same known shape,
/// `x > c` (`c >= 0`) as `relu(x) > c` when `relu(x)` is computed anyway,
/// `stop_gradient` and `identity` (plans only run forward, gradients are already built).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlgebraicSimplification;

fn all_equal(t: &Tensor, v: f64) -> bool {
    t.numel() <= 4096 && t.to_f64_vec().is_ok_and(|d| d.iter().all(|&x| x == v))
}

enum Rewrite {
    /// Uses of the node become uses of this node.
    Forward(usize),
    /// The node becomes this op on these inputs.
    Replace(Op, Vec<usize>),
}

fn simplify(plan: &PlanGraph, id: usize, roots: &mut HashMap<usize, usize>) -> Option<Rewrite> {
    let node = plan.node(id)?;
    if !node.control.is_empty() {
        return None;
    }
    let same_info = |x: usize| plan.node(x).is_some_and(|n| n.info == node.info);
    let forward = |x: usize| same_info(x).then_some(Rewrite::Forward(x));
    let op = match &node.op {
        PlanOp::Identity => return node.inputs.first().and_then(|&x| forward(x)),
        PlanOp::Op(op) => op,
        _ => return None,
    };
    let x = *node.inputs.first()?;
    let input = plan.node(x)?;
    match op {
        Op::StopGradient => forward(x),
        Op::Cast(d) if *d == input.info.dtype => forward(x),
        // `x > c` with `c >= 0` equals `relu(x) > c` (NaN is false in both): reading the relu
        // (relu's gradient mask) instead of its input lets the input die at the relu, and
        // lets matmul + bias + relu fuse.
        Op::Scalar {
            op: BinaryOp::Gt,
            value,
            scalar_on_left: false,
        } if *value >= 0.0 => {
            let relu = plan.live().into_iter().find(|&r| {
                plan.node(r).is_some_and(|n| {
                    matches!(n.op, PlanOp::Op(Op::Unary(UnaryOp::Relu)))
                        && n.inputs.as_slice() == [x]
                        && n.control.is_empty()
                        && n.info == input.info
                })
            })?;
            Some(Rewrite::Replace(op.clone(), vec![relu]))
        }
        Op::Scalar {
            op: b,
            value,
            scalar_on_left,
        } => {
            let neutral = match (b, scalar_on_left) {
                (BinaryOp::Mul, _) | (BinaryOp::Div, false) | (BinaryOp::Pow, false) => 1.0,
                (BinaryOp::Add, _) | (BinaryOp::Sub, false) => 0.0,
                _ => return None,
            };
            (*value == neutral).then(|| forward(x)).flatten()
        }
        Op::Binary(b) => {
            let y = *node.inputs.get(1)?;
            let (cx, cy) = (constant_of(plan, x), constant_of(plan, y));
            let is = |c: Option<&Tensor>, v: f64| c.is_some_and(|t| all_equal(t, v));
            match b {
                BinaryOp::Mul if is(cy, 1.0) => forward(x),
                BinaryOp::Mul if is(cx, 1.0) => forward(y),
                BinaryOp::Add if is(cy, 0.0) => forward(x),
                BinaryOp::Add if is(cx, 0.0) => forward(y),
                BinaryOp::Sub if is(cy, 0.0) => forward(x),
                BinaryOp::Div if is(cy, 1.0) => forward(x),
                _ => None,
            }
        }
        Op::Permute(p) => {
            if p.iter().enumerate().all(|(i, &a)| i == a) {
                return forward(x);
            }
            if let PlanOp::Op(Op::Permute(q)) = &input.op {
                let inner = *input.inputs.first()?;
                let composed: Option<Vec<usize>> = p.iter().map(|&a| q.get(a).copied()).collect();
                let composed = composed?;
                if composed.iter().enumerate().all(|(i, &a)| i == a) {
                    return forward(inner);
                }
                return Some(Rewrite::Replace(Op::Permute(composed), vec![inner]));
            }
            None
        }
        Op::Reshape(target) => {
            if node.info.concrete().is_some() && same_info(x) {
                return forward(x);
            }
            match &input.op {
                PlanOp::Op(
                    Op::Reshape(_)
                    | Op::Flatten { .. }
                    | Op::Unsqueeze(_)
                    | Op::Squeeze(_)
                    | Op::ReshapeLike,
                ) => {
                    let inner = *input.inputs.first()?;
                    Some(Rewrite::Replace(Op::Reshape(target.clone()), vec![inner]))
                }
                _ => None,
            }
        }
        Op::Flatten { .. } | Op::Unsqueeze(_) | Op::Squeeze(_) | Op::ReshapeLike => {
            (node.info.concrete().is_some() && same_info(x))
                .then(|| forward(x))
                .flatten()
        }
        Op::Expand(_) | Op::ExpandLike | Op::SumToLike => {
            // `sum_to_like(v, t)` and `expand_like(v, t)` pass `v` through when its shape is
            // `t`'s: known when both are fully known, or when both follow one node's shape
            // (a gradient has the shape of the value it belongs to, whatever the batch size).
            let like_root = match op {
                Op::Expand(_) => None,
                _ => node
                    .inputs
                    .get(1)
                    .map(|&t| shape_root(plan, t, SHAPE_DEPTH, roots)),
            };
            let same_shape = node.info.concrete().is_some()
                || like_root.is_some_and(|r| r == shape_root(plan, x, SHAPE_DEPTH, roots));
            (same_shape && same_info(x)).then(|| forward(x)).flatten()
        }
        _ => None,
    }
}

/// How far [`shape_root`] follows a chain of inputs.
const SHAPE_DEPTH: usize = 64;

/// The node whose run-time shape `id`'s shape provably equals: the first node of the chain
/// of ops whose output has the shape of an input (elementwise ops, the `*_like` ops, the
/// gradients of pooling and convolution, which take the shape of the value they belong to).
/// A binary op follows its operands when both lead to the same node. `roots` remembers the
/// answers of one pass (a rewrite never changes a shape, so they stay true).
fn shape_root(
    plan: &PlanGraph,
    id: usize,
    depth: usize,
    roots: &mut HashMap<usize, usize>,
) -> usize {
    if let Some(&r) = roots.get(&id) {
        return r;
    }
    let Some(node) = plan.node(id) else {
        return id;
    };
    if depth == 0 || !node.control.is_empty() {
        return id;
    }
    let input = |k: usize| node.inputs.get(k).copied();
    let next = match &node.op {
        PlanOp::Identity => input(0),
        PlanOp::Op(op) => match op {
            Op::Unary(_) | Op::Cast(_) | Op::Scalar { .. } | Op::StopGradient => input(0),
            Op::SumToLike
            | Op::ExpandLike
            | Op::ReshapeLike
            | Op::MaxPool2dBackward(_)
            | Op::AvgPool2dBackward(_)
            | Op::AdaptiveAvgPool2dBackward => input(1),
            Op::Conv2dInputGrad(_) | Op::Conv2dWeightGrad(_) => input(2),
            Op::Binary(_) => match node.inputs.as_slice() {
                &[a, b] => {
                    let ra = shape_root(plan, a, depth - 1, roots);
                    (ra == shape_root(plan, b, depth - 1, roots)).then_some(ra)
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let root = match next {
        Some(n) if n != id => shape_root(plan, n, depth - 1, roots),
        _ => id,
    };
    roots.insert(id, root);
    root
}

impl Pass for AlgebraicSimplification {
    fn name(&self) -> &str {
        "algebraic_simplification"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let mut changed = false;
        let mut roots = HashMap::new();
        for id in plan.live() {
            match simplify(plan, id, &mut roots) {
                Some(Rewrite::Forward(x)) => {
                    plan.replace_uses(id, x);
                    plan.remove(id);
                    changed = true;
                }
                Some(Rewrite::Replace(op, inputs)) => {
                    if let Some(Some(n)) = plan.nodes.get_mut(id) {
                        n.op = PlanOp::Op(op);
                        n.inputs = inputs;
                        changed = true;
                    }
                }
                None => {}
            }
        }
        Ok(changed)
    }
}

/// `permute([1, 0])(matmul(a, b))` of 2-D operands becomes `matmul(b^T, a^T)` with the
/// transposes as views: the product is written in the layout its consumer wants, instead of
/// being computed and then copied transposed. Weight gradients of `linear` (`(x^T g)^T`) take
/// this form, and the rewritten `x^T^T` folds away in algebraic simplification.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransposedProduct;

impl Pass for TransposedProduct {
    fn name(&self) -> &str {
        "transposed_product"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let mut uses = vec![0usize; plan.nodes.len()];
        for id in plan.live() {
            if let Some(n) = plan.node(id) {
                for &i in n.inputs.iter().chain(&n.control) {
                    uses[i] += 1;
                }
            }
        }
        for &o in &plan.outputs {
            uses[o] += 1;
        }
        let mut changed = false;
        for id in plan.live() {
            let Some(node) = plan.node(id) else { continue };
            let is_transpose = matches!(&node.op, PlanOp::Op(Op::Permute(p)) if p[..] == [1, 0]);
            if !is_transpose || !node.control.is_empty() {
                continue;
            }
            let Some(&m) = node.inputs.first() else {
                continue;
            };
            let Some(mm) = plan.node(m) else { continue };
            let two_d = |x: usize| plan.node(x).is_some_and(|n| n.info.shape.len() == 2);
            if !matches!(mm.op, PlanOp::Op(Op::MatMul))
                || uses[m] != 1
                || !mm.control.is_empty()
                || mm.inputs.len() != 2
                || !mm.inputs.iter().all(|&x| two_d(x))
            {
                continue;
            }
            let (a, b) = (mm.inputs[0], mm.inputs[1]);
            let transposed = |plan: &mut PlanGraph, x: usize| -> Option<usize> {
                let n = plan.node(x)?;
                let mut info = n.info.clone();
                info.shape.swap(0, 1);
                let name = format!("{}/transposed", n.name);
                Some(plan.add(PlanNode {
                    name,
                    op: PlanOp::Op(Op::Permute(vec![1, 0])),
                    inputs: vec![x],
                    control: Vec::new(),
                    info,
                }))
            };
            let (Some(bt), Some(at)) = (transposed(plan, b), transposed(plan, a)) else {
                continue;
            };
            if let Some(Some(n)) = plan.nodes.get_mut(id) {
                n.op = PlanOp::Op(Op::MatMul);
                n.inputs = vec![bt, at];
            }
            plan.remove(m);
            uses.resize(plan.nodes.len(), 1);
            changed = true;
        }
        Ok(changed)
    }
}
