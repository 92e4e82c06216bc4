/*
 * cuda_dnn.cu - cuDNN's convolutions, opened at run time (cuda_dnn.h).
 *
 * The library is dlopen()ed ("libcudnn.so.9", found on the loader's path)
 * and the few entry points nnopt calls are looked up by name into one table,
 * typed from cuDNN's own header. Plans (one per convolution shape and batch
 * size) live for the process in a list under a mutex: descriptors, and the
 * Find calls' results (fastest first) filtered to deterministic algorithms.
 * Everything runs on the default stream, as the other CUDA kernels.
 */
#include "backend/cuda_dnn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if NN_HAVE_CUDNN

#include <cudnn.h>
#include <dlfcn.h>

/* the entry points, typed as in cudnn.h */
#define CUDNN_FUNCS(X)                            \
    X(cudnnGetErrorString)                        \
    X(cudnnGetVersion)                            \
    X(cudnnCreate)                                \
    X(cudnnCreateTensorDescriptor)                \
    X(cudnnSetTensor4dDescriptor)                 \
    X(cudnnCreateFilterDescriptor)                \
    X(cudnnSetFilter4dDescriptor)                 \
    X(cudnnCreateConvolutionDescriptor)           \
    X(cudnnSetConvolution2dDescriptor)            \
    X(cudnnSetConvolutionGroupCount)              \
    X(cudnnSetConvolutionMathType)                \
    X(cudnnFindConvolutionForwardAlgorithm)       \
    X(cudnnFindConvolutionBackwardDataAlgorithm)  \
    X(cudnnFindConvolutionBackwardFilterAlgorithm) \
    X(cudnnConvolutionForward)                    \
    X(cudnnConvolutionBackwardData)               \
    X(cudnnConvolutionBackwardFilter)

#define TYPEDEF_(f) typedef decltype(&::f) f##_fn;
CUDNN_FUNCS(TYPEDEF_)
#undef TYPEDEF_

static struct {
#define DECLARE_(f) f##_fn f;
    CUDNN_FUNCS(DECLARE_)
#undef DECLARE_
} dnn;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static cudnnHandle_t handle;
static int loaded; /* 1: dnn and handle are usable */

