use super::*;
use crate::shuffle::SplitMix64;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn header(code: u8, dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

fn small_u8_file() -> Vec<u8> {
    let t = Tensor::from_vec((0..24u8).collect::<Vec<_>>(), &[2, 3, 4]).unwrap();
    to_bytes(&t).unwrap()
}

fn message(r: Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trips_every_writable_type_plain_and_gzipped() {
    let tensors = [
        Tensor::from_vec((0..12u8).collect::<Vec<_>>(), &[3, 4]).unwrap(),
        Tensor::from_vec(vec![-5i32, 0, 7, i32::MAX, i32::MIN, 1], &[6]).unwrap(),
        Tensor::from_vec(vec![1.5f32, -0.25, 3e9, 0.0], &[2, 1, 2]).unwrap(),
        Tensor::from_vec(vec![std::f64::consts::PI, -1e-300], &[2]).unwrap(),
    ];
    for t in &tensors {
        let bytes = to_bytes(t).unwrap();
        for data in [bytes.clone(), gzip(&bytes)] {
            let back = from_bytes(&data).unwrap();
            assert_eq!(back.shape(), t.shape());
            assert_eq!(back.dtype(), t.dtype());
            assert_eq!(back.to_f64_vec().unwrap(), t.to_f64_vec().unwrap());
        }
    }
}

#[test]
fn reads_signed_bytes_and_shorts_widened_to_int32() {
    let mut i8_file = header(0x09, &[3]);
    i8_file.extend_from_slice(&[0xff, 0x7f, 0x80]);
    let t = from_bytes(&i8_file).unwrap();
    assert_eq!(t.dtype(), DType::I32);
    assert_eq!(t.to_vec::<i32>().unwrap(), vec![-1, 127, -128]);

    let mut i16_file = header(0x0B, &[2]);
    i16_file.extend_from_slice(&(-300i16).to_be_bytes());
    i16_file.extend_from_slice(&(1234i16).to_be_bytes());
    let t = from_bytes(&gzip(&i16_file)).unwrap();
    assert_eq!(t.to_vec::<i32>().unwrap(), vec![-300, 1234]);
}

#[test]
fn zero_sized_dimensions_give_empty_tensors() {
    let t = from_bytes(&header(0x08, &[0, 28, 28])).unwrap();
    assert_eq!(t.shape(), &[0, 28, 28]);
    assert_eq!(t.numel(), 0);
}

#[test]
fn reads_files_and_names_them_in_errors() {
    let dir = crate::test_util::TempDir::new("idx-read");
    let plain = dir.path().join("x-idx3-ubyte");
    let packed = dir.path().join("x-idx3-ubyte.gz");
    let bytes = small_u8_file();
    std::fs::write(&plain, &bytes).unwrap();
    std::fs::write(&packed, gzip(&bytes)).unwrap();
    for p in [&plain, &packed] {
        let t = read(p).unwrap();
        assert_eq!(t.shape(), &[2, 3, 4]);
        assert_eq!(t.to_vec::<u8>().unwrap(), (0..24u8).collect::<Vec<_>>());
    }
    let broken = dir.path().join("broken.gz");
    let packed_bytes = gzip(&bytes);
    std::fs::write(&broken, &packed_bytes[..packed_bytes.len() / 2]).unwrap();
    let msg = message(read(&broken));
    assert!(msg.contains("broken.gz"), "{msg}");
    let missing = dir.path().join("nope");
    let msg = message(read(&missing));
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = small_u8_file();
    for cut in 0..bytes.len() {
        assert!(
            from_bytes(&bytes[..cut]).is_err(),
            "plain file cut at {cut}"
        );
    }
    let packed = gzip(&bytes);
    for cut in 0..packed.len() {
        assert!(from_bytes(&packed[..cut]).is_err(), "gzip cut at {cut}");
    }
    // The same through files, so that the file path is exercised too.
    let dir = crate::test_util::TempDir::new("idx-trunc");
    let p = dir.path().join("cut");
    for cut in [0, 1, 3, 4, 9, 16, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(read(&p).is_err(), "file cut at {cut}");
    }
}

#[test]
fn lying_dimensions_are_refused() {
    // Declares 2x3x5 = 30 bytes, holds 24.
    let mut long = header(0x08, &[2, 3, 5]);
    long.extend(0..24u8);
    for data in [long.clone(), gzip(&long)] {
        let msg = message(from_bytes(&data));
        assert!(msg.contains("truncated"), "{msg}");
    }
    // Declares 2x3x3 = 18 bytes, holds 24.
    let mut short = header(0x08, &[2, 3, 3]);
    short.extend(0..24u8);
    for data in [short.clone(), gzip(&short)] {
        let msg = message(from_bytes(&data));
        assert!(msg.contains("after the data"), "{msg}");
    }
    // A float file whose data is not a whole number of elements.
    let mut f = header(0x0D, &[2]);
    f.extend_from_slice(&[0; 7]);
    assert!(from_bytes(&f).is_err());
}

#[test]
fn huge_dimensions_are_refused_before_allocating() {
    let overflow = header(0x0E, &[u32::MAX, u32::MAX, u32::MAX]);
    let msg = message(from_bytes(&overflow));
    assert!(msg.contains("overflows"), "{msg}");
    let too_big = header(0x0D, &[u32::MAX, 2]);
    let msg = message(from_bytes(&too_big));
    assert!(msg.contains("maximum"), "{msg}");
    // 3.9 GB declared by a few bytes: refused from the sizes alone, plain or gzipped.
    let mut liar = header(0x08, &[60000, 256, 256]);
    liar.extend_from_slice(&[1, 2, 3]);
    let msg = message(from_bytes(&liar));
    assert!(msg.contains("truncated"), "{msg}");
    let msg = message(from_bytes(&gzip(&liar)));
    assert!(msg.contains("gzip stream of"), "{msg}");
}

#[test]
fn gzip_bombs_are_not_inflated_past_the_declared_size() {
    // 8 MiB of zeros compress to ~8 KiB; the header declares 10 bytes.
    let mut bomb = header(0x08, &[10]);
    bomb.resize(bomb.len() + (8 << 20), 0);
    let packed = gzip(&bomb);
    let msg = message(from_bytes(&packed));
    assert!(msg.contains("after the data"), "{msg}");
}

#[test]
fn bad_headers_are_refused() {
    let mut bad_magic = small_u8_file();
    bad_magic[0] = 1;
    let msg = message(from_bytes(&bad_magic));
    assert!(msg.contains("magic"), "{msg}");
    let mut bad_type = small_u8_file();
    bad_type[2] = 0x0A;
    let msg = message(from_bytes(&bad_type));
    assert!(msg.contains("type code 0x0a"), "{msg}");
    let msg = message(from_bytes(&[0, 0, 8, 0]));
    assert!(msg.contains("0 dimensions"), "{msg}");
    // Not gzip after all: a gzip magic followed by garbage.
    let msg = message(from_bytes(&[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    assert!(msg.contains("gzip"), "{msg}");
}

#[test]
fn random_corruption_never_panics() {
    let plain = small_u8_file();
    let packed = gzip(&plain);
    let mut rng = SplitMix64::new(7);
    for round in 0..3000 {
        let mut data = if round % 2 == 0 {
            plain.clone()
        } else {
            packed.clone()
        };
        let flips = 1 + rng.below(4) as usize;
        for _ in 0..flips {
            let at = rng.below(data.len() as u64) as usize;
            data[at] = rng.next_u64() as u8;
        }
        if let Ok(t) = from_bytes(&data) {
            // Whatever parses must be self-consistent.
            assert_eq!(t.numel(), t.shape().iter().product::<usize>());
        }
    }
}

#[test]
fn writing_refuses_what_idx_cannot_hold() {
    assert!(to_bytes(&Tensor::scalar(1u8)).is_err());
    assert!(to_bytes(&Tensor::from_vec(vec![1i64], &[1]).unwrap()).is_err());
}
