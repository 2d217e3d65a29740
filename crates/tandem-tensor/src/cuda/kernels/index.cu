// Indexing kernels. Operand 0 of the Strided metadata is the data tensor with the indexed
// axis' stride set to 0 (the index value times AXIS_STRIDE is added), operand 1 the index
// tensor, operand 2 the source (scatter) or unused. Index values were checked on the host.

#ifdef GATHER
extern "C" __global__ void tdm_gather(RAW_T* out, const RAW_T* src, const I_T* idx, Strided m,
                                      long long axis_stride) {
    TDM_GRID_STRIDE(i, m.n) {
        long long o[3];
        tdm_offsets3(m, i, o);
        long long j = (long long)idx[o[1]];
        out[i] = src[o[0] + j * axis_stride];
    }
}
#endif

#ifdef SCATTER_ADD
// out (contiguous, already holding the input) += src at the indexed positions; atomics make
// repeated indices accumulate.
extern "C" __global__ void tdm_scatter_add(A_T* out, const I_T* idx, const A_T* src, Strided m,
                                           long long axis_stride) {
    TDM_GRID_STRIDE(i, m.n) {
        long long o[3];
        tdm_offsets3(m, i, o);
        long long j = (long long)idx[o[1]];
        TDM_ATOMIC_ADD(&out[o[0] + j * axis_stride], src[o[2]]);
    }
}
#endif

#ifdef RAW_T
// Strided copy into a strided destination (operand 0: destination, 1: source).
extern "C" __global__ void tdm_copy_into(RAW_T* out, const RAW_T* a, Strided m) {
    TDM_GRID_STRIDE(i, m.n) {
        long long o[3];
        tdm_offsets3(m, i, o);
        out[o[0]] = a[o[1]];
    }
}
#endif
