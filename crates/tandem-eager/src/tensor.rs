//! The eager [`Tensor`]: a value plus what autograd needs (requires_grad, grad_fn, grad slot).

use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use tandem_ir::Op;
use tandem_tensor::random::with_global_rng;
use tandem_tensor::{DType, Device, Element, Error, Result, Shape};

/// A plain tensor of `tandem-tensor` (no autograd).
pub type Value = tandem_tensor::Tensor;

/// The saved inputs of a recorded op (released after a backward without `retain_graph`).
pub(crate) type Saved = SmallVec<[Tensor; 3]>;

/// What a tensor is: a leaf (created by the user or computed without recording) or the result of
/// a recorded op.
pub(crate) enum Body {
    /// A leaf. Its value can be replaced in place (optimizer steps, `load_state_dict`).
    Leaf {
        value: RwLock<Value>,
        requires_grad: AtomicBool,
        grad: Mutex<Option<Tensor>>,
    },
    /// The result of a recorded op (its grad_fn): immutable and lock-free to read.
    Op {
        value: Value,
        op: Node,
        saved: Mutex<Option<Saved>>,
    },
}

/// What a recorded tensor was computed by: an op of the shared vocabulary, or a copy between
/// devices (eager only: its gradient is the output gradient copied back to `from`).
pub(crate) enum Node {
    /// An op of `tandem-ir` (gradient by the shared rules).
    Op(Op),
    /// `to_device` from the device `from`.
    ToDevice {
        /// The source device (where the gradient goes back to).
        from: Device,
    },
}

impl Node {
    /// The grad_fn name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Node::Op(op) => op.name(),
            Node::ToDevice { .. } => "to_device",
        }
    }
}

pub(crate) struct Inner {
    pub(crate) body: Body,
}

/// An n-dimensional array with autograd, like `torch.Tensor`.
///
/// Cloning is cheap (a reference count) and clones are the same tensor: a parameter held by a
/// module and by an optimizer is one tensor, and an optimizer step updates it for both. Results
/// of ops are immutable; leaves (tensors created directly, and results computed while grad mode
/// is off) can have their value replaced in place by optimizers and `load_state_dict`.
///
/// Every op returns `Result<Tensor>`: shape, dtype and index errors name the op and operands.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

