//! Optimizer update rules as run by apply nodes: thin wrappers over the fused kernels of
//! `tandem_tensor::ops::optim`, so graph mode applies exactly the eager formulas.

use tandem_tensor::ops::optim::{adam_step, adam_step_product, rmsprop_step, sgd_step};
use tandem_tensor::ops::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use tandem_tensor::{Error, Result, Tensor};

/// The update rule of an apply node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// SGD (with optional momentum / Nesterov / weight decay).
    Sgd(SgdConfig),
    /// Adam or AdamW.
    Adam(AdamConfig),
    /// RMSprop.
    RmsProp(RmsPropConfig),
}

impl Update {
    /// Name of the update (used for node names: `ApplyAdam`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Update::Sgd(c) if c.momentum != 0.0 => "apply_momentum",
            Update::Sgd(_) => "apply_gradient_descent",
            Update::Adam(c) if c.decoupled => "apply_adam_w",
            Update::Adam(_) => "apply_adam",
            Update::RmsProp(_) => "apply_rms_prop",
        }
    }

    /// Names of the slot variables this rule keeps per parameter (PyTorch's state names).
    pub fn slot_names(&self) -> Vec<&'static str> {
        match self {
            Update::Sgd(c) if c.momentum != 0.0 => vec!["momentum_buffer"],
            Update::Sgd(_) => vec![],
            Update::Adam(_) => vec!["exp_avg", "exp_avg_sq"],
            Update::RmsProp(c) => {
                let mut v = vec!["square_avg"];
                if c.momentum != 0.0 {
                    v.push("momentum_buffer");
                }
                if c.centered {
                    v.push("grad_avg");
                }
                v
            }
        }
    }

    /// Applies one step `t` (1-based) to `param` and its `slots` (in [`Update::slot_names`]
    /// order), with `lr` overriding the configured learning rate. Nothing is written when an
    /// argument is invalid.
    pub fn apply(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        slots: &mut [Tensor],
        t: u64,
        lr: Option<f64>,
    ) -> Result<()> {
        let want = self.slot_names().len();
        if slots.len() != want {
            return Err(Error::invalid(
                self.name(),
                format!("expects {want} slot variables, got {}", slots.len()),
            ));
        }
        match *self {
            Update::Sgd(mut c) => {
                if let Some(lr) = lr {
                    c.lr = lr;
                }
                sgd_step(param, grad, slots.first_mut(), t <= 1, &c)
            }
            Update::Adam(mut c) => {
                if let Some(lr) = lr {
                    c.lr = lr;
                }
                match slots {
                    [m, v] => adam_step(param, grad, m, v, t, &c),
                    _ => Err(Error::invalid("apply_adam", "needs two slots")),
                }
            }
            Update::RmsProp(mut c) => {
                if let Some(lr) = lr {
                    c.lr = lr;
                }
                let (sq, rest) = slots
                    .split_first_mut()
                    .ok_or_else(|| Error::invalid("apply_rms_prop", "needs a square average"))?;
                let (mom, rest) = if c.momentum != 0.0 {
                    match rest.split_first_mut() {
                        Some((m, r)) => (Some(m), r),
                        None => (None, rest),
                    }
                } else {
                    (None, rest)
                };
                let ga = if c.centered { rest.first_mut() } else { None };
                rmsprop_step(param, grad, sq, mom, ga, &c)
            }
        }
    }

    /// [`Update::apply`] with the gradient `lhs @ rhs` (2-D factors whose product has the
    /// parameter's shape). Adam on the CPU computes the product block by block inside the
    /// update ([`adam_step_product`]); other rules compute it, then update.
    pub fn apply_product(
        &self,
        param: &mut Tensor,
        [lhs, rhs]: [&Tensor; 2],
        slots: &mut [Tensor],
        t: u64,
        lr: Option<f64>,
    ) -> Result<()> {
        match (*self, slots) {
            (Update::Adam(mut c), [m, v]) => {
                if let Some(lr) = lr {
                    c.lr = lr;
                }
                adam_step_product(param, lhs, rhs, m, v, t, &c)
            }
            (_, slots) => self.apply(param, &lhs.matmul(rhs)?, slots, t, lr),
        }
    }
}
