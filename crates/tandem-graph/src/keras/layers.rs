//! Keras layers: [`Dense`], [`Conv2D`], [`MaxPool2D`], [`Flatten`], [`Dropout`].
//!
//! A layer is built once for a known per-sample input shape (creating its variables in the
//! model's graph) and then called on graph values, once for training and once for inference
//! (the two calls share the variables; only [`Dropout`] behaves differently).
//! Images are channels-first (`[channels, height, width]` per sample), like PyTorch.

use crate::graph::{Graph, Output};
use crate::init::Initializer;
use tandem_ir::{Emit, EmitExt, Functional};
use tandem_tensor::{Conv2dParams, DType, Error, Pool2dParams, Result};

/// A layer of a [`crate::keras::Sequential`] model.
pub trait Layer: Send + Sync {
    /// The layer's type as shown by `summary()` (`Dense`, `Conv2D`, ...).
    fn type_name(&self) -> &'static str;
    /// The base of the layer's default name (`dense`, `conv2d`, ...).
    fn base_name(&self) -> &'static str;
    /// Creates the layer's variables (under the scope `name`) for a per-sample input shape
    /// and returns the per-sample output shape. Called once, before [`Layer::call`].
    fn build(&mut self, g: &Graph, name: &str, input: &[usize]) -> Result<Vec<usize>>;
    /// Applies the layer to a batch `x` (`training` selects dropout's behavior).
    fn call(&self, g: &Graph, x: &Output, training: bool) -> Result<Output>;
    /// The layer's variables (empty before `build`).
    fn weights(&self) -> Vec<Output>;
    /// True when training and inference differ (so the model builds both).
    fn differs_in_training(&self) -> bool {
        false
    }
}

/// An activation applied after a layer, by its Keras name.
fn activate(g: &Graph, x: Output, activation: &str) -> Result<Output> {
    match activation {
        "linear" | "" => Ok(x),
        "relu" => g.relu(&x),
        "sigmoid" => g.sigmoid(&x),
        "tanh" => g.tanh(&x),
        "softmax" => g.softmax(&x, -1),
        "gelu" => g.gelu(&x, false),
        "silu" | "swish" => g.silu(&x),
        "elu" => g.elu(&x, 1.0),
        "softplus" => g.softplus(&x, 1.0, 20.0),
        other => Err(Error::invalid(
            "keras",
            format!(
                "unknown activation `{other}` (linear, relu, sigmoid, tanh, softmax, gelu, \
                 silu, swish, elu, softplus)"
            ),
        )),
    }
}

fn check_activation(layer: &str, activation: &str) -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(1)])?;
    activate(&g, x, activation)
        .map(|_| ())
        .map_err(|e| e.context(layer.to_string()))
}

fn not_built(layer: &str) -> Error {
    Error::Graph(format!("layer `{layer}` is called before it is built"))
}

fn fmt_shape(s: &[usize]) -> String {
    format!("{s:?}")
}

/// A fully connected layer: `activation(x @ kernel + bias)` with `kernel` `[in, units]`
/// (Glorot uniform) and `bias` `[units]` (zeros), like `tf.keras.layers.Dense`.
#[derive(Clone, Debug)]
pub struct Dense {
    units: usize,
    activation: String,
    use_bias: bool,
    name: String,
    vars: Option<(Output, Option<Output>)>,
}

impl Dense {
    /// A dense layer with `units` outputs and no activation.
    pub fn new(units: usize) -> Dense {
        Dense {
            units,
            activation: "linear".into(),
            use_bias: true,
            name: String::new(),
            vars: None,
        }
    }
    /// Sets the activation by Keras name (`relu`, `sigmoid`, `softmax`, ...).
    pub fn activation(mut self, name: &str) -> Dense {
        self.activation = name.to_string();
        self
    }
    /// Whether to add a bias (default true).
    pub fn use_bias(mut self, on: bool) -> Dense {
        self.use_bias = on;
        self
    }
}

impl Layer for Dense {
    fn type_name(&self) -> &'static str {
        "Dense"
    }
    fn base_name(&self) -> &'static str {
        "dense"
    }
    fn build(&mut self, g: &Graph, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        self.name = name.to_string();
        check_activation(name, &self.activation)?;
        let [inp] = input else {
            return Err(Error::invalid(
                "keras",
                format!(
                    "layer `{name}` (Dense) expects a flat input per sample, got shape {} \
                     (add a Flatten layer before it)",
                    fmt_shape(input)
                ),
            ));
        };
        if self.units == 0 {
            return Err(Error::invalid(
                "keras",
                format!("layer `{name}` (Dense) needs at least one unit"),
            ));
        }
        let _s = g.scope(name);
        let w = g.variable_with(
            "kernel",
            &[*inp, self.units],
            DType::F32,
            Initializer::XavierUniform { seed: None },
            true,
        )?;
        let b = if self.use_bias {
            Some(g.variable_with("bias", &[self.units], DType::F32, Initializer::Zeros, true)?)
        } else {
            None
        };
        self.vars = Some((w, b));
        Ok(vec![self.units])
    }
    fn call(&self, g: &Graph, x: &Output, _training: bool) -> Result<Output> {
        let (w, b) = self.vars.as_ref().ok_or_else(|| not_built(&self.name))?;
        let mut y = g.matmul(x, w).map_err(|e| e.context(self.name.clone()))?;
        if let Some(b) = b {
            y = g.add(&y, b)?;
        }
        activate(g, y, &self.activation)
    }
    fn weights(&self) -> Vec<Output> {
        match &self.vars {
            Some((w, b)) => std::iter::once(w.clone()).chain(b.clone()).collect(),
            None => vec![],
        }
    }
}

