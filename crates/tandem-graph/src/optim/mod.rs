//! Optimizers as graph ops (`tf.train.*Optimizer`): `minimize(loss)` adds the gradients of
//! the trainable variables, one update node per variable (calling the same fused kernels as
//! the eager optimizers, so both modes follow PyTorch's formulas), and increments the
//! optimizer's step counter and the global step.

use crate::graph::{ApplyDef, Graph, Output};
use crate::init::Initializer;
use crate::update::Update;
use tandem_tensor::ops::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use tandem_tensor::{DType, Error, Result, Tensor};

pub mod schedules;

/// A learning rate: a number, or a graph value (a schedule) read at every step.
#[derive(Clone, Debug)]
pub enum LearningRate {
    /// A fixed rate.
    Constant(f64),
    /// A 0-d graph value computed at every run (e.g. a decay of `global_step`).
    Value(Output),
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> Self {
        LearningRate::Constant(v)
    }
}

impl From<&Output> for LearningRate {
    fn from(v: &Output) -> Self {
        LearningRate::Value(v.clone())
    }
}

impl From<Output> for LearningRate {
    fn from(v: Output) -> Self {
        LearningRate::Value(v)
    }
}

impl LearningRate {
    fn fixed(&self) -> f64 {
        match self {
            LearningRate::Constant(v) => *v,
            LearningRate::Value(_) => 0.0,
        }
    }
}

/// An optimizer that builds training ops.
pub trait Optimizer {
    /// Name, used as the scope of its nodes and in slot names (`Adam`, ...).
    fn name(&self) -> &str;
    /// The update rule (with the fixed learning rate, if any).
    fn update(&self) -> Update;
    /// The learning rate.
    fn learning_rate(&self) -> &LearningRate;

    /// Adds one update per `(gradient, variable)` pair and returns the training op, which
    /// also increments this optimizer's step counter and the graph's global step.
    fn apply_gradients(&self, grads_and_vars: &[(&Output, &Output)]) -> Result<Output> {
        build_train_op(
            self.name(),
            self.update(),
            self.learning_rate(),
            grads_and_vars,
        )
    }

    /// Minimizes `loss` over the given variables.
    fn minimize_with(&self, loss: &Output, var_list: &[&Output]) -> Result<Output> {
        let g = loss.graph();
        let grads = g.gradients(&[loss], var_list, None)?;
        let pairs: Vec<(&Output, &Output)> = grads
            .iter()
            .zip(var_list)
            .filter_map(|(gr, v)| gr.as_ref().map(|gr| (gr, *v)))
            .collect();
        if pairs.is_empty() {
            return Err(Error::Graph(format!(
                "{}: `{}` depends on none of the variables to train",
                self.name(),
                loss.name()
            )));
        }
        self.apply_gradients(&pairs)
    }

    /// Minimizes `loss` over every trainable variable of its graph.
    fn minimize(&self, loss: &Output) -> Result<Output> {
        let vars = loss.graph().trainable_variables()?;
        let refs: Vec<&Output> = vars.iter().collect();
        self.minimize_with(loss, &refs)
    }
}

fn build_train_op(
    name: &str,
    update: Update,
    lr: &LearningRate,
    grads_and_vars: &[(&Output, &Output)],
) -> Result<Output> {
    let Some((_, first)) = grads_and_vars.first() else {
        return Err(Error::Graph(format!("{name}: no variables to update")));
    };
    let g: Graph = first.graph().clone();
    let iterations = {
        let _s = g.root_scope(name);
        g.variable_with("iterations", &[], DType::I64, Initializer::Zeros, false)?
    };
    let lr_value = match lr {
        LearningRate::Value(v) => Some(v.clone()),
        LearningRate::Constant(_) => None,
    };
    let mut applies = Vec::with_capacity(grads_and_vars.len());
    for (grad, var) in grads_and_vars {
        let def = g.variable_def(var)?;
        let mut slots = Vec::new();
        for (k, _) in update.slot_names().iter().enumerate() {
            let slot_name = if k == 0 {
                name.to_string()
            } else {
                format!("{name}_{k}")
            };
            let _s = g.root_scope(var.name());
            slots.push(g.variable_with(
                &slot_name,
                &def.shape,
                def.dtype,
                Initializer::Zeros,
                false,
            )?);
        }
        let mut inputs: Vec<&Output> = vec![var, grad];
        inputs.extend(slots.iter());
        inputs.push(&iterations);
        if let Some(lr) = &lr_value {
            inputs.push(lr);
        }
        let mut slot_index = Vec::with_capacity(slots.len());
        for s in &slots {
            slot_index.push(g.variable_def(s)?.index);
        }
        let apply = {
            let _s = g.scope(name);
            g.apply_update(
                ApplyDef {
                    update,
                    var: def.index,
                    slots: slot_index,
                    has_lr: lr_value.is_some(),
                },
                &inputs,
            )?
        };
        applies.push(apply);
    }
    let refs: Vec<&Output> = applies.iter().collect();
    let step = g.global_step()?;
    let _scope = g.scope(name);
    let one = g.constant(Tensor::scalar(1i64))?;
    let _deps = g.control_dependencies(&refs)?;
    let inc = g.assign_add(&iterations, &one)?;
    let inc_step = g.assign_add(&step, &one)?;
    g.group(&[&inc, &inc_step])
}

