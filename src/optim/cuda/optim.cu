/*
 * optim.cu - the optimizer step on the CUDA backend's flat buffers (the twin
 * of optim.c's step loop with sgd.c, adam.c, rmsprop.c and adagrad.c): one
 * kernel per family over all n parameters, with the same float operations in
 * the same order (fmaf where the CPU loops fuse, nothing contracted
 * elsewhere: the build passes --fmad=false; IEEE division and square root),
 * so a step gives the CPU's bits for the same gradients. The scalars come
 * from the CPU files (nn_adam_scalars_of, ...); optim.c fills the state on
 * the first step before calling this.
 */
extern "C" {
#include "optim/optim.h"
#include "backend/cuda_blas.h"
}

#include <cuda_runtime.h>

#define THREADS 256
#define FOR_ALL(i, n)                                                                 \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);          \
         i += (size_t)gridDim.x * blockDim.x)

/* torch.optim.SGD, as sgd.c (first: the buffer starts as g) */
__global__ void sgd_kernel(float *p, const float *grad, float *buf, size_t n, float lr, float mu,
                           float wd, float keep, int first, int nesterov) {
    FOR_ALL(i, n) {
        const float g = grad[i] + wd * p[i];
        if (!buf) {
            p[i] = p[i] - lr * g;
            continue;
        }
        const float m = first ? g : mu * buf[i] + keep * g;
        buf[i] = m;
        p[i] = p[i] - lr * (nesterov ? g + mu * m : m);
    }
}

__global__ void adam_kernel(float *params, const float *grads, float *m, float *v, float *vmax,
                            size_t n, nn_adam_scalars k) {
    FOR_ALL(i, n) {
        const float g = k.l2 ? fmaf(params[i], k.wd, grads[i]) : grads[i];
        const float p = params[i] * k.decay;
        const float mi = fmaf(g, k.one_b1, m[i] * k.b1);
        const float vi = fmaf(k.one_b2 * g, g, v[i] * k.b2);
        m[i] = mi;
        v[i] = vi;
        float vm = vi;
        if (vmax) { /* torch.maximum: NaN wins */
            vm = (vi > vmax[i] || vi != vi) ? vi : vmax[i];
            vmax[i] = vm;
        }
        const float denom = sqrtf(vm) / k.bc2_sqrt + k.eps;
        params[i] = p + k.neg_step * mi / denom;
    }
}

__global__ void rmsprop_kernel(float *params, const float *grads, float *sq, float *buf,
                               float *ga, size_t n, nn_rmsprop_scalars k) {
    FOR_ALL(i, n) {
        const float g = k.l2 ? fmaf(params[i], k.wd, grads[i]) : grads[i];
        const float s = fmaf(k.one_alpha * g, g, sq[i] * k.alpha);
        sq[i] = s;
        float avg;
        if (ga) {
            const float a = fmaf(g, k.one_alpha, ga[i] * k.alpha);
            ga[i] = a;
            avg = sqrtf(fmaf(-a, a, s)) + k.eps;
        } else {
            avg = sqrtf(s) + k.eps;
        }
        if (buf) {
            const float b = g / avg + buf[i] * k.mu;
            buf[i] = b;
            params[i] = fmaf(b, k.neg_lr, params[i]);
        } else {
            params[i] = params[i] + k.neg_lr * g / avg;
        }
    }
}

__global__ void adagrad_kernel(float *params, const float *grads, float *sum, size_t n,
                               nn_adagrad_scalars k) {
    FOR_ALL(i, n) {
        const float g = k.l2 ? fmaf(params[i], k.wd, grads[i]) : grads[i];
        const float s = fmaf(g, g, sum[i]);
        sum[i] = s;
        params[i] = params[i] + k.neg_clr * g / (sqrtf(s) + k.eps);
    }
}

extern "C" void nn_optim_step_cuda(const nn_optimizer *opt, float *params, const float *grads) {
    const size_t n = opt->n;
    const unsigned blocks = nn_cuda_blocks(n, THREADS);
    const nn_optim_config *c = &opt->cfg;
    switch (c->kind) {
    case NN_OPTIM_SGD:
        sgd_kernel<<<blocks, THREADS>>>(params, grads, nn_optim_buffer(opt, "momentum_buffer"), n,
                                        c->lr, c->momentum, c->weight_decay,
                                        1.0f - c->dampening, opt->steps == 0, c->nesterov);
        break;
    case NN_OPTIM_ADAM:
    case NN_OPTIM_ADAMW: {
        nn_adam_scalars k;
        nn_adam_scalars_of(opt, &k);
        adam_kernel<<<blocks, THREADS>>>(params, grads, nn_optim_buffer(opt, "exp_avg"),
                                         nn_optim_buffer(opt, "exp_avg_sq"),
                                         nn_optim_buffer(opt, "max_exp_avg_sq"), n, k);
        break;
    }
    case NN_OPTIM_RMSPROP: {
        nn_rmsprop_scalars k;
        nn_rmsprop_scalars_of(opt, &k);
        rmsprop_kernel<<<blocks, THREADS>>>(params, grads, nn_optim_buffer(opt, "square_avg"),
                                            nn_optim_buffer(opt, "momentum_buffer"),
                                            nn_optim_buffer(opt, "grad_avg"), n, k);
        break;
    }
    case NN_OPTIM_ADAGRAD: {
        nn_adagrad_scalars k;
        nn_adagrad_scalars_of(opt, &k);
        adagrad_kernel<<<blocks, THREADS>>>(params, grads, nn_optim_buffer(opt, "sum"), n, k);
        break;
    }
    default:
        break;
    }
    nn_cuda_check_launch("optimizer step");
}
