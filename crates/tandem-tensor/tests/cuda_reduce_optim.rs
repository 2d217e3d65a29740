//! CUDA reductions, softmax/log-softmax/cross-entropy and optimizer kernels against the CPU,
//! on random inputs including non-contiguous views and odd sizes. Skips without a driver.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::*;
use tandem_tensor::ops::optim::{adam_step, rmsprop_step, sgd_step};
use tandem_tensor::ops::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use tandem_tensor::random::Rng;
use tandem_tensor::{ArgReduceOp, DType, Error, ReduceOp, Tensor};

#[test]
fn reductions_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(10);
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
    ];
    let cases: [(&[usize], &[usize]); 6] = [
        (&[1000], &[0]),
        (&[17, 33], &[1]),
        (&[17, 33], &[0]),
        (&[3, 4, 5], &[0, 2]),
        (&[2, 3, 1, 7], &[1, 2, 3]),
        (&[], &[]),
    ];
    for dtype in DType::ALL {
        for op in ops {
            for (shape, axes) in cases {
                let base = rand(&mut rng, shape, dtype);
                for (name, v) in views(&base) {
                    for keepdim in [false, true] {
                        let what = format!("{op:?} {dtype} {shape:?} {axes:?} {name} {keepdim}");
                        let axes: Vec<usize> = axes.to_vec();
                        match v.reduce(op, &axes, keepdim) {
                            Ok(c) => {
                                let g = to_gpu(&v).reduce(op, &axes, keepdim).unwrap();
                                let k = axes.iter().map(|&a| v.shape()[a]).product::<usize>();
                                let t = if op == ReduceOp::Prod {
                                    tol(dtype) * 50.0
                                } else {
                                    tol(dtype) * (k as f64).sqrt().max(1.0) * 4.0
                                };
                                assert_close(&what, &g, &c, t);
                            }
                            Err(_) => assert!(to_gpu(&v).reduce(op, &axes, keepdim).is_err()),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn arg_reductions_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(11);
    for dtype in DType::ALL {
        for op in [ArgReduceOp::ArgMax, ArgReduceOp::ArgMin] {
            for (shape, axis) in [
                (&[1000][..], 0),
                (&[17, 33], 1),
                (&[17, 33], 0),
                (&[3, 4, 5], 1),
            ] {
                let t = rand(&mut rng, shape, dtype);
                for (name, v) in views(&t) {
                    let c = v.arg_reduce(op, axis, false).unwrap();
                    let g = to_gpu(&v).arg_reduce(op, axis, false).unwrap();
                    assert_close(&format!("{op:?} {dtype} {shape:?} {name}"), &g, &c, 0.0);
                }
            }
        }
    }
    // NaN counts as the max, ties keep the first index.
    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 3.0, 0.0, 3.0], &[2, 3]).unwrap();
    let g = to_gpu(&x)
        .arg_reduce(ArgReduceOp::ArgMax, 1, false)
        .unwrap();
    assert_eq!(g.to_vec::<i64>().unwrap(), vec![1, 0]);
}

#[test]
fn softmax_and_cross_entropy_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(12);
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        for (shape, axis) in [
            (&[1000][..], 0),
            (&[17, 33], 1),
            (&[17, 33], 0),
            (&[3, 4, 5], 1),
        ] {
            let t = rand(&mut rng, shape, dtype);
            for (name, v) in views(&t) {
                for log in [false, true] {
                    let c = if log {
                        v.log_softmax(axis)
                    } else {
                        v.softmax(axis)
                    }
                    .unwrap();
                    let gv = to_gpu(&v);
                    let g = if log {
                        gv.log_softmax(axis)
                    } else {
                        gv.softmax(axis)
                    }
                    .unwrap();
                    assert_close(
                        &format!("softmax log={log} {dtype} {shape:?} {name}"),
                        &g,
                        &c,
                        tol(dtype) * 8.0,
                    );
                }
            }
        }
        for (lshape, tshape) in [
            (&[8, 5][..], &[8][..]),
            (&[4, 7, 3, 2], &[4, 3, 2]),
            (&[6], &[]),
        ] {
            let logits = rand(&mut rng, lshape, dtype);
            let classes = if lshape.len() == 1 {
                lshape[0]
            } else {
                lshape[1]
            };
            let n: usize = tshape.iter().product();
            let tv: Vec<i64> = (0..n)
                .map(|i| {
                    if i % 5 == 3 {
                        -100
                    } else {
                        rng.below(classes as u64) as i64
                    }
                })
                .collect();
            let target = Tensor::from_vec(tv, tshape).unwrap();
            for eps in [0.0, 0.1] {
                let c = logits.cross_entropy(&target, -100, eps).unwrap();
                let g = to_gpu(&logits)
                    .cross_entropy(&to_gpu(&target), -100, eps)
                    .unwrap();
                assert_close(
                    &format!("xent {dtype} {lshape:?} {eps}"),
                    &g,
                    &c,
                    tol(dtype) * 8.0,
                );
            }
        }
    }
    let logits = to_gpu(&Tensor::zeros(&[2, 3], DType::F32));
    let bad = to_gpu(&Tensor::from_vec(vec![0i64, 3], &[2]).unwrap());
    let e = logits.cross_entropy(&bad, -100, 0.0).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { index: 3, .. }), "{e}");
}

