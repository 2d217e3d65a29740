//! safetensors parsing: any bytes give tensors or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = tandem_tensor::io::safetensors::from_bytes(data) {
        for (_, t) in &tensors {
            // Every parsed tensor's data must be readable in full.
            let _ = t.contiguous();
        }
    }
});