/// Padding mode of [`Conv2D`] and [`MaxPool2D`].
fn parse_padding(layer: &str, padding: &str, kernel: usize, stride: usize) -> Result<usize> {
    match padding {
        "valid" => Ok(0),
        "same" if kernel % 2 == 1 && stride == 1 => Ok(kernel / 2),
        "same" => Err(Error::invalid(
            "keras",
            format!(
                "layer `{layer}`: padding `same` needs an odd kernel and stride 1 \
                 (got kernel {kernel}, stride {stride})"
            ),
        )),
        other => Err(Error::invalid(
            "keras",
            format!("layer `{layer}`: unknown padding `{other}` (valid or same)"),
        )),
    }
}

fn image_input<'a>(name: &str, kind: &str, input: &'a [usize]) -> Result<&'a [usize; 3]> {
    <&[usize; 3]>::try_from(input).map_err(|_| {
        Error::invalid(
            "keras",
            format!(
                "layer `{name}` ({kind}) expects images [channels, height, width] per sample, \
                 got shape {}",
                fmt_shape(input)
            ),
        )
    })
}

/// A 2-D convolution over channels-first images, like `tf.keras.layers.Conv2D` with
/// `data_format="channels_first"`: kernel `[filters, in_channels, k, k]` (Glorot uniform),
/// bias `[filters]` (zeros).
#[derive(Clone, Debug)]
pub struct Conv2D {
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: String,
    activation: String,
    name: String,
    pad: usize,
    vars: Option<(Output, Output)>,
}

impl Conv2D {
    /// `filters` output channels with a square `kernel_size` window, stride 1, `valid`
    /// padding and no activation.
    pub fn new(filters: usize, kernel_size: usize) -> Conv2D {
        Conv2D {
            filters,
            kernel: kernel_size,
            stride: 1,
            padding: "valid".into(),
            activation: "linear".into(),
            name: String::new(),
            pad: 0,
            vars: None,
        }
    }
    /// Sets the stride.
    pub fn strides(mut self, s: usize) -> Conv2D {
        self.stride = s;
        self
    }
    /// `valid` (no padding) or `same` (output as large as the input; odd kernels, stride 1).
    pub fn padding(mut self, p: &str) -> Conv2D {
        self.padding = p.to_string();
        self
    }
    /// Sets the activation by Keras name.
    pub fn activation(mut self, name: &str) -> Conv2D {
        self.activation = name.to_string();
        self
    }
}

impl Layer for Conv2D {
    fn type_name(&self) -> &'static str {
        "Conv2D"
    }
    fn base_name(&self) -> &'static str {
        "conv2d"
    }
    fn build(&mut self, g: &Graph, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        self.name = name.to_string();
        check_activation(name, &self.activation)?;
        let &[c, h, w] = image_input(name, "Conv2D", input)?;
        if self.filters == 0 || self.kernel == 0 || self.stride == 0 {
            return Err(Error::invalid(
                "keras",
                format!("layer `{name}` (Conv2D): filters, kernel size and stride must be > 0"),
            ));
        }
        self.pad = parse_padding(name, &self.padding, self.kernel, self.stride)?;
        let p = self.params();
        let [oh, ow] = p.out_size([h, w], [self.kernel; 2]).ok_or_else(|| {
            Error::invalid(
                "keras",
                format!(
                    "layer `{name}` (Conv2D): input {h}x{w} is smaller than the {k}x{k} kernel",
                    k = self.kernel
                ),
            )
        })?;
        let _s = g.scope(name);
        let k = g.variable_with(
            "kernel",
            &[self.filters, c, self.kernel, self.kernel],
            DType::F32,
            Initializer::XavierUniform { seed: None },
            true,
        )?;
        let b = g.variable_with(
            "bias",
            &[self.filters],
            DType::F32,
            Initializer::Zeros,
            true,
        )?;
        self.vars = Some((k, b));
        Ok(vec![self.filters, oh, ow])
    }
    fn call(&self, g: &Graph, x: &Output, _training: bool) -> Result<Output> {
        let (k, b) = self.vars.as_ref().ok_or_else(|| not_built(&self.name))?;
        let y = g
            .conv2d(x, k, Some(b), self.params())
            .map_err(|e| e.context(self.name.clone()))?;
        activate(g, y, &self.activation)
    }
    fn weights(&self) -> Vec<Output> {
        match &self.vars {
            Some((k, b)) => vec![k.clone(), b.clone()],
            None => vec![],
        }
    }
}

