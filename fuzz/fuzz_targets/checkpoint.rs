//! Checkpoint restore: any bytes, read as a safetensors checkpoint, either restore a model
//! completely or leave it untouched with an error — in eager mode (`load_state_dict` of a
//! small network) and in graph mode (`Saver::restore` of a small graph's variables).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tandem_eager::nn::{BatchNorm, Linear, Module, Sequential};
use tandem_graph::{saver::Saver, Graph, Session};
use tandem_tensor::{io::safetensors, DType, Tensor};

struct GraphModel {
    session: Session,
    saver: Saver,
}

fn graph_model() -> Option<&'static GraphModel> {
    static MODEL: OnceLock<Option<GraphModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let g = Graph::new();
            g.variable("w", Tensor::zeros(&[4, 3], DType::F32)).ok()?;
            g.variable("b", Tensor::zeros(&[3], DType::F32)).ok()?;
            g.variable("step", Tensor::zeros(&[], DType::I64)).ok()?;
            let session = Session::new(&g).ok()?;
            let saver = Saver::new(&session).ok()?;
            Some(GraphModel { session, saver })
        })
        .as_ref()
}

fn checkpoint_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "tandem-fuzz-checkpoint-{}.safetensors",
        std::process::id()
    ))
}

/// The model's state serialized: equal exactly when every name, shape, dtype and bit is.
fn fingerprint(net: &Sequential) -> Option<Vec<u8>> {
    let sd = net.state_dict();
    let refs: Vec<(&str, &Tensor)> = sd.iter().map(|(n, v)| (n.as_str(), v)).collect();
    safetensors::to_bytes(&refs, None).ok()
}

fuzz_target!(|data: &[u8]| {
    // Eager: a state dict parsed from the bytes, loaded strictly and loosely.
    if let Ok(state) = safetensors::from_bytes(data) {
        let net = Sequential::new();
        if let (Ok(a), Ok(b)) = (Linear::new(4, 3, true), Linear::new(3, 2, false)) {
            let net = net.add(a).add(BatchNorm::new_1d(3)).add(b);
            let before = fingerprint(&net);
            for strict in [true, false] {
                if net.load_state_dict(&state, strict).is_err() {
                    assert!(
                        fingerprint(&net) == before,
                        "a failed load_state_dict changed the model"
                    );
                }
            }
        }
    }
    // Graph: the bytes as a checkpoint file restored by a Saver.
    if let Some(m) = graph_model() {
        let path = checkpoint_path();
        if std::fs::write(&path, data).is_ok() {
            let _ = m.saver.restore(&m.session, &path);
            let _ = std::fs::remove_file(&path);
        }
    }
});
