use super::*;
use crate::test_util::TempDir;
use crate::{DataLoader, Dataset};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn pixel(sample: usize, k: usize) -> u8 {
    ((sample * 31 + k * 7) % 256) as u8
}

fn images_file(n: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..n)
        .flat_map(|s| (0..784).map(move |k| pixel(s, k)))
        .collect();
    idx::to_bytes(&Tensor::from_vec(data, &[n, 28, 28]).unwrap()).unwrap()
}

fn labels_file(n: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..n).map(|i| ((i * 3) % 10) as u8).collect();
    idx::to_bytes(&Tensor::from_vec(data, &[n]).unwrap()).unwrap()
}

/// A small MNIST-shaped folder: 7 training and 3 test samples; the training files are
/// gzipped, the test files are not.
fn fake_mnist(dir: &Path) {
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&images_file(7)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gzip(&labels_file(7)),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images_file(3)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels_file(3)).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn loads_plain_and_gzipped_files() {
    let dir = TempDir::new("mnist-load");
    fake_mnist(dir.path());
    let m = Mnist::load(Some(dir.path())).unwrap();
    assert_eq!(m.train_images.shape(), &[7, 28, 28]);
    assert_eq!(m.train_images.dtype(), DType::U8);
    assert_eq!(m.train_labels.dtype(), DType::I64);
    assert_eq!(
        m.train_labels.to_vec::<i64>().unwrap(),
        vec![0, 3, 6, 9, 2, 5, 8]
    );
    assert_eq!(m.test_images.shape(), &[3, 28, 28]);
    assert_eq!(m.test_labels.to_vec::<i64>().unwrap(), vec![0, 3, 6]);
}

#[test]
fn transforms_shape_and_scale_samples() {
    let dir = TempDir::new("mnist-transforms");
    fake_mnist(dir.path());
    let m = Mnist::load(Some(dir.path())).unwrap();
    let flat = train(&m, Transform::Flat);
    assert_eq!(flat.len(), 7);
    let s = flat.get(4).unwrap();
    assert_eq!(s[0].shape(), &[784]);
    assert_eq!(s[0].dtype(), DType::F32);
    assert_eq!(s[1].shape(), &[] as &[usize]);
    assert_eq!(s[1].item().unwrap(), 2.0);
    let px = s[0].to_vec::<f32>().unwrap();
    for k in [0, 1, 100, 783] {
        assert_eq!(px[k], pixel(4, k) as f32 / 255.0);
    }
    let img = flat.with_transform(Transform::Image).get(4).unwrap();
    assert_eq!(img[0].shape(), &[1, 28, 28]);
    assert_eq!(img[0].to_vec::<f32>().unwrap(), px);
    let raw = test(&m, Transform::Raw).get(2).unwrap();
    assert_eq!(raw[0].shape(), &[28, 28]);
    assert_eq!(raw[0].dtype(), DType::U8);
    assert_eq!(raw[0].to_vec::<u8>().unwrap()[5], pixel(2, 5));

    for t in [Transform::Flat, Transform::Image, Transform::Raw] {
        let ds = train(&m, t);
        let idx = [6, 0, 3, 3];
        let fast = ds.get_batch(&idx).unwrap();
        let samples: Vec<Vec<Tensor>> = idx.iter().map(|&i| ds.get(i).unwrap()).collect();
        let slow = crate::collate(&samples).unwrap();
        for (a, b) in fast.iter().zip(&slow) {
            assert_eq!(a.shape(), b.shape(), "{t:?}");
            assert_eq!(a.dtype(), b.dtype(), "{t:?}");
            assert_eq!(a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), "{t:?}");
        }
        assert!(ds.get(7).is_err());
        assert!(ds.get_batch(&[1, usize::MAX]).is_err());
    }
}

#[test]
fn a_loader_over_mnist_sees_every_sample() {
    let dir = TempDir::new("mnist-loader");
    fake_mnist(dir.path());
    let m = Mnist::load(Some(dir.path())).unwrap();
    let loader = DataLoader::new(Arc::new(train(&m, Transform::Flat)), 3).shuffle(1);
    let mut labels = Vec::new();
    for b in loader.epoch(0) {
        let b = b.unwrap();
        assert_eq!(b[0].shape()[1], 784);
        labels.extend(b[1].to_vec::<i64>().unwrap());
    }
    labels.sort_unstable();
    assert_eq!(labels, vec![0, 2, 3, 5, 6, 8, 9]);
}

#[test]
fn wrong_tensors_give_errors_not_panics() {
    let images = Tensor::zeros(&[2, 784], DType::U8);
    let labels = Tensor::zeros(&[2], DType::I64);
    let ds = MnistDataset::new(&images, &labels, Transform::Flat);
    let e = ds.get(0).unwrap_err();
    assert!(e.to_string().contains("uint8 [N, H, W]"), "{e}");
    let images = Tensor::zeros(&[2, 28, 28], DType::U8);
    let ds = MnistDataset::new(&images, &Tensor::zeros(&[3], DType::I64), Transform::Raw);
    assert!(ds.get_batch(&[0]).is_err());
}

