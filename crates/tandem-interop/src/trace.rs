//! Tracing: run eager code once on example inputs and record every op it emits into a
//! [`Graph`].
//!
//! Inputs become placeholders whose first (batch) dimension is unknown; parameters (module
//! parameters, and any other leaf that requires grad) become trainable variables, named after
//! the module's dotted names with `/` (`fc1.weight` -> `fc1/weight`); module buffers become
//! non-trainable variables; every other tensor the code reads (constants it made on the way)
//! becomes a graph constant. Reshape targets are rewritten so that the batch dimension is `-1`.
//!
//! What tracing cannot see: control flow (the branch taken for the example is recorded), and
//! values computed outside the op vocabulary (e.g. read with `to_vec` and turned back into a
//! tensor) become constants.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tandem_eager::nn::Module;
use tandem_eager::{no_grad, set_op_observer, OpObserver, Tensor as EagerTensor};
use tandem_graph::{Graph, Initializer, Output};
use tandem_ir::{Emit, Op};
use tandem_tensor::{Error, Result};

/// The result of [`trace`]: a graph and its inputs, outputs and parameters.
#[derive(Clone, Debug)]
pub struct Traced {
    /// The recorded graph.
    pub graph: Graph,
    /// One placeholder per example input (batch dimension unknown).
    pub inputs: Vec<Output>,
    /// The values the traced function returned.
    pub outputs: Vec<Output>,
    /// The variables, with their eager (dotted) names, in the order they were first used.
    pub params: Vec<(String, Output)>,
}

impl Traced {
    /// The variable of a parameter by its eager (dotted) name.
    pub fn param(&self, name: &str) -> Option<&Output> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, o)| o)
    }
}

/// Options of [`trace_with`].
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    /// Placeholder names, one per input (default: `input` for one input, else `input_0`, ...).
    pub input_names: Vec<String>,
    /// Named parameters: `(dotted name, tensor, trainable)`. Leaves that require grad and are
    /// not listed become `param_0`, `param_1`, ...
    pub params: Vec<(String, EagerTensor, bool)>,
}

impl TraceOptions {
    /// Options naming the parameters and buffers of a module (buffers are not trainable).
    pub fn for_module(module: &dyn Module) -> TraceOptions {
        let mut params: Vec<(String, EagerTensor, bool)> = module
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (n, t, true))
            .collect();
        params.extend(
            module
                .named_buffers()
                .into_iter()
                .map(|(n, t)| (n, t, false)),
        );
        TraceOptions {
            input_names: Vec::new(),
            params,
        }
    }
}

/// `fc1.weight` -> `fc1/weight` (eager name to graph name).
pub fn graph_name(eager_name: &str) -> String {
    eager_name.replace('.', "/")
}

/// `fc1/weight` -> `fc1.weight` (graph name to eager name).
pub fn eager_name(graph_name: &str) -> String {
    graph_name.replace('/', ".")
}

struct State {
    /// Graph value of every tensor seen, with the tensor kept alive so its id stays unique.
    values: HashMap<usize, (Output, EagerTensor)>,
    /// Named parameters by tensor id: (dotted name, trainable).
    names: HashMap<usize, (String, bool)>,
    params: Vec<(String, Output)>,
    unnamed: usize,
    batch: Option<usize>,
    error: Option<Error>,
}

struct Tracer {
    graph: Graph,
    state: RefCell<State>,
}

impl Tracer {
    fn resolve(&self, st: &mut State, t: &EagerTensor) -> Result<Output> {
        let id = t.trace_id();
        if let Some((o, _)) = st.values.get(&id) {
            return Ok(o.clone());
        }
        let named = st.names.get(&id).cloned();
        let out = match named {
            Some((name, trainable)) => {
                let v = t.value();
                let (shape, dtype) = (v.shape().to_vec(), v.dtype());
                let o = self.graph.variable_with(
                    &graph_name(&name),
                    &shape,
                    dtype,
                    Initializer::Constant(v),
                    trainable,
                )?;
                st.params.push((name, o.clone()));
                o
            }
            None if t.is_leaf() && t.requires_grad() => {
                let name = format!("param_{}", st.unnamed);
                st.unnamed += 1;
                let o = self.graph.variable(&name, t.value())?;
                st.params.push((name, o.clone()));
                o
            }
            None => self.graph.constant(t.value())?,
        };
        st.values.insert(id, (out.clone(), t.clone()));
        Ok(out)
    }