#[test]
fn optimizer_kernels_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(13);
    for dtype in [DType::F32, DType::F64] {
        let shape = [17, 33];
        let p0 = rand(&mut rng, &shape, dtype);
        let grads: Vec<Tensor> = (0..3).map(|_| rand(&mut rng, &shape, dtype)).collect();
        let tl = tol(dtype) * 10.0;
        for decoupled in [false, true] {
            let c = AdamConfig {
                weight_decay: 0.01,
                decoupled,
                ..Default::default()
            };
            let (mut p, mut m, mut v) = (p0.clone(), p0.zeros_like(), p0.zeros_like());
            let (mut gp, mut gm, mut gv) = (to_gpu(&p), to_gpu(&m), to_gpu(&v));
            let shared = gp.clone();
            for (t, g) in grads.iter().enumerate() {
                adam_step(&mut p, g, &mut m, &mut v, t as u64 + 1, &c).unwrap();
                // A transposed-and-back gradient view exercises the contiguous copy.
                let gg = to_gpu(&g.t().unwrap()).t().unwrap();
                adam_step(&mut gp, &gg, &mut gm, &mut gv, t as u64 + 1, &c).unwrap();
            }
            assert_close("adam p", &gp, &p, tl);
            assert_close("adam m", &gm, &m, tl);
            assert_close("adam v", &gv, &v, tl);
            assert_close("copy-on-write keeps the old value", &shared, &p0, 0.0);
        }
        for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
            let c = SgdConfig {
                lr: 0.1,
                momentum,
                nesterov,
                dampening: 0.0,
                weight_decay: 0.001,
            };
            let (mut p, mut b) = (p0.clone(), p0.zeros_like());
            let (mut gp, mut gb) = (to_gpu(&p), to_gpu(&b));
            for (t, g) in grads.iter().enumerate() {
                sgd_step(&mut p, g, Some(&mut b), t == 0, &c).unwrap();
                sgd_step(&mut gp, &to_gpu(g), Some(&mut gb), t == 0, &c).unwrap();
            }
            assert_close("sgd p", &gp, &p, tl);
            assert_close("sgd buf", &gb, &b, tl);
        }
        for (momentum, centered) in [(0.0, false), (0.5, true)] {
            let c = RmsPropConfig {
                momentum,
                centered,
                weight_decay: 0.01,
                ..Default::default()
            };
            let (mut p, mut s, mut b, mut a) = (
                p0.clone(),
                p0.zeros_like(),
                p0.zeros_like(),
                p0.zeros_like(),
            );
            let (mut gp, mut gs, mut gb, mut ga) = (to_gpu(&p), to_gpu(&s), to_gpu(&b), to_gpu(&a));
            for g in &grads {
                rmsprop_step(&mut p, g, &mut s, Some(&mut b), Some(&mut a), &c).unwrap();
                rmsprop_step(
                    &mut gp,
                    &to_gpu(g),
                    &mut gs,
                    Some(&mut gb),
                    Some(&mut ga),
                    &c,
                )
                .unwrap();
            }
            assert_close("rmsprop p", &gp, &p, tl);
            assert_close("rmsprop sq", &gs, &s, tl);
        }
    }
    // Subnormal state is stored as zero on the GPU as on the CPU (f32: 1e-38 decays to a
    // subnormal and is flushed, 1e-37 stays normal).
    let c = AdamConfig::default();
    let f = |v: &[f32]| Tensor::from_slice(v, &[v.len()]).unwrap();
    let (mut p, mut m, mut v) = (f(&[1.0, 1.0]), f(&[1e-38, 1e-37]), f(&[1e-38, 1.0]));
    let (mut gp, mut gm, mut gv) = (to_gpu(&p), to_gpu(&m), to_gpu(&v));
    let g = f(&[0.0, 0.0]);
    adam_step(&mut p, &g, &mut m, &mut v, 3, &c).unwrap();
    adam_step(&mut gp, &to_gpu(&g), &mut gm, &mut gv, 3, &c).unwrap();
    assert_eq!(m.to_vec::<f32>().unwrap()[0], 0.0);
    assert_eq!(v.to_vec::<f32>().unwrap()[0], 0.0);
    assert_close("flushed adam m", &gm, &m, 0.0);
    assert_close("flushed adam v", &gv, &v, 0.0);
    // A parameter on the GPU with a gradient on the CPU names both devices.
    let mut p = to_gpu(&Tensor::ones(&[3], DType::F32));
    let e = sgd_step(
        &mut p,
        &Tensor::ones(&[3], DType::F32),
        None,
        true,
        &SgdConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
}
