// Elementwise kernels over strided operands (operand k of the Strided metadata is input k; the
// output is contiguous). The Rust side defines the dtype macros (A_* for inputs, O_* for the
// output) and the op macro of the kernel it compiles; kernels whose macros are missing are
// left out.

#ifdef UNARY_OP
extern "C" __global__ void tdm_unary(O_T* out, const A_T* a, Strided m) {
    TDM_GRID_STRIDE(i, m.n) {
        A_C x = A_LOAD(a[tdm_offset(m, 0, i)]);
        out[i] = O_STORE(UNARY_OP(x));
    }
}
#endif

#ifdef BINARY_OP
extern "C" __global__ void tdm_binary(O_T* out, const A_T* a, const A_T* b, Strided m) {
    TDM_GRID_STRIDE(i, m.n) {
        long long o[3];
        tdm_offsets3(m, i, o);
        A_C x = A_LOAD(a[o[0]]);
        A_C y = A_LOAD(b[o[1]]);
        out[i] = O_STORE(BINARY_OP(x, y));
    }
}
#endif

#ifdef RAW_T
// Raw copies (strided gather into a contiguous output), `where` and fills move bits only.
extern "C" __global__ void tdm_copy(RAW_T* out, const RAW_T* a, Strided m) {
    TDM_GRID_STRIDE(i, m.n) {
        out[i] = a[tdm_offset(m, 0, i)];
    }
}

extern "C" __global__ void tdm_where(RAW_T* out, const unsigned char* cond, const RAW_T* a,
                                     const RAW_T* b, Strided m) {
    TDM_GRID_STRIDE(i, m.n) {
        long long o[3];
        tdm_offsets3(m, i, o);
        out[i] = cond[o[0]] ? a[o[1]] : b[o[2]];
    }
}

extern "C" __global__ void tdm_fill(RAW_T* out, RAW_T value, long long n) {
    TDM_GRID_STRIDE(i, n) {
        out[i] = value;
    }
}
#endif

#ifdef CAST
extern "C" __global__ void tdm_cast(O_T* out, const A_T* a, Strided m) {
    TDM_GRID_STRIDE(i, m.n) {
        double v = A_TO_F64(a[tdm_offset(m, 0, i)]);
        out[i] = O_FROM_F64(v);
    }
}
#endif
