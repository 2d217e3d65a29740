//! Every CUDA kernel source compiles with NVRTC (for sm_90 and sm_80). NVRTC needs no GPU, so
//! this runs wherever `libnvrtc` loads; elsewhere it prints a note and passes.
#![cfg(feature = "cuda")]

#[test]
fn every_kernel_source_compiles() {
    if !tandem_tensor::cuda::nvrtc_present() {
        eprintln!("no NVRTC library, skipped");
        return;
    }
    for arch in ["compute_90", "compute_80"] {
        let n = tandem_tensor::cuda::compile_all_kernels(arch).unwrap();
        assert!(n > 200, "{n} kernel modules");
    }
}
