//! The Keras-style API: regression, classification, layers, errors.

use tandem_graph::keras::{
    Conv2D, Dense, Dropout, FitOptions, Flatten, Loss, MaxPool2D, Sequential,
};
use tandem_graph::{Adam, GradientDescent};
use tandem_tensor::Tensor;

fn quiet(epochs: usize, batch: usize) -> FitOptions {
    FitOptions::new()
        .epochs(epochs)
        .batch_size(batch)
        .verbose(false)
}

/// `y = 2x + 1` plus a little deterministic wobble, x in [-1, 1].
fn line_data(n: usize) -> (Tensor, Tensor) {
    let xs: Vec<f32> = (0..n).map(|i| -1.0 + 2.0 * i as f32 / n as f32).collect();
    let ys: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| 2.0 * x + 1.0 + 0.01 * ((i * 7 % 5) as f32 - 2.0))
        .collect();
    (
        Tensor::from_vec(xs, &[n, 1]).unwrap(),
        Tensor::from_vec(ys, &[n, 1]).unwrap(),
    )
}

/// Two separable classes in 2-D: class 1 when x0 + x1 > 0, points kept away from the border.
fn blobs(n: usize) -> (Tensor, Tensor) {
    let mut xs = Vec::with_capacity(2 * n);
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 2) as i64;
        let t = i as f32 * 0.7;
        let (cx, cy) = if c == 1 { (1.5, 1.5) } else { (-1.5, -1.5) };
        xs.push(cx + 0.5 * t.sin());
        xs.push(cy + 0.5 * (1.3 * t).cos());
        ys.push(c);
    }
    (
        Tensor::from_vec(xs, &[n, 2]).unwrap(),
        Tensor::from_vec(ys, &[n]).unwrap(),
    )
}

#[test]
fn seed_example_fits_a_line_and_the_loss_drops() {
    // tf.keras.Sequential([Dense(10, activation="relu"), Dense(1)]); compile("adam", "mse")
    let mut model = Sequential::new(vec![
        Box::new(Dense::new(10).activation("relu")),
        Box::new(Dense::new(1)),
    ]);
    model.compile("adam", "mse", &[]).unwrap();
    let (x, y) = line_data(256);
    let h = model.fit(&x, &y, &quiet(100, 8)).unwrap();
    let loss = h.loss();
    assert_eq!(loss.len(), 100);
    assert!(
        loss[99] < 0.05 * loss[0] && loss[99] < 0.05,
        "loss did not drop enough: {} -> {}",
        loss[0],
        loss[99]
    );
    let e = model.evaluate(&x, &y, 64).unwrap();
    assert!(e.loss < 0.05 && e.accuracy.is_none());
    let p = model
        .predict(&Tensor::from_vec(vec![0.5f32], &[1, 1]).unwrap(), 8)
        .unwrap();
    assert!(
        (p.item().unwrap() - 2.0).abs() < 0.3,
        "predict(0.5) = {p:?}"
    );
}

#[test]
fn classifier_reaches_high_accuracy_with_validation() {
    let mut model = Sequential::new(vec![
        Box::new(Dense::new(16).activation("relu")),
        Box::new(Dropout::new(0.1)),
        Box::new(Dense::new(2)),
    ])
    .seed(3);
    model
        .compile(
            Adam::new(1e-2),
            Loss::SparseCategoricalCrossentropy { from_logits: true },
            &["accuracy"],
        )
        .unwrap();
    let (x, y) = blobs(200);
    let (vx, vy) = blobs(60);
    let opts = quiet(15, 16)
        .validation_data(vx.clone(), vy.clone())
        .seed(5);
    let h = model.fit(&x, &y, &opts).unwrap();
    let acc = h.get("accuracy").unwrap();
    let val = h.get("val_accuracy").unwrap();
    assert_eq!(
        (acc.len(), val.len(), h.get("val_loss").unwrap().len()),
        (15, 15, 15)
    );
    assert!(val[14] >= 0.98, "validation accuracy {}", val[14]);
    let e = model.evaluate(&vx, &vy, 7).unwrap();
    assert!(e.accuracy.unwrap() >= 0.98);
    // Inference is deterministic (dropout is off) and gives one row per sample.
    let p1 = model.predict(&vx, 13).unwrap();
    let p2 = model.predict(&vx, 60).unwrap();
    assert_eq!(p1.shape(), &[60, 2]);
    assert_eq!(p1.to_vec::<f32>().unwrap(), p2.to_vec::<f32>().unwrap());
}

