//! CUDA backend: device detection, copies, creation, allocator reuse, device mismatch,
//! elementwise ops and matmul against the CPU. Every GPU test skips (printing a note) when no
//! driver is found, so this file also passes on machines without a GPU.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::*;
use tandem_tensor::random::Rng;
use tandem_tensor::{cuda, BinaryOp, DType, Device, Error, Tensor, UnaryOp};

#[test]
fn no_driver_is_a_clear_error() {
    if cuda::driver_present() {
        eprintln!("a CUDA driver is present; the no-driver message is not reachable here");
        return;
    }
    assert!(!cuda::is_available());
    let t = Tensor::zeros(&[2], DType::F32);
    let e = t.to_device(Device::Cuda(0)).unwrap_err();
    assert!(matches!(e, Error::DeviceUnavailable { .. }), "{e}");
    assert!(e.to_string().contains(cuda::NO_DRIVER), "{e}");
    let e = Tensor::zeros_on(&[2], DType::F32, Device::Cuda(0)).unwrap_err();
    assert!(
        e.to_string().contains("CUDA requested, no driver found"),
        "{e}"
    );
    assert!(cuda::device_count().is_err());
    assert!(cuda::memory_stats(0).is_err());
}

#[test]
fn round_trip_every_dtype_and_view() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(1);
    for dtype in DType::ALL {
        for shape in [&[][..], &[1], &[3], &[17, 5], &[4, 3, 1000]] {
            let t = rand(&mut rng, shape, dtype);
            for (name, v) in views(&t) {
                let g = to_gpu(&v);
                assert_eq!(g.device(), GPU);
                assert!(g.is_contiguous());
                let back = g.to_device(Device::Cpu).unwrap();
                assert_close(&format!("{dtype} {shape:?} {name}"), &g, &v, 0.0);
                assert_eq!(back.to_f64_vec().unwrap(), v.to_f64_vec().unwrap());
                // Views of GPU data copy back correctly too.
                if g.rank() >= 2 {
                    let tv = g.t().unwrap();
                    assert_eq!(
                        tv.to_f64_vec().unwrap(),
                        v.t().unwrap().to_f64_vec().unwrap()
                    );
                }
            }
        }
    }
}

#[test]
fn creation_on_the_device() {
    if !gpu() {
        return;
    }
    for dtype in DType::ALL {
        let z = Tensor::zeros_on(&[3, 5], dtype, GPU).unwrap();
        assert_close("zeros", &z, &Tensor::zeros(&[3, 5], dtype), 0.0);
        let o = Tensor::ones_on(&[7], dtype, GPU).unwrap();
        assert_close("ones", &o, &Tensor::ones(&[7], dtype), 0.0);
        let f = Tensor::full_on(&[2, 2], 3.5, dtype, GPU).unwrap();
        assert_close("full", &f, &Tensor::full(&[2, 2], 3.5, dtype), 0.0);
    }
}

#[test]
fn mixing_devices_is_an_error_naming_the_op_and_devices() {
    if !gpu() {
        return;
    }
    let c = Tensor::ones(&[2], DType::F32);
    let g = to_gpu(&c);
    for e in [
        g.binary(BinaryOp::Add, &c).unwrap_err(),
        c.binary(BinaryOp::Add, &g).unwrap_err(),
        g.matmul(&c.reshape(&[2, 1]).unwrap()).unwrap_err(),
    ] {
        let m = e.to_string();
        assert!(matches!(e, Error::DeviceMismatch { .. }), "{m}");
        assert!(m.contains("cpu") && m.contains("cuda:0"), "{m}");
    }
}

#[test]
fn unary_ops_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(2);
    for dtype in DType::ALL {
        for op in UnaryOp::ALL {
            let base = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt) {
                rand_pos(&mut rng, &[17, 33], dtype)
            } else {
                rand(&mut rng, &[17, 33], dtype)
            };
            for (name, v) in views(&base) {
                let cpu = v.unary(op);
                let g = to_gpu(&v);
                let gv = if name == "transposed" {
                    // A non-contiguous view of device memory.
                    g.t().unwrap().contiguous().unwrap().t().unwrap()
                } else {
                    g
                };
                match cpu {
                    Ok(c) => assert_close(
                        &format!("{op:?} {dtype} {name}"),
                        &gv.unary(op).unwrap(),
                        &c,
                        tol(dtype) * 4.0,
                    ),
                    Err(_) => assert!(gv.unary(op).is_err(), "{op:?} {dtype} must fail too"),
                }
            }
        }
    }
}