static void load(void) {
    const char *mode = getenv("NNOPT_CUDA_CONV");
    if (mode && strcmp(mode, "im2col") == 0) return;
    void *lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return; /* no cuDNN on this machine: im2col + cuBLAS */
#define LOOKUP_(f)                                             \
    if (!(*(void **)&dnn.f = dlsym(lib, #f))) {                \
        fprintf(stderr, "nnopt: cuDNN: %s not found in libcudnn.so.9; convolutions run "  \
                        "as im2col + cuBLAS\n", #f);           \
        return;                                                \
    }
    CUDNN_FUNCS(LOOKUP_)
#undef LOOKUP_
    const cudnnStatus_t st = dnn.cudnnCreate(&handle);
    if (st != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr, "nnopt: cuDNN: cudnnCreate: %s; convolutions run as im2col + cuBLAS\n",
                dnn.cudnnGetErrorString(st));
        return;
    }
    loaded = 1;
}

int nn_cudnn_available(void) {
    pthread_once(&load_once, load);
    return loaded;
}

static void check(cudnnStatus_t st, const char *what) {
    if (st == CUDNN_STATUS_SUCCESS) return;
    fprintf(stderr, "nnopt: cuDNN error in %s: %s\n", what, dnn.cudnnGetErrorString(st));
    abort();
}

#define MAX_ALGOS 8

/* one measured algorithm: its number and workspace bytes */
typedef struct {
    int algo;
    size_t memory;
} algo_choice;

struct nn_cudnn_conv {
    nn_cudnn_shape d;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    /* deterministic results of Find, fastest first */
    algo_choice fwd[MAX_ALGOS], bwd_data[MAX_ALGOS], bwd_filter[MAX_ALGOS];
    int num_fwd, num_bwd_data, num_bwd_filter;
    size_t ws_bytes;
    int choice; /* the caller's measured path, -1: none yet */
    char algos[96];
    struct nn_cudnn_conv *next;
};

static pthread_mutex_t plans_lock = PTHREAD_MUTEX_INITIALIZER;
static nn_cudnn_conv *plans;

/* the same convolution, whatever the batch size */
static int same_shape(const nn_cudnn_shape *a, const nn_cudnn_shape *b) {
    return a->C == b->C && a->H == b->H && a->W == b->W && a->K == b->K && a->R == b->R &&
           a->S == b->S && a->P == b->P && a->Q == b->Q && a->stride_h == b->stride_h &&
           a->stride_w == b->stride_w && a->pad_h == b->pad_h && a->pad_w == b->pad_w &&
           a->dil_h == b->dil_h && a->dil_w == b->dil_w && a->groups == b->groups &&
           a->bf16 == b->bf16;
}

static const char *fwd_name(int a) {
    static const char *n[] = {"implicit_gemm", "implicit_precomp_gemm", "gemm", "direct",
                              "fft", "fft_tiling", "winograd", "winograd_nonfused"};
    return a >= 0 && a < 8 ? n[a] : "?";
}
static const char *bwd_data_name(int a) {
    static const char *n[] = {"algo0", "algo1", "fft", "fft_tiling", "winograd",
                              "winograd_nonfused"};
    return a >= 0 && a < 6 ? n[a] : "?";
}
static const char *bwd_filter_name(int a) {
    static const char *n[] = {"algo0", "algo1", "fft", "algo3", "winograd", "winograd_nonfused",
                              "fft_tiling"};
    return a >= 0 && a < 7 ? n[a] : "?";
}

/* the deterministic, successful results of a Find (fastest first) within the cap */
template <typename Perf>
static int keep(const Perf *perf, int count, algo_choice *out) {
    int k = 0;
    for (int i = 0; i < count && k < MAX_ALGOS; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC ||
            perf[i].memory > NN_CUDNN_WS_CAP)
            continue;
        out[k].algo = (int)perf[i].algo;
        out[k].memory = perf[i].memory;
        k++;
    }
    return k;
}

/* A new plan: descriptors, then the three Find calls (cuDNN allocates and
 * times on its own buffers). NULL if cuDNN rejects the shape. */
static nn_cudnn_conv *measure(const nn_cudnn_shape *d) {
    nn_cudnn_conv *p = (nn_cudnn_conv *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->d = *d;
    p->choice = -1;
    const int n = d->n, groups = d->groups;
    const cudnnDataType_t t = d->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    check(dnn.cudnnCreateTensorDescriptor(&p->x), "cudnnCreateTensorDescriptor");
    check(dnn.cudnnCreateTensorDescriptor(&p->y), "cudnnCreateTensorDescriptor");
    check(dnn.cudnnCreateFilterDescriptor(&p->w), "cudnnCreateFilterDescriptor");
    check(dnn.cudnnCreateConvolutionDescriptor(&p->conv), "cudnnCreateConvolutionDescriptor");
    if (dnn.cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, t, n, d->C, d->H, d->W) ||
        dnn.cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, t, n, d->K, d->P, d->Q) ||
        dnn.cudnnSetFilter4dDescriptor(p->w, t, CUDNN_TENSOR_NCHW, d->K, d->C / groups, d->R,
                                       d->S) ||
        dnn.cudnnSetConvolution2dDescriptor(p->conv, d->pad_h, d->pad_w, d->stride_h,
                                            d->stride_w, d->dil_h, d->dil_w,
                                            CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) ||
        dnn.cudnnSetConvolutionGroupCount(p->conv, groups) ||
        /* fp32: FMA arithmetic only, no TF32 rounding of the inputs; bf16:
         * the tensor cores, fp32 sums (the compute type above) */
        dnn.cudnnSetConvolutionMathType(p->conv, d->bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH))
        return p; /* no algorithms: the caller's other path */
    cudnnConvolutionFwdAlgoPerf_t fp[MAX_ALGOS];
    cudnnConvolutionBwdDataAlgoPerf_t dp[MAX_ALGOS];
    cudnnConvolutionBwdFilterAlgoPerf_t wp[MAX_ALGOS];
    int nf = 0, nd = 0, nw = 0;
    if (dnn.cudnnFindConvolutionForwardAlgorithm(handle, p->x, p->w, p->conv, p->y, MAX_ALGOS,
                                                 &nf, fp) == CUDNN_STATUS_SUCCESS)
        p->num_fwd = keep(fp, nf, p->fwd);
    if (dnn.cudnnFindConvolutionBackwardDataAlgorithm(handle, p->w, p->y, p->conv, p->x,
                                                      MAX_ALGOS, &nd, dp) == CUDNN_STATUS_SUCCESS)
        p->num_bwd_data = keep(dp, nd, p->bwd_data);
    if (dnn.cudnnFindConvolutionBackwardFilterAlgorithm(handle, p->x, p->y, p->conv, p->w,
                                                        MAX_ALGOS, &nw, wp) ==
        CUDNN_STATUS_SUCCESS)
        p->num_bwd_filter = keep(wp, nw, p->bwd_filter);
    (void)cudaGetLastError(); /* a rejected candidate may leave an error behind */
    if (p->num_fwd) p->ws_bytes = p->fwd[0].memory;
    if (p->num_bwd_data && p->bwd_data[0].memory > p->ws_bytes) p->ws_bytes = p->bwd_data[0].memory;
    if (p->num_bwd_filter && p->bwd_filter[0].memory > p->ws_bytes)
        p->ws_bytes = p->bwd_filter[0].memory;
    snprintf(p->algos, sizeof p->algos, "cudnn%s fwd %s, dgrad %s, wgrad %s",
             d->bf16 ? " bf16" : "",
             p->num_fwd ? fwd_name(p->fwd[0].algo) : "-",
             p->num_bwd_data ? bwd_data_name(p->bwd_data[0].algo) : "-",
             p->num_bwd_filter ? bwd_filter_name(p->bwd_filter[0].algo) : "-");
    return p;
}

