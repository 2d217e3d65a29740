//! Learning-rate schedules built from ops on the global step (`tf.train.exponential_decay`,
//! ...): each returns a 0-d float64 value to pass as a [`super::LearningRate`].

use crate::graph::Output;
use tandem_ir::EmitExt;
use tandem_tensor::{BinaryOp, DType, Error, Result, UnaryOp};

fn step_f64(step: &Output) -> Result<Output> {
    let g = step.graph();
    if step.dtype() == DType::F64 {
        Ok(step.clone())
    } else {
        g.cast(step, DType::F64)
    }
}

/// `lr * rate ^ (step / decay_steps)` (the exponent floored when `staircase`).
pub fn exponential_decay(
    lr: f64,
    global_step: &Output,
    decay_steps: u64,
    decay_rate: f64,
    staircase: bool,
) -> Result<Output> {
    if decay_steps == 0 {
        return Err(Error::invalid(
            "exponential_decay",
            "decay_steps must be > 0",
        ));
    }
    let g = global_step.graph();
    let p = g.scalar(
        BinaryOp::Div,
        &step_f64(global_step)?,
        decay_steps as f64,
        false,
    )?;
    let p = if staircase {
        g.unary(UnaryOp::Floor, &p)?
    } else {
        p
    };
    let f = g.scalar(BinaryOp::Pow, &p, decay_rate, true)?;
    g.mul_scalar(&f, lr)
}

/// Cosine decay from `lr` to `lr * alpha` over `decay_steps`, then constant.
pub fn cosine_decay(lr: f64, global_step: &Output, decay_steps: u64, alpha: f64) -> Result<Output> {
    if decay_steps == 0 {
        return Err(Error::invalid("cosine_decay", "decay_steps must be > 0"));
    }
    let g = global_step.graph();
    let s = g.scalar(
        BinaryOp::Minimum,
        &step_f64(global_step)?,
        decay_steps as f64,
        false,
    )?;
    let angle = g.mul_scalar(&s, std::f64::consts::PI / decay_steps as f64)?;
    let c = g.unary(UnaryOp::Cos, &angle)?;
    let c = g.mul_scalar(&g.add_scalar(&c, 1.0)?, 0.5)?;
    let f = g.add_scalar(&g.mul_scalar(&c, 1.0 - alpha)?, alpha)?;
    g.mul_scalar(&f, lr)
}

/// `values[0]` until `boundaries[0]`, `values[1]` until `boundaries[1]`, ... (a step `s`
/// uses `values[i]` for the first `i` with `s <= boundaries[i]`).
pub fn piecewise_constant(
    global_step: &Output,
    boundaries: &[u64],
    values: &[f64],
) -> Result<Output> {
    if values.len() != boundaries.len() + 1 || boundaries.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            "piecewise_constant",
            format!(
                "needs increasing boundaries and one more value than boundaries, got {} and {}",
                boundaries.len(),
                values.len()
            ),
        ));
    }
    let g = global_step.graph();
    let s = step_f64(global_step)?;
    let mut lr = g.mul_scalar(&g.full_like(&s, 0.0, None)?, 0.0)?;
    lr = g.add_scalar(&lr, values[0])?;
    for (i, &b) in boundaries.iter().enumerate() {
        let past = g.cast(&g.gt_scalar(&s, b as f64)?, DType::F64)?;
        let jump = g.mul_scalar(&past, values[i + 1] - values[i])?;
        lr = g.add(&lr, &jump)?;
    }
    Ok(lr)
}
