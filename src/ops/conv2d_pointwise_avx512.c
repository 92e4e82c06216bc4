/*
 * conv2d_pointwise_avx512.c - the three products of a 1x1 convolution
 * (stride 1, no padding, one group) on one image, with AVX-512 and no BLAS:
 *
 *     forward       y  (K, HW) = W (K, C) x x (C, HW)
 *     input grad    dx (C, HW) = W^T x dy (K, HW)
 *     weight grad   dW (K, C) += dy x x^T
 *
 * all through nn_gemm8_avx512 (gemm_avx512.h), which broadcasts W, W^T or dy
 * straight from the rows they lie in, so nothing is packed; the weight
 * gradient transposes the image to (HW, C) first, so that C lies along the
 * vector lanes. conv2d.c's pointwise kernel calls these per image
 * (nn_pointwise_avx512, ops.h) where they take the shape, the AVX2 twins
 * (conv2d_pointwise_avx2.c) where those do, and BLAS otherwise.
 *
 * Why not BLAS: these GEMMs are small (C, K <= 128 in MobileNet-small), and
 * where OPENBLAS_CORETYPE pins OpenBLAS to its AVX2 kernels on an AVX-512
 * CPU they ran at half the FMA peak (MobileNet-small's pw1-pw3 on a Zen 4,
 * 1 thread: 92-107 GFLOP/s, 47% of the step).
 */
#include "ops/ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#include "ops/gemm_avx512.h"
#define AVX512 __attribute__((target("avx512f")))

static int pointwise_avx512_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    return ctx->isa >= NN_ISA_AVX512 && d->groups <= 1 && d->C % 16 == 0 &&
           d->K % NN_GEMM8_ROWS == 0;
}

/* C (M, N) (+)= A (M, depth) x B (depth, N), M a multiple of 8, A's element
 * (i, p) at a[i ar + p ap]: 48 columns at a time (B's slab stays in cache
 * while every 8 rows pass over it), asking for feed's lines on the way */
AVX512 static void gemm_rows8(float *c, size_t ldc, const float *a, size_t ar, size_t ap,
                              const float *b, size_t ldb, int M, int N, size_t depth,
                              int accumulate, nn_line_feed *feed) {
    const int slab = 16 * NN_GEMM8_VECS;
    for (int j0 = 0; j0 < N; j0 += slab) {
        const int cols = N - j0 < slab ? N - j0 : slab, nt = (cols + 15) / 16;
        const __mmask16 last = nn_first_lanes(cols - 16 * (nt - 1));
        for (int i0 = 0; i0 < M; i0 += NN_GEMM8_ROWS) {
            float *ci = c + (size_t)i0 * ldc + j0;
            const float *ai = a + (size_t)i0 * ar, *bj = b + j0;
            if (nt == 3)
                nn_gemm8_avx512(ci, ldc, ai, ar, ap, bj, ldb, depth, 3, last, accumulate, feed);
            else if (nt == 2)
                nn_gemm8_avx512(ci, ldc, ai, ar, ap, bj, ldb, depth, 2, last, accumulate, feed);
            else
                nn_gemm8_avx512(ci, ldc, ai, ar, ap, bj, ldb, depth, 1, last, accumulate, feed);
        }
    }
}

/* xt (HW, C) = x (C, HW)^T, C a multiple of 16: 16x16 blocks in registers,
 * the last columns of x loaded under a mask (nothing read past the image) */
AVX512 static void transpose_image(float *xt, const float *x, int C, int HW) {
    for (int c0 = 0; c0 < C; c0 += 16)
        for (int t0 = 0; t0 < HW; t0 += 16) {
            const int tn = HW - t0 < 16 ? HW - t0 : 16;
            const __mmask16 m = nn_first_lanes(tn);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = _mm512_maskz_loadu_ps(m, x + (size_t)(c0 + i) * HW + t0);
            transpose16(r);
            for (int j = 0; j < tn; j++) _mm512_storeu_ps(xt + (size_t)(t0 + j) * C + c0, r[j]);
        }
}

static void forward(float *y, const float *x, const float *w, int K, int C, int HW,
                    nn_line_feed *feed) {
    gemm_rows8(y, (size_t)HW, w, (size_t)C, 1, x, (size_t)HW, K, HW, (size_t)C, 0, feed);
}