/// A borrowed view of a tensor's value (a read guard for leaves).
pub(crate) enum ValueRef<'a> {
    Plain(&'a Value),
    Guard(RwLockReadGuard<'a, Value>),
}

impl std::ops::Deref for ValueRef<'_> {
    type Target = Value;
    #[inline]
    fn deref(&self) -> &Value {
        match self {
            ValueRef::Plain(v) => v,
            ValueRef::Guard(g) => g,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these mutexes is always valid: keep going after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tensor {
    /// A leaf tensor over a plain value (no copy), not requiring grad.
    pub fn from_value(value: Value) -> Tensor {
        Tensor(Arc::new(Inner {
            body: Body::Leaf {
                value: RwLock::new(value),
                requires_grad: AtomicBool::new(false),
                grad: Mutex::new(None),
            },
        }))
    }

    pub(crate) fn from_op(value: Value, op: Node, inputs: Saved) -> Tensor {
        Tensor(Arc::new(Inner {
            body: Body::Op {
                value,
                op,
                saved: Mutex::new(Some(inputs)),
            },
        }))
    }

    /// A new leaf from a vector and a shape.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_value(Value::from_vec(data, shape)?))
    }

    /// A new leaf copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_value(Value::from_slice(data, shape)?))
    }

    /// A 0-d tensor holding one element.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_value(Value::scalar(v))
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        Tensor::from_value(Value::full(shape, value, dtype))
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_value(Value::zeros(shape, dtype))
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_value(Value::ones(shape, dtype))
    }

    /// `start, start + step, ...` below `end`.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        Ok(Tensor::from_value(Value::arange(start, end, step, dtype)?))
    }

    /// Uniform samples in `[0, 1)` from the global generator (see [`crate::manual_seed`]).
    pub fn rand(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::rand_uniform(shape, 0.0, 1.0, dtype)
    }

    /// Uniform samples in `[low, high)` from the global generator.
    pub fn rand_uniform(shape: &[usize], low: f64, high: f64, dtype: DType) -> Result<Tensor> {
        let v = with_global_rng(|r| Value::rand_uniform(shape, low, high, dtype, r))?;
        Ok(Tensor::from_value(v))
    }

    /// Standard normal samples from the global generator.
    pub fn randn(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::normal(shape, 0.0, 1.0, dtype)
    }

    /// Normal samples with the given mean and standard deviation from the global generator.
    pub fn normal(shape: &[usize], mean: f64, std: f64, dtype: DType) -> Result<Tensor> {
        let v = with_global_rng(|r| Value::randn(shape, mean, std, dtype, r))?;
        Ok(Tensor::from_value(v))
    }

    /// Integers uniform in `[low, high)` from the global generator.
    pub fn randint(shape: &[usize], low: i64, high: i64, dtype: DType) -> Result<Tensor> {
        let v = with_global_rng(|r| Value::randint(shape, low, high, dtype, r))?;
        Ok(Tensor::from_value(v))
    }

    /// Borrows the value (a read guard for leaves).
    #[inline]
    pub(crate) fn value_ref(&self) -> ValueRef<'_> {
        match &self.0.body {
            Body::Op { value, .. } => ValueRef::Plain(value),
            Body::Leaf { value, .. } => {
                ValueRef::Guard(value.read().unwrap_or_else(|p| p.into_inner()))
            }
        }
    }

    /// The underlying plain tensor (shares the storage: no element is copied).
    pub fn value(&self) -> Value {
        self.value_ref().clone()
    }

    /// Replaces the value of a leaf in place (`with torch.no_grad(): p.copy_(v)`), keeping its
    /// grad and `requires_grad`. The new value must have the same shape and dtype.
    pub fn set_value(&self, v: Value) -> Result<()> {
        self.update_value(|cur| {
            if cur.shape() != v.shape() {
                return Err(Error::shape_mismatch("set_value", v.shape(), cur.shape()));
            }
            if cur.dtype() != v.dtype() {
                return Err(Error::DTypeMismatch {
                    op: "set_value",
                    expected: cur.dtype().name().to_string(),
                    got: v.dtype(),
                });
            }
            *cur = v;
            Ok(())
        })
    }

    /// Runs `f` on the value of a leaf with exclusive access (optimizer updates). Fails for
    /// results of recorded ops, which are immutable.
    pub fn update_value<R>(&self, f: impl FnOnce(&mut Value) -> Result<R>) -> Result<R> {
        match &self.0.body {
            Body::Leaf { value, .. } => {
                let mut g = value.write().unwrap_or_else(|p| p.into_inner());
                f(&mut g)
            }
            Body::Op { op, .. } => Err(Error::Autograd(format!(
                "cannot modify the result of `{}` in place: it is part of a recorded graph \
                 (use detach() or compute it under no_grad())",
                op.name()
            ))),
        }
    }

    /// True for leaves (tensors that are not the result of a recorded op).
    pub fn is_leaf(&self) -> bool {
        matches!(self.0.body, Body::Leaf { .. })
    }

    /// True when gradients flow to or through this tensor.
    #[inline]
    pub fn requires_grad(&self) -> bool {
        match &self.0.body {
            Body::Leaf { requires_grad, .. } => requires_grad.load(Ordering::Relaxed),
            Body::Op { .. } => true,
        }
    }

    /// Sets `requires_grad` of a leaf in place and returns the tensor (like
    /// `requires_grad_()`). On the result of a recorded op (which always requires grad) turning
    /// it off has no effect: use [`Tensor::detach`].
    pub fn requires_grad_(self, on: bool) -> Tensor {
        self.set_requires_grad(on);
        self
    }

    /// Sets `requires_grad` of a leaf in place (no effect on results of recorded ops).
    pub fn set_requires_grad(&self, on: bool) {
        if let Body::Leaf { requires_grad, .. } = &self.0.body {
            requires_grad.store(on, Ordering::Relaxed);
        }
    }

    /// The accumulated gradient of a leaf (`None` before any backward, after `zero_grad`, and
    /// for non-leaves).
    pub fn grad(&self) -> Option<Tensor> {
        match &self.0.body {
            Body::Leaf { grad, .. } => lock(grad).clone(),
            Body::Op { .. } => None,
        }
    }

    /// Replaces the gradient of a leaf (`p.grad = g`; `None` clears it). The gradient must
    /// have the leaf's shape.
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        match &self.0.body {
            Body::Leaf { grad, .. } => {
                if let Some(g) = &g {
                    let (gs, s) = (g.shape(), self.shape());
                    if gs != s {
                        return Err(Error::ShapeMismatch {
                            op: "set_grad",
                            lhs: gs.to_vec(),
                            rhs: s.to_vec(),
                            hint: "a gradient must have the tensor's shape".into(),
                        });
                    }
                }
                *lock(grad) = g;
                Ok(())
            }
            Body::Op { op, .. } => Err(Error::Autograd(format!(
                "only leaves hold gradients; this is the result of `{}`",
                op.name()
            ))),
        }
    }

    /// Clears the gradient (`p.grad = None`, PyTorch's default `zero_grad`).
    pub fn zero_grad(&self) {
        if let Body::Leaf { grad, .. } = &self.0.body {
            *lock(grad) = None;
        }
    }

    pub(crate) fn grad_slot(&self) -> Option<&Mutex<Option<Tensor>>> {
        match &self.0.body {
            Body::Leaf { grad, .. } => Some(grad),
            Body::Op { .. } => None,
        }
    }

    /// The name of the op that produced this tensor (`None` for leaves): PyTorch's `grad_fn`.
    pub fn grad_fn(&self) -> Option<&'static str> {
        match &self.0.body {
            Body::Op { op, .. } => Some(op.name()),
            Body::Leaf { .. } => None,
        }
    }

    /// A new leaf sharing this tensor's storage, cut from the graph (`detach()`).
    pub fn detach(&self) -> Tensor {
        Tensor::from_value(self.value())
    }

    /// True when both handles are the same tensor.
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn ptr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        Shape::from_slice(self.value_ref().shape())
    }

    /// The shape as a vector (`tensor.size()`).
    pub fn dims(&self) -> Vec<usize> {
        self.value_ref().shape().to_vec()
    }

    /// The size of one dimension (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        self.value_ref().dim(axis)
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.value_ref().rank()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.value_ref().numel()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.value_ref().dtype()
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.value_ref().device()
    }

    /// The value of a one-element tensor as `f64` (`.item()`).
    pub fn item(&self) -> Result<f64> {
        self.value_ref().item()
    }

    /// The elements in row-major order as a vector of `T` (the dtype must be `T`'s).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.value_ref().to_vec::<T>()
    }

    /// The elements converted to `f64`.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.value_ref().to_f64_vec()
    }

    /// Copies to a device (`tensor.to(device)`); a tensor already there is returned as is.
    /// When the tensor requires grad (and grad mode is on) the copy is recorded: the gradient
    /// of the copy flows back to this tensor as a copy to this tensor's device.
    ///
    /// To move the parameters of a model, use
    /// [`Module::to_device`](crate::nn::Module::to_device), which keeps them leaves.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let from = self.device();
        if device == from {
            return Ok(self.clone());
        }
        let v = self.value_ref().to_device(device)?;
        if self.requires_grad() && crate::mode::is_grad_enabled() && self.dtype().is_float() {
            let mut saved = Saved::new();
            saved.push(self.clone());
            return Ok(Tensor::from_op(v, Node::ToDevice { from }, saved));
        }
        Ok(Tensor::from_value(v))
    }

    /// Copies to GPU 0 (`tensor.cuda()`).
    pub fn cuda(&self) -> Result<Tensor> {
        self.to_device(Device::Cuda(0))
    }

    /// Copies to host memory (`tensor.cpu()`).
    pub fn cpu(&self) -> Result<Tensor> {
        self.to_device(Device::Cpu)
    }

    /// Zeros on `device`.
    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::from_value(Value::zeros_on(shape, dtype, device)?))
    }

    /// Ones on `device`.
    pub fn ones_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::from_value(Value::ones_on(shape, dtype, device)?))
    }

    /// A tensor filled with `value` on `device`.
    pub fn full_on(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::from_value(Value::full_on(
            shape, value, dtype, device,
        )?))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &*self.value_ref())?;
        if let Some(op) = self.grad_fn() {
            write!(f, ", grad_fn={op}")?;
        } else if self.requires_grad() {
            write!(f, ", requires_grad=true")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &*self.value_ref())
    }
}

/// A 0-d float32 tensor (`torch.tensor(3.0)`).
///
/// ```
/// use tandem_eager::tensor;
/// let s = (tensor(3.0) + tensor(4.0)).unwrap();
/// assert_eq!(s.item().unwrap(), 7.0);
/// ```
pub fn tensor(v: f64) -> Tensor {
    Tensor::scalar(v as f32)
}
