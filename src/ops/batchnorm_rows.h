/*
 * batchnorm_rows.h - batch norm's row kernels (one row of HW values of one
 * channel and sample), compiled once per instruction set: batchnorm.c
 * includes this file three times, each time with
 *
 *   ROWS_ISA     the name suffix (generic, avx2, avx512),
 *   ROWS_TARGET  the functions' target attribute (empty: the baseline),
 *   ROWS_VF, ROWS_VI, ROWS_VL  float and int vector types (GCC's vector
 *                extension) of ROWS_VL lanes: the target's native width,
 *
 * and gets the table bn_rows_<ROWS_ISA>; the file clears those five
 * names at its end, ready for the next inclusion.
 *
 * Every loop walks a row in blocks of 16 floats, held in 16 / ROWS_VL
 * vectors, so lane l of a block is always added into the same accumulator
 * lane, and the 16 lanes' totals are added in the same tree (lanes_total)
 * whatever the width: the variants do the same float operations in the same
 * order (no FMA contraction: no target enables FMA), so their results are
 * identical. Native widths matter: GCC 12 keeps a 64-byte vector
 * accumulator in memory when the target has no 64-byte registers (AVX2),
 * and a row sum then ran at a sixth of its speed.
 */
#define ROWS_JOIN2(a, b) a##_##b
#define ROWS_JOIN(a, b) ROWS_JOIN2(a, b)
#define R(name) ROWS_JOIN(name, ROWS_ISA)
#define ROWS_H (16 / ROWS_VL) /* vectors per block of 16 floats */
#define RB __attribute__((always_inline)) ROWS_TARGET static inline
#define RK ROWS_TARGET __attribute__((noinline)) static /* one kernel of the table */

typedef ROWS_VF R(vf);
typedef ROWS_VI R(vi);

RB R(vf) R(ld)(const float *p) {
    R(vf) v;
    memcpy(&v, p, sizeof v);
    return v;
}

RB void R(st)(float *p, R(vf) v) { memcpy(p, &v, sizeof v); }

/* A store past the caches (x86's non-temporal stores; p aligned to the
 * vector) where stream is set, else R(st): a pass whose output is larger
 * than the caches does not read each line in before writing it (the
 * read-for-ownership) nor evict what the next pass reads. Same bits either
 * way. */
RB void R(put)(float *p, R(vf) v, int stream) {
#if defined(__x86_64__) && defined(__clang__)
    if (stream) {
        __builtin_nontemporal_store(v, (R(vf) *)p);
        return;
    }
#elif defined(__x86_64__) && defined(__GNUC__)
    if (stream) {
#if ROWS_VL == 16
        __builtin_ia32_movntps512(p, v);
#elif ROWS_VL == 8
        __builtin_ia32_movntps256(p, v);
#else
        __builtin_ia32_movntps(p, v);
#endif
        return;
    }
#endif
    R(st)(p, v);
}

/* after a row's streamed stores: ordered before the stores that follow
 * (the other threads read them after the pass's barrier) */
RB void R(stream_done)(int stream) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (stream) __builtin_ia32_sfence();
#else
    (void)stream;
#endif
}

/* v where keep is true (all ones), 0 elsewhere */
RB R(vf) R(keep)(R(vf) v, R(vi) keep) { return (R(vf))((R(vi))v & keep); }

/* the fused ReLU as relu's forward: v where v > 0 or v is NaN, else 0 (v is
 * kept unless v <= 0, false for NaN: one compare, which GCC 12 vectorizes;
 * v > 0 | v != v it made scalar) */
RB R(vf) R(relu)(R(vf) v) { return R(keep)(v, ~(v <= 0.0f)); }

/* The gradient reaching the normalized value under a fused ReLU (y its
 * output): dy where y > 0 and 0 elsewhere, as relu's backward gives it ... */
RB R(vf) R(masked)(const float *dy, const float *y, int j) {
    return R(keep)(R(ld)(dy + j), R(ld)(y + j) > 0.0f);
}

/* ... or through the forward's map (a training pass without a residual add,
 * whose output may not have been written: out_virtual): dy where x alpha +
 * beta > 0, the forward's value and test */
RB R(vf) R(masked_x)(const float *dy, R(vf) x, float alpha, float beta, int j) {
    return R(keep)(R(ld)(dy + j), x * alpha + beta > 0.0f);
}

