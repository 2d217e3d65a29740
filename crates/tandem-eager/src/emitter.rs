//! [`Eager`]: the [`Emit`] implementation of eager mode. Every tensor method, operator and
//! `nn::functional` function goes through it, so there is one implementation of each op (the
//! kernels behind `tandem_ir::eval`) and one set of gradient rules (`tandem_ir::grad`).

use crate::mode::{is_anomaly_enabled, is_grad_enabled};
use crate::tensor::{Node, Saved, Tensor, Value, ValueRef};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::rc::Rc;
use tandem_ir::{grad::is_differentiable, Dim, Emit, Op};
use tandem_tensor::random::with_global_rng;
use tandem_tensor::{DType, Error, Result};

/// Sees every op eager mode runs on the current thread, with its inputs and its output (used
/// by tracing, e.g. `tandem-interop`'s `trace`). It must not run eager ops itself.
pub trait OpObserver {
    /// Called after `op` ran on `inputs` and produced `output`.
    fn observe(&self, op: &Op, inputs: &[&Tensor], output: &Tensor);
}

thread_local! {
    static OBSERVER: RefCell<Option<Rc<dyn OpObserver>>> = const { RefCell::new(None) };
}

/// Installs (or, with `None`, removes) the op observer of the current thread; returns the
/// previous one so that callers can restore it.
pub fn set_op_observer(observer: Option<Rc<dyn OpObserver>>) -> Option<Rc<dyn OpObserver>> {
    OBSERVER.with(|o| std::mem::replace(&mut *o.borrow_mut(), observer))
}

fn current_observer() -> Option<Rc<dyn OpObserver>> {
    OBSERVER.with(|o| o.borrow().clone())
}

impl Tensor {
    /// An identity for this tensor (and its clones) that stays unique while it is alive.
    pub fn trace_id(&self) -> usize {
        self.ptr()
    }
}

/// The eager emitter: runs each op at once and, when grad mode is on and an input requires
/// grad, records it (the op and its inputs) on the output tensor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Eager;

/// Checks a float value for NaN and infinity (anomaly mode).
pub(crate) fn check_finite(op: &str, v: &Value) -> Result<()> {
    if !v.dtype().is_float() {
        return Ok(());
    }
    let xs = v.to_f64_vec()?;
    if xs.iter().any(|x| x.is_nan()) {
        return Err(Error::Anomaly {
            op: op.to_string(),
            what: "NaN",
        });
    }
    if xs.iter().any(|x| x.is_infinite()) {
        return Err(Error::Anomaly {
            op: op.to_string(),
            what: "Inf",
        });
    }
    Ok(())
}

impl Emit for Eager {
    type Value = Tensor;

    fn emit(&self, op: Op, inputs: &[&Tensor]) -> Result<Tensor> {
        let guards: SmallVec<[ValueRef<'_>; 4]> = inputs.iter().map(|t| t.value_ref()).collect();
        let values: SmallVec<[&Value; 4]> = guards.iter().map(|g| &**g).collect();
        let out = tandem_ir::eval(&op, &values)?;
        drop(values);
        drop(guards);
        if is_anomaly_enabled() {
            check_finite(op.name(), &out)?;
        }
        let record =
            is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) && is_differentiable(&op);
        let observer = current_observer();
        let seen = observer.as_ref().map(|_| op.clone());
        let result = if record {
            let saved: Saved = inputs.iter().map(|t| (*t).clone()).collect();
            Tensor::from_op(out, Node::Op(op), saved)
        } else {
            Tensor::from_value(out)
        };
        if let (Some(obs), Some(op)) = (observer, seen) {
            obs.observe(&op, inputs, &result);
        }
        Ok(result)
    }

    fn dtype(&self, v: &Tensor) -> DType {
        v.dtype()
    }

    fn rank(&self, v: &Tensor) -> usize {
        v.rank()
    }

    fn dim(&self, v: &Tensor, axis: usize) -> Dim {
        v.value_ref().shape().get(axis).copied()
    }

    fn same_shape(&self, a: &Tensor, b: &Tensor) -> bool {
        a.value_ref().shape() == b.value_ref().shape()
    }

    fn next_seed(&self) -> u64 {
        with_global_rng(|r| r.next_u64())
    }

    fn constant(&self, t: Value) -> Result<Tensor> {
        Ok(Tensor::from_value(t))
    }

    /// One pass ([`tandem_ir::fused::mask_mul`]) when nothing is recorded or observed (a
    /// plain `backward()`); the three ops otherwise, so a tape or a trace sees them.
    fn gt_mask_mul(&self, g: &Tensor, x: &Tensor, c: f64) -> Result<Tensor> {
        let record = is_grad_enabled() && (g.requires_grad() || x.requires_grad());
        if record || is_anomaly_enabled() || current_observer().is_some() {
            return tandem_ir::emit::gt_mask_mul_ops(self, g, x, c);
        }
        let out = tandem_ir::fused::mask_mul(&g.value_ref(), &x.value_ref(), c, false, None)?;
        Ok(Tensor::from_value(out))
    }

    /// One kernel ([`tandem_ir::fused::matmul_bias`] on the weight's transposed view) when
    /// nothing is recorded or observed (inference, `no_grad`); the ops otherwise, so a tape
    /// or a trace sees them.
    fn affine(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let Some(b) = b else {
            return tandem_ir::composite::linear_ops(self, x, w, None);
        };
        let record =
            is_grad_enabled() && (x.requires_grad() || w.requires_grad() || b.requires_grad());
        if record || is_anomaly_enabled() || current_observer().is_some() {
            return tandem_ir::composite::linear_ops(self, x, w, Some(b));
        }
        let (xv, wv, bv) = (x.value_ref(), w.value_ref(), b.value_ref());
        let fits = matches!(
            (xv.shape(), wv.shape(), bv.shape()),
            (&[_, k], &[n, k2], &[nb]) if k == k2 && n == nb
        ) && xv.dtype() == wv.dtype()
            && xv.dtype() == bv.dtype();
        if !fits {
            // Other ranks, mixed dtypes, and the errors, as the ops have them.
            drop((xv, wv, bv));
            return tandem_ir::composite::linear_ops(self, x, w, Some(b));
        }
        let out = tandem_ir::fused::matmul_bias(&xv, &wv.t()?, &bv, false, None)?;
        Ok(Tensor::from_value(out))
    }

    fn is_transposed_view(&self, v: &Tensor) -> bool {
        tandem_ir::emit::is_transposed_matrix(&v.value_ref())
    }
}
