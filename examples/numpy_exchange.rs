//! Exchanging arrays with NumPy from both modes: `.npy` for single arrays, `.npz` for named
//! sets (a model's `state_dict`, a session's variables). The files are plain NumPy formats,
//! so the Python side needs nothing but `numpy`.
//!
//! `cargo run --example numpy_exchange [-- OUT_DIR]`

use std::path::PathBuf;
use tandem::eager::nn::{Linear, Module};
use tandem::eager::{self, DType, Result};
use tandem::graph::{Graph, Session};
use tandem::ir::Functional;
use tandem::tensor::io::{npy, npz};
use tandem::tensor::Tensor as Value;

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tandem_numpy_exchange"));
    std::fs::create_dir_all(&dir).map_err(|source| tandem::tensor::Error::Io {
        path: dir.display().to_string(),
        source,
    })?;

    // ---- eager mode: a batch, a layer, its output and its weights ----
    eager::manual_seed(0);
    let x = eager::Tensor::randn(&[2, 4], DType::F32)?;
    let fc = Linear::new(4, 3, true)?;
    let y = fc.forward(&x)?;
    // `value()` is the plain tensor behind the autograd tensor (shared, not copied).
    x.value().write_npy(dir.join("x.npy"))?;
    y.value().write_npy(dir.join("eager_y.npy"))?;
    let state = fc.state_dict();
    let named: Vec<(&str, &Value)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    npz::write(dir.join("fc.npz"), &named)?;

    // ---- graph mode: the same computation fed with the eager batch ----
    let g = Graph::new();
    let xp = g.placeholder("x", DType::F32, &[None, Some(4)])?;
    let w = g.variable("fc.weight", fc.weight.value())?;
    let bias = fc.bias.as_ref().map(|b| b.value());
    let b = g.variable(
        "fc.bias",
        bias.unwrap_or_else(|| Value::zeros(&[3], DType::F32)),
    )?;
    let gy = g.linear(&xp, &w, Some(&b))?;
    let s = Session::new(&g)?;
    let out = s.run(&[&gy], &[(&xp, &x.value())])?;
    npy::write(dir.join("graph_y.npy"), &out[0])?;
    let vars: Vec<(String, Value)> = g
        .variables()?
        .into_iter()
        .map(|(v, _)| Ok((v.name().to_string(), s.variable_value(&v)?)))
        .collect::<Result<_>>()?;
    let named: Vec<(&str, &Value)> = vars.iter().map(|(n, t)| (n.as_str(), t)).collect();
    npz::write(dir.join("graph_vars.npz"), &named)?;

    // ---- reading back: arrays, and a state dict loaded into a fresh layer ----
    let ey = npy::read(dir.join("eager_y.npy"))?;
    let gy = npy::read(dir.join("graph_y.npy"))?;
    let diff = ey
        .to_f64_vec()?
        .iter()
        .zip(gy.to_f64_vec()?)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("eager and graph outputs agree: max |diff| = {diff:e}");
    let fresh = Linear::new(4, 3, true)?;
    fresh.load_state_dict(&npz::read(dir.join("fc.npz"))?, true)?;
    let again = fresh.forward(&eager::Tensor::from_value(npy::read(dir.join("x.npy"))?))?;
    println!(
        "reloaded layer reproduces the output: {}",
        again.value().to_f64_vec()? == ey.to_f64_vec()?
    );
    for file in ["fc.npz", "graph_vars.npz"] {
        for (name, t) in npz::read(dir.join(file))? {
            println!("{file}: {name} {} {:?}", t.dtype(), t.shape());
        }
    }

    let d = dir.display();
    println!(
        "\nOn the Python side (NumPy only; PyTorch and TensorFlow take these arrays as they are):

    import numpy as np
    x = np.load('{d}/x.npy')  # float32 (2, 4)
    y = np.load('{d}/eager_y.npy')
    sd = dict(np.load('{d}/fc.npz'))  # PyTorch names: 'weight', 'bias'
    assert np.allclose(x @ sd['weight'].T + sd['bias'], y, atol=1e-6)
    # torch.from_numpy(sd['weight']) / tf.constant(sd['weight']) for the frameworks
    np.save('{d}/from_numpy.npy', np.arange(6, dtype=np.float32).reshape(2, 3))

and back in Rust: tandem::tensor::io::npy::read(\"{d}/from_numpy.npy\")."
    );
    Ok(())
}
