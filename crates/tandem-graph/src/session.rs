//! Sessions: run a graph with feeds, holding the variables.

use crate::exec::{execute, RunFlags, RunStats, VarStore};
use crate::graph::{Graph, NodeKind, Output};
use crate::passes::{default_passes, run_passes, Pass};
use crate::plan::{Plan, PlanGraph};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tandem_tensor::{Error, Result, Tensor};

/// Session settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Run the optimizer passes when compiling plans (default true).
    pub optimize: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { optimize: true }
    }
}

type PlanKey = (Vec<usize>, Vec<usize>);

/// What a session shares with its callables.
#[derive(Debug)]
struct Shared {
    vars: VarStore,
    runs: AtomicU64,
    var_names: Mutex<Vec<String>>,
    check_numerics: AtomicBool,
}

impl Shared {
    fn flags(&self) -> RunFlags {
        RunFlags {
            check_numerics: self.check_numerics.load(Ordering::Relaxed),
        }
    }

    fn execute(
        &self,
        plan: &Plan,
        feeds: &[&Tensor],
        stats: Option<&mut RunStats>,
    ) -> Result<Vec<Tensor>> {
        let run_id = self.runs.fetch_add(1, Ordering::Relaxed);
        execute(
            plan,
            feeds,
            &self.vars,
            run_id,
            &self.names(),
            self.flags(),
            stats,
        )
    }

    fn names(&self) -> impl Fn(usize) -> String + '_ {
        move |i| {
            self.var_names
                .lock()
                .ok()
                .and_then(|n| n.get(i).cloned())
                .unwrap_or_else(|| format!("#{i}"))
        }
    }
}

/// Runs a graph (`tf.Session`). Holds the variables' values and a cache of compiled plans
/// keyed by (fetches, feeds). `Send + Sync`: [`Session::run`] may be called from many threads.
pub struct Session {
    graph: Graph,
    options: SessionOptions,
    passes: Vec<Box<dyn Pass>>,
    shared: Arc<Shared>,
    cache: Mutex<HashMap<PlanKey, Arc<Plan>>>,
    compiles: AtomicUsize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.passes.iter().map(|p| p.name()).collect();
        f.debug_struct("Session")
            .field("graph", &self.graph)
            .field("options", &self.options)
            .field("passes", &names)
            .field("compiles", &self.compile_count())
            .finish()
    }
}

fn poisoned() -> Error {
    Error::Graph("the session's plan cache lock is poisoned".into())
}

impl Session {
    /// A session whose variables are initialized (every variable the graph has now).
    pub fn new(graph: &Graph) -> Result<Session> {
        Session::with_options(graph, SessionOptions::default())
    }

    /// A session with options; variables initialized.
    pub fn with_options(graph: &Graph, options: SessionOptions) -> Result<Session> {
        let s = Session::uninitialized_with(graph, options)?;
        s.initialize_variables()?;
        Ok(s)
    }

    /// A session (variables initialized) whose plans run `passes` instead of
    /// [`default_passes`] (e.g. with a fusion pass added).
    pub fn with_passes(graph: &Graph, passes: Vec<Box<dyn Pass>>) -> Result<Session> {
        let mut s = Session::uninitialized_with(graph, SessionOptions::default())?;
        s.passes = passes;
        s.initialize_variables()?;
        Ok(s)
    }

    /// Sets every variable of the graph (as it is now) to its initial value.
    pub fn initialize_variables(&self) -> Result<()> {
        let mut updates = HashMap::new();
        for (v, def) in self.graph.variables()? {
            let t = def
                .init
                .value(&def.shape, def.dtype)
                .map_err(|e| e.context(v.name().to_string()))?;
            updates.insert(def.index, t);
        }
        self.shared.vars.commit(updates)
    }

    /// A session with no variable initialized (TF style: run
    /// [`Graph::global_variables_initializer`] first).
    pub fn new_uninitialized(graph: &Graph) -> Result<Session> {
        Session::uninitialized_with(graph, SessionOptions::default())
    }

    fn uninitialized_with(graph: &Graph, options: SessionOptions) -> Result<Session> {
        Ok(Session {
            graph: graph.clone(),
            options,
            passes: default_passes(),
            shared: Arc::new(Shared {
                vars: VarStore::default(),
                runs: AtomicU64::new(0),
                var_names: Mutex::new(vec![]),
                check_numerics: AtomicBool::new(false),
            }),
            cache: Mutex::new(HashMap::new()),
            compiles: AtomicUsize::new(0),
        })
    }

    /// The graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// How many plans were compiled so far (a cached plan is not compiled again).
    pub fn compile_count(&self) -> usize {
        self.compiles.load(Ordering::Relaxed)
    }

    fn ids(&self, values: &[&Output]) -> Result<Vec<usize>> {
        values
            .iter()
            .map(|v| {
                if v.graph().same(&self.graph) {
                    Ok(v.id())
                } else {
                    Err(Error::Graph(format!(
                        "`{}` is not a node of this session's graph",
                        v.name()
                    )))
                }
            })
            .collect()
    }

    /// Compiles (without caching) the plan graph for fetches and feeds, before passes.
    pub fn plan_graph(&self, fetches: &[&Output], feeds: &[&Output]) -> Result<PlanGraph> {
        let (f, d) = (self.ids(fetches)?, self.ids(feeds)?);
        let g = self.graph.read()?;
        PlanGraph::extract(&g, &f, &d)
    }

