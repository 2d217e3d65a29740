//! The plan interpreter and the session's variable store.
//!
//! A run reads a snapshot of the variables (an `Arc` of the whole store, taken once), writes
//! variable updates to a private overlay, and commits the overlay in one swap after every step
//! succeeded. A failed run therefore changes nothing, and concurrent readers see either all of
//! a training step's updates or none.

use crate::graph::{ApplyDef, AssignMode};
use crate::plan::{Plan, PlanOp};
use crate::update::Update;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tandem_ir::{eval, Op};
use tandem_tensor::{BinaryOp, DType, Device, Error, Result, Tensor};

/// The value a run returns for a fetched op that produces nothing (a group, a no-op, an
/// initializer): an empty float32 tensor of shape `[0]`.
pub fn op_marker() -> Tensor {
    Tensor::zeros(&[0], DType::F32)
}

/// True for the marker returned by fetched ops (see [`op_marker`]).
pub fn is_op_marker(t: &Tensor) -> bool {
    t.shape() == [0] && t.dtype() == DType::F32
}

type Values = Arc<Vec<Option<Tensor>>>;

/// The variables of a session, by variable index, on the session's device.
#[derive(Debug, Default)]
pub(crate) struct VarStore {
    values: RwLock<Values>,
    device: Device,
}

fn poisoned() -> Error {
    Error::Graph("the session's variable lock is poisoned".into())
}

impl VarStore {
    /// An empty store whose variables live on `device`.
    pub(crate) fn on(device: Device) -> VarStore {
        VarStore {
            values: RwLock::default(),
            device,
        }
    }

    /// The device the variables live on.
    pub(crate) fn device(&self) -> Device {
        self.device
    }

    pub(crate) fn snapshot(&self) -> Result<Values> {
        Ok(self.values.read().map_err(|_| poisoned())?.clone())
    }

    /// Replaces the listed variables in one swap.
    pub(crate) fn commit(&self, updates: HashMap<usize, Tensor>) -> Result<()> {
        self.commit_with(updates, Vec::new())
    }

    /// Replaces the listed variables, then applies the (already validated) deferred updates
    /// in place, all under one write lock. The store's tensors are uniquely owned unless a
    /// concurrent run or a caller still holds them, so the updates usually write into the
    /// variables' own buffers (copy-on-write otherwise).
    pub(crate) fn commit_with(
        &self,
        updates: HashMap<usize, Tensor>,
        deferred: Vec<Deferred>,
    ) -> Result<()> {
        if updates.is_empty() && deferred.is_empty() {
            return Ok(());
        }
        let mut guard = self.values.write().map_err(|_| poisoned())?;
        // Clones the list (not the tensors) only when a snapshot is still alive.
        let next = Arc::make_mut(&mut *guard);
        for (i, t) in updates {
            if next.len() <= i {
                next.resize(i + 1, None);
            }
            next[i] = Some(t);
        }
        for d in deferred {
            d.apply(next)?;
        }
        Ok(())
    }
}

/// An optimizer update validated during a run and applied at commit.
pub(crate) struct Deferred {
    def: ApplyDef,
    grad: Grad,
    t: u64,
    lr: Option<f64>,
}

/// The gradient of an update.
enum Grad {
    /// Computed by the run.
    Value(Tensor),
    /// The product of two matrices, computed inside the update at commit
    /// ([`PlanOp::ApplyProduct`]).
    Product(Tensor, Tensor),
}

impl Grad {
    /// Applies `update` with this gradient (see [`Update::apply`]).
    fn apply(
        &self,
        update: &Update,
        param: &mut Tensor,
        slots: &mut [Tensor],
        t: u64,
        lr: Option<f64>,
    ) -> Result<()> {
        match self {
            Grad::Value(g) => update.apply(param, g, slots, t, lr),
            Grad::Product(l, r) => update.apply_product(param, [l, r], slots, t, lr),
        }
    }
}

