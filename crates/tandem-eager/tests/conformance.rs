//! Every PyTorch reference case of the parity manifest run in eager mode: outputs, and the
//! gradients that `backward_with(cotangent)` accumulates into the leaves, against PyTorch in
//! float32 and float64, and against float64 central finite differences.

use tandem_conformance::{
    apply, assert_close, numerical_vjp, parity_dir, prepare_inputs, Case, Manifest, Tolerance,
};
use tandem_eager::{Eager, Tensor};
use tandem_tensor::DType;

fn leaves(case: &Case, inputs: &[tandem_tensor::Tensor]) -> Vec<Tensor> {
    inputs
        .iter()
        .zip(&case.inputs)
        .map(|(t, s)| Tensor::from_value(t.clone()).requires_grad_(s.differentiable))
        .collect()
}

fn run_case(m: &Manifest, case: &Case, dtype: &str) -> Result<(), String> {
    let file = case.files.get(dtype).ok_or("no file")?;
    let tensors = m.tensors(file).map_err(|e| e.to_string())?;
    let inputs = prepare_inputs(case, &tensors).map_err(|e| e.to_string())?;
    let tol = m.tolerance_for(dtype);
    let xs = leaves(case, &inputs);
    let outs = apply(&Eager, case, &xs).map_err(|e| format!("forward: {e}"))?;
    for (name, out) in case.outputs.iter().zip(&outs) {
        let want = tensors.get(name).ok_or(format!("missing {name}"))?;
        assert_close(name, &out.value(), want, tol)?;
    }
    if case.grads.is_empty() {
        return Ok(());
    }
    let cot = tensors.get("cotangent").ok_or("missing cotangent")?;
    outs[0]
        .backward_with(&Tensor::from_value(cot.clone()))
        .map_err(|e| format!("backward: {e}"))?;
    let diff: Vec<&Tensor> = case
        .inputs
        .iter()
        .zip(&xs)
        .filter(|(s, _)| s.differentiable)
        .map(|(_, v)| v)
        .collect();
    for (gname, x) in case.grads.iter().zip(diff) {
        let want = tensors.get(gname).ok_or(format!("missing {gname}"))?;
        let got = match x.grad() {
            Some(g) => g.value(),
            None => tandem_tensor::Tensor::zeros(want.shape(), want.dtype()),
        };
        assert_close(gname, &got, want, tol)?;
    }
    Ok(())
}

fn finite_differences(m: &Manifest, case: &Case) -> Result<(), String> {
    let Some(file) = case.files.get("float64") else {
        return Ok(());
    };
    let tensors = m.tensors(file).map_err(|e| e.to_string())?;
    let inputs = prepare_inputs(case, &tensors).map_err(|e| e.to_string())?;
    let Some(cot) = tensors.get("cotangent") else {
        return Ok(());
    };
    let f = |args: &[tandem_tensor::Tensor]| -> tandem_tensor::Result<tandem_tensor::Tensor> {
        let _g = tandem_eager::no_grad();
        let xs: Vec<Tensor> = args.iter().cloned().map(Tensor::from_value).collect();
        Ok(apply(&Eager, case, &xs)?.remove(0).value())
    };
    let xs = leaves(case, &inputs);
    let out = apply(&Eager, case, &xs)
        .map_err(|e| e.to_string())?
        .remove(0);
    out.backward_with(&Tensor::from_value(cot.clone()))
        .map_err(|e| e.to_string())?;
    let tol = Tolerance {
        rtol: 1e-5,
        atol: 1e-6,
    };
    for (i, x) in xs.iter().enumerate() {
        if !case.inputs[i].differentiable {
            continue;
        }
        let num = numerical_vjp(&f, &inputs, cot, i, 1e-6).map_err(|e| e.to_string())?;
        let got = x
            .grad()
            .map(|g| g.value())
            .unwrap_or_else(|| tandem_tensor::Tensor::zeros(inputs[i].shape(), DType::F64));
        assert_close(
            &format!("finite-difference grad of input{i}"),
            &got,
            &num,
            tol,
        )?;
    }
    Ok(())
}

#[test]
fn parity_cases_forward_and_backward_in_eager_mode() {
    let m = Manifest::load(&parity_dir()).expect("manifest");
    assert!(m.cases.len() > 50);
    let mut failures = Vec::new();
    for case in &m.cases {
        for dtype in ["float32", "float64"] {
            if let Err(e) = run_case(&m, case, dtype) {
                failures.push(format!("{} [{dtype}]: {e}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn parity_cases_against_finite_differences_in_eager_mode() {
    let m = Manifest::load(&parity_dir()).expect("manifest");
    let mut failures = Vec::new();
    for case in &m.cases {
        if let Err(e) = finite_differences(&m, case) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