    fn compile(&self, fetch_ids: &[usize], feed_ids: &[usize]) -> Result<Plan> {
        let mut pg = {
            let g = self.graph.read()?;
            if let Ok(mut names) = self.shared.var_names.lock() {
                if names.len() != g.variables.len() {
                    *names = g
                        .variables
                        .iter()
                        .map(|&id| g.nodes[id].name.clone())
                        .collect();
                }
            }
            PlanGraph::extract(&g, fetch_ids, feed_ids)?
        };
        if self.options.optimize {
            run_passes(&mut pg, &self.passes)?;
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        Plan::schedule(&pg)
    }

    fn plan(&self, fetch_ids: Vec<usize>, feed_ids: Vec<usize>) -> Result<Arc<Plan>> {
        let key = (fetch_ids, feed_ids);
        if let Some(p) = self.cache.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(p.clone());
        }
        let plan = Arc::new(self.compile(&key.0, &key.1)?);
        self.cache
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, plan.clone());
        Ok(plan)
    }

    /// Runs the graph: computes `fetches` with `feeds` (value, tensor) and returns one tensor
    /// per fetch. Fetched ops that produce nothing return [`crate::op_marker`]. Feeds are
    /// checked against placeholders (dtype and shape, unknown dims match any size); any node
    /// may be fed, overriding its value. A failed run changes no variable.
    pub fn run(&self, fetches: &[&Output], feeds: &[(&Output, &Tensor)]) -> Result<Vec<Tensor>> {
        let feed_outs: Vec<&Output> = feeds.iter().map(|(o, _)| *o).collect();
        let plan = self.plan(self.ids(fetches)?, self.ids(&feed_outs)?)?;
        let tensors: Vec<&Tensor> = feeds.iter().map(|(_, t)| *t).collect();
        self.shared.execute(&plan, &tensors, None)
    }

    /// Checks every float value a run computes (`tf.debugging.enable_check_numerics`): with
    /// checks on, a run fails at the first step whose output holds a NaN or an infinity,
    /// with an error naming the node and its op, and changes no variable. Applies to
    /// [`Session::run`] and to every [`Callable`] of this session. Fused kernels are checked
    /// as one node (their name lists the fused ops); build the session with
    /// `SessionOptions { optimize: false, .. }` to check every graph node on its own.
    pub fn set_check_numerics(&self, on: bool) {
        self.shared.check_numerics.store(on, Ordering::Relaxed);
    }

    /// Whether runs check for NaN and infinity (see [`Session::set_check_numerics`]).
    pub fn check_numerics(&self) -> bool {
        self.shared.check_numerics.load(Ordering::Relaxed)
    }

    /// A prepared run for fixed fetches and feeds (`tf.Session.make_callable`): its
    /// [`Callable::run`] does no hashing, no plan-cache locking and no graph work.
    pub fn callable(&self, fetches: &[&Output], feeds: &[&Output]) -> Result<Callable> {
        let plan = self.plan(self.ids(fetches)?, self.ids(feeds)?)?;
        Ok(Callable {
            plan,
            shared: self.shared.clone(),
        })
    }

    /// The optimized plan for fetches and feeds as text (one line per step).
    pub fn explain(&self, fetches: &[&Output], feeds: &[&Output]) -> Result<String> {
        let plan = self.plan(self.ids(fetches)?, self.ids(feeds)?)?;
        Ok(plan.explain())
    }

    /// The current value of a variable.
    pub fn variable_value(&self, var: &Output) -> Result<Tensor> {
        let def = self.graph.variable_def(var)?;
        self.shared
            .vars
            .snapshot()?
            .get(def.index)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Graph(format!("variable `{}` is not initialized", var.name())))
    }

    /// Sets variables directly (checked: every value must match its variable's shape and
    /// dtype; nothing is written when one does not).
    pub fn set_variables(&self, values: &[(&Output, Tensor)]) -> Result<()> {
        let mut updates = HashMap::new();
        for (var, t) in values {
            let node = self.graph.node(self.ids(&[var])?[0])?;
            let NodeKind::Variable(def) = node.kind else {
                return Err(Error::Graph(format!("`{}` is not a variable", var.name())));
            };
            if t.shape() != def.shape.as_slice() || t.dtype() != def.dtype {
                return Err(Error::Graph(format!(
                    "variable `{}` is {} {:?}, got {} {:?}",
                    node.name,
                    def.dtype,
                    def.shape,
                    t.dtype(),
                    t.shape()
                )));
            }
            updates.insert(def.index, t.clone());
        }
        self.shared.vars.commit(updates)
    }
}

/// A prepared run (see [`Session::callable`]).
#[derive(Clone, Debug)]
pub struct Callable {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
}

impl Callable {
    /// Runs with the feeds in the order given to [`Session::callable`].
    pub fn run(&self, feeds: &[Tensor]) -> Result<Vec<Tensor>> {
        let tensors: Vec<&Tensor> = feeds.iter().collect();
        self.shared.execute(&self.plan, &tensors, None)
    }

    /// Runs like [`Callable::run`] and reports what the run did with memory: peak and total
    /// bytes of the values its steps computed and the bytes written into reused buffers.
    /// Counting costs a little per step, so the hot loop should use [`Callable::run`].
    pub fn run_with_stats(&self, feeds: &[Tensor]) -> Result<(Vec<Tensor>, RunStats)> {
        let tensors: Vec<&Tensor> = feeds.iter().collect();
        let mut stats = RunStats::default();
        let out = self
            .shared
            .execute(&self.plan, &tensors, Some(&mut stats))?;
        Ok((out, stats))
    }

    /// The plan this callable runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}