impl Deferred {
    fn apply(self, vars: &mut [Option<Tensor>]) -> Result<()> {
        let missing = || Error::Graph("deferred update: variable vanished (plan bug)".into());
        let mut param = vars
            .get_mut(self.def.var)
            .and_then(Option::take)
            .ok_or_else(missing)?;
        let mut slots = Vec::with_capacity(self.def.slots.len());
        for &s in &self.def.slots {
            match vars.get_mut(s).and_then(Option::take) {
                Some(t) => slots.push(t),
                None => {
                    // Put back what was taken before failing.
                    vars[self.def.var] = Some(param);
                    for (&i, t) in self.def.slots.iter().zip(slots) {
                        vars[i] = Some(t);
                    }
                    return Err(missing());
                }
            }
        }
        let r = self
            .grad
            .apply(&self.def.update, &mut param, &mut slots, self.t, self.lr);
        vars[self.def.var] = Some(param);
        for (&i, t) in self.def.slots.iter().zip(slots) {
            vars[i] = Some(t);
        }
        r
    }
}

/// Variable values as seen by one run: the snapshot plus this run's writes.
struct View<'a> {
    snapshot: &'a [Option<Tensor>],
    overlay: HashMap<usize, Tensor>,
    names: &'a dyn Fn(usize) -> String,
    device: Device,
    scalars: Scalars,
}

/// Scalar step inputs (optimizer step counters, learning rates) already read to the host in
/// this run, by value slot. Every update of an optimizer reads the same counter and learning
/// rate slots, so a training step reads each once instead of once per parameter (on a GPU
/// session each read is a device-to-host copy and a synchronization).
#[derive(Default)]
struct Scalars(SmallVec<[(usize, f64); 4]>);

impl Scalars {
    /// The value of the 1-element tensor `t` held by slot `slot`.
    fn read(&mut self, slot: usize, t: &Tensor) -> Result<f64> {
        if let Some(&(_, v)) = self.0.iter().find(|(s, _)| *s == slot) {
            return Ok(v);
        }
        let v = t.item()?;
        self.0.push((slot, v));
        Ok(v)
    }
}

impl View<'_> {
    fn get(&self, i: usize) -> Result<Tensor> {
        if let Some(t) = self.overlay.get(&i) {
            return Ok(t.clone());
        }
        match self.snapshot.get(i) {
            Some(Some(t)) => Ok(t.clone()),
            _ => Err(Error::Graph(format!(
                "variable `{}` is not initialized (run the initializer, or create the \
                 session after the variable)",
                (self.names)(i)
            ))),
        }
    }
}

fn mix(seed: u64, run: u64) -> u64 {
    let mut z = seed ^ run.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

/// Checks the feeds against the plan's feed specs.
pub(crate) fn check_feeds(plan: &Plan, feeds: &[&Tensor]) -> Result<()> {
    if feeds.len() != plan.feeds.len() {
        return Err(Error::Graph(format!(
            "expected {} fed values, got {}",
            plan.feeds.len(),
            feeds.len()
        )));
    }
    for (spec, t) in plan.feeds.iter().zip(feeds) {
        if !spec.info.admits(t.dtype(), t.shape()) {
            let what = if spec.placeholder {
                "placeholder"
            } else {
                "node"
            };
            return Err(Error::Graph(format!(
                "{what} `{}` expects {} {}, was fed {} {:?}",
                spec.name,
                spec.info.dtype,
                tandem_ir::infer::fmt_shape(&spec.info.shape),
                t.dtype(),
                t.shape()
            )));
        }
    }
    Ok(())
}

fn scalar_u64(v: f64, what: &str) -> Result<u64> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(Error::Graph(format!(
            "{what} must be a count >= 0, got {v}"
        )));
    }
    Ok(v as u64)
}

/// What one run did with memory (see [`crate::Callable::run_with_stats`]).
///
/// Bytes count the buffers the run's steps allocated themselves (kernel and op outputs);
/// feeds, variables, constants and views of other values are not counted, nor are the
/// optimizer updates applied in place at commit (they allocate nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Steps run.
    pub steps: usize,
    /// Most bytes of step outputs alive at once (after memory planning: values are dropped
    /// at their last use and dead buffers are written again by later steps).
    pub peak_bytes: usize,
    /// Bytes of all step outputs together (what a run that kept every value would hold).
    pub total_bytes: usize,
    /// Bytes of outputs written into a dead value's buffer instead of a new allocation.
    pub reused_bytes: usize,
    /// Bytes of outputs written into a buffer kept from an earlier run of the same plan
    /// (see [`Arena`]) instead of a new allocation.
    pub kept_bytes: usize,
}

