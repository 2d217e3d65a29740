//! Importer coverage for the smaller ops of PyTorch and Keras exports (Tile, Range, CumSum,
//! norm reductions, activations, Mod, OneHot, Einsum, GatherElements, Trilu, GroupNormalization,
//! Pad modes) and for shape tracking with a dynamic batch, with values computed by hand.

mod common;

use common::*;
use tandem_ir::Emit;
use tandem_onnx::{import, parse, Recorder, RecorderHooks};
use tandem_tensor::{DType, Tensor};

#[test]
fn tile_range_and_cumsum() {
    let x = f32s(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let bytes = unary_model(
        13,
        "Tile",
        &[None, Some(2)],
        &[("r", i64s(&[2, 3]))],
        &["r"],
        vec![],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    let row1 = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
    let row2 = [3.0, 4.0, 3.0, 4.0, 3.0, 4.0];
    let want: Vec<f64> = [row1, row2, row1, row2].concat();
    assert_close(y, &want, &[4, 6]);

    // Range from constants, used as a tensor: x + range(0, 2).
    let bytes = model(
        13,
        &[("x", &[Some(2), Some(2)])],
        &[
            ("s", Tensor::scalar(0.0f32)),
            ("l", Tensor::scalar(2.0f32)),
            ("d", Tensor::scalar(0.75f32)),
        ],
        vec![
            node("Range", &["s", "l", "d"], &["r"], vec![]),
            node("Add", &["r", "r"], &["y"], vec![]),
        ],
        &["y"],
    );
    assert_close(
        &run(&bytes, std::slice::from_ref(&x))[0],
        &[0.0, 1.5, 3.0],
        &[3],
    );

    // CumSum along axis 1: plain, exclusive, reverse, both.
    let cases = [
        (0, 0, [1.0, 3.0, 3.0, 7.0]),
        (1, 0, [0.0, 1.0, 0.0, 3.0]),
        (0, 1, [3.0, 2.0, 7.0, 4.0]),
        (1, 1, [2.0, 0.0, 4.0, 0.0]),
    ];
    for (exclusive, reverse, want) in cases {
        let bytes = unary_model(
            13,
            "CumSum",
            &[None, Some(2)],
            &[("a", Tensor::scalar(-1i64))],
            &["a"],
            vec![ai("exclusive", exclusive), ai("reverse", reverse)],
        );
        let y = &run(&bytes, std::slice::from_ref(&x))[0];
        assert_close(y, &want, &[2, 2]);
    }
}

#[test]
fn cumsum_of_a_long_axis() {
    // 1000 ones (not a power of two) sum to 1..=1000; reversed exclusive to 999..=0.
    let x = Tensor::ones(&[1, 1000], DType::F32);
    for (reverse, exclusive) in [(0, 0), (1, 1)] {
        let bytes = unary_model(
            13,
            "CumSum",
            &[None, Some(1000)],
            &[("a", Tensor::scalar(1i64))],
            &["a"],
            vec![ai("reverse", reverse), ai("exclusive", exclusive)],
        );
        let want: Vec<f64> = if reverse == 0 {
            (1..=1000).map(f64::from).collect()
        } else {
            (0..1000).rev().map(f64::from).collect()
        };
        assert_close(&run(&bytes, std::slice::from_ref(&x))[0], &want, &[1, 1000]);
    }
}

#[test]
fn norm_reductions_in_both_axes_forms() {
    let x = f32s(&[3.0, -4.0, 1.0, 0.0], &[2, 2]);
    let want = [
        ("ReduceL1", [7.0, 1.0]),
        ("ReduceL2", [5.0, 1.0]),
        ("ReduceSumSquare", [25.0, 1.0]),
        (
            "ReduceLogSumExp",
            [(3f64.exp() + (-4f64).exp()).ln(), (1f64.exp() + 1.0).ln()],
        ),
    ];
    for (op, w) in want {
        // Opset 13: axes attribute.
        let b13 = unary_model(
            13,
            op,
            &[Some(2), Some(2)],
            &[],
            &[],
            vec![ais("axes", &[1]), ai("keepdims", 0)],
        );
        assert_close(&run(&b13, std::slice::from_ref(&x))[0], &w, &[2]);
        // Opset 18: axes input.
        let b18 = unary_model(
            18,
            op,
            &[Some(2), Some(2)],
            &[("ax", i64s(&[-1]))],
            &["ax"],
            vec![],
        );
        assert_close(&run(&b18, std::slice::from_ref(&x))[0], &w, &[2, 1]);
    }
}

#[test]
fn activations() {
    let xs = [-2.0f64, -0.5, 0.0, 1.5];
    let x = f32s(&xs.map(|v| v as f32), &[4]);
    let selu = |v: f64| {
        let (a, g) = (1.673_263_242_354_377_3, 1.050_700_987_355_480_5);
        g * if v > 0.0 { v } else { a * (v.exp() - 1.0) }
    };
    let softsign = |v: f64| v / (1.0 + v.abs());
    let mish = |v: f64| v * (1.0 + v.exp()).ln().tanh();
    let celu = |v: f64| {
        if v > 0.0 {
            v
        } else {
            0.5 * ((v / 0.5).exp() - 1.0)
        }
    };
    let thr = |v: f64| if v > 1.0 { v } else { 0.0 };
    let cases: Vec<(&str, Vec<_>, Box<dyn Fn(f64) -> f64>)> = vec![
        ("Selu", vec![], Box::new(selu)),
        ("Softsign", vec![], Box::new(softsign)),
        ("Mish", vec![], Box::new(mish)),
        ("Celu", vec![af("alpha", 0.5)], Box::new(celu)),
        ("ThresholdedRelu", vec![], Box::new(thr)),
    ];
    for (op, attrs, func) in cases {
        let bytes = unary_model(18, op, &[Some(4)], &[], &[], attrs);
        let want: Vec<f64> = xs.iter().map(|&v| func(v)).collect();
        assert_close(&run(&bytes, std::slice::from_ref(&x))[0], &want, &[4]);
    }
}

#[test]
fn mod_follows_the_fmod_attribute() {
    let a = Tensor::from_vec(vec![7i64, -7, 7, -7], &[4]).unwrap();
    let b = Tensor::from_vec(vec![3i64, 3, -3, -3], &[4]).unwrap();
    for (fmod, want) in [(0, [1i64, 2, -2, -1]), (1, [1, -1, 1, -1])] {
        let bytes = model(
            13,
            &[],
            &[("a", a.clone()), ("b", b.clone())],
            vec![node("Mod", &["a", "b"], &["y"], vec![ai("fmod", fmod)])],
            &["y"],
        );
        let y = &run(&bytes, &[])[0];
        assert_eq!(y.dtype(), DType::I64);
        assert_eq!(y.to_vec::<i64>().unwrap(), want.to_vec(), "fmod {fmod}");
    }
    let x = f32s(&[5.5, -5.5], &[2]);
    let bytes = unary_model(
        13,
        "Mod",
        &[Some(2)],
        &[("d", Tensor::scalar(2.0f32))],
        &["d"],
        vec![ai("fmod", 1)],
    );
    assert_close(&run(&bytes, &[x])[0], &[1.5, -1.5], &[2]);
}

#[test]
fn one_hot_axis_and_negative_indices() {
    let idx = Tensor::from_vec(vec![0i64, -1, 2], &[3]).unwrap();
    let bytes = model(
        11,
        &[],
        &[
            ("i", idx),
            ("depth", Tensor::scalar(3.0f32)),
            ("v", f32s(&[-1.0, 5.0], &[2])),
        ],
        vec![node(
            "OneHot",
            &["i", "depth", "v"],
            &["y"],
            vec![ai("axis", 0)],
        )],
        &["y"],
    );
    // Classes along axis 0: column k is the one-hot of index k.
    let y = &run(&bytes, &[])[0];
    #[rustfmt::skip]
    let want = [
        5.0, -1.0, -1.0,
        -1.0, -1.0, -1.0,
        -1.0, 5.0, 5.0,
    ];
    assert_close(y, &want, &[3, 3]);
}

#[test]
fn einsum_matmul_like_equations() {
    let a = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = f32s(&[1.0, 0.0, -1.0, 2.0, 0.5, 1.0], &[3, 2]);
    let ab = [0.5, 7.0, 2.0, 16.0];
    let cases: [(&str, Tensor, Vec<f64>, &[usize]); 5] = [
        ("ij,jk->ik", b.clone(), ab.to_vec(), &[2, 2]),
        // Implicit output: letters used once, alphabetically (i, k).
        ("ij,jk", b.clone(), ab.to_vec(), &[2, 2]),
        // Transposed product: (A B)^T.
        ("ij,jk->ki", b.clone(), vec![0.5, 2.0, 7.0, 16.0], &[2, 2]),
        // Batched over i, contracted over j: row-wise dot products.
        (
            "ij,ij->i",
            a.clone(),
            vec![1.0 + 4.0 + 9.0, 16.0 + 25.0 + 36.0],
            &[2],
        ),
        // Everything contracted: the sum of A * A.
        ("ij,ij->", a.clone(), vec![91.0], &[]),
    ];
    for (eq, second, want, shape) in cases {
        let bytes = unary_model(
            12,
            "Einsum",
            &[Some(2), Some(3)],
            &[("b", second)],
            &["b"],
            vec![astr("equation", eq)],
        );
        assert_close(&run(&bytes, std::slice::from_ref(&a))[0], &want, shape);
    }
    // One operand: a transpose and a row sum.
    let bytes = unary_model(
        12,
        "Einsum",
        &[Some(2), Some(3)],
        &[],
        &[],
        vec![astr("equation", "ij->j")],
    );
    assert_close(
        &run(&bytes, std::slice::from_ref(&a))[0],
        &[5.0, 7.0, 9.0],
        &[3],
    );
    // A repeated letter (trace) is refused with the equation named.
    let bytes = unary_model(
        12,
        "Einsum",
        &[Some(2), Some(3)],
        &[],
        &[],
        vec![astr("equation", "ii->i")],
    );
    let e = run_err(&bytes, &[a]);
    assert!(e.contains("ii->i") && e.contains("Einsum"), "{e}");
}

#[test]
fn flip_gather_elements_trilu_and_group_norm() {
    let x = arange(&[2, 3]);
    // torch.flip exports a Slice with step -1 from -1 to INT64_MIN.
    let bytes = unary_model(
        13,
        "Slice",
        &[None, Some(3)],
        &[
            ("s", i64s(&[-1])),
            ("e", i64s(&[i64::MIN])),
            ("a", i64s(&[1])),
            ("st", i64s(&[-1])),
        ],
        &["s", "e", "a", "st"],
        vec![],
    );
    assert_close(
        &run(&bytes, std::slice::from_ref(&x))[0],
        &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0],
        &[2, 3],
    );

    // torch.gather: negative indices count from the end.
    let idx = Tensor::from_vec(vec![0i64, 0, 2, -3], &[2, 2]).unwrap();
    let bytes = unary_model(
        13,
        "GatherElements",
        &[None, Some(3)],
        &[("i", idx)],
        &["i"],
        vec![ai("axis", 1)],
    );
    assert_close(
        &run(&bytes, std::slice::from_ref(&x))[0],
        &[0.0, 0.0, 5.0, 3.0],
        &[2, 2],
    );

    // Trilu: upper with k = 0, lower with k = -1.
    let sq = arange(&[3, 3]);
    let upper = unary_model(14, "Trilu", &[Some(3), Some(3)], &[], &[], vec![]);
    assert_close(
        &run(&upper, std::slice::from_ref(&sq))[0],
        &[0.0, 1.0, 2.0, 0.0, 4.0, 5.0, 0.0, 0.0, 8.0],
        &[3, 3],
    );
    let lower = unary_model(
        14,
        "Trilu",
        &[Some(3), Some(3)],
        &[("k", Tensor::scalar(-1i64))],
        &["k"],
        vec![ai("upper", 0)],
    );
    assert_close(
        &run(&lower, &[sq])[0],
        &[0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 6.0, 7.0, 0.0],
        &[3, 3],
    );

    // GroupNormalization (opset 21, per-channel scale): groups (1, 3) and (10, 14) both
    // normalize to (-1, 1).
    let g = f32s(&[1.0, 3.0, 10.0, 14.0], &[1, 4, 1, 1]);
    let bytes = unary_model(
        21,
        "GroupNormalization",
        &[None, Some(4), Some(1), Some(1)],
        &[
            ("s", f32s(&[1.0, 2.0, 3.0, 4.0], &[4])),
            ("b", f32s(&[0.0, 0.0, 0.0, 0.5], &[4])),
        ],
        &["s", "b"],
        vec![ai("num_groups", 2), af("epsilon", 1e-9)],
    );
    assert_close(
        &run(&bytes, &[g])[0],
        &[-1.0, 2.0, -3.0, 4.5],
        &[1, 4, 1, 1],
    );
}

#[test]
fn is_nan_is_inf_and_xor() {
    let x = f32s(&[1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN], &[4]);
    let bools = |t: &Tensor| t.to_vec::<bool>().unwrap();
    let nan = unary_model(13, "IsNaN", &[Some(4)], &[], &[], vec![]);
    assert_eq!(
        bools(&run(&nan, std::slice::from_ref(&x))[0]),
        [false, false, false, true]
    );
    let inf = unary_model(
        13,
        "IsInf",
        &[Some(4)],
        &[],
        &[],
        vec![ai("detect_negative", 0)],
    );
    assert_eq!(bools(&run(&inf, &[x])[0]), [false, true, false, false]);
    let a = Tensor::from_vec(vec![true, true, false, false], &[4]).unwrap();
    let b = Tensor::from_vec(vec![true, false, true, false], &[4]).unwrap();
    let xor = model(
        13,
        &[],
        &[("a", a), ("b", b)],
        vec![node("Xor", &["a", "b"], &["y"], vec![])],
        &["y"],
    );
    assert_eq!(bools(&run(&xor, &[])[0]), [false, true, true, false]);
}

#[test]
fn expand_to_a_runtime_shape_keeps_the_batch() {
    // F.normalize: x / expand(norm, shape(x)), with the batch dynamic in graph mode.
    let bytes = model(
        13,
        &[("x", &[None, Some(2)])],
        &[],
        vec![
            node(
                "ReduceL2",
                &["x"],
                &["n"],
                vec![ais("axes", &[1]), ai("keepdims", 1)],
            ),
            node("Shape", &["x"], &["s"], vec![]),
            node("Expand", &["n", "s"], &["e"], vec![]),
            node("Div", &["x", "e"], &["y"], vec![]),
        ],
        &["y"],
    );
    let x = f32s(&[3.0, 4.0, 0.0, 2.0], &[2, 2]);
    assert_close(&run(&bytes, &[x])[0], &[0.6, 0.8, 0.0, 1.0], &[2, 2]);
    let rec = Recorder::new();
    let imported = import(&parse(&bytes).unwrap(), &rec, &mut RecorderHooks).unwrap();
    assert_eq!(rec.shape(&imported.outputs[0].1), vec![None, Some(2)]);
}

#[test]
fn pad_reflect_edge_and_wrap() {
    let x = f32s(&[1.0, 2.0, 3.0], &[1, 3]);
    for (mode, want) in [
        ("reflect", [3.0, 2.0, 1.0, 2.0, 3.0, 2.0]),
        ("edge", [1.0, 1.0, 1.0, 2.0, 3.0, 3.0]),
        ("wrap", [2.0, 3.0, 1.0, 2.0, 3.0, 1.0]),
    ] {
        let bytes = unary_model(
            19,
            "Pad",
            &[None, Some(3)],
            &[("p", i64s(&[0, 2, 0, 1]))],
            &["p"],
            vec![astr("mode", mode)],
        );
        assert_close(&run(&bytes, std::slice::from_ref(&x))[0], &want, &[1, 6]);
    }
    // Reflecting by the whole axis is refused.
    let bytes = unary_model(
        13,
        "Pad",
        &[None, Some(3)],
        &[("p", i64s(&[0, 3, 0, 0]))],
        &["p"],
        vec![astr("mode", "reflect")],
    );
    let e = run_err(&bytes, &[x]);
    assert!(e.contains("reflect") && e.contains("Pad"), "{e}");
}

#[test]
fn known_entries_of_a_dynamic_shape_fold() {
    // x.view(x.size(0), x.size(1) * x.size(2)): with the batch dynamic, size(1) and size(2)
    // are still known, so the product folds and the Reshape target has one run-time entry.
    let bytes = model(
        13,
        &[("x", &[None, Some(2), Some(3)])],
        &[
            ("zero", Tensor::scalar(0i64)),
            ("one", Tensor::scalar(1i64)),
            ("two", Tensor::scalar(2i64)),
            ("ax0", i64s(&[0])),
        ],
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "zero"], &["n"], vec![ai("axis", 0)]),
            node("Gather", &["s", "one"], &["h"], vec![ai("axis", 0)]),
            node("Gather", &["s", "two"], &["w"], vec![ai("axis", 0)]),
            node("Mul", &["h", "w"], &["hw"], vec![]),
            node("Unsqueeze", &["n", "ax0"], &["n1"], vec![]),
            node("Unsqueeze", &["hw", "ax0"], &["hw1"], vec![]),
            node("Concat", &["n1", "hw1"], &["shape"], vec![ai("axis", 0)]),
            node("Reshape", &["x", "shape"], &["y"], vec![]),
        ],
        &["y"],
    );
    let x = arange(&[2, 2, 3]);
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    assert_close(y, &x.to_f64_vec().unwrap(), &[2, 6]);
    let rec = Recorder::new();
    let imported = import(&parse(&bytes).unwrap(), &rec, &mut RecorderHooks).unwrap();
    assert_eq!(rec.shape(&imported.outputs[0].1), vec![None, Some(6)]);
}
