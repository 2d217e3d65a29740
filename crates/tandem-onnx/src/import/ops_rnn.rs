//! `LSTM` and `GRU` (PyTorch `nn.LSTM` / `nn.GRU`, Keras via tf2onnx), unrolled over a
//! sequence length known at import time.
//!
//! The input projection of every time step is one matrix product (`X W^T + b` over the whole
//! sequence); each step then adds `H R^T` and applies the gates. Forward, reverse and
//! bidirectional directions, both layouts, initial states and the default activations are
//! supported; peepholes, `clip`, `input_forget`, other activations and partial
//! `sequence_lens` are errors naming the attribute or input.

use super::node::{const_tensor, opt, req, Args, NodeCtx, Outs};
use tandem_ir::{Emit, EmitExt};
use tandem_tensor::Result;

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "LSTM" => rnn(ctx, f, args, Cell::Lstm),
        "GRU" => rnn(ctx, f, args, Cell::Gru),
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    /// Gates per hidden unit.
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// The default `activations` of one direction.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm => &["sigmoid", "tanh", "tanh"],
            Cell::Gru => &["sigmoid", "tanh"],
        }
    }
}

/// Longest sequence unrolled.
const MAX_STEPS: usize = 1 << 12;

/// Checks the attributes and inputs this importer does not support.
fn check_supported<V>(
    ctx: &NodeCtx<'_>,
    args: &Args<V>,
    cell: Cell,
    dirs: usize,
    seq: usize,
) -> Result<()> {
    if ctx.has("clip") {
        return Err(ctx.err("attribute clip is not supported"));
    }
    if ctx.int("input_forget", 0)? != 0 {
        return Err(ctx.err("attribute input_forget = 1 is not supported"));
    }
    if let Some(acts) = ctx.strings("activations")? {
        let want = cell.default_activations();
        let ok = acts.len() == want.len() * dirs
            && acts
                .iter()
                .zip(want.iter().cycle())
                .all(|(a, w)| a.eq_ignore_ascii_case(w));
        if !ok {
            return Err(ctx.err(format!(
                "attribute activations {acts:?} is not supported (defaults {want:?} only)"
            )));
        }
    }
    if cell == Cell::Lstm && opt(args, 7).is_some() {
        return Err(ctx.err("peephole input P is not supported"));
    }
    if let Some(lens) = opt(args, 4) {
        let full = const_tensor(lens)
            .map(|t| t.to_f64_vec())
            .transpose()?
            .is_some_and(|v| v.iter().all(|&l| l == seq as f64));
        if !full {
            return Err(ctx.err(
                "input sequence_lens is supported only when every sequence has the full length",
            ));
        }
    }
    Ok(())
}