/// Plain gradient descent (`torch.optim.SGD` without momentum).
#[derive(Clone, Debug)]
pub struct GradientDescent {
    /// Learning rate.
    pub lr: LearningRate,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl GradientDescent {
    /// Gradient descent with a learning rate.
    pub fn new(lr: impl Into<LearningRate>) -> Self {
        GradientDescent {
            lr: lr.into(),
            weight_decay: 0.0,
        }
    }
}

impl Optimizer for GradientDescent {
    fn name(&self) -> &str {
        "GradientDescent"
    }
    fn update(&self) -> Update {
        Update::Sgd(SgdConfig {
            lr: self.lr.fixed(),
            weight_decay: self.weight_decay,
            ..SgdConfig::default()
        })
    }
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }
}

/// SGD with momentum (optionally Nesterov), PyTorch's formulation.
#[derive(Clone, Debug)]
pub struct Momentum {
    /// Learning rate.
    pub lr: LearningRate,
    /// Momentum factor.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Dampening.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Momentum {
    /// Momentum SGD.
    pub fn new(lr: impl Into<LearningRate>, momentum: f64) -> Self {
        Momentum {
            lr: lr.into(),
            momentum,
            nesterov: false,
            dampening: 0.0,
            weight_decay: 0.0,
        }
    }
}

impl Optimizer for Momentum {
    fn name(&self) -> &str {
        "Momentum"
    }
    fn update(&self) -> Update {
        Update::Sgd(SgdConfig {
            lr: self.lr.fixed(),
            momentum: self.momentum,
            dampening: self.dampening,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        })
    }
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }
}

/// PyTorch's default first-moment decay of Adam and AdamW.
const ADAM_BETA1: f64 = 0.9;
/// PyTorch's default second-moment decay of Adam and AdamW.
const ADAM_BETA2: f64 = 0.999;
/// PyTorch's default denominator epsilon of Adam and AdamW.
const ADAM_EPS: f64 = 1e-8;

/// The update of Adam and AdamW (they differ only in how weight decay is applied).
fn adam_update(
    lr: &LearningRate,
    (beta1, beta2, eps): (f64, f64, f64),
    weight_decay: f64,
    decoupled: bool,
) -> Update {
    Update::Adam(AdamConfig {
        lr: lr.fixed(),
        beta1,
        beta2,
        eps,
        weight_decay,
        decoupled,
    })
}

/// Adam (L2 weight decay added to the gradient, like `torch.optim.Adam`).
#[derive(Clone, Debug)]
pub struct Adam {
    /// Learning rate.
    pub lr: LearningRate,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
}

impl Adam {
    /// Adam with PyTorch's defaults and a learning rate.
    pub fn new(lr: impl Into<LearningRate>) -> Self {
        Adam {
            lr: lr.into(),
            beta1: ADAM_BETA1,
            beta2: ADAM_BETA2,
            eps: ADAM_EPS,
            weight_decay: 0.0,
        }
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &str {
        "Adam"
    }
    fn update(&self) -> Update {
        let betas_eps = (self.beta1, self.beta2, self.eps);
        adam_update(&self.lr, betas_eps, self.weight_decay, false)
    }
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }
}

/// AdamW (decoupled weight decay, like `torch.optim.AdamW`; default decay 0.01).
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: LearningRate,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamW {
    /// AdamW with PyTorch's defaults and a learning rate.
    pub fn new(lr: impl Into<LearningRate>) -> Self {
        AdamW {
            lr: lr.into(),
            beta1: ADAM_BETA1,
            beta2: ADAM_BETA2,
            eps: ADAM_EPS,
            weight_decay: 0.01,
        }
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &str {
        "AdamW"
    }
    fn update(&self) -> Update {
        let betas_eps = (self.beta1, self.beta2, self.eps);
        adam_update(&self.lr, betas_eps, self.weight_decay, true)
    }
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }
}

/// RMSprop (`torch.optim.RMSprop`).
#[derive(Clone, Debug)]
pub struct RmsProp {
    /// Learning rate.
    pub lr: LearningRate,
    /// Smoothing constant.
    pub alpha: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Centered variant.
    pub centered: bool,
    /// L2 penalty.
    pub weight_decay: f64,
}

impl RmsProp {
    /// RMSprop with PyTorch's defaults and a learning rate.
    pub fn new(lr: impl Into<LearningRate>) -> Self {
        RmsProp {
            lr: lr.into(),
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }
}

impl Optimizer for RmsProp {
    fn name(&self) -> &str {
        "RMSprop"
    }
    fn update(&self) -> Update {
        Update::RmsProp(RmsPropConfig {
            lr: self.lr.fixed(),
            alpha: self.alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            centered: self.centered,
        })
    }
    fn learning_rate(&self) -> &LearningRate {
        &self.lr
    }
}
