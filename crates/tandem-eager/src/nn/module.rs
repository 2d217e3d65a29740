//! The [`Module`] trait: forward, parameters with PyTorch's dotted names, buffers,
//! train/eval, and state dicts (to and from safetensors files with PyTorch's names).

use crate::tensor::{Tensor, Value};
use std::collections::HashMap;
use std::path::Path;
use tandem_tensor::{Device, Error, Result};

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A neural-network layer or model, like `torch.nn.Module`.
///
/// Implement [`forward`](Module::forward), and list the module's own parameters
/// ([`local_parameters`](Module::local_parameters)), buffers
/// ([`local_buffers`](Module::local_buffers)) and sub-modules
/// ([`children`](Module::children)); the rest (`named_parameters`, `state_dict`,
/// `load_state_dict`, `train`, `eval`, saving) is provided.
///
/// ```
/// use tandem_eager::nn::{Linear, Module};
/// use tandem_eager::{Result, Tensor};
///
/// struct SimpleNet { fc1: Linear, fc2: Linear }
/// impl Module for SimpleNet {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         self.fc2.forward(&self.fc1.forward(x)?.relu()?)
///     }
///     fn children(&self) -> Vec<(String, &dyn Module)> {
///         vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
///     }
/// }
/// let net = SimpleNet { fc1: Linear::new(4, 3, true)?, fc2: Linear::new(3, 2, true)? };
/// let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// # Ok::<(), tandem_eager::Error>(())
/// ```
pub trait Module: Send + Sync {
    /// Applies the module.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// This module's own parameters (not its children's), in registration order.
    fn local_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// This module's own buffers (state that is saved but not trained, e.g. running stats).
    fn local_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The sub-modules with their attribute names.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// Sets this module's own training flag (modules without one ignore it).
    fn set_training_local(&self, _training: bool) {}

    /// Sets the training flag of this module and all its descendants.
    fn set_training(&self, training: bool) {
        self.set_training_local(training);
        for (_, c) in self.children() {
            c.set_training(training);
        }
    }

    /// Training mode (dropout active, batch norm uses and updates batch statistics).
    fn train(&self) {
        self.set_training(true);
    }

    /// Evaluation mode.
    fn eval(&self) {
        self.set_training(false);
    }