/* n floats of src to dst past the caches where dst's lines are whole (the
 * head and tail of a row that share a line with its neighbours: plain
 * stores) */
AVX512 static void stream_row(float *dst, const float *src, int n) {
    int j = (int)((64 - ((uintptr_t)dst & 63)) & 63) / (int)sizeof(float);
    if (((uintptr_t)dst & 3) || j > n) j = n; /* not float-aligned: all plain */
    if (j) {
        const __mmask16 m = nn_first_lanes(j);
        _mm512_mask_storeu_ps(dst, m, _mm512_maskz_loadu_ps(m, src));
    }
    for (; j + 16 <= n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
    if (j < n) {
        const __mmask16 m = nn_first_lanes(n - j);
        _mm512_mask_storeu_ps(dst + j, m, _mm512_maskz_loadu_ps(m, src + j));
    }
}

/* y = W x a band of 8 rows at a time: the GEMM into band (8 HW floats, in
 * L1 or L2), the rows' batch norm statistics taken there (stats: a pair per
 * row, NULL: none; nn_batchnorm_row_stats, the same bits as on y), then the
 * band stored past the caches (stream_row) */
static void forward_streamed(float *y, const float *x, const float *w, int K, int C, int HW,
                             float *band, double *stats, const nn_ctx *ctx, nn_line_feed *feed) {
    for (int i0 = 0; i0 < K; i0 += NN_GEMM8_ROWS) {
        gemm_rows8(band, (size_t)HW, w + (size_t)i0 * C, (size_t)C, 1, x, (size_t)HW,
                   NN_GEMM8_ROWS, HW, (size_t)C, 0, feed);
        if (stats) nn_batchnorm_row_stats(band, NN_GEMM8_ROWS, HW, stats + 2 * (size_t)i0, ctx);
        for (int r = 0; r < NN_GEMM8_ROWS; r++)
            stream_row(y + (size_t)(i0 + r) * HW, band + (size_t)r * HW, HW);
    }
    _mm_sfence(); /* the streamed lines visible before anything reads y */
}

static void input_grad(float *dx, const float *dy, const float *w, int K, int C, int HW,
                       nn_line_feed *feed) {
    gemm_rows8(dx, (size_t)HW, w, 1, (size_t)C, dy, (size_t)HW, C, HW, (size_t)K, 0, feed);
}

static void weight_grad_rows(float *dw, const float *dy, const float *xt, int rows, int C,
                             int HW, nn_line_feed *feed) {
    gemm_rows8(dw, (size_t)C, dy, (size_t)HW, 1, xt, (size_t)C, rows, C, (size_t)HW, 1, feed);
}

/* dst (C, HW) = x (C, HW) through a prologue's map (nn_map_lanes): the
 * batch norm's output, bit for bit */
AVX512 static void map_image(float *dst, const float *x, const nn_conv2d_map *map, int C,
                             int HW) {
    for (int c = 0; c < C; c++) {
        const float *src = x + (size_t)c * HW;
        float *out = dst + (size_t)c * HW;
        for (int j = 0; j < HW; j += 16) {
            const __mmask16 m = nn_first_lanes(HW - j);
            _mm512_mask_storeu_ps(out + j, m,
                                  nn_map_lanes(_mm512_maskz_loadu_ps(m, src + j), map->scale[c],
                                               map->shift[c], map->relu, m));
        }
    }
}

const nn_pointwise_kernels nn_pointwise_avx512 = {
    .ok = pointwise_avx512_ok,
    .rows = NN_GEMM8_ROWS,
    .forward = forward,
    .input_grad = input_grad,
    .transpose = transpose_image,
    .weight_grad_rows = weight_grad_rows,
    .map = map_image,
    .forward_streamed = forward_streamed,
};

#else /* no AVX-512 kernels in this build: never chosen */

static int pointwise_avx512_ok(const nn_conv2d_desc *d, const nn_ctx *ctx) {
    (void)d, (void)ctx;
    return 0;
}

const nn_pointwise_kernels nn_pointwise_avx512 = {.ok = pointwise_avx512_ok};

#endif