impl Conv2D {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: [self.stride; 2],
            padding: [self.pad; 2],
            ..Conv2dParams::default()
        }
    }
}

/// Max pooling over square windows (`tf.keras.layers.MaxPool2D`, channels-first).
#[derive(Clone, Debug)]
pub struct MaxPool2D {
    pool: usize,
    stride: Option<usize>,
    name: String,
}

impl MaxPool2D {
    /// Pooling windows of `pool_size` with stride `pool_size`.
    pub fn new(pool_size: usize) -> MaxPool2D {
        MaxPool2D {
            pool: pool_size,
            stride: None,
            name: String::new(),
        }
    }
    /// Sets the stride (default: the pool size).
    pub fn strides(mut self, s: usize) -> MaxPool2D {
        self.stride = Some(s);
        self
    }
    fn params(&self) -> Pool2dParams {
        Pool2dParams::square(self.pool, self.stride.unwrap_or(self.pool), 0)
    }
}

impl Layer for MaxPool2D {
    fn type_name(&self) -> &'static str {
        "MaxPool2D"
    }
    fn base_name(&self) -> &'static str {
        "max_pooling2d"
    }
    fn build(&mut self, _g: &Graph, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        self.name = name.to_string();
        let &[c, h, w] = image_input(name, "MaxPool2D", input)?;
        let s = self.stride.unwrap_or(self.pool);
        if self.pool == 0 || s == 0 || h < self.pool || w < self.pool {
            return Err(Error::invalid(
                "keras",
                format!(
                    "layer `{name}` (MaxPool2D): pool {} with stride {s} does not fit a {h}x{w} \
                     input",
                    self.pool
                ),
            ));
        }
        Ok(vec![c, (h - self.pool) / s + 1, (w - self.pool) / s + 1])
    }
    fn call(&self, g: &Graph, x: &Output, _training: bool) -> Result<Output> {
        g.max_pool2d(x, self.params())
            .map_err(|e| e.context(self.name.clone()))
    }
    fn weights(&self) -> Vec<Output> {
        vec![]
    }
}

/// Flattens each sample to a vector (`tf.keras.layers.Flatten`).
#[derive(Clone, Debug, Default)]
pub struct Flatten {
    name: String,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Flatten {
        Flatten::default()
    }
}

impl Layer for Flatten {
    fn type_name(&self) -> &'static str {
        "Flatten"
    }
    fn base_name(&self) -> &'static str {
        "flatten"
    }
    fn build(&mut self, _g: &Graph, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        self.name = name.to_string();
        Ok(vec![input.iter().product()])
    }
    fn call(&self, g: &Graph, x: &Output, _training: bool) -> Result<Output> {
        if g.rank(x) <= 2 {
            return Ok(x.clone());
        }
        g.flatten(x, 1, -1)
            .map_err(|e| e.context(self.name.clone()))
    }
    fn weights(&self) -> Vec<Output> {
        vec![]
    }
}

/// Zeroes a fraction `rate` of the values during training and scales the rest by
/// `1 / (1 - rate)`; does nothing at inference (`tf.keras.layers.Dropout`).
#[derive(Clone, Debug)]
pub struct Dropout {
    rate: f64,
    name: String,
}

impl Dropout {
    /// Dropout with probability `rate` in `[0, 1)`.
    pub fn new(rate: f64) -> Dropout {
        Dropout {
            rate,
            name: String::new(),
        }
    }
}

impl Layer for Dropout {
    fn type_name(&self) -> &'static str {
        "Dropout"
    }
    fn base_name(&self) -> &'static str {
        "dropout"
    }
    fn build(&mut self, _g: &Graph, name: &str, input: &[usize]) -> Result<Vec<usize>> {
        self.name = name.to_string();
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::invalid(
                "keras",
                format!(
                    "layer `{name}` (Dropout): rate {} is outside [0, 1)",
                    self.rate
                ),
            ));
        }
        Ok(input.to_vec())
    }
    fn call(&self, g: &Graph, x: &Output, training: bool) -> Result<Output> {
        let _s = g.scope(&self.name);
        g.dropout(x, self.rate, training)
    }
    fn weights(&self) -> Vec<Output> {
        vec![]
    }
    fn differs_in_training(&self) -> bool {
        self.rate > 0.0
    }
}
