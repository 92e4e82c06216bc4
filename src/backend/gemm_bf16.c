/*
 * gemm_bf16.c - the bf16 GEMM of `--precision bf16`: C (M x N) = A (M x K) x
 * B (K x N) with A and B rounded to bfloat16 (round to nearest even) and
 * products summed in float32, as AVX512-BF16's VDPBF16PS does (each lane adds
 * the products of one pair of k values).
 *
 * A is packed once per call site (nn_bf16_pack_a: bf16 rows padded to an even
 * K and to a multiple of MR rows) and reused across many B, since A is the
 * weight in the convolutions. B is packed block by block inside nn_gemm_bf16
 * into panels of NR columns holding (k, k+1) pairs side by side, so one
 * 64-byte load feeds 16 columns x 2 k. The micro-kernel keeps an MR x NR tile
 * of C in 24 zmm registers.
 *
 * Three micro-kernels on the same packed layouts: AVX512-BF16 intrinsics
 * (NN_ISA_AVX512BF16), AMX tiles (NN_ISA_AMX: the CPU's matrix unit, one
 * TDPBF16PS multiplies a 12 x 32 block of A by a 32 x 16 block of B) and
 * portable C, which any CPU runs (slowly). Each C element is the float32 sum
 * of the same bf16 products; the order of the additions differs between
 * them, so results agree to float32 rounding, not bit for bit.
 */
#include "backend/gemm_bf16.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "backend/simd_avx512.h"
#define NN_HAVE_BF16_KERNELS 1
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define AMX_TARGET \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#endif

enum {
    MR = NN_BF16_MR, /* rows of the C tile */
    NR = 32,  /* columns of the C tile: two zmm */
    KC = 256, /* k per packed block of B (even) */
    NC = 512, /* columns per packed block of B (multiple of NR) */
};

size_t nn_bf16_packed_a_size(int M, int K) {
    return (size_t)((M + MR - 1) / MR * MR) * (size_t)((K + 1) & ~1);
}

size_t nn_bf16_gemm_scratch_size(void) { return (size_t)KC * NC; }

#define to_bf16 nn_to_bf16

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---------------------------------------------------------------- packing */

static void pack_a_generic(const float *A, int lda, int trans, int M, int K, uint16_t *Ap) {
    const int Kp = (K + 1) & ~1, Mp = (M + MR - 1) / MR * MR;
    for (int i = 0; i < Mp; i++)
        for (int k = 0; k < Kp; k++) {
            float v = 0.0f;
            if (i < M && k < K) v = trans ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
            Ap[(size_t)i * Kp + k] = to_bf16(v);
        }
}

/* Panels of NR columns for B's rows k0 .. k0+kc (kc even) and columns n0 ..
 * n0+nc: Bp[panel][pair][column][2]. */
static void pack_b_generic(const float *B, const uint16_t *Bh, int ldb, int trans, int K, int N,
                           int k0, int kc, int n0, int nc, uint16_t *Bp) {
    for (int p = 0; p < nc; p += NR)
        for (int kk = 0; kk < kc; kk++) {
            const int k = k0 + kk;
            uint16_t *dst = Bp + (size_t)p * kc + (size_t)(kk / 2) * 2 * NR + (kk & 1);
            for (int j = 0; j < NR; j++) {
                const int n = n0 + p + j;
                uint16_t v = 0;
                if (k < K && n < N)
                    v = Bh ? Bh[(size_t)k * ldb + n]
                           : to_bf16(trans ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
                dst[2 * j] = v;
            }
        }
}

#ifdef NN_HAVE_BF16_KERNELS
/* Rows of a non-transposed A: 32 values per conversion. */
BF16_TARGET static void pack_a_avx512(const float *A, int lda, int M, int K, uint16_t *Ap) {
    const int Kp = (K + 1) & ~1, Mp = (M + MR - 1) / MR * MR;
    for (int i = 0; i < Mp; i++) {
        uint16_t *dst = Ap + (size_t)i * Kp;
        if (i >= M) {
            memset(dst, 0, (size_t)Kp * sizeof *dst);
            continue;
        }
        const float *src = A + (size_t)i * lda;
        for (int k = 0; k < Kp; k += 32) {
            const int left = K - k;
            const __mmask16 lo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
            const __m512 a = _mm512_maskz_loadu_ps(lo, src + k);
            const __m512 b = _mm512_maskz_loadu_ps(hi, src + k + 16);
            const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(b, a);
            const int keep = Kp - k >= 32 ? 32 : Kp - k;
            _mm512_mask_storeu_epi16(dst + k, (__mmask32)(keep == 32 ? 0xffffffffu : (1u << keep) - 1), v);
        }
    }
}

/* B not transposed (B[k][n], floats, or bf16 in Bh): rows k and k+1, 16
 * columns at a time, (converted and) interleaved into pairs. */
BF16_TARGET static void pack_b_rows_avx512(const float *B, const uint16_t *Bh, int ldb, int K,
                                           int N, int k0, int kc, int n0, int nc, uint16_t *Bp) {
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                           24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                           16, 0);
    for (int p = 0; p < nc; p += NR)
        for (int h = 0; h < NR; h += 16) {
            const int n = n0 + p + h, left = N - n;
            const __mmask16 m = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            uint16_t *dst = Bp + (size_t)p * kc + 2 * h;
            for (int kk = 0; kk < kc; kk += 2, dst += 2 * NR) {
                const int k = k0 + kk;
                const __mmask16 m0 = k < K ? m : 0, m1 = k + 1 < K ? m : 0;
                const size_t r0 = (size_t)(k < K ? k : 0) * ldb + n;
                const size_t r1 = (size_t)(k + 1 < K ? k + 1 : 0) * ldb + n;
                __m512i v; /* 16 values of row k, then 16 of row k+1 */
                if (Bh)
                    v = _mm512_inserti64x4(
                        _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(m0, Bh + r0)),
                        _mm256_maskz_loadu_epi16(m1, Bh + r1), 1);
                else
                    v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, B + r1),
                                                     _mm512_maskz_loadu_ps(m0, B + r0));
                _mm512_storeu_si512(dst, _mm512_permutexvar_epi16(inter, v));
            }
        }
}

