//! [`Sequential`]: a stack of layers compiled to one graph, trained with a [`Session`].

use super::layers::Layer;
use super::losses::Loss;
use crate::graph::{Graph, Output};
use crate::optim::{Adam, AdamW, GradientDescent, Momentum, Optimizer, RmsProp};
use crate::saver::Saver;
use crate::session::{Callable, Session};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use tandem_tensor::{DType, Device, Error, Result, Tensor};

/// The optimizer argument of [`Sequential::compile`]: a Keras name (`adam`, `sgd`,
/// `rmsprop`, `adamw`, with Keras' default learning rates) or an optimizer object.
#[derive(Clone)]
pub enum OptimizerSpec {
    /// By name.
    Named(String),
    /// A configured optimizer.
    Custom(Arc<dyn Optimizer + Send + Sync>),
}

impl From<&str> for OptimizerSpec {
    fn from(s: &str) -> Self {
        OptimizerSpec::Named(s.to_string())
    }
}

macro_rules! optimizer_spec_from {
    ($($t:ty),*) => {$(
        impl From<$t> for OptimizerSpec {
            fn from(o: $t) -> Self {
                OptimizerSpec::Custom(Arc::new(o))
            }
        }
    )*};
}
optimizer_spec_from!(Adam, AdamW, GradientDescent, Momentum, RmsProp);

impl OptimizerSpec {
    fn resolve(self) -> Result<Arc<dyn Optimizer + Send + Sync>> {
        let name = match self {
            OptimizerSpec::Custom(o) => return Ok(o),
            OptimizerSpec::Named(n) => n,
        };
        Ok(match name.to_ascii_lowercase().as_str() {
            "adam" => Arc::new(Adam {
                eps: 1e-7,
                ..Adam::new(1e-3)
            }),
            "adamw" => Arc::new(AdamW {
                eps: 1e-7,
                weight_decay: 4e-3,
                ..AdamW::new(1e-3)
            }),
            "sgd" => Arc::new(GradientDescent::new(1e-2)),
            "rmsprop" => Arc::new(RmsProp {
                alpha: 0.9,
                eps: 1e-7,
                ..RmsProp::new(1e-3)
            }),
            other => {
                return Err(Error::invalid(
                    "keras",
                    format!("unknown optimizer `{other}` (adam, adamw, sgd, rmsprop)"),
                ))
            }
        })
    }
}

/// The loss argument of [`Sequential::compile`]: a Keras name or a [`Loss`].
#[derive(Clone, Debug)]
pub enum LossSpec {
    /// By name (`from_logits = false`).
    Named(String),
    /// A loss value (e.g. `Loss::SparseCategoricalCrossentropy { from_logits: true }`).
    Loss(Loss),
}

impl From<&str> for LossSpec {
    fn from(s: &str) -> Self {
        LossSpec::Named(s.to_string())
    }
}

impl From<Loss> for LossSpec {
    fn from(l: Loss) -> Self {
        LossSpec::Loss(l)
    }
}

/// Settings of [`Sequential::fit`] (builder style; defaults as in Keras: 1 epoch, batch 32,
/// shuffled, progress bar on).
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Passes over the data.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Data evaluated after every epoch (`val_loss`, `val_accuracy`).
    pub validation_data: Option<(Tensor, Tensor)>,
    /// Shuffle the samples every epoch.
    pub shuffle: bool,
    /// Seed of the shuffling.
    pub seed: u64,
    /// Show a progress bar and print one line per epoch.
    pub verbose: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            validation_data: None,
            shuffle: true,
            seed: 0,
            verbose: true,
        }
    }
}

impl FitOptions {
    /// The defaults.
    pub fn new() -> FitOptions {
        FitOptions::default()
    }
    /// Sets the number of epochs.
    pub fn epochs(mut self, n: usize) -> Self {
        self.epochs = n;
        self
    }
    /// Sets the batch size.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// Sets validation inputs and labels.
    pub fn validation_data(mut self, x: Tensor, y: Tensor) -> Self {
        self.validation_data = Some((x, y));
        self
    }
    /// Turns shuffling on or off.
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }
    /// Sets the shuffling seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Turns the progress bar and per-epoch lines on or off.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }
}

/// What [`Sequential::fit`] returns: one value per epoch for each of `loss`, `accuracy` (when
/// compiled with it), `val_loss` and `val_accuracy` (with validation data).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Metric name to per-epoch values.
    pub history: HashMap<String, Vec<f64>>,
}

