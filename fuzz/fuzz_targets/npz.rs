//! `.npz` parsing (zip + deflate + npy), with a 64 MiB limit on uncompressed data.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tandem_tensor::io::npz::from_bytes_with_limit(data, 64 << 20);
});