/// Where the time of a plan's runs goes, step by step (see [`crate::Callable::profile`]): the
/// graph-mode counterpart of PyTorch's profiler table or TF1's step trace.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Runs measured.
    pub runs: usize,
    /// Wall time of all the measured runs together.
    pub total: Duration,
    /// One entry per plan step, in execution order, then one named `(commit)` for applying
    /// the optimizer updates to the variables at the end of each run.
    pub steps: Vec<StepTime>,
}

/// One step of a [`Profile`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepTime {
    /// The node the step came from.
    pub name: String,
    /// What it computes (the op or kernel name, e.g. `fused_elementwise[add,relu]`).
    pub op: String,
    /// Its wall time summed over the measured runs.
    pub time: Duration,
}

impl Profile {
    /// The steps sorted by time, slowest first.
    pub fn slowest(&self) -> Vec<&StepTime> {
        let mut v: Vec<&StepTime> = self.steps.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.time));
        v
    }

    /// The time of each op (or kernel) name summed over its steps, slowest first.
    pub fn by_op(&self) -> Vec<(String, Duration)> {
        let mut sums: Vec<(String, Duration)> = Vec::new();
        for st in &self.steps {
            match sums.iter_mut().find(|(op, _)| *op == st.op) {
                Some((_, t)) => *t += st.time,
                None => sums.push((st.op.clone(), st.time)),
            }
        }
        sums.sort_by_key(|s| std::cmp::Reverse(s.1));
        sums
    }
}

impl std::fmt::Display for Profile {
    /// A table of the 20 slowest steps (time per run and share of the run) and the time per
    /// op name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs = self.runs.max(1) as f64;
        let total = self.total.as_secs_f64().max(f64::MIN_POSITIVE);
        let us = |d: Duration| d.as_secs_f64() * 1e6 / runs;
        let share = |d: Duration| 100.0 * d.as_secs_f64() / total;
        writeln!(
            f,
            "{} runs, {:.1} us per run, {} steps",
            self.runs,
            self.total.as_secs_f64() * 1e6 / runs,
            self.steps.len()
        )?;
        writeln!(f, "{:>10} {:>6}  step (op)", "us/run", "%")?;
        for st in self.slowest().into_iter().take(20) {
            writeln!(
                f,
                "{:>10.1} {:>5.1}%  {} ({})",
                us(st.time),
                share(st.time),
                st.name,
                st.op
            )?;
        }
        writeln!(f, "{:>10} {:>6}  op", "us/run", "%")?;
        for (op, t) in self.by_op() {
            writeln!(f, "{:>10.1} {:>5.1}%  {op}", us(t), share(t))?;
        }
        Ok(())
    }
}

/// The buffers of a plan's kernel outputs, kept from one run to the next (memory planning's
/// preallocated buffers): a kernel step whose output buffer died in the previous run writes
/// into it again instead of allocating. Only buffers nobody else holds are written (a
/// buffer the caller still holds is never overwritten). A run takes the whole set at its
/// start and gives it back at its end, so concurrent runs of one plan never share a buffer
/// (the second one allocates). The run's table of step values is kept the same way, emptied:
/// allocated per run, even the ten-step MLP forward pass's table sent glibc's malloc into
/// consolidating its free lists on every run (`malloc_consolidate` under `execute` in `perf`).
#[derive(Debug, Default)]
pub struct Arena {
    kept: Mutex<Vec<Option<Tensor>>>,
    slots: Mutex<Vec<Option<Tensor>>>,
}

impl Clone for Arena {
    /// A new, empty arena (buffers are never shared between plans).
    fn clone(&self) -> Self {
        Arena::default()
    }
}

impl Arena {
    /// Takes the kept buffers (empty when another run holds them or none were kept yet).
    fn take(&self) -> Vec<Option<Tensor>> {
        take_held(&self.kept)
    }

    /// Gives buffers back (dropped when another run gave its set back first).
    fn put(&self, kept: Vec<Option<Tensor>>) {
        hold_if_free(&self.kept, kept, Vec::is_empty);
    }

    /// A table of `n` empty value slots (the one the last run gave back, if no other run
    /// holds it).
    fn take_slots(&self, n: usize) -> Vec<Option<Tensor>> {
        let mut slots = take_held(&self.slots);
        slots.clear();
        slots.resize(n, None);
        slots
    }

