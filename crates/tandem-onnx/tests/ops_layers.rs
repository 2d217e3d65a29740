//! Importer coverage for layer-sized ops of PyTorch and Keras exports (ConvTranspose, Resize /
//! Upsample, DepthToSpace / SpaceToDepth, LSTM / GRU, TopK) on hand-built models with values
//! computed by hand.

mod common;

use common::*;
use tandem_ir::Emit;
use tandem_onnx::{import, parse, Recorder, RecorderHooks};
use tandem_tensor::{DType, Tensor};

#[test]
fn conv_transpose_stride_groups_pads_and_output_shape() {
    // A 2x2 input, 2x2 ones kernel, stride 2: every input pixel becomes a 2x2 block.
    let x = f32s(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let w = Tensor::ones(&[1, 1, 2, 2], DType::F32);
    let b = f32s(&[0.5], &[1]);
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[None, Some(1), Some(2), Some(2)],
        &[("w", w.clone()), ("b", b)],
        &["w", "b"],
        vec![ais("strides", &[2, 2])],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    #[rustfmt::skip]
    let want = [
        1.5, 1.5, 2.5, 2.5,
        1.5, 1.5, 2.5, 2.5,
        3.5, 3.5, 4.5, 4.5,
        3.5, 3.5, 4.5, 4.5,
    ];
    assert_close(y, &want, &[1, 1, 4, 4]);

    // Asymmetric pads crop the top row and left column only.
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[Some(1), Some(1), Some(2), Some(2)],
        &[("w", w.clone())],
        &["w"],
        vec![ais("strides", &[2, 2]), ais("pads", &[1, 1, 0, 0])],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    assert_close(
        y,
        &[1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 3.0, 4.0, 4.0],
        &[1, 1, 3, 3],
    );

    // output_shape 5x5 (one more than the full 4x4): a row and a column of zeros are added.
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[Some(1), Some(1), Some(2), Some(2)],
        &[("w", w.clone())],
        &["w"],
        vec![ais("strides", &[2, 2]), ais("output_shape", &[5, 5])],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    assert_eq!(y.shape(), &[1, 1, 5, 5]);
    let v = y.to_f64_vec().unwrap();
    assert_eq!(v.iter().sum::<f64>(), 40.0);

    // Groups: two channels, each with its own 1x1 kernel scale, stride 1.
    let x2 = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[1, 2, 2, 2]);
    let w2 = f32s(&[2.0, -1.0], &[2, 1, 1, 1]);
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[Some(1), Some(2), Some(2), Some(2)],
        &[("w", w2)],
        &["w"],
        vec![ai("group", 2)],
    );
    let y = &run(&bytes, &[x2])[0];
    assert_close(
        y,
        &[2.0, 4.0, 6.0, 8.0, -5.0, -6.0, -7.0, -8.0],
        &[1, 2, 2, 2],
    );

    // output_padding must stay below the stride.
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[Some(1), Some(1), Some(2), Some(2)],
        &[("w", w)],
        &["w"],
        vec![ais("strides", &[2, 2]), ais("output_padding", &[2, 0])],
    );
    let e = run_err(&bytes, &[x]);
    assert!(
        e.contains("output_padding") && e.contains("ConvTranspose"),
        "{e}"
    );
}

#[test]
fn conv_transpose_1d_and_dynamic_batch_in_graph_mode() {
    // 1-D: [1, 1, 3] with kernel [1, 2] of length 3 -> length 5 (full overlap-add).
    let x = f32s(&[1.0, 2.0, 3.0], &[1, 1, 3]);
    let w = f32s(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], &[1, 2, 3]);
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[None, Some(1), Some(3)],
        &[("w", w)],
        &["w"],
        vec![],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    let ch = [1.0, 3.0, 6.0, 5.0, 3.0];
    let want: Vec<f64> = ch
        .iter()
        .chain(ch.iter())
        .enumerate()
        .map(|(i, v)| if i < 5 { *v } else { v * 2.0 })
        .collect();
    assert_close(y, &want, &[1, 2, 5]);

    // Imported into a Recorder the batch stays unknown.
    let parsed = parse(&bytes).unwrap();
    let rec = Recorder::new();
    let imported = import(&parsed, &rec, &mut RecorderHooks).unwrap();
    assert_eq!(
        rec.shape(&imported.outputs[0].1),
        vec![None, Some(2), Some(5)]
    );
}