/* B transposed (B[n][k], floats): for 16 columns, 32 k of each row are
 * rounded into 16 pairs (one 32-bit element per pair), then a 16x16
 * transpose puts each pair's 16 columns side by side. */
BF16_TARGET static void pack_b_cols_avx512(const float *B, int ldb, int K, int N, int k0, int kc,
                                           int n0, int nc, uint16_t *Bp) {
    for (int p = 0; p < nc; p += NR)
        for (int h = 0; h < NR; h += 16)
            for (int kk = 0; kk < kc; kk += 32) {
                const int k = k0 + kk, left = K - k;
                const __mmask16 lo = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
                __m512 r[16];
                for (int j = 0; j < 16; j++) {
                    const int n = n0 + p + h + j;
                    if (n >= N) {
                        r[j] = _mm512_setzero_ps();
                        continue;
                    }
                    const float *row = B + (size_t)n * ldb + k;
                    r[j] = (__m512)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, row + 16),
                                                       _mm512_maskz_loadu_ps(lo, row));
                }
                transpose16(r);
                const int pairs = (kc - kk) / 2 < 16 ? (kc - kk) / 2 : 16;
                uint16_t *dst = Bp + (size_t)p * kc + (size_t)(kk / 2) * 2 * NR + 2 * h;
                for (int i = 0; i < pairs; i++) _mm512_storeu_ps((float *)(dst + (size_t)i * 2 * NR), r[i]);
            }
}
#endif

void nn_bf16_pack_a(nn_isa isa, const float *A, int lda, int trans, int M, int K, uint16_t *Ap) {
#ifdef NN_HAVE_BF16_KERNELS
    if (isa >= NN_ISA_AVX512BF16 && !trans) {
        pack_a_avx512(A, lda, M, K, Ap);
        return;
    }
#endif
    (void)isa;
    pack_a_generic(A, lda, trans, M, K, Ap);
}

/* ------------------------------------------------------------ micro-kernels */

/* Writes (or adds) the rows x cols corner of the MR x NR tile t to C. */
static void store_tile(const float *t, int rows, int cols, float *C, int ldc, int trans_c,
                       int accumulate) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            float *c = trans_c ? &C[(size_t)j * ldc + r] : &C[(size_t)r * ldc + j];
            *c = accumulate ? *c + t[r * NR + j] : t[r * NR + j];
        }
}

/* pairs (k, k+1) of A rows a (stride lda2 uint32) and a B panel bp */
static void micro_generic(int pairs, const uint16_t *a, size_t lda, const uint16_t *bp, float *C,
                          int ldc, int rows, int cols, int trans_c, int accumulate) {
    float t[MR * NR] = {0};
    for (int kp = 0; kp < pairs; kp++, bp += 2 * NR)
        for (int r = 0; r < MR; r++) {
            const float a0 = from_bf16(a[r * lda + 2 * kp]), a1 = from_bf16(a[r * lda + 2 * kp + 1]);
            for (int j = 0; j < NR; j++)
                t[r * NR + j] += a0 * from_bf16(bp[2 * j]) + a1 * from_bf16(bp[2 * j + 1]);
        }
    store_tile(t, rows, cols, C, ldc, trans_c, accumulate);
}

