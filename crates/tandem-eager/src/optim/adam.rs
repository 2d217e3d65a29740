//! Adam and AdamW.

use super::{put, take_or_zeros, OptimizerState, ParamGroup};
use crate::tensor::Tensor;
use tandem_tensor::ops::optim::{adam_step, AdamConfig};
use tandem_tensor::Result;

const NAMES: &[&str] = &["exp_avg", "exp_avg_sq"];

/// `torch.optim.Adam` (and AdamW with `decoupled`): state `exp_avg`, `exp_avg_sq`, `step`.
pub struct Adam {
    state: OptimizerState,
    config: AdamConfig,
}

impl Adam {
    /// One group with `config.lr` and `config.weight_decay`.
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Adam {
        let g = ParamGroup::new(params, config.lr, config.weight_decay);
        Adam::with_groups(vec![g], config)
    }

    /// Several groups (each with its own lr and weight decay; betas and eps from `config`).
    pub fn with_groups(groups: Vec<ParamGroup>, config: AdamConfig) -> Adam {
        Adam {
            state: OptimizerState::new(groups, NAMES),
            config,
        }
    }

    /// The hyperparameters shared by all groups.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

/// `torch.optim.AdamW`: Adam with decoupled weight decay (PyTorch's default 0.01).
pub struct AdamW;

impl AdamW {
    /// An Adam optimizer with decoupled weight decay `weight_decay`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(params: Vec<Tensor>, lr: f64, weight_decay: f64) -> Adam {
        Adam::new(
            params,
            AdamConfig {
                lr,
                weight_decay,
                decoupled: true,
                ..AdamConfig::default()
            },
        )
    }
}

impl super::Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let base = self.config;
        self.state.for_each(|g, p, grad, st| {
            let c = AdamConfig {
                lr: g.lr,
                weight_decay: g.weight_decay,
                ..base
            };
            let mut m = take_or_zeros(st, 0, grad)?;
            let mut v = take_or_zeros(st, 1, grad)?;
            let t = st.step + 1;
            let r = p.update_value(|pv| adam_step(pv, grad, &mut m, &mut v, t, &c));
            put(st, 0, m);
            put(st, 1, v);
            r?;
            st.step = t;
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
