//! The plan interpreter and the session's variable store.
//!
//! A run reads a snapshot of the variables (an `Arc` of the whole store, taken once), writes
//! variable updates to a private overlay, and commits the overlay in one swap after every step
//! succeeded. A failed run therefore changes nothing, and concurrent readers see either all of
//! a training step's updates or none.

use crate::graph::{ApplyDef, AssignMode};
use crate::plan::{Plan, PlanOp};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
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
    grad: Tensor,
    t: u64,
    lr: Option<f64>,
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
            .def
            .update
            .apply(&mut param, &self.grad, &mut slots, self.t, self.lr);
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

fn scalar_u64(t: &Tensor, what: &str) -> Result<u64> {
    let v = t.item()?;
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
/// the run did with memory.
pub(crate) fn execute(
    plan: &Plan,
    feeds: &[&Tensor],
    store: &VarStore,
    run_id: u64,
    names: &dyn Fn(usize) -> String,
    flags: RunFlags,
    mut stats: Option<&mut RunStats>,
) -> Result<Vec<Tensor>> {
    check_feeds(plan, feeds)?;
    let snapshot = store.snapshot()?;
    let mut view = View {
        snapshot: &snapshot,
        overlay: HashMap::new(),
        names,
        device: store.device(),
    };
    let mut values: Vec<Option<Tensor>> = vec![None; plan.steps.len()];
    // Bytes each counted slot holds (only filled when stats are wanted).
    let mut held: Vec<usize> = Vec::new();
    if stats.is_some() {
        held = vec![0; plan.steps.len()];
    }
    let mut live = 0usize;
    let mut deferred: Vec<Deferred> = Vec::new();
    for (s, step) in plan.steps.iter().enumerate() {
        // A dead value's buffer, when the run is its only owner.
        let out_buf = match step.reuse.and_then(|d| values.get_mut(d).map(|v| (d, v))) {
            Some((d, v)) => {
                let t = v.take();
                if let Some(h) = held.get_mut(d) {
                    live -= *h;
                    *h = 0;
                }
                t.filter(|t| Arc::strong_count(t.storage()) == 1)
            }
            None => None,
        };
        let reused = out_buf.as_ref().map(|t| Arc::as_ptr(t.storage()));
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
                    deferred.push(validate_update(a, &ins, &view)?);
                    Ok(op_marker())
                }
                (op, _) => run_step(op, &ins, feeds, &mut view, run_id, out_buf),
            }
            .map_err(|e| e.context(step.name.clone()))?
        };
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
                if reused == Some(Arc::as_ptr(out.storage())) {
                    st.reused_bytes += b;
                }
                st.peak_bytes = st.peak_bytes.max(live);
            }
        }
        values[s] = Some(out);
        for &f in &step.free {
            if plan.donors.get(f) == Some(&true) {
                continue;
            }
            values[f] = None;
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
    let overlay = std::mem::take(&mut view.overlay);
    drop(view);
    drop(values);
    drop(snapshot);
    store.commit_with(overlay, deferred)?;
    Ok(outs)
}

/// The step counter and learning rate of an update (inputs `[var, grad, slots..., iters,
/// lr?]`).
fn counter_and_lr(a: &ApplyDef, ins: &[&Tensor]) -> Result<(u64, Option<f64>)> {
    let n = a.slots.len();
    let iters = ins
        .get(2 + n)
        .ok_or_else(|| Error::Graph("update needs its step counter".into()))?;
    let t = scalar_u64(iters, "the step counter")? + 1;
    let lr = if a.has_lr {
        Some(
            ins.get(3 + n)
                .ok_or_else(|| Error::Graph("update needs its learning rate".into()))?
                .item()?,
        )
    } else {
        None
    };
    Ok((t, lr))
}

/// Checks everything an update will need (so that applying it at commit cannot fail on bad
/// input) and returns it for [`VarStore::commit_with`].
fn validate_update(a: &ApplyDef, ins: &[&Tensor], view: &View<'_>) -> Result<Deferred> {
    let grad = ins
        .get(1)
        .ok_or_else(|| Error::Graph("update needs a gradient".into()))?;
    let (t, lr) = counter_and_lr(a, ins)?;
    let param = view.get(a.var)?;
    if !param.dtype().is_float() {
        return Err(Error::invalid(
            a.update.name(),
            format!("parameters must be float, got {}", param.dtype()),
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
    check("the gradient", grad)?;
    for &s in &a.slots {
        check("a slot", &view.get(s)?)?;
    }
    Ok(Deferred {
        def: a.clone(),
        grad: (*grad).clone(),
        t,
        lr,
    })
}

fn run_step(
    op: &PlanOp,
    ins: &[&Tensor],
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
        PlanOp::Apply(a) => {
            let grad = ins
                .get(1)
                .ok_or_else(|| Error::Graph("update needs a gradient".into()))?;
            let (t, lr) = counter_and_lr(a, ins)?;
            let mut param = view.get(a.var)?;
            let mut slots = Vec::with_capacity(a.slots.len());
            for &s in &a.slots {
                slots.push(view.get(s)?);
            }
            a.update.apply(&mut param, grad, &mut slots, t, lr)?;
            for (&s, v) in a.slots.iter().zip(slots) {
                view.overlay.insert(s, v);
            }
            view.overlay.insert(a.var, param.clone());
            Ok(param)
        }
    }
}
