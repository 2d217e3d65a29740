//! Every PyTorch reference case run through the shared gradient rules on plain tensors (the
//! reference tape): outputs and VJPs against PyTorch in float32 and float64, and VJPs against
//! float64 central finite differences.

use tandem_conformance::tape::{Tape, Var};
use tandem_conformance::{
    apply, assert_close, numerical_vjp, parity_dir, prepare_inputs, Case, Manifest, Tolerance,
};
use tandem_tensor::{DType, Tensor};

fn run_case(m: &Manifest, case: &Case, dtype: &str) -> Result<(), String> {
    let file = case.files.get(dtype).ok_or("no file")?;
    let tensors = m.tensors(file).map_err(|e| e.to_string())?;
    let inputs = prepare_inputs(case, &tensors).map_err(|e| e.to_string())?;
    let tol = m.tolerance_for(dtype);
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let outs = apply(&tape, case, &vars).map_err(|e| format!("forward: {e}"))?;
    for (name, out) in case.outputs.iter().zip(&outs) {
        let want = tensors.get(name).ok_or(format!("missing {name}"))?;
        assert_close(name, &out.value, want, tol)?;
    }
    if case.grads.is_empty() {
        return Ok(());
    }
    let cot = tensors.get("cotangent").ok_or("missing cotangent")?;
    let wrt: Vec<&Var> = case
        .inputs
        .iter()
        .zip(&vars)
        .filter(|(s, _)| s.differentiable)
        .map(|(_, v)| v)
        .collect();
    let grads = tape
        .vjp(&outs[0], cot, &wrt)
        .map_err(|e| format!("backward: {e}"))?;
    for (gname, g) in case.grads.iter().zip(&grads) {
        let want = tensors.get(gname).ok_or(format!("missing {gname}"))?;
        let got = match g {
            Some(g) => g.clone(),
            None => Tensor::zeros(want.shape(), want.dtype()),
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
    let f = |args: &[Tensor]| -> tandem_tensor::Result<Tensor> {
        let tape = Tape::new();
        let vars: Vec<Var> = args.iter().map(|t| tape.leaf(t.clone())).collect();
        Ok(apply(&tape, case, &vars)?.remove(0).value)
    };
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = apply(&tape, case, &vars)
        .map_err(|e| e.to_string())?
        .remove(0);
    let diff: Vec<usize> = (0..inputs.len())
        .filter(|&i| case.inputs[i].differentiable)
        .collect();
    let wrt: Vec<&Var> = diff.iter().map(|&i| &vars[i]).collect();
    let grads = tape.vjp(&out, cot, &wrt).map_err(|e| e.to_string())?;
    let tol = Tolerance {
        rtol: 1e-5,
        atol: 1e-6,
    };
    for (k, &i) in diff.iter().enumerate() {
        let num = numerical_vjp(&f, &inputs, cot, i, 1e-6).map_err(|e| e.to_string())?;
        let got = grads[k]
            .clone()
            .unwrap_or_else(|| Tensor::zeros(inputs[i].shape(), DType::F64));
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
fn parity_cases_forward_and_vjp() {
    let m = Manifest::load(&parity_dir()).expect("manifest");
    assert!(!m.cases.is_empty());
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
fn parity_cases_against_finite_differences() {
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
