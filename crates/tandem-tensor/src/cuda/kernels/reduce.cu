// Row-wise reductions over contiguous rows of `k` elements (the Rust side permutes the reduced
// axes last and makes the input contiguous), softmax / log-softmax over rows, and fused
// cross-entropy from logits. One block of RED_THREADS threads per row.

#define RED_THREADS 256

#ifdef REDUCE
// Needs ACC_T (accumulator), RED_INIT, RED_COMBINE(a, b), RED_FINAL(acc, k) (an O_C value).
extern "C" __global__ void tdm_reduce(O_T* out, const A_T* in, long long rows, long long k) {
    __shared__ ACC_T buf[RED_THREADS];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const A_T* x = in + row * k;
        ACC_T acc = RED_INIT;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {
            ACC_T v = (ACC_T)A_LOAD(x[j]);
            acc = RED_COMBINE(acc, v);
        }
        buf[threadIdx.x] = acc;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                buf[threadIdx.x] = RED_COMBINE(buf[threadIdx.x], buf[threadIdx.x + s]);
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            out[row] = O_STORE(RED_FINAL(buf[0], k));
        }
        __syncthreads();
    }
}
#endif

#ifdef ARGREDUCE
// ARG_BETTER(a, b): a strictly better than b (> for argmax, < for argmin). A NaN beats every
// number; ties keep the first index.
__device__ __forceinline__ bool tdm_arg_wins(A_C v1, long long i1, A_C v2, long long i2) {
    bool n1 = v1 != v1, n2 = v2 != v2;
    if (n1 || n2) {
        if (n1 && n2) return i1 < i2;
        return n1;
    }
    if (ARG_BETTER(v1, v2)) return true;
    if (ARG_BETTER(v2, v1)) return false;
    return i1 < i2;
}

extern "C" __global__ void tdm_argreduce(long long* out, const A_T* in, long long rows, long long k) {
    __shared__ A_C vbuf[RED_THREADS];
    __shared__ long long ibuf[RED_THREADS];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const A_T* x = in + row * k;
        A_C best = A_LOAD(x[0]);
        long long bi = 0;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {
            A_C v = A_LOAD(x[j]);
            if (tdm_arg_wins(v, j, best, bi)) {
                best = v;
                bi = j;
            }
        }
        vbuf[threadIdx.x] = best;
        ibuf[threadIdx.x] = bi;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                if (tdm_arg_wins(vbuf[threadIdx.x + s], ibuf[threadIdx.x + s], vbuf[threadIdx.x],
                                 ibuf[threadIdx.x])) {
                    vbuf[threadIdx.x] = vbuf[threadIdx.x + s];
                    ibuf[threadIdx.x] = ibuf[threadIdx.x + s];
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            out[row] = ibuf[0];
        }
        __syncthreads();
    }
}
#endif

#if defined(SOFTMAX) || defined(XENT)
// Block-wide max and sum of one value per thread (all threads must call).
__device__ __forceinline__ A_C tdm_block_max(A_C v, A_C* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            A_C a = buf[threadIdx.x], b = buf[threadIdx.x + s];
            buf[threadIdx.x] = (a != a || b != b) ? (a + b) : (a > b ? a : b);
        }
        __syncthreads();
    }
    A_C r = buf[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ A_C tdm_block_sum(A_C v, A_C* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            buf[threadIdx.x] += buf[threadIdx.x + s];
        }
        __syncthreads();
    }
    A_C r = buf[0];
    __syncthreads();
    return r;
}
#endif

#ifdef SOFTMAX
// Softmax (log_softmax when `want_log` is non-zero) of contiguous rows of `k` elements.
extern "C" __global__ void tdm_softmax(A_T* out, const A_T* in, long long rows, long long k, int want_log) {
    __shared__ A_C buf[RED_THREADS];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const A_T* x = in + row * k;
        A_T* y = out + row * k;
        A_C m = -TDM_INF;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {
            A_C v = A_LOAD(x[j]);
            m = (v != v || m != m) ? (v + m) : (v > m ? v : m);
        }
        m = tdm_block_max(m, buf);
        A_C s = 0;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {
            s += TDM_EXP(A_LOAD(x[j]) - m);
        }
        s = tdm_block_sum(s, buf);
        A_C ls = TDM_LOG(s);
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {
            A_C d = A_LOAD(x[j]) - m;
            y[j] = A_STORE(want_log ? (d - ls) : (TDM_EXP(d) / s));
        }
    }
}
#endif

#ifdef XENT
// Cross-entropy of logits [n, classes, spatial] (contiguous) against int64 targets
// [n, spatial]: one block per sample. Targets were checked on the host.
extern "C" __global__ void tdm_cross_entropy(A_T* out, const A_T* logits, const long long* target,
                                             long long samples, long long classes,
                                             long long spatial, long long ignore_index,
                                             double eps) {
    __shared__ A_C buf[RED_THREADS];
    for (long long s = blockIdx.x; s < samples; s += gridDim.x) {
        long long b = s / spatial, p = s % spatial;
        const A_T* x = logits + b * classes * spatial + p;
        long long t = target[s];
        A_C m = -TDM_INF;
        for (long long c = threadIdx.x; c < classes; c += blockDim.x) {
            A_C v = A_LOAD(x[c * spatial]);
            m = (v != v || m != m) ? (v + m) : (v > m ? v : m);
        }
        m = tdm_block_max(m, buf);
        A_C se = 0, sx = 0;
        for (long long c = threadIdx.x; c < classes; c += blockDim.x) {
            A_C v = A_LOAD(x[c * spatial]);
            se += TDM_EXP(v - m);
            sx += v;
        }
        se = tdm_block_sum(se, buf);
        sx = tdm_block_sum(sx, buf);
        if (threadIdx.x == 0) {
            A_C loss = 0;
            if (t != ignore_index) {
                A_C lse = m + TDM_LOG(se);
                A_C e = (A_C)eps;
                A_C logp_t = A_LOAD(x[t * spatial]) - lse;
                A_C sum_logp = sx - (A_C)classes * lse;
                loss = -((A_C)1 - e) * logp_t - e / (A_C)classes * sum_logp;
            }
            out[s] = A_STORE(loss);
        }
    }
}
#endif
