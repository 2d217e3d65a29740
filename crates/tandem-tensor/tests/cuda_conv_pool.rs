//! CUDA conv2d (forward and both gradients) and max/avg pooling (forward and backward)
//! against the CPU, with padding, stride, dilation, groups and odd sizes. Skips without a
//! driver.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::*;
use tandem_tensor::random::Rng;
use tandem_tensor::{Conv2dParams, DType, Pool2dParams, Tensor};

#[test]
fn conv2d_and_gradients_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(30);
    let cases = [
        // (input NCHW, weight OIHW, params)
        ([2, 3, 9, 7], [4, 3, 3, 3], Conv2dParams::default()),
        (
            [3, 4, 8, 8],
            [6, 2, 3, 2],
            Conv2dParams {
                stride: [2, 1],
                padding: [1, 2],
                dilation: [1, 2],
                groups: 2,
            },
        ),
        (
            [1, 1, 28, 28],
            [5, 1, 5, 5],
            Conv2dParams {
                padding: [2, 2],
                ..Default::default()
            },
        ),
        ([1, 2, 1, 1], [3, 2, 1, 1], Conv2dParams::default()),
    ];
    for dtype in [DType::F32, DType::F64, DType::F16] {
        for (xs, ws, p) in cases {
            let x = rand(&mut rng, &xs, dtype);
            let w = rand(&mut rng, &ws, dtype);
            let b = rand(&mut rng, &[ws[0]], dtype);
            let want = x.conv2d(&w, Some(&b), &p).unwrap();
            let got = to_gpu(&x)
                .conv2d(&to_gpu(&w), Some(&to_gpu(&b)), &p)
                .unwrap();
            let k = (ws[1] * ws[2] * ws[3]) as f64;
            let t = tol(dtype) * k * 2.0;
            assert_close(&format!("conv2d {dtype} {xs:?} {ws:?}"), &got, &want, t);
            let go = rand(&mut rng, want.shape(), dtype);
            let want = Tensor::conv2d_input_grad(&go, &w, &xs, &p).unwrap();
            let got = Tensor::conv2d_input_grad(&to_gpu(&go), &to_gpu(&w), &xs, &p).unwrap();
            assert_close(&format!("conv2d_input_grad {dtype} {xs:?}"), &got, &want, t);
            let want = Tensor::conv2d_weight_grad(&x, &go, &ws, &p).unwrap();
            let got = Tensor::conv2d_weight_grad(&to_gpu(&x), &to_gpu(&go), &ws, &p).unwrap();
            let t = tol(dtype) * (xs[0] * go.shape()[2] * go.shape()[3]) as f64 * 2.0;
            assert_close(
                &format!("conv2d_weight_grad {dtype} {xs:?}"),
                &got,
                &want,
                t,
            );
        }
    }
}

#[test]
fn pooling_and_gradients_match_the_cpu() {
    if !gpu() {
        return;
    }
    let mut rng = Rng::new(31);
    let mut ceil = Pool2dParams::square(3, 2, 1);
    ceil.ceil_mode = true;
    let mut no_pad_count = Pool2dParams::square(3, 2, 1);
    no_pad_count.count_include_pad = false;
    let mut dilated = Pool2dParams::square(2, 1, 0);
    dilated.dilation = [2, 2];
    let params = [Pool2dParams::square(2, 2, 0), ceil, no_pad_count, dilated];
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        for p in params {
            let x = rand(&mut rng, &[2, 3, 9, 7], dtype);
            // Non-contiguous input: a transposed copy transposed back.
            let xv = x
                .transpose(2, 3)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(2, 3)
                .unwrap();
            let gx = to_gpu(&x);
            let want = xv.max_pool2d(&p).unwrap();
            let got = gx.max_pool2d(&p).unwrap();
            assert_close(&format!("max_pool2d {dtype} {p:?}"), &got, &want, 0.0);
            let go = rand(&mut rng, want.shape(), dtype);
            let want_b = Tensor::max_pool2d_backward(&go, &x, &p).unwrap();
            let got_b = Tensor::max_pool2d_backward(&to_gpu(&go), &gx, &p).unwrap();
            assert_close(
                &format!("max_pool2d_backward {dtype}"),
                &got_b,
                &want_b,
                tol(dtype) * 4.0,
            );
            if p.dilation == [1, 1] {
                let want = x.avg_pool2d(&p).unwrap();
                let got = gx.avg_pool2d(&p).unwrap();
                assert_close(
                    &format!("avg_pool2d {dtype} {p:?}"),
                    &got,
                    &want,
                    tol(dtype) * 4.0,
                );
                let go = rand(&mut rng, want.shape(), dtype);
                let want_b = Tensor::avg_pool2d_backward(&go, x.shape(), &p).unwrap();
                let got_b = Tensor::avg_pool2d_backward(&to_gpu(&go), x.shape(), &p).unwrap();
                assert_close(
                    &format!("avg_pool2d_backward {dtype}"),
                    &got_b,
                    &want_b,
                    tol(dtype) * 4.0,
                );
            }
        }
    }
}
