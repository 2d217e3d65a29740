//! Symbolic differentiation (`tf.gradients`): a reverse walk over the graph that applies the
//! shared rules of `tandem_ir::grad` with the graph itself as the emitter, so gradient nodes
//! are ordinary nodes (and can be differentiated again).

use crate::graph::{Graph, NodeKind, Output};
use std::collections::HashMap;
use tandem_ir::grad::{accumulate, backprop};
use tandem_ir::EmitExt;
use tandem_tensor::{Error, Result};

impl Graph {
    /// Gradients of the sum of `ys` (each weighted by its `grad_ys` entry, default ones) with
    /// respect to each of `xs`. An `x` that no `y` depends on (or only through
    /// non-differentiable ops) gets `None`. New nodes are named under `gradients/`.
    ///
    /// ```
    /// use tandem_graph::{Graph, Session};
    /// use tandem_ir::EmitExt;
    /// use tandem_tensor::{DType, Tensor};
    /// let g = Graph::new();
    /// let x = g.placeholder("x", DType::F64, &[Some(2)]).unwrap();
    /// let y = g.sum(&g.square(&x).unwrap(), &[0], false).unwrap();
    /// let dx = g.gradients(&[&y], &[&x], None).unwrap().remove(0).unwrap();
    /// let s = Session::new(&g).unwrap();
    /// let t = Tensor::from_vec(vec![1.0f64, 3.0], &[2]).unwrap();
    /// let out = s.run(&[&dx], &[(&x, &t)]).unwrap();
    /// assert_eq!(out[0].to_vec::<f64>().unwrap(), vec![2.0, 6.0]);
    /// ```
    pub fn gradients(
        &self,
        ys: &[&Output],
        xs: &[&Output],
        grad_ys: Option<&[&Output]>,
    ) -> Result<Vec<Option<Output>>> {
        for v in ys.iter().chain(xs) {
            if !v.graph().same(self) {
                return Err(Error::Graph(format!(
                    "`{}` belongs to another graph",
                    v.name()
                )));
            }
        }
        if let Some(gy) = grad_ys {
            if gy.len() != ys.len() {
                return Err(Error::Graph(format!(
                    "gradients: {} ys but {} grad_ys",
                    ys.len(),
                    gy.len()
                )));
            }
        }
        let Some(top) = ys.iter().map(|y| y.id()).max() else {
            return Ok(xs.iter().map(|_| None).collect());
        };
        // Copy what the walk needs; the lock is released before new nodes are added.
        let (kinds, inputs): (Vec<NodeKind>, Vec<Vec<usize>>) = {
            let d = self.read()?;
            d.nodes[..=top]
                .iter()
                .map(|n| (n.kind.clone(), n.inputs.clone()))
                .unzip()
        };
        let n = top + 1;
        // Nodes that depend on some x, and nodes some y depends on.
        let mut from_x = vec![false; n];
        for x in xs {
            if x.id() < n {
                from_x[x.id()] = true;
            }
        }
        for id in 0..n {
            if !from_x[id] && inputs[id].iter().any(|&i| from_x[i]) {
                from_x[id] = true;
            }
        }
        let mut to_y = vec![false; n];
        for y in ys {
            to_y[y.id()] = true;
        }
        for id in (0..n).rev() {
            if to_y[id] {
                for &i in &inputs[id] {
                    to_y[i] = true;
                }
            }
        }
        let between: Vec<bool> = (0..n).map(|i| from_x[i] && to_y[i]).collect();

        let _scope = self.scope("gradients");
        let mut grads: HashMap<usize, Output> = HashMap::new();
        for (k, y) in ys.iter().enumerate() {
            if !between[y.id()] {
                continue;
            }
            let g = match grad_ys {
                Some(gy) => gy[k].clone(),
                None => self.full_like(y, 1.0, None)?,
            };
            let acc = grads.remove(&y.id());
            grads.insert(y.id(), accumulate(self, acc, g)?);
        }
        let is_x: Vec<bool> = {
            let mut v = vec![false; n];
            for x in xs {
                if x.id() < n {
                    v[x.id()] = true;
                }
            }
            v
        };
        for id in (0..n).rev() {
            if !between[id] || is_x[id] && !inputs[id].iter().any(|&i| between[i]) {
                continue;
            }
            // Keep the gradient of an x; pass it on when the x also depends on another x.
            let g = if is_x[id] {
                grads.get(&id).cloned()
            } else {
                grads.remove(&id)
            };
            let Some(g) = g else { continue };
            let node_inputs: Vec<Output> = {
                let d = self.read()?;
                inputs[id].iter().map(|&i| self.output_of(&d, i)).collect()
            };
            let contributions: Vec<Option<Output>> = match &kinds[id] {
                NodeKind::Op(op) => {
                    let wanted: Vec<bool> = inputs[id]
                        .iter()
                        .zip(&node_inputs)
                        .map(|(&i, v)| between[i] && v.dtype().is_float())
                        .collect();
                    if !wanted.iter().any(|&w| w) {
                        continue;
                    }
                    let y = {
                        let d = self.read()?;
                        self.output_of(&d, id)
                    };
                    let refs: Vec<&Output> = node_inputs.iter().collect();
                    backprop(self, op, &refs, &y, &g, &wanted)
                        .map_err(|e| e.context(format!("gradient of `{}`", y.name())))?
                }
                NodeKind::Identity => vec![Some(g)],
                _ => continue,
            };
            for (k, c) in contributions.into_iter().enumerate() {
                if let (Some(c), Some(&src)) = (c, inputs[id].get(k)) {
                    if between[src] {
                        let acc = grads.remove(&src);
                        grads.insert(src, accumulate(self, acc, c)?);
                    }
                }
            }
        }
        Ok(xs.iter().map(|x| grads.get(&x.id()).cloned()).collect())
    }
}
