//! [`OnnxModel`]: pure inference on plain tensors, importing into [`tandem_ir::Eval`].

use crate::import::{import, parse, parse_file, GraphInput, ImportHooks, ParsedModel};
use tandem_ir::{Dim, Emit, Eval};
use tandem_tensor::{DType, Error, Result, Tensor};

/// [`ImportHooks`] for [`Eval`]: graph inputs take the fed tensors (checked against the
/// declared dtype and dims), initializers become constants.
#[derive(Debug)]
pub struct EvalHooks<'a> {
    feeds: &'a [(String, Tensor)],
}

impl<'a> EvalHooks<'a> {
    /// Hooks feeding the given named tensors.
    pub fn new(feeds: &'a [(String, Tensor)]) -> Self {
        EvalHooks { feeds }
    }
}

impl ImportHooks<Eval> for EvalHooks<'_> {
    fn placeholder(&mut self, _e: &Eval, name: &str, dtype: DType, dims: &[Dim]) -> Result<Tensor> {
        let t = self
            .feeds
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Graph(format!("graph input '{name}' was not fed")))?;
        if t.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                op: "onnx input",
                expected: dtype.name().to_string(),
                got: t.dtype(),
            });
        }
        let ok = t.rank() == dims.len()
            && t.shape()
                .iter()
                .zip(dims)
                .all(|(&s, d)| d.is_none_or(|d| d == s));
        if !ok {
            return Err(Error::BadShape {
                op: "onnx input",
                shape: t.shape().to_vec(),
                msg: format!("expected {}", tandem_ir::infer::fmt_shape(dims)),
            });
        }
        Ok(t.clone())
    }

    fn initializer(&mut self, e: &Eval, _name: &str, tensor: &Tensor) -> Result<Tensor> {
        e.constant(tensor.clone())
    }
}

/// An ONNX model loaded for inference on plain tensors.
///
/// ```no_run
/// use tandem_onnx::OnnxModel;
/// use tandem_tensor::{DType, Tensor};
/// let model = OnnxModel::load("mlp.onnx").unwrap();
/// let x = Tensor::zeros(&[4, 784], DType::F32);
/// let logits = model.run(&[x]).unwrap();
/// assert_eq!(logits[0].shape(), &[4, 10]);
/// ```
#[derive(Clone, Debug)]
pub struct OnnxModel {
    model: ParsedModel,
}

impl OnnxModel {
    /// Reads and validates an `.onnx` file (unsupported ops are reported here, all at once).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<OnnxModel> {
        OnnxModel::new(parse_file(path)?)
    }

    /// Decodes and validates a model held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel> {
        OnnxModel::new(parse(bytes)?)
    }

    /// Wraps an already parsed model.
    pub fn new(model: ParsedModel) -> Result<OnnxModel> {
        let unsupported = model.unsupported_ops();
        if !unsupported.is_empty() {
            let list: Vec<String> = unsupported
                .iter()
                .map(|(n, op)| format!("'{n}' ({op})"))
                .collect();
            return Err(Error::format(
                "onnx",
                format!(
                    "{} unsupported op(s) at opset {}: {}",
                    list.len(),
                    model.opset,
                    list.join(", ")
                ),
            ));
        }
        Ok(OnnxModel { model })
    }

    /// The parsed model (inputs, outputs, initializers, nodes).
    pub fn parsed(&self) -> &ParsedModel {
        &self.model
    }

    /// The graph inputs to feed, in order.
    pub fn inputs(&self) -> &[GraphInput] {
        &self.model.inputs
    }

    /// The graph output names, in order.
    pub fn output_names(&self) -> &[String] {
        &self.model.outputs
    }

    /// Runs the model on tensors given in the order of [`OnnxModel::inputs`]; returns the
    /// outputs in the order of [`OnnxModel::output_names`].
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        if inputs.len() != self.model.inputs.len() {
            return Err(Error::Graph(format!(
                "the model has {} input(s) but {} tensor(s) were given",
                self.model.inputs.len(),
                inputs.len()
            )));
        }
        let feeds: Vec<(String, Tensor)> = self
            .model
            .inputs
            .iter()
            .zip(inputs)
            .map(|(i, t)| (i.name.clone(), t.clone()))
            .collect();
        Ok(self
            .run_named(&feeds)?
            .into_iter()
            .map(|(_, t)| t)
            .collect())
    }

    /// Runs the model on named inputs; returns `(name, tensor)` for every graph output.
    pub fn run_named(&self, feeds: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let e = Eval::default();
        let mut hooks = EvalHooks::new(feeds);
        Ok(import(&self.model, &e, &mut hooks)?.outputs)
    }
}
