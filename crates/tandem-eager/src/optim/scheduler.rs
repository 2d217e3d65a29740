//! Learning-rate schedulers. Each computes the rate in closed form from the base rates it
//! captured and its step count, and writes it into the optimizer's groups.

use super::Optimizer;

/// A learning-rate schedule stepped once per epoch (or per iteration).
pub trait LrScheduler {
    /// Advances the schedule by one step and sets the optimizer's learning rates.
    fn step(&mut self, opt: &mut dyn Optimizer);
    /// The rates set by the last step (one per group).
    fn last_lr(&self) -> Vec<f64>;
}

fn base_lrs(opt: &dyn Optimizer) -> Vec<f64> {
    opt.param_groups().iter().map(|g| g.lr).collect()
}

fn apply(opt: &mut dyn Optimizer, lrs: &[f64]) {
    for (g, &lr) in opt.param_groups_mut().iter_mut().zip(lrs) {
        g.lr = lr;
    }
}

/// `StepLR`: multiplies the rate by `gamma` every `step_size` steps.
pub struct StepLR {
    base: Vec<f64>,
    step_size: usize,
    gamma: f64,
    count: usize,
    last: Vec<f64>,
}

impl StepLR {
    /// A schedule over `opt`'s current rates.
    pub fn new(opt: &dyn Optimizer, step_size: usize, gamma: f64) -> StepLR {
        let base = base_lrs(opt);
        StepLR {
            last: base.clone(),
            base,
            step_size: step_size.max(1),
            gamma,
            count: 0,
        }
    }
}

impl LrScheduler for StepLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.count += 1;
        let k = (self.count / self.step_size) as i32;
        self.last = self.base.iter().map(|b| b * self.gamma.powi(k)).collect();
        apply(opt, &self.last);
    }
    fn last_lr(&self) -> Vec<f64> {
        self.last.clone()
    }
}

/// `CosineAnnealingLR`: `eta_min + (base - eta_min) (1 + cos(pi t / t_max)) / 2`.
pub struct CosineAnnealingLR {
    base: Vec<f64>,
    t_max: usize,
    eta_min: f64,
    count: usize,
    last: Vec<f64>,
}

impl CosineAnnealingLR {
    /// A schedule over `opt`'s current rates, reaching `eta_min` after `t_max` steps.
    pub fn new(opt: &dyn Optimizer, t_max: usize, eta_min: f64) -> CosineAnnealingLR {
        let base = base_lrs(opt);
        CosineAnnealingLR {
            last: base.clone(),
            base,
            t_max: t_max.max(1),
            eta_min,
            count: 0,
        }
    }
}

impl LrScheduler for CosineAnnealingLR {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.count += 1;
        let c = (std::f64::consts::PI * self.count as f64 / self.t_max as f64).cos();
        self.last = self
            .base
            .iter()
            .map(|b| self.eta_min + (b - self.eta_min) * (1.0 + c) / 2.0)
            .collect();
        apply(opt, &self.last);
    }
    fn last_lr(&self) -> Vec<f64> {
        self.last.clone()
    }
}

/// Linear warmup: the rate grows from `start_factor * base` to `base` over `warmup_steps`
/// steps, then stays (PyTorch's `LinearLR` with `end_factor = 1`).
pub struct LinearWarmup {
    base: Vec<f64>,
    warmup_steps: usize,
    start_factor: f64,
    count: usize,
    last: Vec<f64>,
}

impl LinearWarmup {
    /// Sets the first rate (`start_factor * base`) on `opt` immediately, like PyTorch.
    pub fn new(opt: &mut dyn Optimizer, warmup_steps: usize, start_factor: f64) -> LinearWarmup {
        let base = base_lrs(opt);
        let last: Vec<f64> = base.iter().map(|b| b * start_factor).collect();
        apply(opt, &last);
        LinearWarmup {
            base,
            warmup_steps: warmup_steps.max(1),
            start_factor,
            count: 0,
            last,
        }
    }
}

impl LrScheduler for LinearWarmup {
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.count += 1;
        let t = self.count.min(self.warmup_steps) as f64 / self.warmup_steps as f64;
        let f = self.start_factor + (1.0 - self.start_factor) * t;
        self.last = self.base.iter().map(|b| b * f).collect();
        apply(opt, &self.last);
    }
    fn last_lr(&self) -> Vec<f64> {
        self.last.clone()
    }
}