fn rnn<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    cell: Cell,
) -> Result<Outs<F::Value>> {
    let layout = ctx.int("layout", 0)?;
    let x = &req(ctx, args, 0)?.value;
    if f.rank(x) != 3 {
        return Err(ctx.err(format!("input X must be 3-D, got rank {}", f.rank(x))));
    }
    // Work in [seq, batch, input].
    let x = match layout {
        0 => x.clone(),
        1 => f.transpose(x, 0, 1)?,
        l => return Err(ctx.err(format!("attribute layout {l} must be 0 or 1"))),
    };
    let seq = f
        .dim(&x, 0)
        .filter(|&s| (1..=MAX_STEPS).contains(&s))
        .ok_or_else(|| {
            ctx.err(format!(
                "the sequence length must be known when the model is imported and in \
                 1..={MAX_STEPS}"
            ))
        })?;
    let direction = ctx.string("direction")?.unwrap_or_else(|| "forward".into());
    let dirs: Vec<bool> = match direction.as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        other => return Err(ctx.err(format!("attribute direction '{other}' is unknown"))),
    };
    check_supported(ctx, args, cell, dirs.len(), seq)?;
    let w = &req(ctx, args, 1)?.value;
    let r = &req(ctx, args, 2)?.value;
    let g = cell.gates();
    let hidden = match (ctx.int("hidden_size", 0)?, f.dim(r, 2)) {
        (h, Some(d)) if h <= 0 || h as usize == d => d,
        (h, d) => {
            return Err(ctx.err(format!(
                "attribute hidden_size {h} does not match R's last dim {d:?}"
            )))
        }
    };
    for (name, v, cols) in [("W", w, f.dim(&x, 2)), ("R", r, Some(hidden))] {
        let want = [Some(dirs.len()), Some(g * hidden), cols];
        if f.shape(v) != want {
            return Err(ctx.err(format!(
                "input {name} has shape {:?}, expected {want:?}",
                f.shape(v)
            )));
        }
    }
    let lbr = ctx.int("linear_before_reset", 0)? != 0;
    let mut ys = Vec::with_capacity(dirs.len());
    let mut hs = Vec::with_capacity(dirs.len());
    let mut cs = Vec::with_capacity(dirs.len());
    for (d, &reverse) in dirs.iter().enumerate() {
        let di = d as isize;
        let wt = f.transpose(&f.select(w, 0, di)?, 0, 1)?;
        let rt = f.transpose(&f.select(r, 0, di)?, 0, 1)?;
        let (wb, rb) = match opt(args, 3) {
            Some(b) => {
                let b = f.select(&b.value, 0, di)?;
                (
                    Some(f.narrow(&b, 0, 0, g * hidden)?),
                    Some(f.narrow(&b, 0, g * hidden, g * hidden)?),
                )
            }
            None => (None, None),
        };
        // The input projection of every step at once: [seq, batch, g * hidden].
        let mut xw = f.matmul2(&x, &f.unsqueeze(&wt, 0)?)?;
        // LSTM adds both biases up front; GRU keeps R's bias apart for the reset gate.
        let up_front = match (cell, &wb, &rb) {
            (Cell::Lstm, Some(a), Some(b)) => Some(f.add(a, b)?),
            (Cell::Gru, Some(a), _) => Some(a.clone()),
            _ => None,
        };
        if let Some(b) = up_front {
            xw = f.add(&xw, &b)?;
        }
        let initial = |i: usize| -> Result<F::Value> {
            match opt(args, i) {
                Some(v) => {
                    let v = if layout == 1 {
                        f.transpose(&v.value, 0, 1)?
                    } else {
                        v.value.clone()
                    };
                    f.select(&v, 0, di)
                }
                None => {
                    // Zeros [batch, hidden] with a batch that may be known only at run time.
                    let col = f.narrow(&f.select(&x, 0, 0)?, 1, 0, 1)?;
                    let z = f.full_like(&col, 0.0, None)?;
                    f.add(&z, &f.full(&[1, hidden], 0.0, f.dtype(&x))?)
                }
            }
        };
        let mut h = initial(5)?;
        let mut c = if cell == Cell::Lstm {
            Some(initial(6)?)
        } else {
            None
        };
        let mut out = vec![None; seq];
        let steps: Vec<usize> = if reverse {
            (0..seq).rev().collect()
        } else {
            (0..seq).collect()
        };
        for t in steps {
            let xt = f.select(&xw, 0, t as isize)?;
            let gate = |v: &F::Value, k: usize| f.narrow(v, 1, k * hidden, hidden);
            match (cell, &mut c) {
                (Cell::Lstm, Some(cp)) => {
                    let z = f.add(&xt, &f.matmul2(&h, &rt)?)?;
                    // ONNX gate order: input, output, forget, cell.
                    let i = f.sigmoid(&gate(&z, 0)?)?;
                    let o = f.sigmoid(&gate(&z, 1)?)?;
                    let fg = f.sigmoid(&gate(&z, 2)?)?;
                    let cc = f.tanh(&gate(&z, 3)?)?;
                    *cp = f.add(&f.mul(&fg, cp)?, &f.mul(&i, &cc)?)?;
                    h = f.mul(&o, &f.tanh(cp)?)?;
                }
                _ => {
                    // ONNX gate order: update, reset, hidden.
                    let mut hr = f.matmul2(&h, &rt)?;
                    if let Some(b) = &rb {
                        hr = f.add(&hr, b)?;
                    }
                    let zg = f.sigmoid(&f.add(&gate(&xt, 0)?, &gate(&hr, 0)?)?)?;
                    let rg = f.sigmoid(&f.add(&gate(&xt, 1)?, &gate(&hr, 1)?)?)?;
                    let cand = if lbr {
                        f.mul(&rg, &gate(&hr, 2)?)?
                    } else {
                        let rh = f.narrow(&rt, 1, 2 * hidden, hidden)?;
                        let mut v = f.matmul2(&f.mul(&rg, &h)?, &rh)?;
                        if let Some(b) = &rb {
                            v = f.add(&v, &f.narrow(b, 0, 2 * hidden, hidden)?)?;
                        }
                        v
                    };
                    let hc = f.tanh(&f.add(&gate(&xt, 2)?, &cand)?)?;
                    // H = (1 - z) * h~ + z * H = h~ + z * (H - h~).
                    h = f.add(&hc, &f.mul(&zg, &f.sub(&h, &hc)?)?)?;
                }
            }
            if let Some(slot) = out.get_mut(t) {
                *slot = Some(h.clone());
            }
        }
        let out: Vec<F::Value> = out.into_iter().flatten().collect();
        let refs: Vec<&F::Value> = out.iter().collect();
        ys.push(f.stack(&refs, 0)?);
        hs.push(h);
        if let Some(c) = c {
            cs.push(c);
        }
    }
    let stack = |v: &[F::Value], axis: isize| -> Result<F::Value> {
        let refs: Vec<&F::Value> = v.iter().collect();
        f.stack(&refs, axis)
    };
    // Y [seq, dirs, batch, hidden]; Y_h and Y_c [dirs, batch, hidden].
    let mut y = stack(&ys, 1)?;
    let mut yh = stack(&hs, 0)?;
    let mut yc = if cs.is_empty() {
        None
    } else {
        Some(stack(&cs, 0)?)
    };
    if layout == 1 {
        y = f.permute(&y, &[2, 0, 1, 3])?;
        yh = f.transpose(&yh, 0, 1)?;
        yc = yc.map(|c| f.transpose(&c, 0, 1)).transpose()?;
    }
    let mut outs = vec![(y, None), (yh, None)];
    if let Some(c) = yc {
        outs.push((c, None));
    }
    Ok(outs)
}