#ifdef NN_HAVE_BF16_KERNELS
/* One full row of the C tile (NR = 32 floats, two vectors) written to, or
 * added to, C. */
BF16_TARGET static inline void store_row(float *cr, __m512 c0, __m512 c1, int accumulate) {
    if (accumulate) {
        c0 = _mm512_add_ps(c0, _mm512_loadu_ps(cr));
        c1 = _mm512_add_ps(c1, _mm512_loadu_ps(cr + 16));
    }
    _mm512_storeu_ps(cr, c0);
    _mm512_storeu_ps(cr + 16, c1);
}

BF16_TARGET static void micro_avx512(int pairs, const uint16_t *a, size_t lda, const uint16_t *bp,
                                     float *C, int ldc, int rows, int cols, int trans_c,
                                     int accumulate) {
    __m512 c[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    const uint32_t *a32 = (const uint32_t *)a; /* pairs of bf16 */
    const size_t lda32 = lda / 2;
    for (int kp = 0; kp < pairs; kp++, bp += 2 * NR) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + NR);
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a32[r * lda32 + kp]);
            c[r][0] = _mm512_dpbf16_ps(c[r][0], av, b0);
            c[r][1] = _mm512_dpbf16_ps(c[r][1], av, b1);
        }
    }
    if (!trans_c && cols == NR) {
        for (int r = 0; r < rows; r++) store_row(C + (size_t)r * ldc, c[r][0], c[r][1], accumulate);
        return;
    }
    float t[MR * NR];
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_ps(t + r * NR, c[r][0]);
        _mm512_storeu_ps(t + r * NR + 16, c[r][1]);
    }
    store_tile(t, rows, cols, C, ldc, trans_c, accumulate);
}
#endif

/* ------------------------------------------------------------------- AMX */

#ifdef NN_HAVE_BF16_KERNELS
/* The tile layout of one micro-kernel call, set per GEMM call and thread:
 * tiles 0, 1: C (MR rows x 16 floats); 2: A (MR rows x 16 pairs);
 * 3, 4: B (16 pairs x 16 columns, a pair per 32-bit element). */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

AMX_TARGET static void amx_configure(void) {
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 5; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = t <= 2 ? MR : 16;
    }
    /* GCC 12 does not see that LDTILECFG reads cfg and drops the stores */
    __asm__ volatile("" : : "m"(cfg) : "memory");
    _tile_loadconfig(&cfg);
}

AMX_TARGET static void amx_release(void) { _tile_release(); }

/* The micro-kernel on AMX tiles: the MR x NR block of C in two C tiles, k in
 * steps of 16 pairs (one A tile, two B tiles, two TDPBF16PS); a last partial
 * step is copied to zero-padded blocks first. GCC 12 does not treat the tile
 * loads, stores and LDTILECFG as memory accesses, hence the compiler
 * barriers around them. */
AMX_TARGET static void micro_amx(int pairs, const uint16_t *a, size_t lda, const uint16_t *bp,
                                 float *C, int ldc, int rows, int cols, int trans_c,
                                 int accumulate) {
    const size_t a_stride = lda * sizeof(uint16_t), b_stride = 2 * NR * sizeof(uint16_t);
    __asm__ volatile("" : : : "memory"); /* the packed blocks are written before the loads */
    _tile_zero(0);
    _tile_zero(1);
    int kp = 0;
    for (; kp + 16 <= pairs; kp += 16) {
        const uint16_t *b = bp + (size_t)kp * 2 * NR;
        _tile_loadd(2, a + 2 * kp, a_stride);
        _tile_loadd(3, b, b_stride);
        _tile_loadd(4, b + 32, b_stride);
        _tile_dpbf16ps(0, 2, 3);
        _tile_dpbf16ps(1, 2, 4);
    }
    if (kp < pairs) {
        const int left = pairs - kp;
        uint16_t at[MR * 32] __attribute__((aligned(64))), bt[16 * 2 * NR] __attribute__((aligned(64)));
        memset(at, 0, sizeof at);
        memset(bt, 0, sizeof bt);
        for (int r = 0; r < MR; r++) memcpy(at + r * 32, a + r * lda + 2 * kp, (size_t)left * 4);
        memcpy(bt, bp + (size_t)kp * 2 * NR, (size_t)left * 2 * NR * sizeof(uint16_t));
        __asm__ volatile("" : : "m"(at), "m"(bt) : "memory"); /* see amx_configure */
        _tile_loadd(2, at, 64);
        _tile_loadd(3, bt, b_stride);
        _tile_loadd(4, bt + 32, b_stride);
        _tile_dpbf16ps(0, 2, 3);
        _tile_dpbf16ps(1, 2, 4);
    }
    float t[MR * NR] __attribute__((aligned(64)));
    _tile_stored(0, t, NR * sizeof(float));
    _tile_stored(1, t + 16, NR * sizeof(float));
    __asm__ volatile("" : "=m"(t) : : "memory"); /* the tile stores wrote t */
    if (!trans_c && cols == NR) {
        for (int r = 0; r < rows; r++)
            store_row(C + (size_t)r * ldc, _mm512_load_ps(t + r * NR),
                      _mm512_load_ps(t + r * NR + 16), accumulate);
        return;
    }
    store_tile(t, rows, cols, C, ldc, trans_c, accumulate);
}
#endif

