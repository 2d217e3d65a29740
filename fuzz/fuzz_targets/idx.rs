//! IDX (MNIST) parsing, gzip-compressed or raw.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tandem_data::idx::from_bytes(data);
});