#[test]
fn resize_nearest_and_linear_modes() {
    let x = f32s(&[0.0, 1.0, 2.0, 3.0], &[1, 1, 2, 2]);
    let empty = Tensor::from_vec(Vec::<f32>::new(), &[0]).unwrap();
    let scales = f32s(&[1.0, 1.0, 2.0, 2.0], &[4]);
    // Nearest, asymmetric, floor (PyTorch's F.interpolate(mode="nearest")).
    let bytes = unary_model(
        13,
        "Resize",
        &[None, Some(1), Some(2), Some(2)],
        &[("roi", empty.clone()), ("scales", scales.clone())],
        &["roi", "scales"],
        vec![
            astr("mode", "nearest"),
            astr("coordinate_transformation_mode", "asymmetric"),
            astr("nearest_mode", "floor"),
        ],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 1.0, 1.0,
        0.0, 0.0, 1.0, 1.0,
        2.0, 2.0, 3.0, 3.0,
        2.0, 2.0, 3.0, 3.0,
    ];
    assert_close(y, &want, &[1, 1, 4, 4]);

    // Linear, half_pixel (the default): source coordinates -0.25, 0.25, 0.75, 1.25 clamp to
    // 0, 0.25, 0.75, 1 along each axis.
    let bytes = unary_model(
        13,
        "Resize",
        &[None, Some(1), Some(2), Some(2)],
        &[("roi", empty.clone()), ("scales", scales)],
        &["roi", "scales"],
        vec![astr("mode", "linear")],
    );
    let y = &run(&bytes, std::slice::from_ref(&x))[0];
    let t = [0.0, 0.25, 0.75, 1.0];
    let want: Vec<f64> = t
        .iter()
        .flat_map(|r| t.iter().map(move |c| 2.0 * r + c))
        .collect();
    assert_close(y, &want, &[1, 1, 4, 4]);

    // Linear, align_corners, sizes input (1x3 from 1x2 on the last axis).
    let row = f32s(&[0.0, 1.0], &[1, 1, 1, 2]);
    let bytes = unary_model(
        13,
        "Resize",
        &[Some(1), Some(1), Some(1), Some(2)],
        &[("roi", empty.clone()), ("sizes", i64s(&[1, 1, 1, 3]))],
        &["roi", "", "sizes"],
        vec![
            astr("mode", "linear"),
            astr("coordinate_transformation_mode", "align_corners"),
        ],
    );
    let y = &run(&bytes, &[row])[0];
    assert_close(y, &[0.0, 0.5, 1.0], &[1, 1, 1, 3]);

    // Downsampling with round_prefer_ceil and half_pixel: 4 -> 2 picks sources 0.5 -> 1 and
    // 2.5 -> 3.
    let r4 = f32s(&[10.0, 11.0, 12.0, 13.0], &[1, 1, 1, 4]);
    let bytes = unary_model(
        13,
        "Resize",
        &[Some(1), Some(1), Some(1), Some(4)],
        &[("roi", empty), ("sizes", i64s(&[1, 1, 1, 2]))],
        &["roi", "", "sizes"],
        vec![astr("nearest_mode", "round_prefer_ceil")],
    );
    let y = &run(&bytes, &[r4])[0];
    assert_close(y, &[11.0, 13.0], &[1, 1, 1, 2]);

    // tf_crop_and_resize is refused with the attribute named.
    let bytes = unary_model(
        13,
        "Resize",
        &[Some(1), Some(1), Some(2), Some(2)],
        &[("scales", f32s(&[1.0, 1.0, 2.0, 2.0], &[4]))],
        &["", "scales"],
        vec![astr("coordinate_transformation_mode", "tf_crop_and_resize")],
    );
    let e = run_err(&bytes, &[x]);
    assert!(
        e.contains("coordinate_transformation_mode") && e.contains("tf_crop_and_resize"),
        "{e}"
    );
}

