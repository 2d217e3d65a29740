//! `--export-onnx PATH`: the trained model as ONNX with input `input` `float32 [N, 784]`
//! (pixels in [0, 1]) and output `logits` `[N, 10]`. The model is traced into a graph
//! (`tandem::interop::trace_with`) wrapped so that any normalization and the reshape to
//! images happen inside the file.

use crate::ModelKind;
use std::path::Path;
use tandem::eager::nn::Module;
use tandem::eager::{DType, Result, Tensor};
use tandem::interop::{export_onnx, trace_with, TraceOptions, Traced};

/// MNIST's mean pixel (after scaling to [0, 1]).
pub const MEAN: f64 = 0.1307;
/// MNIST's pixel standard deviation (after scaling to [0, 1]).
pub const STD: f64 = 0.3081;

/// The deployed forward: `[N, 784]` pixels in [0, 1] -> (normalize) -> (reshape) -> model.
pub fn deployed_forward(
    model: &dyn Module,
    kind: ModelKind,
    normalize: bool,
    x: &Tensor,
) -> Result<Tensor> {
    let mut h = x.clone();
    if normalize {
        h = ((&h - MEAN)? / STD)?;
    }
    if kind == ModelKind::Cnn {
        h = h.reshape(&[-1, 1, 28, 28])?;
    }
    model.forward(&h)
}

/// Traces the deployed forward of `model` (input `input` `[N, 784]`, variables named after
/// the model's parameters).
pub fn trace_deployed(model: &dyn Module, kind: ModelKind, normalize: bool) -> Result<Traced> {
    model.eval();
    // The example input lives where the model does (a GPU-trained model traces on the GPU).
    let device = model.device().unwrap_or(tandem::eager::Device::Cpu);
    let example = Tensor::zeros(&[2, 784], DType::F32).to_device(device)?;
    let options = TraceOptions {
        input_names: vec!["input".into()],
        ..TraceOptions::for_module(model)
    };
    let traced = trace_with(
        |xs| {
            let x = xs
                .first()
                .ok_or_else(|| tandem::eager::Error::invalid("export", "no input"))?;
            Ok(vec![deployed_forward(model, kind, normalize, x)?])
        },
        std::slice::from_ref(&example),
        options,
    );
    model.train();
    traced
}

/// Writes a traced deployed model as ONNX (opset 17) at `path`.
pub fn write_traced(traced: &Traced, path: &Path) -> Result<()> {
    let (input, logits) = match (traced.inputs.first(), traced.outputs.first()) {
        (Some(i), Some(o)) => (i, o),
        _ => {
            return Err(tandem::eager::Error::invalid(
                "export",
                "the traced model has no input or output",
            ))
        }
    };
    export_onnx(
        &traced.graph,
        None,
        &[("input", input)],
        &[("logits", logits)],
        17,
        path,
    )?;
    println!("exported {}", path.display());
    Ok(())
}

/// Traces and writes `model` as ONNX at `path`.
pub fn export_module(
    model: &dyn Module,
    kind: ModelKind,
    normalize: bool,
    path: &Path,
) -> Result<()> {
    write_traced(&trace_deployed(model, kind, normalize)?, path)
}