impl History {
    /// The per-epoch values of a metric (`loss`, `accuracy`, `val_loss`, `val_accuracy`).
    pub fn get(&self, metric: &str) -> Option<&[f64]> {
        self.history.get(metric).map(Vec::as_slice)
    }
    /// The per-epoch training loss.
    pub fn loss(&self) -> &[f64] {
        self.get("loss").unwrap_or(&[])
    }
    fn push(&mut self, metric: &str, v: f64) {
        self.history.entry(metric.to_string()).or_default().push(v);
    }
}

/// What [`Sequential::evaluate`] returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss over the samples.
    pub loss: f64,
    /// Fraction of correct predictions (when compiled with `accuracy`).
    pub accuracy: Option<f64>,
}

struct Compiled {
    optimizer: Arc<dyn Optimizer + Send + Sync>,
    loss: Loss,
    accuracy: bool,
}

struct Training {
    loss: Loss,
    accuracy: bool,
    train: Callable,
    eval: Callable,
}

struct Built {
    graph: Graph,
    input: Vec<usize>,
    shapes: Vec<Vec<usize>>,
    names: Vec<String>,
    x: Output,
    train_out: Output,
    infer_out: Output,
    session: Session,
    predict: Callable,
    training: Option<Training>,
}

/// A linear stack of layers (`tf.keras.Sequential`) built on graph mode: the layers become
/// one [`Graph`] (forward for training and for inference, loss, gradients, optimizer
/// updates), and [`Callable`]s run the training and evaluation steps.
///
/// ```
/// use tandem_graph::keras::{Dense, FitOptions, Sequential};
/// use tandem_tensor::Tensor;
/// let mut model = Sequential::new(vec![Box::new(Dense::new(8).activation("relu")), Box::new(Dense::new(1))]);
/// model.compile("adam", "mse", &[]).unwrap();
/// let x = Tensor::from_vec((0..64).map(|i| i as f32 / 64.0).collect(), &[64, 1]).unwrap();
/// let y = Tensor::from_vec((0..64).map(|i| 2.0 * i as f32 / 64.0 + 1.0).collect(), &[64, 1]).unwrap();
/// let h = model.fit(&x, &y, &FitOptions::new().epochs(2).verbose(false)).unwrap();
/// assert_eq!(h.loss().len(), 2);
/// ```
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    input_shape: Option<Vec<usize>>,
    seed: u64,
    device: Device,
    compiled: Option<Compiled>,
    built: Option<Built>,
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.layers.iter().map(|l| l.type_name()).collect();
        f.debug_struct("Sequential")
            .field("layers", &kinds)
            .field("input_shape", &self.input_shape)
            .field("built", &self.built.is_some())
            .finish()
    }
}

fn keras_err(msg: impl Into<String>) -> Error {
    Error::invalid("keras", msg)
}

impl Sequential {
    /// A model from layers, e.g. `Sequential::new(vec![Box::new(Dense::new(10)), ...])`.
    pub fn new(layers: Vec<Box<dyn Layer>>) -> Sequential {
        Sequential {
            layers,
            input_shape: None,
            seed: 0,
            device: Device::Cpu,
            compiled: None,
            built: None,
        }
    }

    /// Appends a layer (`model.add(...)`); only before the model is built.
    pub fn add(&mut self, layer: impl Layer + 'static) -> Result<()> {
        if self.built.is_some() {
            return Err(keras_err(
                "cannot add a layer to a model that is already built",
            ));
        }
        self.layers.push(Box::new(layer));
        Ok(())
    }