/* the 16 lanes' sum in double, as a tree (lane l + w into lane l, w = 8, 4,
 * 2, 1): four dependent additions, not sixteen, on the chain every row's
 * sums wait for (short rows of 49 or 196 values spent most of their time
 * there) */
RB double R(lanes_total)(const R(vf) acc[ROWS_H]) {
    float f[16];
    memcpy(f, acc, sizeof f);
    double t[8];
    for (int l = 0; l < 8; l++) t[l] = (double)f[l] + (double)f[l + 8];
    const double u0 = t[0] + t[4], u1 = t[1] + t[5], u2 = t[2] + t[6], u3 = t[3] + t[7];
    return (u0 + u2) + (u1 + u3);
}

#define ROWS_BLOCK(h) for (int h = 0; h < ROWS_H; h++) /* the vectors of a block */

/* sum of x (len) */
RB double R(sum_body)(const float *x, int len) {
    R(vf) acc[ROWS_H] = {{0}};
    int j = 0;
    for (; j + 16 <= len; j += 16) ROWS_BLOCK(h) acc[h] += R(ld)(x + j + h * ROWS_VL);
    double s = R(lanes_total)(acc);
    for (; j < len; j++) s += x[j];
    return s;
}

RK double R(row_sum)(const float *x, int len) { return R(sum_body)(x, len); }

/* sum of (x - mean)^2 over x (len) */
RB double R(sq_dev_body)(const float *x, int len, float mean) {
    R(vf) acc[ROWS_H] = {{0}};
    int j = 0;
    for (; j + 16 <= len; j += 16)
        ROWS_BLOCK(h) {
            const R(vf) t = R(ld)(x + j + h * ROWS_VL) - mean;
            acc[h] += t * t;
        }
    double s = R(lanes_total)(acc);
    for (; j < len; j++) s += (double)(x[j] - mean) * (x[j] - mean);
    return s;
}

RK double R(row_sq_dev)(const float *x, int len, float mean) {
    return R(sq_dev_body)(x, len, mean);
}

/* a row's sum s and its sum m2 of squared deviations from its own mean,
 * rounded to a float (row_center): both passes while the row is in L1 */
RK void R(row_stats)(const float *x, int len, double *s, double *m2) {
    *s = R(sum_body)(x, len);
    *m2 = R(sq_dev_body)(x, len, row_center(*s, len));
}

/* y = x alpha + beta (as PyTorch's CPU kernel), plus r (a fused residual
 * add's other input) when not NULL, then the fused ReLU when relu; stream:
 * R(put)'s (y aligned to 64 bytes, len a multiple of 16) */
RK void R(row_apply)(float *y, const float *x, const float *r, int len, float alpha, float beta,
                     int relu, int stream) {
    int j = 0;
    if (r && relu) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                R(put)(y + o, R(relu)((R(ld)(x + o) * alpha + beta) + R(ld)(r + o)), stream);
            }
        for (; j < len; j++) y[j] = relu1((x[j] * alpha + beta) + r[j]);
    } else if (r) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                R(put)(y + o, (R(ld)(x + o) * alpha + beta) + R(ld)(r + o), stream);
            }
        for (; j < len; j++) y[j] = (x[j] * alpha + beta) + r[j];
    } else if (relu) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                R(put)(y + o, R(relu)(R(ld)(x + o) * alpha + beta), stream);
            }
        for (; j < len; j++) y[j] = relu1(x[j] * alpha + beta);
    } else {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                R(put)(y + o, R(ld)(x + o) * alpha + beta, stream);
            }
        for (; j < len; j++) y[j] = x[j] * alpha + beta;
    }
    R(stream_done)(stream);
}

/* The row sums of g and g (x - mean), g = masked_x (no residual add:
 * out_virtual excludes it). */
