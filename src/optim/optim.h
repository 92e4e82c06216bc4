/*
 * optim.h - what the optimizer files share: the optimizer's layout and one
 * update function per family. optim.c owns creation, validation, state
 * (re)initialization and the parallel loop; sgd.c, adam.c, rmsprop.c and
 * adagrad.c each update a contiguous range [lo, hi) of the flat buffers.
 */
#ifndef NN_OPTIM_H
#define NN_OPTIM_H

#include "nn_internal.h"

#define NN_OPTIM_MAX_STATES 3

/* PyTorch's CPU kernels (its AVX2/AVX-512 builds) fuse a * b + c into one
 * fused multiply-add in add(alpha=), addcmul and friends; the update loops
 * write those steps with fmaf, which makes them bit-identical to torch.optim
 * for the same gradients. fmaf is exact on any CPU but a library call unless
 * FMA instructions are enabled, so each loop also gets a copy compiled for
 * AVX2+FMA (NN_OPTIM_FMA_TARGET), used when the context's ISA is above
 * generic. Both copies give the same bits. */
#if defined(__x86_64__) && defined(__GNUC__)
#define NN_OPTIM_HAVE_FMA_COPY 1
#define NN_OPTIM_FMA_TARGET __attribute__((target("avx2,fma")))
#define NN_OPTIM_INLINE static inline __attribute__((always_inline))
#else
#define NN_OPTIM_HAVE_FMA_COPY 0
#define NN_OPTIM_INLINE static inline
#endif

struct nn_optimizer {
    nn_optim_config cfg;
    size_t n;                                  /* number of parameters */
    int64_t steps;                             /* steps taken (PyTorch's state 'step') */
    int num_states;                            /* buffers in use, PyTorch state-dict order */
    const char *state_name[NN_OPTIM_MAX_STATES];
    float *state[NN_OPTIM_MAX_STATES];         /* each (n), the backend's memory */
    const struct nn_backend *be;               /* whose memory the state is */
};

/* The state buffer called name, or NULL if this configuration has none. */
float *nn_optim_buffer(const nn_optimizer *opt, const char *name);

/* The float scalars of one step, computed on the host in double and rounded
 * as torch.optim's Python code passes them to its kernels; the CPU loops and
 * the CUDA kernels (optim/cuda/optim.cu) both take them from here. */
typedef struct {
    float neg_step, bc2_sqrt, b1, b2, one_b1, one_b2, eps, wd, decay;
    int l2;             /* Adam with weight_decay != 0 */
} nn_adam_scalars;
typedef struct {
    float neg_lr, wd, eps, mu, alpha, one_alpha;
    int l2;             /* weight_decay != 0 */
} nn_rmsprop_scalars;
typedef struct {
    float neg_clr, wd, eps;
    int l2;             /* weight_decay != 0 */
} nn_adagrad_scalars;
void nn_adam_scalars_of(const nn_optimizer *opt, nn_adam_scalars *k);
void nn_rmsprop_scalars_of(const nn_optimizer *opt, nn_rmsprop_scalars *k);
void nn_adagrad_scalars_of(const nn_optimizer *opt, nn_adagrad_scalars *k);

#if NN_HAVE_CUDA
/* The step on the CUDA backend's memory (optim/cuda/optim.cu): the state
 * initialized on the first step, then one kernel over all n elements, with
 * the same float operations as the CPU loops. */
void nn_optim_step_cuda(const nn_optimizer *opt, float *params, const float *grads);
#endif

/* One step on elements [lo, hi) of params (n), grads (n) and the state
 * buffers, with opt->steps still the count before this step. Each does the
 * float32 operations of torch.optim 1.13's single-tensor code in its order;
 * scalars that PyTorch computes in Python (bias corrections, 1 - beta) are
 * computed in double and rounded to float, as PyTorch passes them to kernels.
 * fast != 0 selects the FMA-instruction copy (same results; only when the
 * CPU has AVX2 and FMA). */
void nn_sgd_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                   size_t hi, int fast);
void nn_adam_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                    size_t hi, int fast); /* Adam and AdamW */
void nn_rmsprop_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                       size_t hi, int fast);
void nn_adagrad_update(const nn_optimizer *opt, float *params, const float *grads, size_t lo,
                       size_t hi, int fast);

#endif /* NN_OPTIM_H */