    /// Gives the per-sample input shape (e.g. `[784]` or `[1, 28, 28]`) so the model can be
    /// built before the first `fit`; otherwise it is taken from the first data it sees.
    pub fn input_shape(mut self, shape: &[usize]) -> Sequential {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// Sets the seed of the weight initialization and dropout (default 0).
    pub fn seed(mut self, seed: u64) -> Sequential {
        self.seed = seed;
        self
    }

    /// Places the model on `device` (default the CPU; `Device::Cuda(0)` with the `cuda`
    /// feature): its sessions keep the weights and optimizer slots there and run every step
    /// on it, like `with tf.device(...)` around a Keras model. `fit`, `evaluate` and `predict`
    /// still take host tensors (each batch is copied once) and `predict` returns a host tensor.
    /// Only before the model is built (by `compile` with an input shape, or the first data it
    /// sees); a device that cannot be used fails when the model is built.
    pub fn device(mut self, device: Device) -> Sequential {
        self.device = device;
        self
    }

    /// Configures training: optimizer (`"adam"`, `"sgd"`, `"rmsprop"`, `"adamw"` or an
    /// optimizer such as `Adam::new(1e-3)`), loss (`"mse"`,
    /// `"sparse_categorical_crossentropy"`, `"categorical_crossentropy"`,
    /// `"binary_crossentropy"` or a [`Loss`] with `from_logits`) and metrics (`["accuracy"]`).
    pub fn compile(
        &mut self,
        optimizer: impl Into<OptimizerSpec>,
        loss: impl Into<LossSpec>,
        metrics: &[&str],
    ) -> Result<()> {
        let optimizer = optimizer.into().resolve()?;
        let loss = match loss.into() {
            LossSpec::Named(n) => Loss::parse(&n)?,
            LossSpec::Loss(l) => l,
        };
        let mut accuracy = false;
        for m in metrics {
            match *m {
                "accuracy" | "acc" => accuracy = true,
                other => return Err(keras_err(format!("unknown metric `{other}` (accuracy)"))),
            }
        }
        if accuracy && loss == Loss::MeanSquaredError {
            return Err(keras_err(
                "metric `accuracy` needs a classification loss, not mse",
            ));
        }
        self.compiled = Some(Compiled {
            optimizer,
            loss,
            accuracy,
        });
        if let Some(b) = self.built.as_mut() {
            b.training = None;
        }
        if let Some(shape) = self.input_shape.clone() {
            self.ensure_built(&shape)?;
        }
        Ok(())
    }

    /// Builds the forward graph for a per-sample input shape (if not yet built) and the
    /// training part (if compiled and not yet built).
    fn ensure_built(&mut self, input: &[usize]) -> Result<()> {
        if let Some(b) = &self.built {
            if b.input != input {
                return Err(keras_err(format!(
                    "the model was built for inputs of shape [N, {}], got [N, {}]",
                    dims(&b.input),
                    dims(input)
                )));
            }
        } else {
            self.built = Some(self.build_forward(input)?);
        }
        let Some(c) = &self.compiled else {
            return Ok(());
        };
        let Some(b) = self.built.as_mut() else {
            return Ok(());
        };
        if b.training.is_none() {
            build_training(b, c)?;
        }
        Ok(())
    }

    fn build_forward(&mut self, input: &[usize]) -> Result<Built> {
        if self.layers.is_empty() {
            return Err(keras_err("the model has no layers"));
        }
        if input.is_empty() || input.contains(&0) {
            return Err(keras_err(format!(
                "inputs need a non-empty shape per sample, got [N, {}]",
                dims(input)
            )));
        }
        let g = Graph::new();
        g.set_seed(self.seed)?;
        let mut shape_in: Vec<Option<usize>> = vec![None];
        shape_in.extend(input.iter().map(|&d| Some(d)));
        let x = g.placeholder("input", DType::F32, &shape_in)?;
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        let mut shapes = Vec::with_capacity(self.layers.len());
        let mut names = Vec::with_capacity(self.layers.len());
        let mut cur = input.to_vec();
        for layer in self.layers.iter_mut() {
            let base = layer.base_name();
            let k = counts.entry(base).or_insert(0);
            let name = if *k == 0 {
                base.to_string()
            } else {
                format!("{base}_{k}")
            };
            *k += 1;
            cur = layer.build(&g, &name, &cur)?;
            shapes.push(cur.clone());
            names.push(name);
        }
        let forward = |training: bool| -> Result<Output> {
            let mut h = x.clone();
            for l in &self.layers {
                h = l.call(&g, &h, training)?;
            }
            Ok(h)
        };
        let train_out = forward(true)?;
        let infer_out = if self.layers.iter().any(|l| l.differs_in_training()) {
            forward(false)?
        } else {
            train_out.clone()
        };
        let session = Session::new_on(&g, self.device)?;
        let predict = session.callable(&[&infer_out], &[&x])?;
        Ok(Built {
            graph: g,
            input: input.to_vec(),
            shapes,
            names,
            x,
            train_out,
            infer_out,
            session,
            predict,
            training: None,
        })
    }

    /// The model's variables (kernels and biases), in layer order.
    pub fn weights(&self) -> Vec<Output> {
        self.layers.iter().flat_map(|l| l.weights()).collect()
    }

    fn built(&self) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| {
            keras_err("the model is not built yet: give `input_shape` or call `fit` first")
        })
    }

    /// The graph the model lives in (built models only).
    pub fn graph(&self) -> Result<&Graph> {
        Ok(&self.built()?.graph)
    }

    /// The session holding the model's weights (built models only).
    pub fn session(&self) -> Result<&Session> {
        Ok(&self.built()?.session)
    }

    /// A table of the layers, their output shapes and parameter counts, like Keras'
    /// `model.summary()` (built models only).
    pub fn summary(&self) -> Result<String> {
        let b = self.built()?;
        let mut s = String::new();
        let line = "-".repeat(64);
        let _ = writeln!(s, "Model: \"sequential\"\n{line}");
        let _ = writeln!(
            s,
            "{:<28}{:<24}{:>12}",
            "Layer (type)", "Output Shape", "Param #"
        );
        let _ = writeln!(s, "{}", "=".repeat(64));
        let mut total = 0usize;
        for ((layer, name), shape) in self.layers.iter().zip(&b.names).zip(&b.shapes) {
            let params: usize = layer
                .weights()
                .iter()
                .map(|w| w.shape().iter().map(|d| d.unwrap_or(0)).product::<usize>())
                .sum();
            total += params;
            let _ = writeln!(
                s,
                "{:<28}{:<24}{:>12}",
                format!("{name} ({})", layer.type_name()),
                format!("(None, {})", dims(shape)),
                params
            );
        }
        let _ = writeln!(s, "{}", "=".repeat(64));
        let _ = writeln!(
            s,
            "Total params: {total}\nTrainable params: {total}\n{line}"
        );
        Ok(s)
    }

    /// Trains on inputs `x` `[N, ...]` and labels `y` (int class indices `[N]` for sparse
    /// cross-entropy, otherwise shaped like the model's output) and returns the per-epoch
    /// history.
    pub fn fit(&mut self, x: &Tensor, y: &Tensor, opts: &FitOptions) -> Result<History> {
        if opts.batch_size == 0 {
            return Err(keras_err("fit: batch_size must be positive"));
        }
        if self.compiled.is_none() {
            return Err(keras_err("fit: call `compile` before `fit`"));
        }
        let n = check_inputs("fit", x)?;
        self.ensure_built(&x.shape()[1..])?;
        let val = match &opts.validation_data {
            Some((vx, vy)) => {
                check_inputs("fit (validation_data)", vx)?;
                Some((vx.cast(DType::F32)?, self.labels(vy, vx.shape()[0])?))
            }
            None => None,
        };
        let y = self.labels(y, n)?;
        let x = x.cast(DType::F32)?;
        let b = self.built()?;
        let t = training(b)?;
        let per_sample = t
            .loss
            .predictions_per_sample(b.shapes.last().map_or(&[], |s| s));
        let mut history = History::default();
        let steps = n.div_ceil(opts.batch_size);
        for epoch in 0..opts.epochs {
            let bar = progress_bar(opts.verbose, steps as u64, epoch, opts.epochs);
            let order = opts.shuffle.then(|| permutation(n, opts.seed, epoch));
            let (mut loss_sum, mut hits) = (0.0f64, 0.0f64);
            for start in (0..n).step_by(opts.batch_size) {
                let len = opts.batch_size.min(n - start);
                let (bx, by) = batch(&x, &y, order.as_deref(), start, len)?;
                let out = t.train.run(&[bx, by])?;
                loss_sum += value(&out, 1)? * len as f64;
                if t.accuracy {
                    hits += value(&out, 2)?;
                }
                bar.inc(1);
                bar.set_message(format!("loss {:.4}", loss_sum / (start + len) as f64));
            }
            bar.finish_and_clear();
            let mut line = format!("epoch {}/{}", epoch + 1, opts.epochs);
            history.push("loss", loss_sum / n as f64);
            let _ = write!(line, ": loss {:.4}", loss_sum / n as f64);
            if t.accuracy {
                let acc = hits / (n * per_sample) as f64;
                history.push("accuracy", acc);
                let _ = write!(line, "  accuracy {acc:.4}");
            }
            if let Some((vx, vy)) = &val {
                let e = evaluate_prepared(t, vx, vy, opts.batch_size, per_sample)?;
                history.push("val_loss", e.loss);
                let _ = write!(line, "  val_loss {:.4}", e.loss);
                if let Some(a) = e.accuracy {
                    history.push("val_accuracy", a);
                    let _ = write!(line, "  val_accuracy {a:.4}");
                }
            }
            if opts.verbose {
                println!("{line}");
            }
        }
        Ok(history)
    }

    /// Mean loss (and accuracy) on `x`, `y` in inference mode (no dropout, no update).
    pub fn evaluate(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Evaluation> {
        if self.compiled.is_none() {
            return Err(keras_err("evaluate: call `compile` first"));
        }
        if batch_size == 0 {
            return Err(keras_err("evaluate: batch_size must be positive"));
        }
        let n = check_inputs("evaluate", x)?;
        self.ensure_built(&x.shape()[1..])?;
        let y = self.labels(y, n)?;
        let x = x.cast(DType::F32)?;
        let b = self.built()?;
        let t = training(b)?;
        let per_sample = t
            .loss
            .predictions_per_sample(b.shapes.last().map_or(&[], |s| s));
        evaluate_prepared(t, &x, &y, batch_size, per_sample)
    }

    /// The model's outputs for `x` `[N, ...]` in inference mode, computed in batches.
    pub fn predict(&mut self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(keras_err("predict: batch_size must be positive"));
        }
        let n = check_inputs("predict", x)?;
        self.ensure_built(&x.shape()[1..])?;
        let x = x.cast(DType::F32)?;
        let b = self.built()?;
        let mut parts = Vec::with_capacity(n.div_ceil(batch_size));
        for start in (0..n).step_by(batch_size) {
            let len = batch_size.min(n - start);
            let out = b.predict.run(&[x.narrow(0, start, len)?])?;
            parts.push(
                out.into_iter()
                    .next()
                    .ok_or_else(|| Error::Graph("predict returned no value".into()))?,
            );
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        Tensor::cat(&refs, 0)?.to_device(Device::Cpu)
    }

    /// Saves the weights to a safetensors file (names like `dense/kernel`).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let b = self.built()?;
        let w = self.weights();
        let refs: Vec<&Output> = w.iter().collect();
        Saver::with_variables(&refs).save_to(&b.session, path)
    }

    /// Loads weights saved by [`Sequential::save_weights`] (checked by name, shape, dtype).
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let b = self.built()?;
        let w = self.weights();
        let refs: Vec<&Output> = w.iter().collect();
        Saver::with_variables(&refs).restore(&b.session, path)
    }

    /// Labels converted for the compiled loss: int64 `[N]` for sparse losses, float32 shaped
    /// like the model's output otherwise.
    fn labels(&self, y: &Tensor, n: usize) -> Result<Tensor> {
        let loss = self
            .compiled
            .as_ref()
            .map(|c| c.loss)
            .ok_or_else(|| keras_err("call `compile` first"))?;
        let out = self.built()?.shapes.last().cloned().unwrap_or_default();
        let ys = y.shape();
        if ys.first() != Some(&n) {
            return Err(keras_err(format!(
                "labels of shape {ys:?} do not match {n} input samples"
            )));
        }
        if loss.sparse_labels() {
            if y.numel() != n {
                return Err(keras_err(format!(
                    "loss `{}` expects integer class labels of shape [{n}] (or [{n}, 1]), got \
                     {ys:?}",
                    loss.name()
                )));
            }
            return y.reshape(&[n as isize])?.cast(DType::I64);
        }
        let mut want = vec![n];
        want.extend(&out);
        if y.numel() != want.iter().product::<usize>() {
            return Err(keras_err(format!(
                "loss `{}` expects labels shaped like the model's output {want:?}, got {ys:?}",
                loss.name()
            )));
        }
        y.reshape_to(&want)?.cast(DType::F32)
    }
}

