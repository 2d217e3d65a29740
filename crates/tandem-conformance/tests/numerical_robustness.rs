//! The numerically delicate ops stay finite, and correct, for float32 logits of magnitude 1e4:
//! outputs and gradients (through the shared rules) of softmax, log-softmax, cross-entropy,
//! logsumexp, sigmoid, softplus and binary cross-entropy with logits.

use tandem_conformance::tape::{Tape, Var};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional, Reduction};
use tandem_tensor::Tensor;

const BIG: f32 = 1e4;

fn logits() -> Tensor {
    // Two rows, each mixing huge positive and negative logits, and a row of equal huge values.
    Tensor::from_vec(
        vec![
            BIG,
            -BIG,
            0.0,
            0.5 * BIG, //
            -BIG,
            -BIG,
            -BIG + 1.0,
            -BIG, //
            BIG,
            BIG,
            BIG,
            BIG,
        ],
        &[3, 4],
    )
    .unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn assert_finite(what: &str, t: &Tensor) {
    let v = values(t);
    assert!(
        v.iter().all(|x| x.is_finite()),
        "{what} is not finite: {v:?}"
    );
}

/// Runs `f` on a tape and returns the output and the gradient w.r.t. the first input for a
/// cotangent of ones.
fn value_and_grad(inputs: &[Tensor], f: impl Fn(&Tape, &[Var]) -> Var) -> (Tensor, Tensor) {
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = f(&tape, &vars);
    let cot = Tensor::ones(out.value.shape(), out.value.dtype());
    let g = tape
        .vjp(&out, &cot, &[&vars[0]])
        .unwrap()
        .remove(0)
        .unwrap();
    (out.value, g)
}

#[test]
fn softmax_and_log_softmax_of_huge_logits() {
    let (p, gp) = value_and_grad(&[logits()], |t, v| t.softmax(&v[0], 1).unwrap());
    assert_finite("softmax", &p);
    assert_finite("softmax grad", &gp);
    let pv = values(&p);
    // Row 0 puts all mass on the first class; the last row is uniform.
    assert!((pv[0] - 1.0).abs() < 1e-6 && pv[1] == 0.0);
    for &x in &pv[8..12] {
        assert!((x - 0.25).abs() < 1e-6);
    }
    for r in 0..3 {
        let s: f32 = pv[r * 4..r * 4 + 4].iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
    }

    let (lp, glp) = value_and_grad(&[logits()], |t, v| t.log_softmax(&v[0], 1).unwrap());
    assert_finite("log_softmax", &lp);
    assert_finite("log_softmax grad", &glp);
    let lv = values(&lp);
    assert!(lv[0].abs() < 1e-3, "log p of the winner is {}", lv[0]);
    assert!(
        (lv[1] + 2.0 * BIG).abs() < 1.0,
        "log p of the loser is {}",
        lv[1]
    );
    assert!((lv[8] + 4f32.ln()).abs() < 1e-5);
}

#[test]
fn cross_entropy_of_huge_logits() {
    let target = Tensor::from_vec(vec![1i64, 2, 3], &[3]).unwrap();
    for smoothing in [0.0, 0.1] {
        let opts = CrossEntropyOptions {
            reduction: Reduction::None,
            label_smoothing: smoothing,
            ..Default::default()
        };
        let (l, g) = value_and_grad(&[logits(), target.clone()], |t, v| {
            t.cross_entropy(&v[0], &v[1], opts).unwrap()
        });
        assert_finite("cross_entropy", &l);
        assert_finite("cross_entropy grad", &g);
        let lv = values(&l);
        if smoothing == 0.0 {
            // Row 0: target 1 has logit -1e4 against a winner at +1e4: loss 2e4.
            assert!((lv[0] - 2.0 * BIG).abs() < 1.0, "loss {}", lv[0]);
            // Uniform row: loss ln 4.
            assert!((lv[2] - 4f32.ln()).abs() < 1e-4);
        }
        // Every gradient row of (softmax - target) sums to 0.
        let gv = values(&g);
        for r in 0..3 {
            let s: f32 = gv[r * 4..r * 4 + 4].iter().sum();
            assert!(s.abs() < 1e-4, "grad row {r} sums to {s}");
        }
    }
}

#[test]
fn logsumexp_of_huge_logits() {
    let (y, g) = value_and_grad(&[logits()], |t, v| t.logsumexp(&v[0], &[1], false).unwrap());
    assert_finite("logsumexp", &y);
    assert_finite("logsumexp grad", &g);
    let yv = values(&y);
    assert!((yv[0] - BIG).abs() < 1e-2);
    assert!((yv[2] - (BIG + 4f32.ln())).abs() < 1e-2);
}

#[test]
fn sigmoid_softplus_and_bce_with_logits_of_huge_logits() {
    let x = Tensor::from_vec(vec![BIG, -BIG, 0.0, 3.0, -3.0], &[5]).unwrap();
    let (s, gs) = value_and_grad(std::slice::from_ref(&x), |t, v| t.sigmoid(&v[0]).unwrap());
    assert_finite("sigmoid", &s);
    assert_finite("sigmoid grad", &gs);
    let sv = values(&s);
    assert_eq!(sv[0], 1.0);
    assert_eq!(sv[1], 0.0);

    let (sp, gsp) = value_and_grad(std::slice::from_ref(&x), |t, v| {
        t.softplus(&v[0], 1.0, 20.0).unwrap()
    });
    assert_finite("softplus", &sp);
    assert_finite("softplus grad", &gsp);
    assert!((values(&sp)[0] - BIG).abs() < 1e-2);

    let y = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0, 1.0], &[5]).unwrap();
    let (l, g) = value_and_grad(&[x, y], |t, v| {
        t.binary_cross_entropy_with_logits(&v[0], &v[1], Reduction::None)
            .unwrap()
    });
    assert_finite("bce_with_logits", &l);
    assert_finite("bce_with_logits grad", &g);
    let lv = values(&l);
    // Confidently wrong: loss equals the logit's magnitude.
    assert!((lv[0] - BIG).abs() < 1e-2 && (lv[1] - BIG).abs() < 1e-2);
    let gv = values(&g);
    // d/dx = sigmoid(x) - y.
    assert!((gv[0] - 1.0).abs() < 1e-6 && (gv[1] + 1.0).abs() < 1e-6);
}