const nn_cudnn_conv *nn_cudnn_conv_plan(const nn_cudnn_shape *d) {
    if (!nn_cudnn_available()) return NULL;
    pthread_mutex_lock(&plans_lock);
    nn_cudnn_conv *p = plans;
    while (p && !(p->d.n == d->n && same_shape(&p->d, d))) p = p->next;
    if (!p && (p = measure(d))) {
        p->next = plans;
        plans = p;
    }
    pthread_mutex_unlock(&plans_lock);
    return p && p->num_fwd && p->num_bwd_data && p->num_bwd_filter ? p : NULL;
}

size_t nn_cudnn_conv_ws_bytes(const nn_cudnn_conv *p) { return p ? p->ws_bytes : 0; }

const nn_cudnn_conv *nn_cudnn_conv_latest(const nn_cudnn_shape *d) {
    if (!nn_cudnn_available()) return NULL;
    pthread_mutex_lock(&plans_lock);
    nn_cudnn_conv *p = plans; /* newest first */
    while (p && !same_shape(&p->d, d)) p = p->next;
    pthread_mutex_unlock(&plans_lock);
    return p && p->num_fwd && p->num_bwd_data && p->num_bwd_filter ? p : NULL;
}

const char *nn_cudnn_conv_algos(const nn_cudnn_conv *p) { return p ? p->algos : "im2col+cublas"; }

int nn_cudnn_conv_choice(const nn_cudnn_conv *p) {
    pthread_mutex_lock(&plans_lock);
    const int c = p->choice;
    pthread_mutex_unlock(&plans_lock);
    return c;
}

void nn_cudnn_conv_set_choice(const nn_cudnn_conv *p, int choice) {
    pthread_mutex_lock(&plans_lock);
    ((nn_cudnn_conv *)p)->choice = choice;
    pthread_mutex_unlock(&plans_lock);
}

int nn_cudnn_conv_shape_choice(const nn_cudnn_shape *s) {
    if (!nn_cudnn_available()) return -1;
    pthread_mutex_lock(&plans_lock);
    int c = -1;
    for (const nn_cudnn_conv *p = plans; p && c < 0; p = p->next)
        if (p->choice >= 0 && same_shape(&p->d, s)) c = p->choice;
    pthread_mutex_unlock(&plans_lock);
    return c;
}

/* the first (fastest) choice that fits, or NULL */
static const algo_choice *fitting(const algo_choice *c, int count, size_t ws_bytes) {
    for (int i = 0; i < count; i++)
        if (c[i].memory <= ws_bytes) return &c[i];
    return NULL;
}

