/*
 * cuda_dnn.h - cuDNN's convolutions for the CUDA backend (cuda_dnn.cu),
 * loaded at run time: libcudnn.so.9 is opened on first use, so the nnopt
 * binary starts on a machine without cuDNN and its convolutions run as
 * im2col + cuBLAS there (src/ops/cuda/conv2d.cu). Built only with
 * NN_HAVE_CUDA; without cuDNN's headers at build time every call below
 * answers "not available".
 *
 * Per convolution shape and batch size (a plan), the forward, input-gradient
 * and weight-gradient algorithms are measured once by cuDNN's Find calls
 * (as PyTorch's cudnn.benchmark) among the deterministic ones that use FMA
 * arithmetic only (no TF32: fp32 stays fp32, issue 19), and kept for the
 * process. A call then takes the fastest measured algorithm whose workspace
 * fits the bytes it is given.
 *
 * NNOPT_CUDA_CONV=im2col turns cuDNN off (comparison, fault isolation);
 * NNOPT_CUDA_CONV=cudnn keeps it on every layer (conv2d.cu otherwise times
 * both paths per layer at planning and keeps the faster).
 */
#ifndef NN_CUDA_DNN_H
#define NN_CUDA_DNN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_cudnn_conv nn_cudnn_conv;

/* A convolution's shape: batch n, input (C, H, W), K output channels of
 * (C / groups, R, S), output (P, Q), strides, pads, dilations (>= 1) and
 * groups (>= 1); bf16: x, w and y (and their gradients) are bf16, the sums
 * fp32, on the tensor cores; else all fp32 with FMA arithmetic. */
typedef struct {
    int n, C, H, W, K, R, S, P, Q;
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
    int bf16;
} nn_cudnn_shape;

/* 1 if cuDNN's convolutions are used (library loaded, handle made, not
 * turned off by NNOPT_CUDA_CONV=im2col); the first call loads it. */
int nn_cudnn_available(void);

/* The plan of convolution s, measured on first use; NULL where cuDNN is not
 * available or rejects the shape. */
const nn_cudnn_conv *nn_cudnn_conv_plan(const nn_cudnn_shape *s);

/* The workspace bytes the plan's fastest algorithms need (the largest of
 * forward, input gradient and weight gradient), at most NN_CUDNN_WS_CAP. */
size_t nn_cudnn_conv_ws_bytes(const nn_cudnn_conv *p);
#define NN_CUDNN_WS_CAP ((size_t)256 << 20)

/* Each returns 0 when done, -1 if no measured algorithm fits ws_bytes (the
 * caller then takes another path). x, y: (n, C, H, W), (n, K, P, Q); w: the
 * weights (K, C / groups, R, S); floats, or bf16 values for a bf16 plan. */
int nn_cudnn_conv_forward(const nn_cudnn_conv *p, const void *x, const void *w, void *y,
                          void *ws, size_t ws_bytes);               /* y = conv(x, w) */
int nn_cudnn_conv_backward_data(const nn_cudnn_conv *p, const void *w, const void *dy, void *dx,
                                void *ws, size_t ws_bytes);         /* dx = conv^T(dy) */
/* dw = beta dw + the weight gradient (beta 1: accumulate, 0: overwrite) */
int nn_cudnn_conv_backward_filter(const nn_cudnn_conv *p, const void *x, const void *dy, void *dw,
                                  float beta, void *ws, size_t ws_bytes);

/* 1 if a forward algorithm can run in ws_bytes */
int nn_cudnn_conv_forward_fits(const nn_cudnn_conv *p, size_t ws_bytes);
/* 1 if the weight gradient's algorithm, and the input gradient's where
 * with_dgrad, can run in ws_bytes */
int nn_cudnn_conv_backward_fits(const nn_cudnn_conv *p, size_t ws_bytes, int with_dgrad);

/* The plan of s's shape measured last, whatever its batch size, or NULL. */
const nn_cudnn_conv *nn_cudnn_conv_latest(const nn_cudnn_shape *s);

/* The path chosen for a plan's shape and batch by measurement (the
 * convolution's own business: 1 cuDNN, 0 another), -1 before any; and for
 * a shape at whatever batch was measured (-1: none was). */
int nn_cudnn_conv_choice(const nn_cudnn_conv *p);
void nn_cudnn_conv_set_choice(const nn_cudnn_conv *p, int choice);
int nn_cudnn_conv_shape_choice(const nn_cudnn_shape *s);

/* "cudnn fwd A, dgrad B, wgrad C": the algorithms a plan runs first (nnopt
 * bench); "im2col+cublas" for NULL */
const char *nn_cudnn_conv_algos(const nn_cudnn_conv *p);

#ifdef __cplusplus
}
#endif

#endif /* NN_CUDA_DNN_H */