fn dims(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks an input batch (rank >= 2, at least one sample) and returns the sample count.
fn check_inputs(what: &str, x: &Tensor) -> Result<usize> {
    match x.shape().first() {
        Some(&n) if n > 0 && x.rank() >= 2 => Ok(n),
        _ => Err(keras_err(format!(
            "{what}: inputs need shape [N, ...] with N > 0 and at least one feature \
             dimension, got {:?}",
            x.shape()
        ))),
    }
}

fn training(b: &Built) -> Result<&Training> {
    b.training
        .as_ref()
        .ok_or_else(|| keras_err("call `compile` before training or evaluating"))
}

/// Adds the labels placeholder, loss, accuracy and optimizer updates to the graph and
/// replaces the session (keeping the current weights).
fn build_training(b: &mut Built, c: &Compiled) -> Result<()> {
    let g = &b.graph;
    let out = b.shapes.last().cloned().unwrap_or_default();
    c.loss.check_output(&out)?;
    let y = if c.loss.sparse_labels() {
        g.placeholder("labels", DType::I64, &[None])?
    } else {
        let mut s = vec![None];
        s.extend(out.iter().map(|&d| Some(d)));
        g.placeholder("labels", DType::F32, &s)?
    };
    let (train_loss, train_hits, eval_loss, eval_hits) = {
        let _s = g.scope("loss");
        let tl = c.loss.build(g, &b.train_out, &y)?;
        let el = if b.infer_out.id() == b.train_out.id() {
            tl.clone()
        } else {
            c.loss.build(g, &b.infer_out, &y)?
        };
        let (th, eh) = if c.accuracy {
            let th = c.loss.correct(g, &b.train_out, &y)?;
            let eh = if b.infer_out.id() == b.train_out.id() {
                th.clone()
            } else {
                c.loss.correct(g, &b.infer_out, &y)?
            };
            (Some(th), Some(eh))
        } else {
            (None, None)
        };
        (tl, th, el, eh)
    };
    let weights: Vec<Output> = g.trainable_variables()?;
    let refs: Vec<&Output> = weights.iter().collect();
    let train_op = c.optimizer.minimize_with(&train_loss, &refs)?;
    // New variables (optimizer slots) exist now: a new session on the same device, with the
    // old weights.
    let session = Session::new_on(g, b.session.device())?;
    let mut keep = Vec::new();
    for (v, _) in g.variables()? {
        if let Ok(t) = b.session.variable_value(&v) {
            keep.push((v, t));
        }
    }
    let pairs: Vec<(&Output, Tensor)> = keep.iter().map(|(v, t)| (v, t.clone())).collect();
    session.set_variables(&pairs)?;
    let mut train_fetch: Vec<&Output> = vec![&train_op, &train_loss];
    let mut eval_fetch: Vec<&Output> = vec![&eval_loss];
    if let (Some(th), Some(eh)) = (&train_hits, &eval_hits) {
        train_fetch.push(th);
        eval_fetch.push(eh);
    }
    let train = session.callable(&train_fetch, &[&b.x, &y])?;
    let eval = session.callable(&eval_fetch, &[&b.x, &y])?;
    b.predict = session.callable(&[&b.infer_out], &[&b.x])?;
    b.session = session;
    b.training = Some(Training {
        loss: c.loss,
        accuracy: c.accuracy,
        train,
        eval,
    });
    Ok(())
}

fn evaluate_prepared(
    t: &Training,
    x: &Tensor,
    y: &Tensor,
    batch_size: usize,
    per_sample: usize,
) -> Result<Evaluation> {
    let n = x.shape().first().copied().unwrap_or(0);
    let (mut loss_sum, mut hits) = (0.0f64, 0.0f64);
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let (bx, by) = batch(x, y, None, start, len)?;
        let out = t.eval.run(&[bx, by])?;
        loss_sum += value(&out, 0)? * len as f64;
        if t.accuracy {
            hits += value(&out, 1)?;
        }
    }
    let n = n.max(1) as f64;
    Ok(Evaluation {
        loss: loss_sum / n,
        accuracy: t.accuracy.then(|| hits / (n * per_sample as f64)),
    })
}

fn value(out: &[Tensor], i: usize) -> Result<f64> {
    out.get(i)
        .ok_or_else(|| Error::Graph(format!("a step returned no value {i}")))?
        .item()
}

/// Rows `start..start + len` of `x` and `y`, through `order` when shuffling.
fn batch(
    x: &Tensor,
    y: &Tensor,
    order: Option<&[i64]>,
    start: usize,
    len: usize,
) -> Result<(Tensor, Tensor)> {
    match order {
        None => Ok((x.narrow(0, start, len)?, y.narrow(0, start, len)?)),
        Some(o) => {
            let ids = o
                .get(start..start + len)
                .ok_or_else(|| Error::Graph("batch outside the permutation".into()))?;
            let idx = Tensor::from_vec(ids.to_vec(), &[len])?;
            Ok((x.index_select(0, &idx)?, y.index_select(0, &idx)?))
        }
    }
}

/// A permutation of `0..n` for an epoch (SplitMix64-driven Fisher-Yates).
fn permutation(n: usize, seed: u64, epoch: usize) -> Vec<i64> {
    let mut state = seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

fn progress_bar(verbose: bool, steps: u64, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !verbose {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
}