    /// Gives a table of value slots back, emptied (its tensors dropped here).
    fn put_slots(&self, mut slots: Vec<Option<Tensor>>) {
        slots.clear();
        // Emptied tables are given back, so a taken one is told apart by its capacity.
        hold_if_free(&self.slots, slots, |v| v.capacity() == 0);
    }

    /// Bytes of the buffers kept now.
    pub fn bytes(&self) -> usize {
        self.kept
            .lock()
            .map(|v| v.iter().flatten().map(bytes_of).sum::<usize>())
            .unwrap_or(0)
    }
}

/// What `held` holds, leaving an empty vector there (an empty vector when the lock is
/// poisoned).
fn take_held(held: &Mutex<Vec<Option<Tensor>>>) -> Vec<Option<Tensor>> {
    held.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// Stores `v` in `held` when `free` says what it holds was taken (another run that gave its
/// own back first wins; `v` is dropped then).
fn hold_if_free(
    held: &Mutex<Vec<Option<Tensor>>>,
    v: Vec<Option<Tensor>>,
    free: impl FnOnce(&Vec<Option<Tensor>>) -> bool,
) {
    if let Ok(mut h) = held.lock() {
        if free(&h) {
            *h = v;
        }
    }
}

/// Per-run switches of [`execute`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunFlags {
    /// Fail at the first step whose float output holds a NaN or an infinity.
    pub check_numerics: bool,
}

fn bytes_of(t: &Tensor) -> usize {
    t.storage().len() * t.dtype().size_in_bytes()
}

/// The first non-finite element of a float tensor, if any.
fn first_non_finite(t: &Tensor) -> Result<Option<f64>> {
    if !t.dtype().is_float() {
        return Ok(None);
    }
    if let Some(v) = t.as_slice::<f32>() {
        return Ok(v.iter().find(|x| !x.is_finite()).map(|&x| f64::from(x)));
    }
    Ok(t.to_f64_vec()?.into_iter().find(|x| !x.is_finite()))
}