#[test]
fn probability_losses_train_too() {
    let (x, y) = blobs(120);
    // softmax + sparse cross-entropy on probabilities, plain SGD by name
    let mut m = Sequential::new(vec![
        Box::new(Dense::new(8).activation("tanh")),
        Box::new(Dense::new(2).activation("softmax")),
    ]);
    m.compile("sgd", "sparse_categorical_crossentropy", &["accuracy"])
        .unwrap();
    let h = m.fit(&x, &y, &quiet(30, 8)).unwrap();
    assert!(h.get("accuracy").unwrap()[29] >= 0.95);
    // one-hot labels with categorical cross-entropy, rmsprop
    let onehot: Vec<f32> = y
        .to_vec::<i64>()
        .unwrap()
        .iter()
        .flat_map(|&c| if c == 1 { [0.0, 1.0] } else { [1.0, 0.0] })
        .collect();
    let yo = Tensor::from_vec(onehot, &[120, 2]).unwrap();
    let mut m = Sequential::new(vec![Box::new(Dense::new(2).activation("softmax"))]);
    m.compile("rmsprop", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    let h = m.fit(&x, &yo, &quiet(20, 8)).unwrap();
    assert!(h.get("accuracy").unwrap()[19] >= 0.95);
    // a sigmoid output with binary cross-entropy, labels [N] reshaped to [N, 1]
    let yb = y.cast(tandem_tensor::DType::F32).unwrap();
    let mut m = Sequential::new(vec![Box::new(Dense::new(1).activation("sigmoid"))]);
    m.compile(
        GradientDescent::new(0.5),
        "binary_crossentropy",
        &["accuracy"],
    )
    .unwrap();
    let h = m.fit(&x, &yb, &quiet(20, 8)).unwrap();
    assert!(h.get("accuracy").unwrap()[19] >= 0.95);
    assert!(h.loss()[19] < h.loss()[0]);
}

#[test]
fn small_cnn_trains_and_summarizes() {
    // 1x6x6 images: class 1 when the bright bar is vertical, 0 when horizontal.
    let n = 40;
    let mut xs = vec![0.0f32; n * 36];
    let mut ys = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 2;
        let k = i / 2 % 6;
        for j in 0..6 {
            let (r, col) = if c == 1 { (j, k) } else { (k, j) };
            xs[i * 36 + r * 6 + col] = 1.0;
        }
        ys.push(c as i64);
    }
    let x = Tensor::from_vec(xs, &[n, 1, 6, 6]).unwrap();
    let y = Tensor::from_vec(ys, &[n]).unwrap();
    let mut m = Sequential::new(vec![
        Box::new(Conv2D::new(4, 3).padding("same").activation("relu")),
        Box::new(MaxPool2D::new(2)),
        Box::new(Flatten::new()),
        Box::new(Dense::new(2)),
    ])
    .input_shape(&[1, 6, 6]);
    m.compile(
        Adam::new(2e-2),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &["accuracy"],
    )
    .unwrap();
    let s = m.summary().unwrap();
    assert!(
        s.contains("conv2d (Conv2D)") && s.contains("(None, 4, 6, 6)"),
        "{s}"
    );
    assert!(
        s.contains("(None, 4, 3, 3)") && s.contains("(None, 36)"),
        "{s}"
    );
    // 4*1*3*3 + 4 = 40, 36*2 + 2 = 74
    assert!(s.contains("Total params: 114"), "{s}");
    let h = m.fit(&x, &y, &quiet(25, 8)).unwrap();
    assert!(
        h.get("accuracy").unwrap()[24] >= 0.95,
        "{:?}",
        h.get("accuracy")
    );
    let names: Vec<String> = m.weights().iter().map(|w| w.name().to_string()).collect();
    assert_eq!(
        names,
        ["conv2d/kernel", "conv2d/bias", "dense/kernel", "dense/bias"]
    );
}