int nn_cudnn_conv_forward_fits(const nn_cudnn_conv *p, size_t ws_bytes) {
    return fitting(p->fwd, p->num_fwd, ws_bytes) != NULL;
}

int nn_cudnn_conv_backward_fits(const nn_cudnn_conv *p, size_t ws_bytes, int with_dgrad) {
    return fitting(p->bwd_filter, p->num_bwd_filter, ws_bytes) &&
           (!with_dgrad || fitting(p->bwd_data, p->num_bwd_data, ws_bytes));
}

int nn_cudnn_conv_forward(const nn_cudnn_conv *p, const void *x, const void *w, void *y,
                          void *ws, size_t ws_bytes) {
    const algo_choice *c = fitting(p->fwd, p->num_fwd, ws_bytes);
    if (!c) return -1;
    const float one = 1.0f, zero = 0.0f;
    check(dnn.cudnnConvolutionForward(handle, &one, p->x, x, p->w, w, p->conv,
                                      (cudnnConvolutionFwdAlgo_t)c->algo, ws, c->memory, &zero,
                                      p->y, y),
          "cudnnConvolutionForward");
    return 0;
}

int nn_cudnn_conv_backward_data(const nn_cudnn_conv *p, const void *w, const void *dy, void *dx,
                                void *ws, size_t ws_bytes) {
    const algo_choice *c = fitting(p->bwd_data, p->num_bwd_data, ws_bytes);
    if (!c) return -1;
    const float one = 1.0f, zero = 0.0f;
    check(dnn.cudnnConvolutionBackwardData(handle, &one, p->w, w, p->y, dy, p->conv,
                                           (cudnnConvolutionBwdDataAlgo_t)c->algo, ws, c->memory,
                                           &zero, p->x, dx),
          "cudnnConvolutionBackwardData");
    return 0;
}

int nn_cudnn_conv_backward_filter(const nn_cudnn_conv *p, const void *x, const void *dy, void *dw,
                                  float beta, void *ws, size_t ws_bytes) {
    const algo_choice *c = fitting(p->bwd_filter, p->num_bwd_filter, ws_bytes);
    if (!c) return -1;
    const float one = 1.0f;
    check(dnn.cudnnConvolutionBackwardFilter(handle, &one, p->x, x, p->y, dy, p->conv,
                                             (cudnnConvolutionBwdFilterAlgo_t)c->algo, ws,
                                             c->memory, &beta, p->w, dw),
          "cudnnConvolutionBackwardFilter");
    return 0;
}

#else /* built without cuDNN's headers */

int nn_cudnn_available(void) { return 0; }
const nn_cudnn_conv *nn_cudnn_conv_plan(const nn_cudnn_shape *) { return NULL; }
size_t nn_cudnn_conv_ws_bytes(const nn_cudnn_conv *p) {
    (void)p;
    return 0;
}
int nn_cudnn_conv_forward(const nn_cudnn_conv *, const void *, const void *, void *, void *,
                          size_t) {
    return -1;
}
int nn_cudnn_conv_backward_data(const nn_cudnn_conv *, const void *, const void *, void *, void *,
                                size_t) {
    return -1;
}
int nn_cudnn_conv_backward_filter(const nn_cudnn_conv *, const void *, const void *, void *, float,
                                  void *, size_t) {
    return -1;
}
int nn_cudnn_conv_forward_fits(const nn_cudnn_conv *, size_t) { return 0; }
int nn_cudnn_conv_backward_fits(const nn_cudnn_conv *, size_t, int) { return 0; }
const nn_cudnn_conv *nn_cudnn_conv_latest(const nn_cudnn_shape *) { return NULL; }
const char *nn_cudnn_conv_algos(const nn_cudnn_conv *p) {
    (void)p;
    return "im2col+cublas";
}
int nn_cudnn_conv_choice(const nn_cudnn_conv *) { return -1; }
void nn_cudnn_conv_set_choice(const nn_cudnn_conv *, int) {}
int nn_cudnn_conv_shape_choice(const nn_cudnn_shape *) { return -1; }

#endif
