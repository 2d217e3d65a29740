//! State dicts between eager modules and graph variables, and zero-copy crossing.

mod common;

use common::{batch, Mlp};
use tandem_eager::nn::Module;
use tandem_eager::{manual_seed, DType, Tensor};
use tandem_graph::{Graph, Session};
use tandem_interop::{
    from_fetch, graph_state_dict, load_state_dict_into_session, run_eager, to_feed, trace_module,
    variables_from_state_dict,
};

#[test]
fn state_dict_round_trips_eager_graph_eager() {
    manual_seed(10);
    let a = Mlp::new().unwrap();
    let b = Mlp::new().unwrap();
    let t = trace_module(&b, &batch(2)).unwrap();
    let s = Session::new(&t.graph).unwrap();
    // eager a -> graph (traced from b)
    load_state_dict_into_session(&s, &a.state_dict(), true).unwrap();
    let x = batch(4);
    let got = run_eager(&s, &[&t.outputs[0]], &[(&t.inputs[0], &x)]).unwrap();
    assert_eq!(
        got[0].to_vec::<f32>().unwrap(),
        a.forward(&x).unwrap().to_vec::<f32>().unwrap()
    );
    // graph -> eager b: same names, same values
    let sd = graph_state_dict(&s).unwrap();
    let names: Vec<&str> = sd.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    b.load_state_dict(&sd, true).unwrap();
    for ((na, va), (nb, vb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        assert_eq!(na, nb);
        assert_eq!(va.to_vec::<f32>().unwrap(), vb.to_vec::<f32>().unwrap());
    }
}

#[test]
fn variables_from_a_state_dict_use_graph_names() {
    manual_seed(11);
    let m = Mlp::new().unwrap();
    let g = Graph::new();
    let vars = variables_from_state_dict(&g, &m.state_dict()).unwrap();
    assert_eq!(vars[0].0, "fc1.weight");
    assert_eq!(vars[0].1.name(), "fc1/weight");
    let s = Session::new(&g).unwrap();
    let sd = graph_state_dict(&s).unwrap();
    assert_eq!(sd.len(), 4);
    assert_eq!(
        sd[3].1.to_vec::<f32>().unwrap(),
        m.fc2.named_parameters()[1].1.to_vec::<f32>().unwrap()
    );
}

#[test]
fn bad_state_dicts_are_refused_and_nothing_is_written() {
    manual_seed(12);
    let m = Mlp::new().unwrap();
    let t = trace_module(&m, &batch(2)).unwrap();
    let s = Session::new(&t.graph).unwrap();
    let before = graph_state_dict(&s).unwrap();
    let mut sd = m.state_dict();
    sd[0].1 = Tensor::zeros(&[3, 3], DType::F32).value();
    assert!(load_state_dict_into_session(&s, &sd, true).is_err());
    let mut sd = m.state_dict();
    sd.push((
        "nope.weight".into(),
        Tensor::zeros(&[1], DType::F32).value(),
    ));
    let err = load_state_dict_into_session(&s, &sd, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.weight"), "{err}");
    let mut sd = m.state_dict();
    sd.pop();
    let err = load_state_dict_into_session(&s, &sd, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc2/bias"), "{err}");
    // Not strict: a partial state dict is fine.
    load_state_dict_into_session(&s, &sd, false).unwrap();
    let after = graph_state_dict(&s).unwrap();
    assert_eq!(before.len(), after.len());
}

#[test]
fn crossing_modes_shares_storage() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let y = g.identity(&x).unwrap();
    let s = Session::new(&g).unwrap();
    let e = Tensor::rand(&[2, 3], DType::F32).unwrap();
    let v = to_feed(&e);
    assert!(v.shares_storage(&e.value()));
    let out = s.run(&[&y], &[(&x, &v)]).unwrap();
    assert!(
        out[0].shares_storage(&v),
        "the fetch of a fed value is the fed storage"
    );
    let back = from_fetch(out[0].clone());
    assert!(back.value().shares_storage(&out[0]));
    // Through run_eager as well.
    let got = run_eager(&s, &[&y], &[(&x, &e)]).unwrap();
    assert!(got[0].value().shares_storage(&e.value()));
    // A feed of the wrong dtype is a clear error naming the placeholder.
    let bad = Tensor::zeros(&[2, 3], DType::F64);
    let err = run_eager(&s, &[&y], &[(&x, &bad)]).unwrap_err().to_string();
    assert!(err.contains("`x`"), "{err}");
}