#[test]
fn bad_shapes_and_settings_give_clear_errors() {
    let msg = |e: tandem_tensor::Error| e.to_string();
    // Dense after images without Flatten.
    let mut m = Sequential::new(vec![Box::new(Dense::new(3))]).input_shape(&[1, 4, 4]);
    let e = msg(m.compile("adam", "mse", &[]).unwrap_err());
    assert!(e.contains("dense") && e.contains("Flatten"), "{e}");

    // Inputs of another shape than the model was built for.
    let mut m = Sequential::new(vec![Box::new(Dense::new(1))]);
    m.compile("adam", "mse", &[]).unwrap();
    let (x, y) = line_data(8);
    m.fit(&x, &y, &quiet(1, 4)).unwrap();
    let x3 = Tensor::zeros(&[8, 3], tandem_tensor::DType::F32);
    let e = msg(m.fit(&x3, &y, &quiet(1, 4)).unwrap_err());
    assert!(e.contains("[N, 1]") && e.contains("[N, 3]"), "{e}");

    // Labels that do not match the inputs or the output.
    let e = msg(m
        .fit(
            &x,
            &Tensor::zeros(&[5, 1], tandem_tensor::DType::F32),
            &quiet(1, 4),
        )
        .unwrap_err());
    assert!(e.contains("5, 1") && e.contains("8 input samples"), "{e}");
    let e = msg(m
        .fit(
            &x,
            &Tensor::zeros(&[8, 2], tandem_tensor::DType::F32),
            &quiet(1, 4),
        )
        .unwrap_err());
    assert!(e.contains("mse") && e.contains("[8, 1]"), "{e}");

    // Sparse labels must be one class per sample.
    let mut c = Sequential::new(vec![Box::new(Dense::new(3))]);
    c.compile("adam", "sparse_categorical_crossentropy", &[])
        .unwrap();
    let e = msg(c
        .fit(
            &x,
            &Tensor::zeros(&[8, 3], tandem_tensor::DType::I64),
            &quiet(1, 4),
        )
        .unwrap_err());
    assert!(e.contains("[8]"), "{e}");

    // Unknown names and misuse.
    let mut u = Sequential::new(vec![Box::new(Dense::new(1))]);
    assert!(msg(u.compile("adamax", "mse", &[]).unwrap_err()).contains("adamax"));
    assert!(msg(u.compile("adam", "hinge", &[]).unwrap_err()).contains("hinge"));
    assert!(msg(u.compile("adam", "mse", &["f1"]).unwrap_err()).contains("f1"));
    assert!(msg(u.compile("adam", "mse", &["accuracy"]).unwrap_err()).contains("accuracy"));
    assert!(msg(u.fit(&x, &y, &quiet(1, 4)).unwrap_err()).contains("compile"));
    assert!(msg(u.summary().unwrap_err()).contains("not built"));
    let mut a = Sequential::new(vec![Box::new(Dense::new(1).activation("relu6"))]);
    a.compile("adam", "mse", &[]).unwrap();
    assert!(msg(a.fit(&x, &y, &quiet(1, 4)).unwrap_err()).contains("relu6"));
    let e = msg(m
        .fit(
            &Tensor::zeros(&[8], tandem_tensor::DType::F32),
            &y,
            &quiet(1, 4),
        )
        .unwrap_err());
    assert!(e.contains("[N, ...]"), "{e}");
    let mut p = Sequential::new(vec![Box::new(MaxPool2D::new(5))]).input_shape(&[1, 4, 4]);
    assert!(msg(p.compile("adam", "mse", &[]).unwrap_err()).contains("4x4"));
}

#[test]
fn weights_round_trip_through_a_file() {
    let mut m = Sequential::new(vec![Box::new(Dense::new(4)), Box::new(Dense::new(1))]).seed(1);
    m.compile("adam", "mse", &[]).unwrap();
    let (x, y) = line_data(32);
    m.fit(&x, &y, &quiet(3, 8)).unwrap();
    let before = m.predict(&x, 32).unwrap().to_vec::<f32>().unwrap();
    let dir = std::env::temp_dir().join(format!("tandem-keras-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    m.save_weights(&path).unwrap();
    let mut m2 = Sequential::new(vec![Box::new(Dense::new(4)), Box::new(Dense::new(1))])
        .seed(2)
        .input_shape(&[1]);
    m2.compile("adam", "mse", &[]).unwrap();
    assert_ne!(m2.predict(&x, 32).unwrap().to_vec::<f32>().unwrap(), before);
    m2.load_weights(&path).unwrap();
    assert_eq!(m2.predict(&x, 32).unwrap().to_vec::<f32>().unwrap(), before);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn explicit_cpu_device_gives_the_default_results() {
    let build = |on_cpu: bool| {
        let m = Sequential::new(vec![
            Box::new(Dense::new(8).activation("relu")),
            Box::new(Dense::new(1)),
        ])
        .seed(2);
        let mut m = if on_cpu {
            m.device(tandem_tensor::Device::Cpu)
        } else {
            m
        };
        m.compile("adam", "mse", &[]).unwrap();
        let (x, y) = line_data(32);
        let h = m.fit(&x, &y, &quiet(3, 8)).unwrap();
        (
            h.loss().to_vec(),
            m.predict(&x, 32).unwrap().to_vec::<f32>().unwrap(),
        )
    };
    assert_eq!(build(true), build(false));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_model_without_cuda_support_is_an_error_naming_the_device() {
    let mut m = Sequential::new(vec![Box::new(Dense::new(1))])
        .input_shape(&[1])
        .device(tandem_tensor::Device::Cuda(0));
    let e = m.compile("sgd", "mse", &[]).unwrap_err().to_string();
    assert!(e.to_lowercase().contains("cuda"), "{e}");
    // Nothing was built: the same call fails the same way, no panic.
    let (x, y) = line_data(4);
    assert!(m.fit(&x, &y, &quiet(1, 4)).is_err());
}