#[test]
fn upsample_opset_7_and_9() {
    let x = f32s(&[1.0, 2.0], &[1, 1, 1, 2]);
    let b7 = unary_model(
        7,
        "Upsample",
        &[Some(1), Some(1), Some(1), Some(2)],
        &[],
        &[],
        vec![AttributeProto {
            name: "scales".into(),
            r#type: attr_type::FLOATS,
            floats: vec![1.0, 1.0, 2.0, 2.0],
            ..Default::default()
        }],
    );
    let y = &run(&b7, std::slice::from_ref(&x))[0];
    assert_close(y, &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0], &[1, 1, 2, 4]);
    let b9 = unary_model(
        9,
        "Upsample",
        &[Some(1), Some(1), Some(1), Some(2)],
        &[("s", f32s(&[1.0, 1.0, 1.0, 2.0], &[4]))],
        &["s"],
        vec![astr("mode", "linear")],
    );
    // Asymmetric linear: sources 0, 0.5, 1, 1.5 -> clamp to 1.
    let y = &run(&b9, &[x])[0];
    assert_close(y, &[1.0, 1.5, 2.0, 2.0], &[1, 1, 1, 4]);
}

use tandem_onnx::proto::{attr_type, AttributeProto};

#[test]
fn depth_to_space_and_space_to_depth_round_trip() {
    let x = arange(&[1, 8, 2, 3]);
    for mode in ["DCR", "CRD"] {
        let bytes = model(
            13,
            &[("x", &[None, Some(8), Some(2), Some(3)])],
            &[],
            vec![
                node(
                    "DepthToSpace",
                    &["x"],
                    &["d"],
                    vec![ai("blocksize", 2), astr("mode", mode)],
                ),
                node("SpaceToDepth", &["d"], &["y"], vec![ai("blocksize", 2)]),
            ],
            &["d", "y"],
        );
        let out = run(&bytes, std::slice::from_ref(&x));
        assert_eq!(out[0].shape(), &[1, 2, 4, 6]);
        let d = out[0].to_f64_vec().unwrap();
        // Output (c=0, h=0, w=1) is block offset (0, 1) of channel group 0: input channel 2
        // in DCR (offset-major), 1 in CRD (channel-major); (c=1, h=0, w=0) is input channel
        // 1 in DCR and 4 in CRD. Input channel k holds 6k at (0, 0).
        let dcr = mode == "DCR";
        assert_eq!(d[1], if dcr { 12.0 } else { 6.0 }, "{mode}");
        assert_eq!(d[24], if dcr { 6.0 } else { 24.0 }, "{mode}");
        if mode == "DCR" {
            // SpaceToDepth is DCR's inverse.
            assert_close(&out[1], &x.to_f64_vec().unwrap(), &[1, 8, 2, 3]);
        }
    }
}

#[test]
fn pytorch_decoder_imports_with_a_dynamic_batch() {
    // The Resize sizes of this export are Shape(x)[:2] ++ constants: in graph mode the batch
    // entry is only known at run time and must stay unresized.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/onnx/decoder_upsample.onnx");
    let parsed = tandem_onnx::parse_file(path).unwrap();
    let rec = Recorder::new();
    let imported = import(&parsed, &rec, &mut RecorderHooks).unwrap();
    let shapes: Vec<_> = imported.outputs.iter().map(|(_, v)| rec.shape(v)).collect();
    assert_eq!(
        shapes,
        vec![
            vec![None, Some(2), Some(14), Some(16)],
            vec![None, Some(3), Some(9)]
        ]
    );
}

#[test]
fn conv_transpose_1d_output_padding() {
    // Stride 2, 1-tap kernel, output_padding 1: [1, 2] -> [1, 0, 2, 0].
    let x = f32s(&[1.0, 2.0], &[1, 1, 2]);
    let bytes = unary_model(
        13,
        "ConvTranspose",
        &[Some(1), Some(1), Some(2)],
        &[("w", f32s(&[1.0], &[1, 1, 1]))],
        &["w"],
        vec![ais("strides", &[2]), ais("output_padding", &[1])],
    );
    assert_close(&run(&bytes, &[x])[0], &[1.0, 0.0, 2.0, 0.0], &[1, 1, 4]);
}

