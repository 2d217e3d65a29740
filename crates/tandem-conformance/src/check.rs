//! Comparisons, input preparation and finite differences.

use crate::manifest::{Case, Tolerance};
use std::collections::HashMap;
use tandem_tensor::{DType, Error, Result, Tensor};

/// Checks `got` against `want` elementwise (`|g - w| <= atol + rtol |w|`, NaN equal to NaN,
/// integers exact). The error string names the tensor, index and values.
pub fn assert_close(
    name: &str,
    got: &Tensor,
    want: &Tensor,
    tol: Tolerance,
) -> std::result::Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let g = got.to_f64_vec().map_err(|e| format!("{name}: {e}"))?;
    let w = want.to_f64_vec().map_err(|e| format!("{name}: {e}"))?;
    let exact = !want.dtype().is_float();
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if exact {
            a == b
        } else {
            (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol.atol + tol.rtol * b.abs()
        };
        if !ok {
            return Err(format!(
                "{name}: element {i}: got {a}, expected {b} (rtol {}, atol {})",
                tol.rtol, tol.atol
            ));
        }
    }
    Ok(())
}

/// The inputs of a case from its file tensors: float inputs in the file's float dtype,
/// integer inputs as stored, and inputs used through `.bool()` in the call as bool masks.
pub fn prepare_inputs(case: &Case, tensors: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
    case.inputs
        .iter()
        .map(|spec| {
            let t = tensors.get(&spec.name).ok_or_else(|| {
                Error::invalid(
                    "conformance",
                    format!("case {}: tensor {} missing from file", case.name, spec.name),
                )
            })?;
            if case.call.contains(&format!("{}.bool()", spec.name)) {
                t.cast(DType::Bool)
            } else {
                Ok(t.clone())
            }
        })
        .collect()
}

/// Central finite-difference VJP of `f` w.r.t. input `which` (computed in float64):
/// entry j is `<f(x + h e_j) - f(x - h e_j), cotangent> / 2h`.
pub fn numerical_vjp(
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    cotangent: &Tensor,
    which: usize,
    h: f64,
) -> Result<Tensor> {
    let x = &inputs[which];
    let base = x.cast(DType::F64)?.to_vec::<f64>()?;
    let ct = cotangent.cast(DType::F64)?.to_vec::<f64>()?;
    let mut out = vec![0.0; base.len()];
    let eval_at = |j: usize, delta: f64| -> Result<f64> {
        let mut v = base.clone();
        v[j] += delta;
        let mut args = inputs.to_vec();
        args[which] = Tensor::from_vec(v, x.shape())?.cast(x.dtype())?;
        let y = f(&args)?.cast(DType::F64)?.to_vec::<f64>()?;
        if y.len() != ct.len() {
            return Err(Error::invalid(
                "numerical_vjp",
                "cotangent size differs from the output",
            ));
        }
        Ok(y.iter().zip(&ct).map(|(a, b)| a * b).sum())
    };
    for j in 0..base.len() {
        out[j] = (eval_at(j, h)? - eval_at(j, -h)?) / (2.0 * h);
    }
    Tensor::from_vec(out, x.shape())
}
