//! Helpers shared by the CUDA test files: the skip guard, random inputs, and comparison of a
//! GPU result with the CPU result.
#![allow(dead_code)]

use tandem_tensor::random::Rng;
use tandem_tensor::{DType, Device, Tensor};

pub const GPU: Device = Device::Cuda(0);

/// True when a GPU is usable; otherwise prints the skip note (the test then returns).
pub fn gpu() -> bool {
    if !tandem_tensor::cuda::is_available() {
        eprintln!("no CUDA driver, skipped");
        return false;
    }
    true
}

/// Random values in [-2, 2) of `dtype` (integers in [-5, 5), bool at random).
pub fn rand(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| match dtype {
            DType::Bool => (rng.below(2)) as f64,
            DType::U8 => rng.below(10) as f64,
            d if d.is_int() => rng.below(10) as f64 - 5.0,
            _ => rng.next_f64() * 4.0 - 2.0,
        })
        .collect();
    Tensor::from_vec(v, shape).unwrap().cast(dtype).unwrap()
}

/// Positive random values (for log, sqrt, pow bases).
pub fn rand_pos(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.next_f64() * 3.0 + 0.1).collect();
    Tensor::from_vec(v, shape).unwrap().cast(dtype).unwrap()
}

pub fn to_gpu(t: &Tensor) -> Tensor {
    t.to_device(GPU).unwrap()
}

/// Tolerance for a dtype (relative and absolute).
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        DType::F32 => 2e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        _ => 0.0,
    }
}

/// Asserts the GPU tensor equals the CPU tensor (shape, dtype, device, values within `tol`).
pub fn assert_close(what: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) {
    assert_eq!(gpu.device(), GPU, "{what}: result device");
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let g = gpu.to_f64_vec().unwrap();
    let c = cpu.to_f64_vec().unwrap();
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + b.abs());
        assert!(ok, "{what}: element {i}: gpu {a} vs cpu {b} (tol {tol})");
    }
}

/// Views of `t` that are not contiguous: transposed, sliced with a step, and expanded.
pub fn views(t: &Tensor) -> Vec<(&'static str, Tensor)> {
    let mut v = vec![("contiguous", t.clone())];
    if t.rank() >= 2 {
        v.push((
            "transposed",
            t.t().unwrap().contiguous().unwrap().t().unwrap(),
        ));
    }
    if t.rank() >= 1 && t.shape()[0] >= 3 {
        v.push(("stepped", t.slice(0, 0, isize::MAX, 2).unwrap()));
    }
    v
}
