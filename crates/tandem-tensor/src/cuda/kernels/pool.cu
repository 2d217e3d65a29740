// 2-D max / average pooling over contiguous NCHW planes and their gradients (one thread per
// output element; gradients scatter with atomic adds). Same window rules as cpu/pool.rs:
// padding counts as -inf for max (a NaN or a larger value replaces the maximum, so ties keep
// the first tap), and average pooling divides by the padded or the real window size.

struct PoolArgs {
    long long planes, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, count_include_pad;
};

// Plane index of the maximum of output element `i`, or -1 when every tap is padding.
__device__ __forceinline__ long long tdm_max_at(const A_T* x, const PoolArgs& g, long long i, A_C* best_out) {
    long long ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
    const A_T* xp = x + plane * g.h * g.w;
    A_C best = -TDM_INF;
    long long at = -1;
    for (long long ky = 0; ky < g.kh; ++ky) {
        long long iy = oy * g.sh - g.ph + ky * g.dh;
        if (iy < 0 || iy >= g.h) continue;
        for (long long kx = 0; kx < g.kw; ++kx) {
            long long ix = ox * g.sw - g.pw + kx * g.dw;
            if (ix < 0 || ix >= g.w) continue;
            A_C v = A_LOAD(xp[iy * g.w + ix]);
            if (at < 0) at = iy * g.w + ix;
            if (v > best || v != v) {
                best = v;
                at = iy * g.w + ix;
            }
        }
    }
    *best_out = best;
    return at;
}

extern "C" __global__ void tdm_max_pool(A_T* out, const A_T* x, PoolArgs g) {
    TDM_GRID_STRIDE(i, g.planes * g.oh * g.ow) {
        A_C best;
        tdm_max_at(x, g, i, &best);
        out[i] = A_STORE(best);
    }
}

// dx must be zeroed.
extern "C" __global__ void tdm_max_pool_backward(A_T* dx, const A_T* go, const A_T* x, PoolArgs g) {
    TDM_GRID_STRIDE(i, g.planes * g.oh * g.ow) {
        A_C best;
        long long at = tdm_max_at(x, g, i, &best);
        if (at >= 0) {
            long long plane = i / (g.ow * g.oh);
            atomicAdd(&dx[plane * g.h * g.w + at], go[i]);
        }
    }
}

// Clipped window [s, e) along one axis and the window size clipped to the padded input.
__device__ __forceinline__ void tdm_avg_span(long long o, long long stride, long long pad,
                                             long long k, long long size, long long* s,
                                             long long* e, long long* padded) {
    long long first = o * stride - pad;
    long long end = first + k;
    if (end > size + pad) end = size + pad;
    *padded = end - first > 0 ? end - first : 0;
    *s = first > 0 ? first : 0;
    long long ee = end < 0 ? 0 : (end > size ? size : end);
    *e = ee > *s ? ee : *s;
}

__device__ __forceinline__ A_C tdm_avg_div(const PoolArgs& g, long long ny, long long nx,
                                           long long ylen, long long xlen) {
    long long c = g.count_include_pad ? ylen * xlen : ny * nx;
    return (A_C)(c > 1 ? c : 1);
}

extern "C" __global__ void tdm_avg_pool(A_T* out, const A_T* x, PoolArgs g) {
    TDM_GRID_STRIDE(i, g.planes * g.oh * g.ow) {
        long long ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        long long ys, ye, yl, xs, xe, xl;
        tdm_avg_span(oy, g.sh, g.ph, g.kh, g.h, &ys, &ye, &yl);
        tdm_avg_span(ox, g.sw, g.pw, g.kw, g.w, &xs, &xe, &xl);
        const A_T* xp = x + plane * g.h * g.w;
        A_C sum = 0;
        for (long long iy = ys; iy < ye; ++iy)
            for (long long ix = xs; ix < xe; ++ix) sum += A_LOAD(xp[iy * g.w + ix]);
        out[i] = A_STORE(sum / tdm_avg_div(g, ye - ys, xe - xs, yl, xl));
    }
}

// dx must be zeroed.
extern "C" __global__ void tdm_avg_pool_backward(A_T* dx, const A_T* go, PoolArgs g) {
    TDM_GRID_STRIDE(i, g.planes * g.oh * g.ow) {
        long long ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
        long long ys, ye, yl, xs, xe, xl;
        tdm_avg_span(oy, g.sh, g.ph, g.kh, g.h, &ys, &ye, &yl);
        tdm_avg_span(ox, g.sw, g.pw, g.kw, g.w, &xs, &xe, &xl);
        A_C v = A_LOAD(go[i]) / tdm_avg_div(g, ye - ys, xe - xs, yl, xl);
        A_T* dp = dx + plane * g.h * g.w;
        for (long long iy = ys; iy < ye; ++iy)
            for (long long ix = xs; ix < xe; ++ix) atomicAdd(&dp[iy * g.w + ix], v);
    }
}
