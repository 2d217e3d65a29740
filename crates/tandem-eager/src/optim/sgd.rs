//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use super::{OptimizerState, ParamGroup};
use crate::tensor::Tensor;
use tandem_tensor::ops::optim::{sgd_step, SgdConfig};
use tandem_tensor::Result;

const NAMES: &[&str] = &["momentum_buffer"];

/// `torch.optim.SGD`: state `momentum_buffer` when momentum is non-zero.
pub struct Sgd {
    state: OptimizerState,
    config: SgdConfig,
}

impl Sgd {
    /// One group with `config.lr` and `config.weight_decay`.
    pub fn new(params: Vec<Tensor>, config: SgdConfig) -> Sgd {
        let g = ParamGroup::new(params, config.lr, config.weight_decay);
        Sgd::with_groups(vec![g], config)
    }

    /// Several groups (momentum, dampening and nesterov from `config`).
    pub fn with_groups(groups: Vec<ParamGroup>, config: SgdConfig) -> Sgd {
        Sgd {
            state: OptimizerState::new(groups, NAMES),
            config,
        }
    }
}

impl super::Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let base = self.config;
        self.state.for_each(|g, p, grad, st| {
            let c = SgdConfig {
                lr: g.lr,
                weight_decay: g.weight_decay,
                ..base
            };
            if c.momentum == 0.0 {
                p.update_value(|pv| sgd_step(pv, grad, None, true, &c))?;
            } else {
                let first = st.bufs.first().is_none_or(Option::is_none);
                let mut b = super::take_or_zeros(st, 0, grad)?;
                let r = p.update_value(|pv| sgd_step(pv, grad, Some(&mut b), first, &c));
                if r.is_ok() || !first {
                    super::put(st, 0, b);
                }
                r?;
            }
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
