//! Reverse-mode differentiation over the recorded graph: `backward`, and the functional form
//! [`grad`]. The per-op step is `tandem_ir::grad::backprop` (the shared rules); this module only
//! orders the nodes, seeds, routes and accumulates gradients, and frees the graph.

use crate::emitter::Eager;
use crate::mode::{is_anomaly_enabled, set_grad_enabled};
use crate::tensor::{Body, Node, Saved, Tensor};
use std::collections::{HashMap, HashSet};
use tandem_ir::grad::{accumulate, backprop};
use tandem_ir::EmitExt;
use tandem_tensor::{Error, Result};

/// Options of a backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackwardOptions {
    /// Keep the graph's saved tensors so that another backward can run through it.
    pub retain_graph: bool,
    /// Record the backward pass itself, so that gradients are differentiable (higher-order
    /// gradients). Implies keeping the graph.
    pub create_graph: bool,
}

fn freed(op: &Node) -> Error {
    Error::Autograd(format!(
        "trying to backward through the graph a second time: the saved tensors of `{}` have \
         been freed; pass retain_graph: true to the first backward",
        op.name()
    ))
}

/// The inputs of `t`'s op (empty for leaves), or an error when they were freed.
fn children(t: &Tensor) -> Result<Saved> {
    match &t.0.body {
        Body::Leaf { .. } => Ok(Saved::new()),
        Body::Op { op, saved, .. } => {
            let s = saved.lock().unwrap_or_else(|p| p.into_inner());
            s.as_ref().cloned().ok_or_else(|| freed(op))
        }
    }
}

/// Nodes reachable from `roots` through tensors that require grad, each with its inputs, in
/// topological order (every tensor before the inputs of its op).
fn topo_order(roots: &[Tensor]) -> Result<Vec<(Tensor, Saved)>> {
    let mut visited: HashSet<usize> = HashSet::new();
    let mut post: Vec<(Tensor, Saved)> = Vec::new();
    let mut stack: Vec<(Tensor, Saved, usize)> = Vec::new();
    for r in roots {
        if !visited.insert(r.ptr()) {
            continue;
        }
        let ch = children(r)?;
        stack.push((r.clone(), ch, 0));
        while let Some(top) = stack.last_mut() {
            if let Some(c) = top.1.get(top.2).cloned() {
                top.2 += 1;
                if c.requires_grad() && visited.insert(c.ptr()) {
                    let ch = children(&c)?;
                    stack.push((c, ch, 0));
                }
            } else if let Some((t, ch, _)) = stack.pop() {
                post.push((t, ch));
            }
        }
    }
    post.reverse();
    Ok(post)
}

fn name_backward(e: Error, op: &Node) -> Error {
    match e {
        Error::Anomaly { op: inner, what } => Error::Anomaly {
            op: format!("{inner} (in the backward of {})", op.name()),
            what,
        },
        e => e.context(format!("backward of {}", op.name())),
    }
}