/* ------------------------------------------------------------------- driver */

static void gemm(nn_isa isa, int M, int N, int K, const uint16_t *Ap, const float *B,
                 const uint16_t *Bh, int ldb, int trans_b, float *C, int ldc, int trans_c,
                 int accumulate, uint16_t *scratch) {
    const int Kp = (K + 1) & ~1;
    int fast = 0, amx = 0;
#ifdef NN_HAVE_BF16_KERNELS
    fast = isa >= NN_ISA_AVX512BF16;
    const nn_cpu_features *cpu = nn_cpu_probe(); /* also asks for the tile data, once */
    amx = isa >= NN_ISA_AMX && cpu->amx_tile && cpu->amx_bf16;
    if (amx) amx_configure();
#endif
    (void)isa;
    for (int k0 = 0; k0 < Kp; k0 += KC) {
        const int kc = Kp - k0 < KC ? Kp - k0 : KC;
        const int acc = accumulate || k0 > 0;
        for (int n0 = 0; n0 < N; n0 += NC) {
            const int nc = N - n0 < NC ? N - n0 : NC;
            const int ncp = (nc + NR - 1) / NR * NR;
#ifdef NN_HAVE_BF16_KERNELS
            if (fast && !trans_b)
                pack_b_rows_avx512(B, Bh, ldb, K, N, k0, kc, n0, ncp, scratch);
            else if (fast && B)
                pack_b_cols_avx512(B, ldb, K, N, k0, kc, n0, ncp, scratch);
            else
#endif
                pack_b_generic(B, Bh, ldb, trans_b, K, N, k0, kc, n0, ncp, scratch);
            for (int m0 = 0; m0 < M; m0 += MR) {
                const int rows = M - m0 < MR ? M - m0 : MR;
                const uint16_t *a = Ap + (size_t)m0 * Kp + k0;
                for (int p = 0; p < ncp; p += NR) {
                    const int cols = nc - p < NR ? nc - p : NR;
                    const int n = n0 + p;
                    float *c = trans_c ? C + (size_t)n * ldc + m0 : C + (size_t)m0 * ldc + n;
                    const uint16_t *bp = scratch + (size_t)p * kc;
#ifdef NN_HAVE_BF16_KERNELS
                    if (amx) {
                        micro_amx(kc / 2, a, (size_t)Kp, bp, c, ldc, rows, cols, trans_c, acc);
                        continue;
                    }
                    if (fast) {
                        micro_avx512(kc / 2, a, (size_t)Kp, bp, c, ldc, rows, cols, trans_c, acc);
                        continue;
                    }
#endif
                    micro_generic(kc / 2, a, (size_t)Kp, bp, c, ldc, rows, cols, trans_c, acc);
                }
            }
        }
    }
#ifdef NN_HAVE_BF16_KERNELS
    if (amx) amx_release();
#endif
}

void nn_gemm_bf16(nn_isa isa, int M, int N, int K, const uint16_t *Ap, const float *B, int ldb,
                  int trans_b, float *C, int ldc, int trans_c, int accumulate, uint16_t *scratch) {
    gemm(isa, M, N, K, Ap, B, NULL, ldb, trans_b, C, ldc, trans_c, accumulate, scratch);
}

void nn_gemm_bf16_bh(nn_isa isa, int M, int N, int K, const uint16_t *Ap, const uint16_t *Bh,
                     int ldb, float *C, int ldc, int accumulate, uint16_t *scratch) {
    gemm(isa, M, N, K, Ap, NULL, Bh, ldb, 0, C, ldc, 0, accumulate, scratch);
}