/// Runs a plan. `names` gives variable names for errors; `stats`, when given, receives what
/// the run did with memory; `times`, when given (one entry per step plus one for the commit
/// of variable updates), has each step's wall time added to it.
pub(crate) fn execute(
    plan: &Plan,
    feeds: &[&Tensor],
    store: &VarStore,
    run_id: u64,
    names: &dyn Fn(usize) -> String,
    flags: RunFlags,
    mut stats: Option<&mut RunStats>,
    mut times: Option<&mut [Duration]>,
) -> Result<Vec<Tensor>> {
    check_feeds(plan, feeds)?;
    let snapshot = store.snapshot()?;
    let mut view = View {
        snapshot: &snapshot,
        overlay: HashMap::new(),
        names,
        device: store.device(),
        scalars: Scalars::default(),
    };
    let mut values = plan.arena.take_slots(plan.steps.len());
    // Bytes each counted slot holds (only filled when stats are wanted).
    let mut held: Vec<usize> = Vec::new();
    if stats.is_some() {
        held = vec![0; plan.steps.len()];
    }
    let mut live = 0usize;
    let mut deferred: Vec<Deferred> = Vec::new();
    let mut kept = plan.arena.take();
    kept.resize(plan.steps.len(), None);
    let unique = |t: &Tensor| Arc::strong_count(t.storage()) == 1;
    for (s, step) in plan.steps.iter().enumerate() {
        // A dead value's buffer, when the run is its only owner.
        let out_buf = match step.reuse.and_then(|d| values.get_mut(d).map(|v| (d, v))) {
            Some((d, v)) => {
                let t = v.take();
                if let Some(h) = held.get_mut(d) {
                    live -= *h;
                    *h = 0;
                }
                t.filter(unique)
            }
            None => None,
        };
        let reused = out_buf.as_ref().map(|t| Arc::as_ptr(t.storage()));
        // Otherwise the buffer this step's chain wrote in the previous run.
        let out_buf = match (out_buf, &step.op) {
            (None, PlanOp::Kernel(_)) => plan
                .home
                .get(s)
                .and_then(|&h| kept.get_mut(h))
                .and_then(Option::take)
                .filter(unique),
            (b, _) => b,
        };
        let from_arena = match (reused, &out_buf) {
            (None, Some(t)) => Some(Arc::as_ptr(t.storage())),
            _ => None,
        };
        let started = times.is_some().then(Instant::now);
        let out = {
            let mut ins: SmallVec<[&Tensor; 4]> = SmallVec::new();
            for &i in &step.inputs {
                match values.get(i).and_then(Option::as_ref) {
                    Some(t) => ins.push(t),
                    None => {
                        return Err(Error::Graph(format!(
                            "{}: input slot {i} has no value (plan bug)",
                            step.name
                        )))
                    }
                }
            }
            match (&step.op, plan.deferred.get(s)) {
                (PlanOp::Apply(a), Some(true)) => {
                    validate_update(a, &ins, &step.inputs, &mut view, false).map(|d| {
                        deferred.push(d);
                        op_marker()
                    })
                }
                (PlanOp::ApplyProduct(a), Some(true)) => {
                    validate_update(a, &ins, &step.inputs, &mut view, true).map(|d| {
                        deferred.push(d);
                        op_marker()
                    })
                }
                (op, _) => run_step(op, &ins, &step.inputs, feeds, &mut view, run_id, out_buf),
            }
            .map_err(|e| e.context(step.name.clone()))?
        };
        if let (Some(t), Some(start)) = (times.as_deref_mut(), started) {
            if let Some(slot) = t.get_mut(s) {
                *slot += start.elapsed();
            }
        }
        if flags.check_numerics {
            if let Some(bad) = first_non_finite(&out)? {
                return Err(Error::Graph(format!(
                    "check_numerics: node `{}` (op {}) produced {bad} in its {} {:?} output",
                    step.name,
                    step.op.name(),
                    out.dtype(),
                    out.shape()
                )));
            }
        }
        if let Some(st) = stats.as_deref_mut() {
            st.steps += 1;
            if crate::plan::owns_output(&step.op) {
                let b = bytes_of(&out);
                held[s] = b;
                live += b;
                st.total_bytes += b;
                let at = Some(Arc::as_ptr(out.storage()));
                if reused == at {
                    st.reused_bytes += b;
                } else if from_arena == at {
                    st.kept_bytes += b;
                }
                st.peak_bytes = st.peak_bytes.max(live);
            }
        }
        values[s] = Some(out);
        for &f in &step.free {
            if plan.donors.get(f) == Some(&true) {
                continue;
            }
            let dead = values[f].take();
            keep(plan, &mut kept, f, dead);
            if let Some(h) = held.get_mut(f) {
                live -= *h;
                *h = 0;
            }
        }
    }
    let mut outs = Vec::with_capacity(plan.fetch_slots.len());
    for &f in &plan.fetch_slots {
        outs.push(
            values
                .get(f)
                .and_then(Option::clone)
                .ok_or_else(|| Error::Graph("fetched value was dropped (plan bug)".into()))?,
        );
    }
    // Donors no later step took are kept too (fetched values belong to the caller).
    for (f, v) in values.iter_mut().enumerate() {
        if plan.donors.get(f) == Some(&true) && !plan.fetch_slots.contains(&f) {
            keep(plan, &mut kept, f, v.take());
        }
    }
    let overlay = std::mem::take(&mut view.overlay);
    drop(view);
    // The values go before the commit (a variable's buffer may then be updated in place).
    plan.arena.put_slots(values);
    drop(snapshot);
    let started = times.is_some().then(Instant::now);
    let committed = store.commit_with(overlay, deferred);
    if let (Some(t), Some(start)) = (times, started) {
        if let Some(slot) = t.get_mut(plan.steps.len()) {
            *slot += start.elapsed();
        }
    }
    plan.arena.put(kept);
    committed?;
    Ok(outs)
}

/// Keeps the dead value of slot `f` for the next run when a kernel wrote it.
fn keep(plan: &Plan, kept: &mut [Option<Tensor>], f: usize, dead: Option<Tensor>) {
    let kernel = plan
        .steps
        .get(f)
        .is_some_and(|st| matches!(st.op, PlanOp::Kernel(_)));
    if let (true, Some(t), Some(&h)) = (kernel, dead, plan.home.get(f)) {
        if let Some(k) = kept.get_mut(h) {
            *k = Some(t);
        }
    }
}

