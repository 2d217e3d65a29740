// Fused optimizer updates over contiguous parameters and state (same formulas as
// ops/optim.rs, computed in the parameter's precision, subnormal state stored as zero like
// there). One thread per element.

extern "C" __global__ void tdm_adam(A_T* p, const A_T* g, A_T* m, A_T* v, long long n, double b1,
                                    double b2, double step_size, double bc2s, double eps,
                                    double wd, double decay, int decoupled, int l2) {
    A_C B1 = (A_C)b1, B2 = (A_C)b2, S = (A_C)step_size, BC = (A_C)bc2s, E = (A_C)eps;
    A_C WD = (A_C)wd, D = (A_C)decay, one = (A_C)1;
    // Gradients whose square would add a subnormal term to v (as on the CPU).
    A_C SQF = TDM_SQRT(TDM_TINY / (one - B2));
    TDM_GRID_STRIDE(i, n) {
        A_C pi = A_LOAD(p[i]);
        A_C gi = A_LOAD(g[i]);
        if (l2) gi += WD * pi;
        if (decoupled) pi *= D;
        A_C mi0 = A_LOAD(m[i]);
        A_C mi = TDM_FLUSH(mi0 + (one - B1) * (gi - mi0));
        A_C gq = TDM_FLUSH_BELOW(gi, SQF);
        A_C vi = TDM_FLUSH(B2 * A_LOAD(v[i]) + (one - B2) * gq * gq);
        m[i] = A_STORE(mi);
        v[i] = A_STORE(vi);
        p[i] = A_STORE(pi - S * mi / (TDM_SQRT(vi) / BC + E));
    }
}

// `buf` may be null when there is no momentum.
extern "C" __global__ void tdm_sgd(A_T* p, const A_T* g, A_T* buf, long long n, double lr,
                                   double momentum, double dampening, double wd, int nesterov,
                                   int first_step) {
    A_C LR = (A_C)lr, MOM = (A_C)momentum, DAMP = (A_C)dampening, WD = (A_C)wd, one = (A_C)1;
    TDM_GRID_STRIDE(i, n) {
        A_C pi = A_LOAD(p[i]);
        A_C d = A_LOAD(g[i]) + WD * pi;
        if (buf) {
            A_C b = TDM_FLUSH(first_step ? d : MOM * A_LOAD(buf[i]) + (one - DAMP) * d);
            buf[i] = A_STORE(b);
            A_C step = nesterov ? d + MOM * b : b;
            p[i] = A_STORE(pi - LR * step);
        } else {
            p[i] = A_STORE(pi - LR * d);
        }
    }
}

// `buf` (momentum) and `gavg` (centered) may be null.
extern "C" __global__ void tdm_rmsprop(A_T* p, const A_T* g, A_T* sq, A_T* buf, A_T* gavg,
                                       long long n, double lr, double alpha, double eps,
                                       double wd, double momentum) {
    A_C LR = (A_C)lr, AL = (A_C)alpha, E = (A_C)eps, WD = (A_C)wd, MOM = (A_C)momentum;
    A_C one = (A_C)1;
    A_C SQF = TDM_SQRT(TDM_TINY / (one - AL));
    TDM_GRID_STRIDE(i, n) {
        A_C pi = A_LOAD(p[i]);
        A_C gi = A_LOAD(g[i]) + WD * pi;
        A_C gq = TDM_FLUSH_BELOW(gi, SQF);
        A_C s = TDM_FLUSH(AL * A_LOAD(sq[i]) + (one - AL) * gq * gq);
        sq[i] = A_STORE(s);
        A_C avg;
        if (gavg) {
            A_C a0 = A_LOAD(gavg[i]);
            A_C a = TDM_FLUSH(a0 + (one - AL) * (gi - a0));
            gavg[i] = A_STORE(a);
            avg = TDM_SQRT(s - a * a) + E;
        } else {
            avg = TDM_SQRT(s) + E;
        }
        if (buf) {
            A_C b = TDM_FLUSH(MOM * A_LOAD(buf[i]) + gi / avg);
            buf[i] = A_STORE(b);
            p[i] = A_STORE(pi - LR * b);
        } else {
            p[i] = A_STORE(pi - LR * gi / avg);
        }
    }
}