    /// All parameters with dotted names (`fc1.weight`, `features.0.bias`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        collect(self, "", &mut out, false);
        out
    }

    /// All parameters.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// All buffers with dotted names.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        collect_buffers(self, "", &mut out);
        out
    }

    /// Parameters and buffers in PyTorch's `state_dict` order (each module's parameters, then
    /// its buffers, then its children), as plain tensors.
    fn state_dict(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        collect(self, "", &mut out, true);
        out.into_iter().map(|(n, t)| (n, t.value())).collect()
    }

    /// Loads a state dict. Every entry is checked first (missing keys, unexpected keys when
    /// `strict`, shapes and dtypes); on any error nothing is changed.
    fn load_state_dict(&self, state: &[(String, Value)], strict: bool) -> Result<()> {
        let mut targets = Vec::new();
        collect(self, "", &mut targets, true);
        let given: HashMap<&str, &Value> = state.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut plan = Vec::with_capacity(targets.len());
        let mut missing = Vec::new();
        for (name, t) in &targets {
            match given.get(name.as_str()) {
                None => missing.push(name.clone()),
                Some(v) => {
                    let (want, got) = (t.dims(), v.shape().to_vec());
                    if want != got {
                        return Err(Error::ShapeMismatch {
                            op: "load_state_dict",
                            lhs: got,
                            rhs: want,
                            hint: format!(
                                "parameter `{name}` in the state dict has a different shape \
                                 than in the model (state dict vs model)"
                            ),
                        }
                        .context(name.clone()));
                    }
                    if v.dtype() != t.dtype() {
                        return Err(Error::DTypeMismatch {
                            op: "load_state_dict",
                            expected: format!("{} for `{name}`", t.dtype()),
                            got: v.dtype(),
                        }
                        .context(name.clone()));
                    }
                    plan.push((t.clone(), (*v).clone()));
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::invalid(
                "load_state_dict",
                format!("missing keys in the state dict: {}", missing.join(", ")),
            ));
        }
        if strict {
            let known: std::collections::HashSet<&str> =
                targets.iter().map(|(n, _)| n.as_str()).collect();
            let unexpected: Vec<&str> = state
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !known.contains(k))
                .collect();
            if !unexpected.is_empty() {
                return Err(Error::invalid(
                    "load_state_dict",
                    format!(
                        "unexpected keys in the state dict: {}",
                        unexpected.join(", ")
                    ),
                ));
            }
        }
        let mut owned = Vec::with_capacity(plan.len());
        for (t, v) in plan {
            // Own the new value (so that later in-place updates never write into the caller's),
            // on the device the model lives on.
            let dev = t.device();
            let v = if v.device() == dev {
                v.copy()?
            } else {
                v.to_device(dev)?
            };
            owned.push((t, v));
        }
        for (t, v) in owned {
            t.set_value(v)?;
        }
        Ok(())
    }

    /// Moves every parameter and buffer (and any accumulated gradient) to `device`, like
    /// PyTorch's `model.to(device)`. The tensors stay the same tensors: names, leaf status and
    /// `requires_grad` are kept, and an optimizer built over the parameters before the move
    /// keeps working (its state follows the parameters at the next step). Everything is copied
    /// first; on error nothing is changed.
    ///
    /// ```
    /// use tandem_eager::nn::{Linear, Module};
    /// use tandem_eager::Device;
    /// let mut fc = Linear::new(4, 2, true)?;
    /// fc.to_device(Device::Cpu)?; // `Device::Cuda(0)` with the `cuda` feature and a GPU
    /// assert!(fc.parameters().iter().all(|p| p.device() == Device::Cpu && p.requires_grad()));
    /// # Ok::<(), tandem_eager::Error>(())
    /// ```
    fn to_device(&mut self, device: Device) -> Result<()> {
        let mut all = Vec::new();
        collect(&*self, "", &mut all, true);
        let mut moved = Vec::with_capacity(all.len());
        for (name, t) in all {
            if t.device() == device {
                continue;
            }
            let v = t
                .value()
                .to_device(device)
                .map_err(|e| e.context(format!("moving `{name}`")))?;
            let g = match t.grad() {
                Some(g) => Some(crate::Tensor::from_value(g.value().to_device(device)?)),
                None => None,
            };
            moved.push((t, v, g));
        }
        for (t, v, g) in moved {
            t.update_value(|cur| {
                *cur = v;
                Ok(())
            })?;
            t.set_grad(g)?;
        }
        Ok(())
    }

    /// The device of the first parameter or buffer (`None` for a module without any).
    fn device(&self) -> Option<Device> {
        let mut all = Vec::new();
        collect(self, "", &mut all, true);
        all.first().map(|(_, t)| t.device())
    }

    /// Saves the state dict as a safetensors file (PyTorch's names and layouts).
    fn save_safetensors(&self, path: &Path) -> Result<()> {
        let sd = self.state_dict();
        let refs: Vec<(&str, &Value)> = sd.iter().map(|(n, v)| (n.as_str(), v)).collect();
        tandem_tensor::io::safetensors::save(path, &refs, None)
    }

    /// Loads a safetensors state dict (strict); the model is unchanged on error.
    fn load_safetensors(&self, path: &Path) -> Result<()> {
        let sd = tandem_tensor::io::safetensors::load(path)?;
        self.load_state_dict(&sd, true)
            .map_err(|e| e.context(path.display().to_string()))
    }
}

fn collect<M: Module + ?Sized>(
    m: &M,
    prefix: &str,
    out: &mut Vec<(String, Tensor)>,
    buffers: bool,
) {
    for (n, t) in m.local_parameters() {
        out.push((join(prefix, &n), t));
    }
    if buffers {
        for (n, t) in m.local_buffers() {
            out.push((join(prefix, &n), t));
        }
    }
    for (n, c) in m.children() {
        collect(c, &join(prefix, &n), out, buffers);
    }
}

fn collect_buffers<M: Module + ?Sized>(m: &M, prefix: &str, out: &mut Vec<(String, Tensor)>) {
    for (n, t) in m.local_buffers() {
        out.push((join(prefix, &n), t));
    }
    for (n, c) in m.children() {
        collect_buffers(c, &join(prefix, &n), out);
    }
}