/// `0, k, 2k, ...` in the given shape.
fn ramp(shape: &[usize], k: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| i as f32 * k).collect();
    f32s(&v, shape)
}

#[test]
fn lstm_and_gru_layouts_agree() {
    // The same weights and sequence in layout 0 ([seq, batch, in]) and layout 1 ([batch, seq,
    // in]) give transposed outputs.
    let (h, i) = (2usize, 3usize);
    let x = ramp(&[4, 2, i], 0.1);
    let xt = x.transpose(0, 1).unwrap().contiguous().unwrap();
    for (op, g) in [("LSTM", 4usize), ("GRU", 3)] {
        let w = ramp(&[1, g * h, i], 0.05);
        let r = ramp(&[1, g * h, h], -0.03);
        let b = ramp(&[1, 2 * g * h], 0.02);
        let inits = [("w", w), ("r", r), ("b", b)];
        let build = |layout: i64, dims: &[Option<usize>]| {
            unary_model(
                14,
                op,
                dims,
                &inits,
                &["w", "r", "b"],
                vec![ai("hidden_size", h as i64), ai("layout", layout)],
            )
        };
        let y0 = &run(
            &build(0, &[Some(4), Some(2), Some(i)]),
            std::slice::from_ref(&x),
        )[0];
        let y1 = &run(
            &build(1, &[Some(2), Some(4), Some(i)]),
            std::slice::from_ref(&xt),
        )[0];
        assert_eq!(y0.shape(), &[4, 1, 2, h], "{op}");
        assert_eq!(y1.shape(), &[2, 4, 1, h], "{op}");
        let y1t = y1.permute(&[1, 2, 0, 3]).unwrap();
        assert_close(&y1t, &y0.to_f64_vec().unwrap(), &[4, 1, 2, h]);
    }
    let zeros = |s: &[usize]| Tensor::zeros(s, DType::F32);
    let b: Vec<f32> = vec![0.5, -0.5, 1.0, 0.75, 0.0, 0.0, 0.0, 0.0];
    let bytes = unary_model(
        14,
        "LSTM",
        &[Some(1), Some(1), Some(1)],
        &[
            ("w", zeros(&[1, 4, 1])),
            ("r", zeros(&[1, 4, 1])),
            ("b", f32s(&b, &[1, 8])),
        ],
        &["w", "r", "b"],
        vec![ai("hidden_size", 1)],
    );
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    // Gate order i, o, f, c: b_i = 0.5, b_o = -0.5, b_f = 1, b_c = 0.75 and c0 = 0.
    let y = &run(&bytes, &[f32s(&[2.0], &[1, 1, 1])])[0];
    let c = sig(0.5) * 0.75f64.tanh();
    assert_close(y, &[sig(-0.5) * c.tanh()], &[1, 1, 1, 1]);
}

#[test]
fn top_k_values_and_indices() {
    // Ties go to the lower index; smallest-k sorts ascending.
    let x = f32s(&[3.0, 1.0, 3.0, -2.0, 0.5, 7.0, 7.0, 7.0], &[2, 4]);
    for (largest, vals, ids) in [
        (1, [3.0, 3.0, 7.0, 7.0], [0i64, 2, 1, 2]),
        (0, [-2.0, 1.0, 0.5, 7.0], [3, 1, 0, 1]),
    ] {
        let bytes = model(
            11,
            &[("x", &[None, Some(4)])],
            &[("k", i64s(&[2]))],
            vec![node(
                "TopK",
                &["x", "k"],
                &["v", "i"],
                vec![ai("largest", largest)],
            )],
            &["v", "i"],
        );
        let out = run(&bytes, std::slice::from_ref(&x));
        assert_close(&out[0], &vals, &[2, 2]);
        assert_eq!(out[1].dtype(), DType::I64);
        assert_eq!(
            out[1].to_vec::<i64>().unwrap(),
            ids.to_vec(),
            "largest {largest}"
        );
    }
}
