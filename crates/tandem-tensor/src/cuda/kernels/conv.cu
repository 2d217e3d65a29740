// im2col / col2im for 2-D convolution over contiguous NCHW input. The column buffer is
// [N, G, Cg * kh * kw, oh * ow]; the products with the weight run on cuBLAS.

struct ConvArgs {
    long long n, c, h, w, groups, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw;
};

#ifdef RAW_T
// col[n][g][(cg, ky, kx)][(oy, ox)] = x[n][g * Cg + cg][oy*sh - ph + ky*dh][ox*sw - pw + kx*dw]
// (zero bits in the padding, which is 0.0 for every float format).
extern "C" __global__ void tdm_im2col(RAW_T* col, const RAW_T* x, ConvArgs a) {
    long long L = a.oh * a.ow, KK = a.kh * a.kw;
    long long total = a.n * a.c * KK * L;
    TDM_GRID_STRIDE(i, total) {
        long long l = i % L;
        long long r = (i / L) % (a.c * KK);
        long long n = i / (L * a.c * KK);
        long long ch = r / KK, kk = r % KK;
        long long ky = kk / a.kw, kx = kk % a.kw;
        long long oy = l / a.ow, ox = l % a.ow;
        long long iy = oy * a.sh - a.ph + ky * a.dh;
        long long ix = ox * a.sw - a.pw + kx * a.dw;
        RAW_T v = 0;
        if (iy >= 0 && iy < a.h && ix >= 0 && ix < a.w) {
            v = x[((n * a.c + ch) * a.h + iy) * a.w + ix];
        }
        // Channels are grouped in order, so (g, cg) flattens to the channel index `ch`.
        col[i] = v;
    }
}
#endif

#ifdef COL2IM
// dx[n][ch][y][x] = sum of the column entries that im2col read from it (a gather: no atomics).
extern "C" __global__ void tdm_col2im(A_T* dx, const A_T* col, ConvArgs a) {
    long long L = a.oh * a.ow, KK = a.kh * a.kw;
    long long total = a.n * a.c * a.h * a.w;
    TDM_GRID_STRIDE(i, total) {
        long long x = i % a.w, y = (i / a.w) % a.h;
        long long ch = (i / (a.w * a.h)) % a.c, n = i / (a.w * a.h * a.c);
        A_C sum = 0;
        for (long long ky = 0; ky < a.kh; ++ky) {
            long long ty = y + a.ph - ky * a.dh;
            if (ty < 0 || ty % a.sh != 0) continue;
            long long oy = ty / a.sh;
            if (oy >= a.oh) continue;
            for (long long kx = 0; kx < a.kw; ++kx) {
                long long tx = x + a.pw - kx * a.dw;
                if (tx < 0 || tx % a.sw != 0) continue;
                long long ox = tx / a.sw;
                if (ox >= a.ow) continue;
                long long r = ch * KK + ky * a.kw + kx;
                sum += A_LOAD(col[(n * a.c * KK + r) * L + oy * a.ow + ox]);
            }
        }
        dx[i] = A_STORE(sum);
    }
}
#endif
