/* blas.c - the single GEMM entry point (OpenBLAS sgemm), its row-split
 * parallel form, and the check that OpenBLAS runs kernels fit for this CPU
 * (the advice; main() sets OpenBLAS's variable and has it choose again). */
#include "nn_internal.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

/* OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernels from the CPU
 * model when it loads. A release older than the CPU does not know the model
 * and falls back to its Prescott (SSE3) kernels: Debian 12's 0.3.21 does so on
 * Emerald Rapids (family 6 model 207), where sgemm then runs at a fifth of its
 * AVX-512 speed. These two functions re-run that choice; they are exported by
 * DYNAMIC_ARCH builds only, hence weak (NULL elsewhere). */
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));
/* OpenBLAS's threads, started by its constructor, choose the kernels again
 * when they first run, so choosing while they may be starting races with
 * them (seen: a NULL kernel table, then a crash). This stops and joins them;
 * OpenBLAS starts them again if a later call wants more than one thread. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

static char blas_replaced[32];

/* OpenBLAS's rules for its Cooperlake kernels (AVX-512 F, BW, VL, DQ, CD and
 * BF16), SkylakeX (the same without BF16) and Haswell (AVX2 and FMA). */
int nn_blas_cpu_cores(const char **names, int max) {
    const nn_cpu_features *f = nn_cpu_probe();
    const int avx512 = f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512cd;
    const char *runs[3];
    int n = 0;
    if (avx512 && f->avx512_bf16) runs[n++] = "Cooperlake";
    if (avx512) runs[n++] = "SkylakeX";
    if (f->avx2 && f->fma) runs[n++] = "Haswell";
    for (int i = 0; i < n && i < max; i++) names[i] = runs[i];
    return n < max ? n : max;
}

/* The instruction set of an OpenBLAS core type's sgemm kernels: 2 AVX-512
 * (its SkylakeX kernels, which Cooperlake and SapphireRapids use too), 1
 * AVX2/FMA or a non-x86 set, 0 older (Prescott and the other SSE-era sets). */
static int core_tier(const char *name) {
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell",     "Zen",        "Excavator",
                                       "Steamroller", "Piledriver", "Neoverse"};
    for (size_t i = 0; i < sizeof avx512 / sizeof avx512[0]; i++)
        if (strncmp(name, avx512[i], strlen(avx512[i])) == 0) return 2;
    for (size_t i = 0; i < sizeof avx2 / sizeof avx2[0]; i++)
        if (strncmp(name, avx2[i], strlen(avx2[i])) == 0) return 1;
    return 0;
}

/* The best set this CPU runs, where OpenBLAS's own choice is of an older
 * instruction set: SSE3 kernels on an AVX2 CPU (an OpenBLAS older than the
 * CPU model falls back to them), and AVX2 ones on an AVX-512 CPU (on a Zen
 * 4, pinned to Haswell, sgemm ran at 255-278 GFLOP/s, with the AVX-512 sets
 * at 467-510: docs/performance.md). A fixed rule on the CPU's features,
 * never a timing, so one machine always runs the same kernels. */
const char *nn_blas_advised_core(void) {
    const char *name = openblas_get_corename();
    const char *best;
    if (!name || !nn_blas_cpu_cores(&best, 1)) return NULL;
    return core_tier(name) < core_tier(best) ? best : NULL;
}

nn_status nn_blas_rechoose(void) {
    if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit || !blas_thread_shutdown_)
        return NN_EUNSUPPORTED;
    const char *before = openblas_get_corename();
    char name[sizeof blas_replaced];
    snprintf(name, sizeof name, "%s", before ? before : "?");
    /* with OpenBLAS's threads stopped, drop the chosen kernel table and
     * choose again */
    blas_thread_shutdown_();
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    const char *after = openblas_get_corename();
    if (!after || strcmp(after, name) != 0) memcpy(blas_replaced, name, sizeof name);
    return NN_OK;
}

const char *nn_blas_core(void) { return openblas_get_corename(); }

const char *nn_blas_replaced_core(void) { return blas_replaced[0] ? blas_replaced : NULL; }

/* nnopt parallelizes around BLAS calls itself (NN_PARALLEL_FOR), so each
 * sgemm runs single-threaded in its caller's thread; BLAS's own threads would
 * oversubscribe the cores. Set once, before the first sgemm. */
static void blas_one_thread(void) { openblas_set_num_threads(1); }

void nn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_one_thread);
    if (M == 1) {
        /* one row of C (a linear layer at batch 1): a matrix-vector product.
         * OpenBLAS's sgemm (0.3.21) first copies all of op(B) into its packed
         * layout, which reads and writes B once more than the product does.
         * beta 0 must not read C: zeroed here, then scaled by 0 */
        if (beta == 0.0f) memset(C, 0, (size_t)N * sizeof(float));
        const int inc_a = trans_a ? lda : 1;
        if (trans_b)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, inc_a, beta, C, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, inc_a, beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                ldc);
}

/* Splits C by rows (or by columns when it has few rows) into one block per
 * thread; each block is an independent sgemm, so results do not depend on
 * timing. */
void nn_sgemm_parallel(nn_ctx *ctx, int trans_a, int trans_b, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C,
                       int ldc) {
    int T = ctx->threads;
    if (T <= 1 || (double)M * N * K < 1e5) {
        nn_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* each block's sgemm copies (packs) its share of A and all of B, or all
     * of A and its share of B: split the side that copies less */
    const double rows_cost = (double)M / T * K + (double)K * N;
    const double cols_cost = (double)M * K + (double)K * N / T;
    int by_rows = rows_cost <= cols_cost;
    NN_PARALLEL_FOR(T)
    for (int t = 0; t < T; t++) {
        if (by_rows) {
            int m0 = M * t / T, m1 = M * (t + 1) / T;
            if (m1 == m0) continue;
            const float *At = trans_a ? A + m0 : A + (size_t)m0 * lda;
            nn_sgemm(trans_a, trans_b, m1 - m0, N, K, alpha, At, lda, B, ldb, beta,
                     C + (size_t)m0 * ldc, ldc);
        } else {
            int n0 = N * t / T, n1 = N * (t + 1) / T;
            if (n1 == n0) continue;
            const float *Bt = trans_b ? B + (size_t)n0 * ldb : B + n0;
            nn_sgemm(trans_a, trans_b, M, n1 - n0, K, alpha, A, lda, Bt, ldb, beta, C + n0, ldc);
        }
    }
}

double nn_measure_sgemm_gflops(nn_ctx *ctx, int n, int repeats) {
    size_t nn = (size_t)n * n;
    float *a = nn_alloc_aligned(nn * sizeof(float)), *b = nn_alloc_aligned(nn * sizeof(float));
    float *c = nn_alloc_aligned(nn * sizeof(float));
    double best = 0.0;
    if (a && b && c) {
        for (size_t i = 0; i < nn; i++) {
            a[i] = (float)(i % 17) * 0.01f;
            b[i] = (float)(i % 13) * 0.01f;
        }
        nn_sgemm_parallel(ctx, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
        for (int r = 0; r < repeats; r++) {
            double t0 = omp_get_wtime();
            nn_sgemm_parallel(ctx, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double g = 2.0 * n * (double)nn / (omp_get_wtime() - t0) * 1e-9;
            if (g > best) best = g;
        }
    }
    nn_free_aligned(a);
    nn_free_aligned(b);
    nn_free_aligned(c);
    return best;
}
