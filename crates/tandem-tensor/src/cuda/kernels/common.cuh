// Shared header of Tandem's CUDA kernels. NVRTC compiles it in front of every kernel family
// (the Rust side prepends it, together with the #defines of the dtypes in use), so it must not
// include any system or toolkit header.

#define TDM_MAX_DIMS 8
#define TDM_MAX_OPERANDS 3

// Shape and per-operand strides of a strided kernel; mirrors `Strided` in `meta.rs`.
struct Strided {
    long long n;
    long long rank;
    long long shape[TDM_MAX_DIMS];
    long long strides[TDM_MAX_OPERANDS][TDM_MAX_DIMS];
    long long offset[TDM_MAX_OPERANDS];
};

// Storage position of element `i` (row-major over m.shape) of operand `k`.
__device__ __forceinline__ long long tdm_offset(const Strided& m, int k, long long i) {
    long long off = m.offset[k];
    for (int d = (int)m.rank - 1; d >= 0; --d) {
        long long s = m.shape[d];
        off += (i % s) * m.strides[k][d];
        i /= s;
    }
    return off;
}

// Positions of element `i` in three operands at once (one division chain).
__device__ __forceinline__ void tdm_offsets3(const Strided& m, long long i, long long* o) {
    o[0] = m.offset[0];
    o[1] = m.offset[1];
    o[2] = m.offset[2];
    for (int d = (int)m.rank - 1; d >= 0; --d) {
        long long s = m.shape[d];
        long long c = i % s;
        i /= s;
        o[0] += c * m.strides[0][d];
        o[1] += c * m.strides[1][d];
        o[2] += c * m.strides[2][d];
    }
}

#define TDM_GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

// float16 and bfloat16 are stored as their 16 bits and computed in float.
__device__ __forceinline__ float tdm_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short tdm_f2h(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ unsigned short tdm_d2h(double d) {
    unsigned short h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d));
    return h;
}
__device__ __forceinline__ float tdm_bf2f(unsigned short b) {
    return __uint_as_float(((unsigned int)b) << 16);
}
__device__ __forceinline__ unsigned short tdm_f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN, sign kept
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (unsigned short)(u >> 16);
}

// Saturating float-to-integer conversions with NaN -> 0 (Rust `as` semantics).
__device__ __forceinline__ long long tdm_d2i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return 9223372036854775807LL;
    if (v <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
    return (long long)v;
}
__device__ __forceinline__ int tdm_d2i32(double v) {
    if (v != v) return 0;
    if (v >= 2147483647.0) return 2147483647;
    if (v <= -2147483648.0) return (-2147483647 - 1);
    return (int)v;
}
__device__ __forceinline__ unsigned char tdm_d2u8(double v) {
    if (v != v) return 0;
    if (v >= 255.0) return 255;
    if (v <= 0.0) return 0;
    return (unsigned char)v;
}

// Wrapping integer power by squaring (exponent >= 0, checked on the host).
__device__ __forceinline__ long long tdm_ipow(long long a, long long b) {
    unsigned long long base = (unsigned long long)a, acc = 1ull;
    while (b > 0) {
        if (b & 1) acc *= base;
        base *= base;
        b >>= 1;
    }
    return (long long)acc;
}

__device__ __forceinline__ float tdm_nan_f() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double tdm_nan_d() { return __longlong_as_double(0x7ff8000000000000LL); }
