/* cpu.c - the CPU backend: host memory and the CPU kernel table of every op. */
#include "backend/backend.h"

static const nn_backend cpu_backend = {
    .name = "cpu",
    .device = NN_DEVICE_CPU,
    .alloc = nn_alloc_aligned,
    .free = nn_free_aligned,
    .kernels =
        {
            [NN_OP_INPUT] = NULL,
            [NN_OP_CONV2D] = &nn_conv2d_cpu,
            [NN_OP_MAXPOOL] = &nn_maxpool_cpu,
            [NN_OP_RELU] = &nn_relu_cpu,
            [NN_OP_LINEAR] = &nn_linear_cpu,
            [NN_OP_FLATTEN] = &nn_flatten_cpu,
            [NN_OP_SOFTMAX_CE] = &nn_softmax_ce_cpu,
            [NN_OP_LEAKY_RELU] = &nn_leaky_relu_cpu,
            [NN_OP_GELU] = &nn_gelu_cpu,
            [NN_OP_SILU] = &nn_silu_cpu,
            [NN_OP_SIGMOID] = &nn_sigmoid_cpu,
            [NN_OP_TANH] = &nn_tanh_cpu,
            [NN_OP_AVGPOOL] = &nn_avgpool_cpu,
            [NN_OP_GAP] = &nn_gap_cpu,
            [NN_OP_ADD] = &nn_add_cpu,
            [NN_OP_BATCHNORM] = &nn_batchnorm_cpu,
            [NN_OP_CONCAT] = &nn_concat_cpu,
            [NN_OP_DROPOUT] = &nn_dropout_cpu,
        },
    .allreduce = NULL,
};

const nn_backend *nn_backend_cpu(void) { return &cpu_backend; }
