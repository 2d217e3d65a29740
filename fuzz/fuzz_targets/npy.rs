//! `.npy` parsing: any bytes give a tensor or an error, never a panic, hang or huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = tandem_tensor::io::npy::from_bytes(data) {
        // A parsed tensor must re-serialize and parse to the same shape.
        let bytes = tandem_tensor::io::npy::to_bytes(&t).expect("re-serialize");
        let back = tandem_tensor::io::npy::from_bytes(&bytes).expect("re-parse");
        assert_eq!(back.shape(), t.shape());
    }
});
