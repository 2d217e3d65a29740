//! Optimizers (`torch.optim`): [`Sgd`], [`Adam`] (and AdamW), [`RmsProp`], parameter groups,
//! state dicts that resume training exactly, [`clip_grad_norm_`], and learning-rate schedulers.
//!
//! Updates run the fused kernels of `tandem_tensor::ops::optim` on each parameter's value in
//! place (PyTorch's formulas). Parameters without a gradient are skipped, like PyTorch.

mod adam;
mod rmsprop;
mod scheduler;
mod sgd;

pub use adam::{Adam, AdamW};
pub use rmsprop::RmsProp;
pub use scheduler::{CosineAnnealingLR, LinearWarmup, LrScheduler, StepLR};
pub use sgd::Sgd;
pub use tandem_tensor::ops::optim::{AdamConfig, RmsPropConfig, SgdConfig};

use crate::tensor::{Tensor, Value};
use std::collections::HashMap;
use std::path::Path;
use tandem_tensor::{Error, Result};

/// What every update kernel needs of a parameter and its gradient: an f32 or f64 parameter,
/// and a gradient of its shape, dtype and device.
fn check_update(p: &Value, g: &Value) -> Result<()> {
    const OP: &str = "optimizer step";
    if !matches!(
        p.dtype(),
        tandem_tensor::DType::F32 | tandem_tensor::DType::F64
    ) {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: p.dtype(),
            device: p.device(),
        });
    }
    if g.shape() != p.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: p.shape().to_vec(),
            rhs: g.shape().to_vec(),
            hint: "a gradient must have its parameter's shape".into(),
        });
    }
    if g.dtype() != p.dtype() || g.device() != p.device() {
        return Err(Error::invalid(
            OP,
            format!(
                "a {} gradient on {:?} for a {} parameter on {:?}",
                g.dtype(),
                g.device(),
                p.dtype(),
                p.device()
            ),
        ));
    }
    Ok(())
}

/// A set of parameters sharing a learning rate and weight decay.
#[derive(Clone)]
pub struct ParamGroup {
    /// The parameters (the same tensors the model holds).
    pub params: Vec<Tensor>,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with its own learning rate and weight decay.
    pub fn new(params: Vec<Tensor>, lr: f64, weight_decay: f64) -> ParamGroup {
        ParamGroup {
            params,
            lr,
            weight_decay,
        }
    }
}

/// Per-parameter optimizer state: the step count and named buffers.
#[derive(Clone, Default)]
pub(crate) struct ParamState {
    pub(crate) step: u64,
    pub(crate) bufs: Vec<Option<Value>>,
}

/// Parameter groups plus per-parameter state, shared by every optimizer.
pub struct OptimizerState {
    /// The parameter groups.
    pub groups: Vec<ParamGroup>,
    pub(crate) state: Vec<Vec<ParamState>>,
    names: &'static [&'static str],
}

impl OptimizerState {
    pub(crate) fn new(groups: Vec<ParamGroup>, names: &'static [&'static str]) -> Self {
        let state = groups
            .iter()
            .map(|g| {
                vec![
                    ParamState {
                        step: 0,
                        bufs: vec![None; names.len()],
                    };
                    g.params.len()
                ]
            })
            .collect();
        OptimizerState {
            groups,
            state,
            names,
        }
    }

    /// Runs `f(group, param, grad, state)` for every parameter that has a gradient.
    pub(crate) fn for_each(
        &mut self,
        mut f: impl FnMut(&ParamGroup, &Tensor, &Value, &mut ParamState) -> Result<()>,
    ) -> Result<()> {
        // Every parameter and gradient is checked before the first update is applied, so a
        // step that fails on one of them leaves all parameters as they were.
        for p in self.groups.iter().flat_map(|g| &g.params) {
            if let Some(grad) = p.grad() {
                check_update(&p.value(), &grad.value())?;
            }
        }
        for (g, states) in self.groups.iter().zip(self.state.iter_mut()) {
            for (p, st) in g.params.iter().zip(states.iter_mut()) {
                let Some(grad) = p.grad() else { continue };
                let gv = grad.value();
                f(g, p, &gv, st)?;
            }
        }
        Ok(())
    }

    fn to_dict(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let mut k = 0usize;
        for (gi, (g, states)) in self.groups.iter().zip(&self.state).enumerate() {
            out.push((format!("param_groups.{gi}.lr"), Value::scalar(g.lr)));
            out.push((
                format!("param_groups.{gi}.weight_decay"),
                Value::scalar(g.weight_decay),
            ));
            for st in states {
                if st.step > 0 {
                    out.push((format!("state.{k}.step"), Value::scalar(st.step as f64)));
                }
                for (name, b) in self.names.iter().zip(&st.bufs) {
                    if let Some(b) = b {
                        out.push((format!("state.{k}.{name}"), b.clone()));
                    }
                }
                k += 1;
            }
        }
        out
    }

    fn load_dict(&mut self, dict: &[(String, Value)]) -> Result<()> {
        let map: HashMap<&str, &Value> = dict.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let scalar =
            |key: &str| -> Result<Option<f64>> { map.get(key).map(|v| v.item()).transpose() };
        // Validate and build everything first; assign only when all of it is consistent.
        let mut lrs = Vec::new();
        let mut new_state = Vec::new();
        let mut k = 0usize;
        for (gi, g) in self.groups.iter().enumerate() {
            let lr = scalar(&format!("param_groups.{gi}.lr"))?;
            let wd = scalar(&format!("param_groups.{gi}.weight_decay"))?;
            lrs.push((lr.unwrap_or(g.lr), wd.unwrap_or(g.weight_decay)));
            let mut states = Vec::new();
            for p in &g.params {
                let step = scalar(&format!("state.{k}.step"))?.unwrap_or(0.0);
                let mut bufs = Vec::new();
                for name in self.names {
                    let key = format!("state.{k}.{name}");
                    match map.get(key.as_str()) {
                        None => bufs.push(None),
                        Some(v) => {
                            let (want, got) = (p.dims(), v.shape().to_vec());
                            if want != got || v.dtype() != p.dtype() {
                                return Err(Error::invalid(
                                    "optimizer load_state_dict",
                                    format!(
                                        "`{key}` is {:?} {got:?} but parameter {k} is {:?} \
                                         {want:?}",
                                        v.dtype(),
                                        p.dtype()
                                    ),
                                ));
                            }
                            bufs.push(Some(v.copy()?));
                        }
                    }
                }
                if step < 0.0 || step.fract() != 0.0 {
                    return Err(Error::invalid(
                        "optimizer load_state_dict",
                        format!("`state.{k}.step` is {step}, not a step count"),
                    ));
                }
                states.push(ParamState {
                    step: step as u64,
                    bufs,
                });
                k += 1;
            }
            new_state.push(states);
        }
        let known = k;
        for (key, _) in dict {
            if let Some(rest) = key.strip_prefix("state.") {
                let idx = rest.split('.').next().and_then(|s| s.parse::<usize>().ok());
                if idx.is_none_or(|i| i >= known) {
                    return Err(Error::invalid(
                        "optimizer load_state_dict",
                        format!("`{key}` does not belong to any of the {known} parameters"),
                    ));
                }
            }
        }
        for (g, (lr, wd)) in self.groups.iter_mut().zip(lrs) {
            g.lr = lr;
            g.weight_decay = wd;
        }
        self.state = new_state;
        Ok(())
    }
}

