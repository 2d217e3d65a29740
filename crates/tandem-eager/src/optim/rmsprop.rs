//! RMSprop.

use super::{put, take_or_zeros, OptimizerState, ParamGroup};
use crate::tensor::Tensor;
use tandem_tensor::ops::optim::{rmsprop_step, RmsPropConfig};
use tandem_tensor::Result;

const NAMES: &[&str] = &["square_avg", "momentum_buffer", "grad_avg"];

/// `torch.optim.RMSprop`: state `square_avg`, plus `momentum_buffer` (momentum) and
/// `grad_avg` (centered).
pub struct RmsProp {
    state: OptimizerState,
    config: RmsPropConfig,
}

impl RmsProp {
    /// One group with `config.lr` and `config.weight_decay`.
    pub fn new(params: Vec<Tensor>, config: RmsPropConfig) -> RmsProp {
        let g = ParamGroup::new(params, config.lr, config.weight_decay);
        RmsProp::with_groups(vec![g], config)
    }

    /// Several groups.
    pub fn with_groups(groups: Vec<ParamGroup>, config: RmsPropConfig) -> RmsProp {
        RmsProp {
            state: OptimizerState::new(groups, NAMES),
            config,
        }
    }
}

impl super::Optimizer for RmsProp {
    fn step(&mut self) -> Result<()> {
        let base = self.config;
        self.state.for_each(|g, p, grad, st| {
            let c = RmsPropConfig {
                lr: g.lr,
                weight_decay: g.weight_decay,
                ..base
            };
            let mut sq = take_or_zeros(st, 0, grad)?;
            let mut mb = (c.momentum != 0.0)
                .then(|| take_or_zeros(st, 1, grad))
                .transpose()?;
            let mut ga = c.centered.then(|| take_or_zeros(st, 2, grad)).transpose()?;
            let r =
                p.update_value(|pv| rmsprop_step(pv, grad, &mut sq, mb.as_mut(), ga.as_mut(), &c));
            put(st, 0, sq);
            if let Some(b) = mb {
                put(st, 1, b);
            }
            if let Some(b) = ga {
                put(st, 2, b);
            }
            r?;
            st.step += 1;
            Ok(())
        })
    }

    fn state(&self) -> &OptimizerState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut OptimizerState {
        &mut self.state
    }
}
