//! CUDA gather / scatter-add / index-select / index-add / cat / stack against the CPU.
//! Skips without a driver.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::*;
use tandem_tensor::random::Rng;
use tandem_tensor::{DType, Error, Tensor};

fn random_index(rng: &mut Rng, shape: &[usize], size: usize, dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = (0..n).map(|_| rng.below(size as u64) as i64).collect();
    Tensor::from_vec(v, shape).unwrap().cast(dtype).unwrap()
}

#[test]
fn gather_and_scatter_add_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(20);
    for dtype in DType::ALL {
        for idt in [DType::I64, DType::I32] {
            let x = rand(&mut rng, &[5, 7, 3], dtype);
            for axis in 0..3 {
                let mut ishape = vec![4, 6, 2];
                ishape[axis] = 9;
                let idx = random_index(&mut rng, &ishape, x.shape()[axis], idt);
                for (name, v) in views(&x) {
                    if v.shape()[axis] != x.shape()[axis] || v.shape()[0] < ishape[0] {
                        continue;
                    }
                    let c = v.gather(axis, &idx).unwrap();
                    let g = to_gpu(&v).gather(axis, &to_gpu(&idx)).unwrap();
                    assert_close(
                        &format!("gather {dtype} {idt} axis {axis} {name}"),
                        &g,
                        &c,
                        0.0,
                    );
                }
                let src = rand(&mut rng, &ishape, dtype);
                let want = x.scatter_add(axis, &idx, &src);
                let got = to_gpu(&x).scatter_add(axis, &to_gpu(&idx), &to_gpu(&src));
                match (want, got) {
                    (Ok(w), Ok(g)) => assert_close(
                        &format!("scatter_add {dtype} axis {axis}"),
                        &g,
                        &w,
                        tol(dtype) * 10.0,
                    ),
                    (Ok(_), Err(e)) => {
                        // Atomic adds exist for f32, f64, i32 and i64 only.
                        assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
                        assert!(!matches!(
                            dtype,
                            DType::F32 | DType::F64 | DType::I32 | DType::I64
                        ));
                    }
                    (Err(_), got) => assert!(got.is_err()),
                }
            }
        }
    }
    let x = to_gpu(&Tensor::zeros(&[3, 2], DType::F32));
    let bad = to_gpu(&Tensor::from_vec(vec![3i64, 0], &[1, 2]).unwrap());
    let e = x.gather(0, &bad).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { index: 3, .. }), "{e}");
}

#[test]
fn index_select_and_index_add_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(21);
    for dtype in [DType::F32, DType::F64, DType::I64, DType::BF16] {
        let table = rand(&mut rng, &[11, 6], dtype);
        for axis in 0..2 {
            let idx = random_index(&mut rng, &[13], table.shape()[axis], DType::I64);
            for (name, v) in views(&table) {
                // Each view has its own extent along `axis` (the stepped view is shorter).
                let idx = random_index(&mut rng, &[13], v.shape()[axis], DType::I64);
                let c = v.index_select(axis, &idx).unwrap();
                let g = to_gpu(&v).index_select(axis, &to_gpu(&idx)).unwrap();
                assert_close(&format!("index_select {dtype} {axis} {name}"), &g, &c, 0.0);
            }
            let mut sshape = table.shape().to_vec();
            sshape[axis] = 13;
            let src = rand(&mut rng, &sshape, dtype);
            let want = table.index_add(axis, &idx, &src).unwrap();
            match to_gpu(&table).index_add(axis, &to_gpu(&idx), &to_gpu(&src)) {
                Ok(g) => assert_close(
                    &format!("index_add {dtype} {axis}"),
                    &g,
                    &want,
                    tol(dtype) * 10.0,
                ),
                Err(e) => assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}"),
            }
        }
    }
}

#[test]
fn cat_and_stack_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(22);
    for dtype in DType::ALL {
        let a = rand(&mut rng, &[3, 4, 5], dtype);
        let b = rand(&mut rng, &[3, 2, 5], dtype);
        let bt = rand(&mut rng, &[5, 2, 3], dtype)
            .permute(&[2, 1, 0])
            .unwrap();
        let want = Tensor::cat(&[&a, &b, &bt], 1).unwrap();
        let got = Tensor::cat(&[&to_gpu(&a), &to_gpu(&b), &to_gpu(&bt)], 1).unwrap();
        assert_close(&format!("cat {dtype}"), &got, &want, 0.0);
        let want = Tensor::stack(&[&a, &a], 0).unwrap();
        let got = Tensor::stack(&[&to_gpu(&a), &to_gpu(&a)], 0).unwrap();
        assert_close(&format!("stack {dtype}"), &got, &want, 0.0);
    }
    let a = rand(&mut rng, &[2, 2], DType::F32);
    let e = Tensor::cat(&[&to_gpu(&a), &a], 0).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
}

#[test]
fn pad_and_slice_backward_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(23);
    for dtype in DType::ALL {
        let x = rand(&mut rng, &[3, 4], dtype);
        for (name, v) in views(&x) {
            let pads = [(1, 0), (2, 3)];
            let want = v.pad(&pads[..v.rank()], 7.0).unwrap();
            let got = to_gpu(&v).pad(&pads[..v.rank()], 7.0).unwrap();
            assert_close(&format!("pad {dtype} {name}"), &got, &want, 0.0);
        }
        let g = rand(&mut rng, &[3, 2], dtype);
        let want = g.slice_backward(&[3, 7], 1, 1, 3).unwrap();
        let got = to_gpu(&g).slice_backward(&[3, 7], 1, 1, 3).unwrap();
        assert_close(&format!("slice_backward {dtype}"), &got, &want, 0.0);
    }
}