#[test]
fn files_that_are_not_mnist_are_reported_by_name() {
    let dir = TempDir::new("mnist-bad");
    fake_mnist(dir.path());
    let mut bad_labels = labels_file(3);
    let last = bad_labels.len() - 1;
    bad_labels[last] = 12;
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), &bad_labels).unwrap();
    let e = Mnist::load(Some(dir.path())).unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("label 2 is 12"),
        "{e}"
    );

    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), labels_file(4)).unwrap();
    let e = Mnist::load(Some(dir.path())).unwrap_err().to_string();
    assert!(e.contains("4 labels for 3 images"), "{e}");

    let floats = idx::to_bytes(&Tensor::zeros(&[3, 28, 28], DType::F32)).unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), floats).unwrap();
    let e = Mnist::load(Some(dir.path())).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("float32"),
        "{e}"
    );
}

#[test]
fn missing_files_without_network_say_what_to_do() {
    let dir = TempDir::new("mnist-missing");
    let unreachable = ["http://127.0.0.1:9/"];
    let e = locate_with_mirrors(Some(dir.path()), &unreachable).unwrap_err();
    let msg = e.to_string();
    for f in &FILES {
        assert!(msg.contains(&format!("{}.gz", f.name)), "{msg}");
    }
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("https://ossci-datasets.s3.amazonaws.com/mnist/"),
        "{msg}"
    );
    assert!(msg.contains("MNIST_DIR"), "{msg}");
    match e {
        Error::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::NotFound),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    // A folder that did not exist is not left behind.
    let absent = dir.path().join("not-yet");
    assert!(locate_with_mirrors(Some(&absent), &unreachable).is_err());
    assert!(!absent.exists());

    // With three files present, only the fourth is named as missing.
    fake_mnist(dir.path());
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let msg = locate_with_mirrors(Some(dir.path()), &[])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("missing: t10k-labels-idx1-ubyte.gz, and"),
        "{msg}"
    );
    assert!(Mnist::load(Some(dir.path())).is_err());
}

/// A one-thread HTTP server on loopback that answers each of `responses` once, in order,
/// and gives up after a few seconds without a client.
fn serve(responses: Vec<(u16, Vec<u8>)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        for (status, body) in responses {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
                match std::io::Read::read(&mut stream, &mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}/mnist/")
}

fn spec_for(name: &'static str, content: &[u8]) -> FileSpec {
    use sha2::{Digest, Sha256};
    let digest = hex(&Sha256::digest(content));
    FileSpec {
        name,
        bytes: content.len() as u64,
        sha256: Box::leak(digest.into_boxed_str()),
    }
}

#[test]
fn downloads_are_checked_then_renamed_and_mirrors_are_tried_in_turn() {
    let dir = TempDir::new("mnist-download");
    let content = labels_file(50);
    let spec = spec_for("train-labels-idx1-ubyte", &content);
    // The first mirror answers 404, the second one serves the file.
    let broken = serve(vec![(404, b"no".to_vec())]);
    let good = serve(vec![(200, gzip(&content))]);
    download::fetch(dir.path(), &[spec], &[&broken, &good]).unwrap();
    assert_eq!(entries(dir.path()), vec!["train-labels-idx1-ubyte.gz"]);
    let t = idx::read(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(t.shape(), &[50]);
}

#[test]
fn a_download_with_the_wrong_checksum_leaves_nothing() {
    let dir = TempDir::new("mnist-download-bad");
    let spec = spec_for("train-labels-idx1-ubyte", &labels_file(50));
    let mut tampered = labels_file(50);
    tampered[20] ^= 1;
    let mirror = serve(vec![(200, gzip(&tampered))]);
    let msg = download::fetch(dir.path(), &[spec], &[&mirror])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("SHA-256"), "{msg}");
    assert!(msg.contains("train-labels-idx1-ubyte.gz"), "{msg}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn verify_reports_files_that_are_not_the_original() {
    let dir = TempDir::new("mnist-verify");
    fake_mnist(dir.path());
    let msg = verify(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("expected 47040016"), "{msg}");
    // Same size, one flipped byte: caught by the hash.
    let content = labels_file(9);
    let spec = spec_for("x", &content);
    let mut flipped = content.clone();
    flipped[10] ^= 0x40;
    let p = dir.path().join("x");
    std::fs::write(&p, &content).unwrap();
    check_file(&p, &spec).unwrap();
    std::fs::write(&p, gzip(&flipped)).unwrap();
    let msg = check_file(&p, &spec).unwrap_err().to_string();
    assert!(msg.contains("SHA-256"), "{msg}");
}

#[test]
fn the_folder_comes_from_the_argument_first() {
    assert_eq!(resolve_dir(Some(Path::new("here"))), PathBuf::from("here"));
}