/// The step counter and learning rate of an update (inputs `[var, grad, slots..., iters,
/// lr?]`, or `[var, lhs, rhs, slots..., iters, lr?]` when `product`, held by value slots
/// `slots`), read through the run's scalar cache.
fn counter_and_lr(
    a: &ApplyDef,
    ins: &[&Tensor],
    slots: &[usize],
    scalars: &mut Scalars,
    product: bool,
) -> Result<(u64, Option<f64>)> {
    let n = a.slots.len() + usize::from(product);
    let input = |k: usize, what: &str| match (ins.get(k), slots.get(k)) {
        (Some(t), Some(&s)) => Ok((*t, s)),
        _ => Err(Error::Graph(format!("update needs its {what}"))),
    };
    let (iters, slot) = input(2 + n, "step counter")?;
    let t = scalar_u64(scalars.read(slot, iters)?, "the step counter")? + 1;
    let lr = if a.has_lr {
        let (lr, slot) = input(3 + n, "learning rate")?;
        Some(scalars.read(slot, lr)?)
    } else {
        None
    };
    Ok((t, lr))
}

/// The gradient factors `[lhs, rhs]` of an [`PlanOp::ApplyProduct`] (inputs 1 and 2), checked
/// to be matrices whose product has `param`'s shape, dtype and device.
fn product_factors<'t>(
    a: &ApplyDef,
    ins: &[&'t Tensor],
    param: &Tensor,
) -> Result<[&'t Tensor; 2]> {
    let (Some(&l), Some(&r)) = (ins.get(1), ins.get(2)) else {
        return Err(Error::Graph(
            "update needs the gradient's two factors".into(),
        ));
    };
    let fits =
        matches!((l.shape(), r.shape()), (&[m, k], &[k2, n]) if k == k2 && param.shape() == [m, n]);
    if !fits {
        return Err(Error::invalid(
            a.update.name(),
            format!(
                "the gradient {:?} @ {:?} does not have the parameter's shape {:?}",
                l.shape(),
                r.shape(),
                param.shape()
            ),
        ));
    }
    for x in [l, r] {
        if x.dtype() != param.dtype() || x.device() != param.device() {
            return Err(Error::invalid(
                a.update.name(),
                format!(
                    "a gradient factor is {} on {:?}, the parameter {} on {:?}",
                    x.dtype(),
                    x.device(),
                    param.dtype(),
                    param.device()
                ),
            ));
        }
    }
    Ok([l, r])
}

/// The gradient of an update: input 1, or with `product` the product of inputs 1 and 2,
/// kept as its factors when `fold` (computed inside the update at commit) and computed now
/// otherwise.
fn gradient(
    a: &ApplyDef,
    ins: &[&Tensor],
    param: &Tensor,
    product: bool,
    fold: bool,
) -> Result<Grad> {
    if !product {
        let g = ins
            .get(1)
            .ok_or_else(|| Error::Graph("update needs a gradient".into()))?;
        return Ok(Grad::Value((*g).clone()));
    }
    let [l, r] = product_factors(a, ins, param)?;
    Ok(if fold {
        Grad::Product(l.clone(), r.clone())
    } else {
        Grad::Value(l.matmul(r)?)
    })
}

/// Checks everything an update will need (so that applying it at commit cannot fail on bad
/// input) and returns it for [`VarStore::commit_with`]. With `product` the gradient is the
/// product of inputs 1 and 2: kept as its factors for Adam on the CPU (computed at commit,
/// inside the update), computed now otherwise.
fn validate_update(
    a: &ApplyDef,
    ins: &[&Tensor],
    slots: &[usize],
    view: &mut View<'_>,
    product: bool,
) -> Result<Deferred> {
    let (t, lr) = counter_and_lr(a, ins, slots, &mut view.scalars, product)?;
    let param = view.get(a.var)?;
    let fold = product && matches!(a.update, Update::Adam(_)) && param.device().is_cpu();
    let grad = gradient(a, ins, &param, product, fold)?;
    // What the optimizer kernels accept (checked here: at commit, other updates may already
    // have been applied).
    if !matches!(param.dtype(), DType::F32 | DType::F64) {
        return Err(Error::invalid(
            a.update.name(),
            format!(
                "parameters must be float32 or float64, got {}",
                param.dtype()
            ),
        ));
    }
    let want = a.update.slot_names().len();
    if a.slots.len() != want {
        return Err(Error::invalid(
            a.update.name(),
            format!("expects {want} slot variables, got {}", a.slots.len()),
        ));
    }
    let check = |what: &str, x: &Tensor| -> Result<()> {
        if x.shape() != param.shape() || x.dtype() != param.dtype() {
            return Err(Error::invalid(
                a.update.name(),
                format!(
                    "{what} is {} {:?}, the parameter {} {:?}",
                    x.dtype(),
                    x.shape(),
                    param.dtype(),
                    param.shape()
                ),
            ));
        }
        Ok(())
    };
    if let Grad::Value(g) = &grad {
        check("the gradient", g)?;
    }
    for &s in &a.slots {
        check("a slot", &view.get(s)?)?;
    }
    Ok(Deferred {
        def: a.clone(),
        grad,
        t,
        lr,
    })
}