/// The interface of every optimizer (`torch.optim.Optimizer`).
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;

    /// The groups and state.
    fn state(&self) -> &OptimizerState;

    /// The groups and state, mutably.
    fn state_mut(&mut self) -> &mut OptimizerState;

    /// Clears the gradients of all parameters (`set_to_none`, PyTorch's default).
    fn zero_grad(&self) {
        for g in &self.state().groups {
            for p in &g.params {
                p.zero_grad();
            }
        }
    }

    /// The parameter groups.
    fn param_groups(&self) -> &[ParamGroup] {
        &self.state().groups
    }

    /// The parameter groups, mutably (to change a group's lr or weight decay).
    fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.state_mut().groups
    }

    /// The learning rate of the first group.
    fn lr(&self) -> f64 {
        self.state().groups.first().map_or(0.0, |g| g.lr)
    }

    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f64) {
        for g in &mut self.state_mut().groups {
            g.lr = lr;
        }
    }

    /// Hyperparameters and per-parameter state (`state.{i}.exp_avg`, `state.{i}.step`,
    /// `param_groups.{g}.lr`, ...; parameters numbered across groups as in PyTorch).
    fn state_dict(&self) -> Vec<(String, Value)> {
        self.state().to_dict()
    }

    /// Restores a state dict; on error nothing changes.
    fn load_state_dict(&mut self, dict: &[(String, Value)]) -> Result<()> {
        self.state_mut().load_dict(dict)
    }

    /// Saves the state dict as a safetensors file.
    fn save_safetensors(&self, path: &Path) -> Result<()> {
        let sd = self.state_dict();
        let refs: Vec<(&str, &Value)> = sd.iter().map(|(n, v)| (n.as_str(), v)).collect();
        tandem_tensor::io::safetensors::save(path, &refs, None)
    }

    /// Loads a state dict saved by [`Optimizer::save_safetensors`].
    fn load_safetensors(&mut self, path: &Path) -> Result<()> {
        let sd = tandem_tensor::io::safetensors::load(path)?;
        self.load_state_dict(&sd)
            .map_err(|e| e.context(path.display().to_string()))
    }
}

/// Scales the gradients of `params` so that their global 2-norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64) -> Result<f64> {
    let grads: Vec<(Tensor, Tensor)> = params
        .iter()
        .filter_map(|p| p.grad().map(|g| (p.clone(), g)))
        .collect();
    let mut sq = 0.0f64;
    for (_, g) in &grads {
        sq += g.to_f64_vec()?.iter().map(|v| v * v).sum::<f64>();
    }
    let total = sq.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        let _g = crate::no_grad();
        for (p, g) in grads {
            p.set_grad(Some(g.mul_scalar(coef)?))?;
        }
    }
    Ok(total)
}

/// Takes buffer `i` of a state, or a zero buffer shaped like `like`, on `like`'s device (a
/// buffer left on another device, e.g. after `Module::to_device`, is moved there).
pub(crate) fn take_or_zeros(st: &mut ParamState, i: usize, like: &Value) -> Result<Value> {
    match st.bufs.get_mut(i).and_then(Option::take) {
        Some(b) if b.device() == like.device() => Ok(b),
        Some(b) => b.to_device(like.device()),
        None => Value::zeros_on(like.shape(), like.dtype(), like.device()),
    }
}

/// Puts buffer `i` back.
pub(crate) fn put(st: &mut ParamState, i: usize, v: Value) {
    if let Some(slot) = st.bufs.get_mut(i) {
        *slot = Some(v);
    }
}