RK void R(row_grad_sums_xmask)(const float *dy, const float *x, int len, float mean, float alpha,
                               float beta, double *sum_g, double *dot) {
    R(vf) acc_g[ROWS_H] = {{0}}, acc_d[ROWS_H] = {{0}};
    int j = 0;
    for (; j + 16 <= len; j += 16)
        ROWS_BLOCK(h) {
            const int o = j + h * ROWS_VL;
            const R(vf) xv = R(ld)(x + o), g = R(masked_x)(dy, xv, alpha, beta, o);
            acc_g[h] += g;
            acc_d[h] += g * (xv - mean);
        }
    double sg = R(lanes_total)(acc_g), sd = R(lanes_total)(acc_d);
    for (; j < len; j++) {
        const float v = x[j] * alpha + beta, g = v > 0.0f ? dy[j] : 0.0f;
        sg += g;
        sd += (double)g * (x[j] - mean);
    }
    *sum_g += sg;
    *dot += sd;
}

/* sum of g and of g (x - mean) over one row of g and x (len): g = dy, or
 * masked(dy, y) with y (a fused ReLU). With gout (a fused residual add's
 * input gradient) g is also stored there. */
RK void R(row_grad_sums)(const float *dy, const float *y, const float *x, int len, float mean,
                         double *sum_g, double *dot, float *gout, int stream) {
    R(vf) acc_g[ROWS_H] = {{0}}, acc_d[ROWS_H] = {{0}};
    int j = 0;
    if (y && gout) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                const R(vf) g = R(masked)(dy, y, o);
                R(put)(gout + o, g, stream);
                acc_g[h] += g;
                acc_d[h] += g * (R(ld)(x + o) - mean);
            }
    } else if (y) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                const R(vf) g = R(masked)(dy, y, o);
                acc_g[h] += g;
                acc_d[h] += g * (R(ld)(x + o) - mean);
            }
    } else {
        if (gout) memcpy(gout, dy, (size_t)len * sizeof(float));
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                const R(vf) g = R(ld)(dy + o);
                acc_g[h] += g;
                acc_d[h] += g * (R(ld)(x + o) - mean);
            }
    }
    double sg = R(lanes_total)(acc_g), sd = R(lanes_total)(acc_d);
    for (; j < len; j++) {
        const float g = y ? masked(dy, y, j) : dy[j];
        if (gout) gout[j] = g;
        sg += g;
        sd += (double)g * (x[j] - mean);
    }
    *sum_g += sg;
    *dot += sd;
    R(stream_done)(stream && y && gout);
}

/* dx = (g - g_mean) scale - (x - mean) ks over one row, g = dy masked by y
 * (a fused ReLU; y not NULL) or by x alpha + beta > 0 (map) */
RK void R(row_dx)(float *dx, const float *dy, const float *y, const float *x, int map,
                  float alpha, float beta, int len, float g_mean, float mean, float scale,
                  float ks, int stream) {
    int j = 0;
    if (map) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                const R(vf) xv = R(ld)(x + o);
                R(put)(dx + o,
                       (R(masked_x)(dy, xv, alpha, beta, o) - g_mean) * scale - (xv - mean) * ks,
                       stream);
            }
        for (; j < len; j++) {
            const float v = x[j] * alpha + beta, g = v > 0.0f ? dy[j] : 0.0f;
            dx[j] = (g - g_mean) * scale - (x[j] - mean) * ks;
        }
    } else if (y) {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                R(put)(dx + o, (R(masked)(dy, y, o) - g_mean) * scale - (R(ld)(x + o) - mean) * ks,
                       stream);
            }
        for (; j < len; j++) dx[j] = (masked(dy, y, j) - g_mean) * scale - (x[j] - mean) * ks;
    } else {
        for (; j + 16 <= len; j += 16)
            ROWS_BLOCK(h) {
                const int o = j + h * ROWS_VL;
                R(put)(dx + o, (R(ld)(dy + o) - g_mean) * scale - (R(ld)(x + o) - mean) * ks,
                       stream);
            }
        for (; j < len; j++) dx[j] = (dy[j] - g_mean) * scale - (x[j] - mean) * ks;
    }
    R(stream_done)(stream);
}

static const bn_rows R(bn_rows) = {R(row_sum),   R(row_sq_dev),          R(row_stats),
                                   R(row_apply), R(row_grad_sums_xmask), R(row_grad_sums),
                                   R(row_dx)};

#undef ROWS_BLOCK
#undef RK
#undef RB
#undef ROWS_H
#undef R
#undef ROWS_JOIN
#undef ROWS_JOIN2
#undef ROWS_ISA
#undef ROWS_TARGET
#undef ROWS_VF
#undef ROWS_VI
#undef ROWS_VL
