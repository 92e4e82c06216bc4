/*
 * cuda_vec.h - the CUDA backend's loops over device memory that are not an
 * op's kernel (cuda_vec.cu): the nn_backend fill, zero, add, scale, lerp
 * and sum_squares entries. Built only with NN_HAVE_CUDA.
 */
#ifndef NN_CUDA_VEC_H
#define NN_CUDA_VEC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void nn_cuda_zero(void *dev, size_t bytes);
void nn_cuda_fill(float *dev, size_t n, float value);
void nn_cuda_add(float *dst, const float *src, size_t n);   /* dst (n) += src (n) */
void nn_cuda_scale(float *dev, size_t n, float s);           /* dev (n) *= s */
void nn_cuda_lerp(float *dst, const float *src, size_t n, float w); /* dst += w (src - dst) */
/* Sum of dev[i]^2 in double, in a fixed order (the same for every call). */
double nn_cuda_sum_squares(const float *dev, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* NN_CUDA_VEC_H */
