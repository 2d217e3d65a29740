//! ONNX import: any bytes give a validated model or an error; a valid model with small fixed
//! input shapes is also run on zero inputs (which must give outputs or an error, never a panic).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem_tensor::Tensor;

/// Largest input (in elements) the target feeds a parsed model.
const MAX_FEED: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let _ = tandem_onnx::parse(data);
    let Ok(model) = tandem_onnx::OnnxModel::from_bytes(data) else {
        return;
    };
    let mut feeds = Vec::new();
    for input in model.inputs() {
        let mut shape = Vec::new();
        for d in &input.dims {
            match d {
                Some(n) => shape.push(*n),
                None => shape.push(1),
            }
        }
        let n: usize = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .unwrap_or(usize::MAX);
        if n > MAX_FEED {
            return;
        }
        feeds.push(Tensor::zeros(&shape, input.dtype));
    }
    let _ = model.run(&feeds);
});