#[test]
fn binary_ops_with_broadcasting_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(3);
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[1000], &[1000]),
        (&[17, 5], &[5]),
        (&[3, 1, 4], &[2, 4]),
        (&[1], &[6, 7]),
        (&[], &[3]),
    ];
    for dtype in DType::ALL {
        for op in BinaryOp::ALL {
            for (sa, sb) in shapes {
                let a = rand(&mut rng, sa, dtype);
                let b = if op == BinaryOp::Pow {
                    if dtype.is_int() {
                        rand(&mut rng, sb, dtype).unary(UnaryOp::Abs).unwrap()
                    } else {
                        rand_pos(&mut rng, sb, dtype)
                    }
                } else {
                    rand(&mut rng, sb, dtype)
                };
                let a = if op == BinaryOp::Pow && dtype.is_float() {
                    rand_pos(&mut rng, sa, dtype)
                } else {
                    a
                };
                let what = format!("{op:?} {dtype} {sa:?} {sb:?}");
                match a.binary(op, &b) {
                    Ok(c) => {
                        let g = to_gpu(&a).binary(op, &to_gpu(&b)).unwrap();
                        assert_close(&what, &g, &c, tol(dtype) * 4.0);
                    }
                    Err(_) => assert!(to_gpu(&a).binary(op, &to_gpu(&b)).is_err(), "{what}"),
                }
            }
        }
    }
    // Non-contiguous operands.
    let a = rand(&mut rng, &[6, 8], DType::F32);
    let b = rand(&mut rng, &[8, 6], DType::F32);
    let c = a.binary(BinaryOp::Sub, &b.t().unwrap()).unwrap();
    let g = to_gpu(&a)
        .binary(BinaryOp::Sub, &to_gpu(&b).t().unwrap())
        .unwrap();
    assert_close("sub of a transposed view", &g, &c, 0.0);
    // Scalars and in-place ops stay on the device.
    let s = to_gpu(&a).scalar_op(BinaryOp::Mul, 2.5, false).unwrap();
    assert_close(
        "scalar mul",
        &s,
        &a.scalar_op(BinaryOp::Mul, 2.5, false).unwrap(),
        0.0,
    );
    let mut m = to_gpu(&a);
    m.binary_(BinaryOp::Add, &to_gpu(&b.t().unwrap())).unwrap();
    assert_close("in place add", &m, &a.add(&b.t().unwrap()).unwrap(), 0.0);
}

#[test]
fn where_and_cast_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(4);
    let c = rand(&mut rng, &[5, 1], DType::Bool);
    for dtype in DType::ALL {
        let x = rand(&mut rng, &[5, 7], dtype);
        let y = rand(&mut rng, &[7], dtype);
        let want = Tensor::where_cond(&c, &x, &y).unwrap();
        let got = Tensor::where_cond(&to_gpu(&c), &to_gpu(&x), &to_gpu(&y)).unwrap();
        assert_close(&format!("where {dtype}"), &got, &want, 0.0);
        for to in DType::ALL {
            let src = rand(&mut rng, &[3, 11], dtype).t().unwrap();
            let want = src.cast(to).unwrap();
            let got = to_gpu(&src).t().unwrap().t().unwrap().cast(to);
            let got = got.unwrap();
            assert_close(&format!("cast {dtype} -> {to}"), &got, &want, 0.0);
        }
    }
}

#[test]
fn matmul_matches_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(5);
    let cases: [(&[usize], &[usize]); 7] = [
        (&[3], &[3]),
        (&[17, 33], &[33, 5]),
        (&[4, 17, 8], &[8, 3]),
        (&[1, 5, 6], &[3, 6, 2]),
        (&[2, 1, 3, 4], &[5, 4, 7]),
        (&[64, 128], &[128]),
        (&[0, 3], &[3, 4]),
    ];
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        for (sa, sb) in cases {
            let a = rand(&mut rng, sa, dtype);
            let b = rand(&mut rng, sb, dtype);
            let want = a
                .cast(DType::F64)
                .unwrap()
                .matmul(&b.cast(DType::F64).unwrap())
                .unwrap()
                .cast(dtype)
                .unwrap();
            let got = to_gpu(&a).matmul(&to_gpu(&b)).unwrap();
            let k = sa.last().copied().unwrap_or(1) as f64;
            assert_close(
                &format!("matmul {dtype} {sa:?} {sb:?}"),
                &got,
                &want,
                tol(dtype) * k,
            );
        }
        // Transposed operands go through the op flags.
        let a = rand(&mut rng, &[9, 4], dtype);
        let b = rand(&mut rng, &[6, 9], dtype);
        let want = a
            .cast(DType::F64)
            .unwrap()
            .t()
            .unwrap()
            .matmul(&b.cast(DType::F64).unwrap().t().unwrap())
            .unwrap()
            .cast(dtype)
            .unwrap();
        let got = to_gpu(&a)
            .t()
            .unwrap()
            .matmul(&to_gpu(&b).t().unwrap())
            .unwrap();
        assert_close(
            &format!("matmul a^T b^T {dtype}"),
            &got,
            &want,
            tol(dtype) * 9.0,
        );
    }
    // Integer matmul has no CUDA kernel: a clear error, not a panic.
    let i = to_gpu(&Tensor::ones(&[2, 2], DType::I64));
    let e = i.matmul(&i).unwrap_err();
    assert!(e.to_string().contains("cuda:0"), "{e}");
    // TF32 is opt-in.
    assert!(!cuda::allow_tf32());
}

#[test]
fn fused_program_runs() {
    if !gpu() {
        return;
    }
    use tandem_tensor::cuda::{FusedProgram, FusedStep};
    let mut rng = Rng::new(6);
    let x = rand(&mut rng, &[33, 17], DType::F32);
    let w = rand(&mut rng, &[33, 17], DType::F32);
    let b = Tensor::scalar(0.25f32);
    let p = FusedProgram {
        dtype: DType::F32,
        num_inputs: 3,
        steps: vec![
            FusedStep::Input(0),
            FusedStep::Input(1),
            FusedStep::Binary(BinaryOp::Mul, 0, 1),
            FusedStep::Input(2),
            FusedStep::Binary(BinaryOp::Add, 2, 3),
            FusedStep::Unary(UnaryOp::Tanh, 4),
        ],
    };
    let want = x
        .mul(&w)
        .unwrap()
        .add(&b)
        .unwrap()
        .unary(UnaryOp::Tanh)
        .unwrap();
    let got = cuda::fused_elementwise(&p, &[&to_gpu(&x), &to_gpu(&w), &to_gpu(&b)]).unwrap();
    assert_close("fused", &got, &want, 1e-5);
}