    fn record(
        &self,
        st: &mut State,
        op: &Op,
        inputs: &[&EagerTensor],
        output: &EagerTensor,
    ) -> Result<()> {
        let mut ins = Vec::with_capacity(inputs.len());
        for t in inputs {
            ins.push(self.resolve(st, t)?);
        }
        let op = match op {
            Op::Reshape(_) => {
                let dynamic = ins
                    .first()
                    .is_some_and(|o| o.shape().iter().any(Option::is_none));
                let dims = output.dims();
                let mut target: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
                if dynamic && st.batch.is_some() && dims.first().copied() == st.batch {
                    if let Some(first) = target.first_mut() {
                        *first = -1;
                    }
                }
                Op::Reshape(target)
            }
            other => other.clone(),
        };
        let refs: Vec<&Output> = ins.iter().collect();
        let out = self.graph.emit(op, &refs)?;
        st.values.insert(output.trace_id(), (out, output.clone()));
        Ok(())
    }
}

impl OpObserver for Tracer {
    fn observe(&self, op: &Op, inputs: &[&EagerTensor], output: &EagerTensor) {
        let mut st = self.state.borrow_mut();
        if st.error.is_some() {
            return;
        }
        if let Err(e) = self.record(&mut st, op, inputs, output) {
            st.error = Some(e.context(format!("tracing `{}`", op.name())));
        }
    }
}

/// Restores the previous observer even when the traced code panics.
struct ObserverGuard(Option<Option<Rc<dyn OpObserver>>>);

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            set_op_observer(prev);
        }
    }
}

/// Traces a one-input, one-output function: `trace(|x| model.forward(x), &example)`.
/// Leaves that require grad become variables `param_0`, ... (use [`trace_module`] or
/// [`trace_with`] for named parameters).
pub fn trace<F>(f: F, example: &EagerTensor) -> Result<Traced>
where
    F: FnOnce(&EagerTensor) -> Result<EagerTensor>,
{
    trace_with(
        |xs| {
            let x = xs
                .first()
                .ok_or_else(|| Error::invalid("trace", "no example input"))?;
            Ok(vec![f(x)?])
        },
        std::slice::from_ref(example),
        TraceOptions::default(),
    )
}

/// Traces `module.forward` on an example batch; variables get the module's names
/// (`fc1/weight` for `fc1.weight`).
pub fn trace_module(module: &dyn Module, example: &EagerTensor) -> Result<Traced> {
    trace_with(
        |xs| {
            let x = xs
                .first()
                .ok_or_else(|| Error::invalid("trace", "no example input"))?;
            Ok(vec![module.forward(x)?])
        },
        std::slice::from_ref(example),
        TraceOptions::for_module(module),
    )
}

/// Traces a function of several inputs with several outputs. The function runs once, eagerly
/// (under `no_grad`), on `examples`; every op it emits on this thread is recorded.
pub fn trace_with<F>(f: F, examples: &[EagerTensor], options: TraceOptions) -> Result<Traced>
where
    F: FnOnce(&[EagerTensor]) -> Result<Vec<EagerTensor>>,
{
    let graph = Graph::new();
    let batch = examples.first().and_then(|x| x.dims().first().copied());
    let mut state = State {
        values: HashMap::new(),
        names: HashMap::new(),
        params: Vec::new(),
        unnamed: 0,
        batch,
        error: None,
    };
    for (name, t, trainable) in &options.params {
        state.names.insert(t.trace_id(), (name.clone(), *trainable));
    }
    // Fresh handles for the inputs: the caller's tensors may also be used as constants.
    let inputs: Vec<EagerTensor> = examples
        .iter()
        .map(|x| EagerTensor::from_value(x.value()))
        .collect();
    let mut placeholders = Vec::with_capacity(inputs.len());
    for (i, x) in inputs.iter().enumerate() {
        let name = match options.input_names.get(i) {
            Some(n) => n.clone(),
            None if inputs.len() == 1 => "input".to_string(),
            None => format!("input_{i}"),
        };
        let mut dims: Vec<Option<usize>> = x.dims().iter().map(|&d| Some(d)).collect();
        if let Some(first) = dims.first_mut() {
            *first = None;
        }
        let ph = graph.placeholder(&name, x.dtype(), &dims)?;
        state.values.insert(x.trace_id(), (ph.clone(), x.clone()));
        placeholders.push(ph);
    }
    let tracer = Rc::new(Tracer {
        graph: graph.clone(),
        state: RefCell::new(state),
    });
    let results = {
        let _ng = no_grad();
        let _guard = ObserverGuard(Some(set_op_observer(Some(tracer.clone()))));
        f(&inputs)?
    };
    let mut st = tracer.state.borrow_mut();
    if let Some(e) = st.error.take() {
        return Err(e);
    }
    let mut outputs = Vec::with_capacity(results.len());
    for r in &results {
        outputs.push(tracer.resolve(&mut st, r)?);
    }
    let params = std::mem::take(&mut st.params);
    // Keep the named tensors alive until here (their ids were used as keys).
    drop(options);
    Ok(Traced {
        graph,
        inputs: placeholders,
        outputs,
        params,
    })
}
