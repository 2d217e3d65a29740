//! The PyTorch parity cases run with eager tensors on a GPU: every case's inputs go to CUDA,
//! the op and its backward run there, and outputs and gradients are compared (on the host)
//! with PyTorch's float32 values, with the manifest's tolerance times 4.
//!
//! The driver is the eager conformance driver with a device: leaves are created on the GPU and
//! the cotangent is sent there. Ops without a CUDA kernel yet (the error says "no CUDA kernel")
//! are listed and skipped; every other difference fails.
//!
//! Needs the `cuda` feature (`cargo test -p tandem-eager --features cuda --test cuda_parity`);
//! prints "no CUDA driver, skipped" and passes where no GPU is usable.
#![cfg(feature = "cuda")]

use tandem_conformance::{
    apply, assert_close, parity_dir, prepare_inputs, Case, Manifest, Tolerance,
};
use tandem_eager::{Device, Eager, Tensor};

const GPU: Device = Device::Cuda(0);

fn run_case(m: &Manifest, case: &Case, device: Device) -> Result<(), String> {
    let dtype = "float32";
    let file = case.files.get(dtype).ok_or("no file")?;
    let tensors = m.tensors(file).map_err(|e| e.to_string())?;
    let inputs = prepare_inputs(case, &tensors).map_err(|e| e.to_string())?;
    let base = m.tolerance_for(dtype);
    let tol = Tolerance {
        rtol: base.rtol * 4.0,
        atol: base.atol * 4.0,
    };
    let mut xs = Vec::with_capacity(inputs.len());
    for (t, s) in inputs.iter().zip(&case.inputs) {
        let v = t.to_device(device).map_err(|e| format!("to_device: {e}"))?;
        xs.push(Tensor::from_value(v).requires_grad_(s.differentiable));
    }
    let outs = apply(&Eager, case, &xs).map_err(|e| format!("forward: {e}"))?;
    for (name, out) in case.outputs.iter().zip(&outs) {
        if out.device() != device {
            return Err(format!("{name} is on {}, expected {device}", out.device()));
        }
        let want = tensors.get(name).ok_or(format!("missing {name}"))?;
        let host = out
            .value()
            .to_device(Device::Cpu)
            .map_err(|e| e.to_string())?;
        assert_close(name, &host, want, tol)?;
    }
    if case.grads.is_empty() {
        return Ok(());
    }
    let cot = tensors.get("cotangent").ok_or("missing cotangent")?;
    let cot = cot.to_device(device).map_err(|e| e.to_string())?;
    outs[0]
        .backward_with(&Tensor::from_value(cot))
        .map_err(|e| format!("backward: {e}"))?;
    let diff = case
        .inputs
        .iter()
        .zip(&xs)
        .filter(|(s, _)| s.differentiable)
        .map(|(_, v)| v);
    for (gname, x) in case.grads.iter().zip(diff) {
        let want = tensors.get(gname).ok_or(format!("missing {gname}"))?;
        let got = match x.grad() {
            Some(g) => {
                if g.device() != device {
                    return Err(format!("{gname} is on {}, expected {device}", g.device()));
                }
                g.value()
                    .to_device(Device::Cpu)
                    .map_err(|e| e.to_string())?
            }
            None => tandem_tensor::Tensor::zeros(want.shape(), want.dtype()),
        };
        assert_close(gname, &got, want, tol)?;
    }
    Ok(())
}

#[test]
fn parity_cases_forward_and_backward_on_cuda() {
    if !tandem_tensor::cuda::is_available() {
        eprintln!("no CUDA driver, skipped");
        return;
    }
    let m = Manifest::load(&parity_dir()).expect("manifest");
    let (mut failures, mut no_kernel, mut passed) = (Vec::new(), Vec::new(), 0usize);
    for case in &m.cases {
        match run_case(&m, case, GPU) {
            Ok(()) => passed += 1,
            Err(e) if e.contains("no CUDA kernel") => no_kernel.push(format!("{}: {e}", case.name)),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    eprintln!(
        "cuda parity: {passed} passed, {} without a CUDA kernel, {} failed",
        no_kernel.len(),
        failures.len()
    );
    for n in &no_kernel {
        eprintln!("  no kernel: {n}");
    }
    assert!(passed > 40, "too few cases ran on the GPU ({passed})");
    assert!(
        failures.is_empty(),
        "{} of {} cases differ on CUDA:\n{}",
        failures.len(),
        m.cases.len(),
        failures.join("\n")
    );
}