fn run_step(
    op: &PlanOp,
    ins: &[&Tensor],
    slots: &[usize],
    feeds: &[&Tensor],
    view: &mut View<'_>,
    run_id: u64,
    out: Option<Tensor>,
) -> Result<Tensor> {
    match op {
        PlanOp::Feed(i) => feeds
            .get(*i)
            .map(|t| (*t).clone())
            .ok_or_else(|| Error::Graph(format!("feed {i} missing"))),
        PlanOp::Variable(i) => view.get(*i),
        PlanOp::Op(Op::Random { dist, seed }) => eval(
            &Op::Random {
                dist: *dist,
                seed: mix(*seed, run_id),
            },
            ins,
        ),
        PlanOp::Op(op) => eval(op, ins),
        PlanOp::Identity => ins
            .first()
            .map(|t| (*t).clone())
            .ok_or_else(|| Error::Graph("identity needs an input".into())),
        PlanOp::NoOp => Ok(op_marker()),
        PlanOp::Kernel(k) => k.run(ins, out),
        PlanOp::InitVariables(defs) => {
            for d in defs {
                let v = d.init.value(&d.shape, d.dtype)?.to_device(view.device)?;
                view.overlay.insert(d.index, v);
            }
            Ok(op_marker())
        }
        PlanOp::Assign { var, mode } => {
            let value = ins
                .get(1)
                .ok_or_else(|| Error::Graph("assign needs a value".into()))?;
            let cur = view.get(*var)?;
            if cur.shape() != value.shape() || cur.dtype() != value.dtype() {
                return Err(Error::Graph(format!(
                    "cannot assign {} {:?} to a variable of {} {:?}",
                    value.dtype(),
                    value.shape(),
                    cur.dtype(),
                    cur.shape()
                )));
            }
            let new = match mode {
                AssignMode::Set => (*value).clone(),
                AssignMode::Add => cur.binary(BinaryOp::Add, value)?,
                AssignMode::Sub => cur.binary(BinaryOp::Sub, value)?,
            };
            view.overlay.insert(*var, new.clone());
            Ok(new)
        }
        PlanOp::Apply(a) | PlanOp::ApplyProduct(a) => {
            let product = matches!(op, PlanOp::ApplyProduct(_));
            let (t, lr) = counter_and_lr(a, ins, slots, &mut view.scalars, product)?;
            let mut param = view.get(a.var)?;
            let grad = gradient(a, ins, &param, product, false)?;
            let mut slots = Vec::with_capacity(a.slots.len());
            for &s in &a.slots {
                slots.push(view.get(s)?);
            }
            grad.apply(&a.update, &mut param, &mut slots, t, lr)?;
            for (&s, v) in a.slots.iter().zip(slots) {
                view.overlay.insert(s, v);
            }
            view.overlay.insert(a.var, param.clone());
            Ok(param)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_table_is_handed_from_run_to_run_emptied() {
        let arena = Arena::default();
        let mut slots = arena.take_slots(12);
        assert_eq!(slots.len(), 12);
        let t = Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        slots[3] = Some(t.clone());
        let table = slots.as_ptr();
        arena.put_slots(slots);
        // The tensor the table held was let go of when it was given back.
        assert_eq!(Arc::strong_count(t.storage()), 1);
        // Taken again, the same allocation comes back, all slots empty, sized for this plan.
        let again = arena.take_slots(5);
        assert_eq!(again.as_ptr(), table);
        assert_eq!(again.len(), 5);
        assert!(again.iter().all(Option::is_none));
        // While one run holds it, another gets a table of its own.
        let other = arena.take_slots(5);
        assert_ne!(other.as_ptr(), table);
        assert!(other.iter().all(Option::is_none));
    }
}
