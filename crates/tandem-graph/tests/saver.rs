//! Checkpoints and graph files.

use std::path::PathBuf;
use tandem_graph::saver::{latest_checkpoint, read_index};
use tandem_graph::{
    Adam, Emit, EmitExt, Functional, Graph, Initializer, Optimizer, Saver, Session,
};
use tandem_ir::{Op, Reduction};
use tandem_tensor::{DType, Error, Tensor};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-graph-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model(
    g: &Graph,
) -> (
    tandem_graph::Output,
    tandem_graph::Output,
    tandem_graph::Output,
) {
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let y = {
        let _s = g.scope("fc1");
        let w = g
            .variable_with(
                "weight",
                &[2, 3],
                DType::F32,
                Initializer::XavierUniform { seed: None },
                true,
            )
            .unwrap();
        let b = g
            .variable_with("bias", &[2], DType::F32, Initializer::Fill(0.1), true)
            .unwrap();
        g.linear(&x, &w, Some(&b)).unwrap()
    };
    let target = g
        .placeholder("target", DType::F32, &[None, Some(2)])
        .unwrap();
    let loss = g.mse_loss(&y, &target, Reduction::Mean).unwrap();
    let train = Adam::new(0.1).minimize(&loss).unwrap();
    let _ = train;
    (x, y, target)
}

fn data() -> (Tensor, Tensor) {
    (
        Tensor::from_vec(
            (0..12).map(|i| i as f32 / 6.0 - 1.0).collect::<Vec<_>>(),
            &[4, 3],
        )
        .unwrap(),
        Tensor::from_vec((0..8).map(|i| (i % 3) as f32).collect::<Vec<_>>(), &[4, 2]).unwrap(),
    )
}