/// Runs a backward pass from `roots` seeded with `seeds`. Without `capture`, gradients of
/// leaves that require grad are accumulated into their grad slots; with it, the gradients of
/// the captured tensors are returned instead and no grad slot changes.
pub(crate) fn run_backward(
    roots: &[Tensor],
    seeds: &[Tensor],
    opts: BackwardOptions,
    capture: Option<&[Tensor]>,
) -> Result<Vec<Option<Tensor>>> {
    let e = Eager;
    let retain = opts.retain_graph || opts.create_graph;
    for r in roots {
        if !r.requires_grad() {
            return Err(Error::Autograd(
                "the tensor does not require grad and has no grad_fn: nothing to differentiate"
                    .into(),
            ));
        }
    }
    let order = topo_order(roots)?;
    let _mode = set_grad_enabled(opts.create_graph);
    let mut grads: HashMap<usize, Tensor> = HashMap::with_capacity(order.len());
    for (r, s) in roots.iter().zip(seeds) {
        let (rs, ss) = (r.shape(), s.shape());
        if rs != ss {
            return Err(Error::ShapeMismatch {
                op: "backward",
                lhs: ss.to_vec(),
                rhs: rs.to_vec(),
                hint: "the gradient must have the output's shape".into(),
            });
        }
        let s = e.cast(s, r.dtype())?;
        // A seed given on another device follows its output (recorded when create_graph).
        let s = s.to_device(r.device())?;
        let acc = grads.remove(&r.ptr());
        grads.insert(r.ptr(), accumulate(&e, acc, s)?);
    }
    let capture_ids: HashMap<usize, usize> = capture
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, t)| (t.ptr(), i))
        .collect();
    let mut captured: Vec<Option<Tensor>> = vec![None; capture.map_or(0, <[Tensor]>::len)];
    let anomaly = is_anomaly_enabled();
    for (t, inputs) in &order {
        let Some(g) = grads.remove(&t.ptr()) else {
            continue;
        };
        if let Some(&i) = capture_ids.get(&t.ptr()) {
            captured[i] = Some(g.clone());
        }
        let op = match &t.0.body {
            Body::Leaf { .. } => {
                if capture.is_none() && t.requires_grad() {
                    if let Some(slot) = t.grad_slot() {
                        let old = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                        let new = accumulate(&e, old, g)?;
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
                    }
                }
                continue;
            }
            Body::Op { op, .. } => op,
        };
        let wanted: Vec<bool> = inputs
            .iter()
            .map(|x| x.requires_grad() && x.dtype().is_float())
            .collect();
        if !wanted.iter().any(|&w| w) {
            continue;
        }
        let gs = match op {
            Node::Op(ir) => {
                let refs: Vec<&Tensor> = inputs.iter().collect();
                backprop(&e, ir, &refs, t, &g, &wanted).map_err(|err| name_backward(err, op))?
            }
            // The gradient of a copy is the output gradient copied back.
            Node::ToDevice { from } => vec![Some(g.to_device(*from)?)],
        };
        for (x, gi) in inputs.iter().zip(gs) {
            let Some(gi) = gi else { continue };
            // Gradients live on their tensor's device (a 0-d CPU operand of a GPU op, which
            // ops treat as a scalar, gets its gradient back on the CPU).
            let gi = if gi.device() == x.device() {
                gi
            } else {
                gi.to_device(x.device())?
            };
            if anomaly {
                crate::emitter::check_finite(&format!("backward of {}", op.name()), &gi.value())?;
            }
            let acc = grads.remove(&x.ptr());
            grads.insert(x.ptr(), accumulate(&e, acc, gi)?);
        }
    }
    if !retain {
        for (t, _) in &order {
            if let Body::Op { saved, .. } = &t.0.body {
                *saved.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
    }
    Ok(captured)
}

/// Gradients of `outputs` (each a scalar, seeded with 1) with respect to `inputs`, returned
/// rather than accumulated into `.grad()` (`torch.autograd.grad`). With `create_graph` the
/// gradients are themselves differentiable (and the graph is kept). An input the outputs do
/// not depend on gets `None`.
///
/// ```
/// use tandem_eager::{autograd, Tensor};
/// let x = Tensor::from_vec(vec![2.0f64], &[]).unwrap().requires_grad_(true);
/// let y = x.pow(3.0).unwrap();
/// let dy = autograd::grad(&[y], std::slice::from_ref(&x), true).unwrap().remove(0).unwrap();
/// let d2y = autograd::grad(&[dy], &[x], false).unwrap().remove(0).unwrap();
/// assert_eq!(d2y.item().unwrap(), 12.0); // 6x
/// ```
pub fn grad(
    outputs: &[Tensor],
    inputs: &[Tensor],
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    let seeds = outputs
        .iter()
        .map(scalar_seed)
        .collect::<Result<Vec<_>>>()?;
    grad_with(
        outputs,
        &seeds,
        inputs,
        BackwardOptions {
            retain_graph: create_graph,
            create_graph,
        },
    )
}

/// [`grad`] with explicit output gradients and options.
pub fn grad_with(
    outputs: &[Tensor],
    grad_outputs: &[Tensor],
    inputs: &[Tensor],
    opts: BackwardOptions,
) -> Result<Vec<Option<Tensor>>> {
    if outputs.len() != grad_outputs.len() {
        return Err(Error::invalid(
            "autograd::grad",
            format!(
                "{} outputs but {} output gradients",
                outputs.len(),
                grad_outputs.len()
            ),
        ));
    }
    run_backward(outputs, grad_outputs, opts, Some(inputs))
}

pub(crate) fn scalar_seed(t: &Tensor) -> Result<Tensor> {
    if t.numel() != 1 {
        return Err(Error::Autograd(format!(
            "backward() needs a scalar output, got shape {:?}; pass the output's gradient with \
             backward_with(grad)",
            t.dims()
        )));
    }
    Tensor::full_on(&t.dims(), 1.0, t.dtype(), t.device())
}

impl Tensor {
    /// Backpropagates from this scalar (seeded with 1), accumulating into the `.grad()` of
    /// every leaf that requires grad, then frees the graph.
    pub fn backward(&self) -> Result<()> {
        let seed = scalar_seed(self)?;
        run_backward(
            std::slice::from_ref(self),
            &[seed],
            BackwardOptions::default(),
            None,
        )
        .map(drop)
    }

    /// Backpropagates the gradient `grad` (shaped like this tensor).
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        self.backward_opts(Some(grad), BackwardOptions::default())
    }

    /// Backpropagates with options; `grad = None` seeds a scalar with 1.
    pub fn backward_opts(&self, grad: Option<&Tensor>, opts: BackwardOptions) -> Result<()> {
        let seed = match grad {
            Some(g) => g.clone(),
            None => scalar_seed(self)?,
        };
        run_backward(std::slice::from_ref(self), &[seed], opts, None).map(drop)
    }
}
