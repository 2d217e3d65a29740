//! Tests on the real MNIST files. They need the four files in the folder named by
//! `$MNIST_DIR` (they never download): run them with
//! `MNIST_DIR=/path/to/mnist cargo test -p tandem-data --release -- --include-ignored`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tandem_data::mnist::{self, Mnist, Transform};
use tandem_data::{DataLoader, Dataset};

fn mnist_dir() -> PathBuf {
    match std::env::var_os("MNIST_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => panic!("set MNIST_DIR to the folder holding the four MNIST files"),
    }
}

fn load() -> Mnist {
    let t = Instant::now();
    let m = Mnist::load(Some(&mnist_dir())).unwrap();
    eprintln!("Mnist::load: {:.3} s", t.elapsed().as_secs_f64());
    m
}

#[test]
#[ignore = "needs MNIST: set MNIST_DIR"]
fn shapes_labels_and_pixel_statistics() {
    let m = load();
    assert_eq!(m.train_images.shape(), &[60000, 28, 28]);
    assert_eq!(m.train_labels.shape(), &[60000]);
    assert_eq!(m.test_images.shape(), &[10000, 28, 28]);
    assert_eq!(m.test_labels.shape(), &[10000]);
    let train_labels = m.train_labels.to_vec::<i64>().unwrap();
    assert_eq!(train_labels[0], 5, "the first training digit is a 5");
    let mut counts = [0usize; 10];
    for &l in train_labels
        .iter()
        .chain(&m.test_labels.to_vec::<i64>().unwrap())
    {
        assert!((0..10).contains(&l), "label {l}");
        counts[l as usize] += 1;
    }
    assert_eq!(counts.iter().sum::<usize>(), 70000);
    assert!(
        counts.iter().all(|&c| (6000..8000).contains(&c)),
        "{counts:?}"
    );
    // The well-known statistics of the training pixels scaled to [0, 1].
    let px = m.train_images.as_slice::<u8>().unwrap();
    let n = px.len() as f64;
    let mean = px.iter().map(|&p| f64::from(p)).sum::<f64>() / n / 255.0;
    let var = px
        .iter()
        .map(|&p| (f64::from(p) / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!((mean - 0.1307).abs() < 1e-4, "mean {mean}");
    assert!((var.sqrt() - 0.3081).abs() < 1e-4, "std {}", var.sqrt());
}

#[test]
#[ignore = "needs MNIST: set MNIST_DIR"]
fn checksums_match_the_original_distribution() {
    let t = Instant::now();
    mnist::verify(&mnist_dir()).unwrap();
    eprintln!("mnist::verify: {:.3} s", t.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs MNIST: set MNIST_DIR"]
fn locate_uses_mnist_dir_and_finds_everything() {
    // `locate(None)` reads $MNIST_DIR, which the caller has set.
    let dir = mnist::locate(None).unwrap();
    assert_eq!(dir, mnist_dir());
    for f in &mnist::FILES {
        assert!(mnist::file_path(&dir, f).is_some(), "{}", f.name);
    }
}

#[test]
#[ignore = "needs MNIST: set MNIST_DIR"]
fn flat_batches_are_fast_and_cover_an_epoch() {
    let m = load();
    let train = mnist::train(&m, Transform::Flat);
    assert_eq!(train.len(), 60000);
    let first = train.get(0).unwrap();
    assert_eq!(first[0].shape(), &[784]);
    assert_eq!(first[1].item().unwrap(), 5.0);
    let max = first[0]
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .fold(0.0f32, f32::max);
    assert_eq!(max, 1.0, "a 5 has some full-ink pixel");

    let idx: Vec<usize> = (0..64).map(|i| i * 937).collect();
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(train.get_batch(&idx).unwrap());
    }
    let per_batch = t.elapsed().as_secs_f64() / reps as f64;
    eprintln!("Flat get_batch of 64: {:.1} us", per_batch * 1e6);

    let loader = DataLoader::new(Arc::new(train), 64).shuffle(0);
    let t = Instant::now();
    let mut seen = 0;
    let mut label_sum = 0i64;
    for b in loader.epoch(0) {
        let b = b.unwrap();
        seen += b[0].shape()[0];
        label_sum += b[1].to_vec::<i64>().unwrap().iter().sum::<i64>();
    }
    eprintln!(
        "one shuffled epoch of Flat batches of 64: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(seen, 60000);
    assert_eq!(
        label_sum,
        m.train_labels.to_vec::<i64>().unwrap().iter().sum::<i64>()
    );
}