#[test]
fn checkpoint_round_trip_with_pytorch_names_and_rotation() {
    let dir = temp_dir("ckpt");
    let g = Graph::new();
    let (x, y, target) = model(&g);
    let train = g.get("Adam/group").unwrap();
    let s = Session::new(&g).unwrap();
    let (xs, ts) = data();
    let saver = Saver::new(&s).unwrap().max_to_keep(2).pytorch_names(true);
    let mut paths = Vec::new();
    for step in 0..3u64 {
        s.run(&[&train], &[(&x, &xs), (&target, &ts)]).unwrap();
        paths.push(saver.save(&s, &dir.join("model"), step).unwrap());
    }
    assert_eq!(
        read_index(&dir).unwrap(),
        vec!["model-1.safetensors", "model-2.safetensors"]
    );
    assert!(!paths[0].exists() && paths[1].exists() && paths[2].exists());
    let latest = latest_checkpoint(&dir).unwrap().unwrap();
    assert_eq!(latest, paths[2]);
    let names: Vec<String> = tandem_tensor::io::safetensors::load(&latest)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"fc1.weight".to_string()), "{names:?}");
    assert!(names.contains(&"fc1.weight.Adam".to_string()), "{names:?}");
    let want = s.run(&[&y], &[(&x, &xs)]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    // Train further, then restore: outputs return to the checkpoint's.
    s.run(&[&train], &[(&x, &xs), (&target, &ts)]).unwrap();
    assert_ne!(
        s.run(&[&y], &[(&x, &xs)]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap(),
        want
    );
    saver.restore(&s, &latest).unwrap();
    assert_eq!(
        s.run(&[&y], &[(&x, &xs)]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap(),
        want
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failure_between_write_and_rename_keeps_the_old_checkpoint() {
    let dir = temp_dir("kill");
    let g = Graph::new();
    let v = g
        .variable("v", Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap())
        .unwrap();
    let s = Session::new(&g).unwrap();
    let saver = Saver::new(&s).unwrap();
    let path = dir.join("v.safetensors");
    saver.save_to(&s, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    s.set_variables(&[(&v, Tensor::from_vec(vec![9.0f32, 9.0], &[2]).unwrap())])
        .unwrap();
    let r = saver.save_to_with(&s, &path, || Err(Error::Graph("killed".into())));
    assert!(r.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary file left behind");
    saver.restore(&s, &path).unwrap();
    assert_eq!(
        s.variable_value(&v).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restore_checks_everything_before_assigning() {
    let dir = temp_dir("restore");
    let g = Graph::new();
    let a = g
        .variable("a", Tensor::from_vec(vec![1.0f32], &[1]).unwrap())
        .unwrap();
    let b = g
        .variable("b", Tensor::from_vec(vec![2.0f32, 3.0], &[2]).unwrap())
        .unwrap();
    let s = Session::new(&g).unwrap();
    let path = dir.join("bad.safetensors");
    let a2 = Tensor::from_vec(vec![5.0f32], &[1]).unwrap();
    let b2 = Tensor::from_vec(vec![5.0f32, 6.0, 7.0], &[3]).unwrap();
    tandem_tensor::io::safetensors::save(&path, &[("a", &a2), ("b", &b2)], None).unwrap();
    let e = Saver::new(&s)
        .unwrap()
        .restore(&s, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`b`") && e.contains("[3]"), "{e}");
    assert_eq!(s.variable_value(&a).unwrap().item().unwrap(), 1.0);
    tandem_tensor::io::safetensors::save(&path, &[("a", &a2)], None).unwrap();
    let e = Saver::new(&s)
        .unwrap()
        .restore(&s, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tensor `b`"), "{e}");
    assert_eq!(
        s.variable_value(&b).unwrap().to_vec::<f32>().unwrap(),
        vec![2.0, 3.0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn graph_file_round_trip_runs_the_same() {
    let dir = temp_dir("graphfile");
    let g = Graph::new();
    let (x, y, target) = model(&g);
    // Ops with awkward attributes: infinities, pooling/conv params, random.
    let m = g
        .emit(
            Op::Full {
                shape: vec![2],
                value: f64::NEG_INFINITY,
                dtype: DType::F32,
            },
            &[],
        )
        .unwrap();
    let mx = g
        .emit(Op::Binary(tandem_tensor::BinaryOp::Maximum), &[&y, &m])
        .unwrap();
    let sm = g.softmax(&mx, -1).unwrap();
    let path = dir.join("model.tgraph");
    g.save(&path).unwrap();
    let g2 = Graph::load(&path).unwrap();
    assert_eq!(g2.len(), g.len());
    let (x2, y2, t2, sm2) = (
        g2.get(x.name()).unwrap(),
        g2.get(y.name()).unwrap(),
        g2.get(target.name()).unwrap(),
        g2.get(sm.name()).unwrap(),
    );
    let train2 = g2.get("Adam/group").unwrap();
    let train = g.get("Adam/group").unwrap();
    let (xs, ts) = data();
    let (s1, s2) = (Session::new(&g).unwrap(), Session::new(&g2).unwrap());
    for _ in 0..3 {
        s1.run(&[&train], &[(&x, &xs), (&target, &ts)]).unwrap();
        s2.run(&[&train2], &[(&x2, &xs), (&t2, &ts)]).unwrap();
    }
    let o1 = s1.run(&[&y, &sm], &[(&x, &xs)]).unwrap();
    let o2 = s2.run(&[&y2, &sm2], &[(&x2, &xs)]).unwrap();
    for (a, b) in o1.iter().zip(&o2) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
    // The loaded graph keeps growing like any graph.
    let z = g2.relu(&y2).unwrap();
    assert_eq!(s2.run(&[&z], &[(&x2, &xs)]).unwrap()[0].shape(), &[4, 2]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_or_future_graph_files_are_clear_errors() {
    let g = Graph::new();
    let a = g.constant_scalar(1.0f32).unwrap();
    let _ = g.add(&a, &a).unwrap();
    let bytes = g.to_bytes().unwrap();
    assert_eq!(Graph::from_bytes(&bytes).unwrap().len(), 2);
    let mut future = bytes.clone();
    future[8] = 9;
    let e = Graph::from_bytes(&future).unwrap_err().to_string();
    assert!(e.contains("version 9"), "{e}");
    let e = Graph::from_bytes(b"hello world, not a graph")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad magic"), "{e}");
    let e = Graph::from_bytes(&bytes[..bytes.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tandem graph") || e.contains("safetensors"),
        "{e}"
    );
    // Every truncation is an error, never a panic.
    for cut in 0..bytes.len() {
        assert!(Graph::from_bytes(&bytes[..cut]).is_err());
    }
}
