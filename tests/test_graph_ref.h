/*
 * test_graph_ref.h - a net's graph run with the double-precision reference
 * kernels, node by node, for the tests that compare whole graphs against it
 * (test_model.c, test_layers.c). Reads the graph's internal node list
 * (core/graph.h). Include after test_util.h.
 */
#ifndef NN_TEST_GRAPH_REF_H
#define NN_TEST_GRAPH_REF_H

#include "core/graph.h"
#include "ops/ops.h"

#include <string.h>

/* The reference of the element-wise activations other than relu. */
static TU_UNUSED void ref_act_forward(nn_op_type op, double slope, double *y, const double *x,
                                      size_t n) {
    switch (op) {
    case NN_OP_LEAKY_RELU: nn_ref_leaky_relu_forward(y, x, slope, n); break;
    case NN_OP_GELU: nn_ref_gelu_forward(y, x, n); break;
    case NN_OP_SILU: nn_ref_silu_forward(y, x, n); break;
    case NN_OP_SIGMOID: nn_ref_sigmoid_forward(y, x, n); break;
    default: nn_ref_tanh_forward(y, x, n); break;
    }
}

static TU_UNUSED void ref_act_backward(nn_op_type op, double slope, double *dx,
                                       const double *dy, const double *x, size_t n) {
    switch (op) {
    case NN_OP_LEAKY_RELU: nn_ref_leaky_relu_backward(dx, dy, x, slope, n); break;
    case NN_OP_GELU: nn_ref_gelu_backward(dx, dy, x, n); break;
    case NN_OP_SILU: nn_ref_silu_backward(dx, dy, x, n); break;
    case NN_OP_SIGMOID: nn_ref_sigmoid_backward(dx, dy, x, n); break;
    default: nn_ref_tanh_backward(dx, dy, x, n); break;
    }
}

/* Forward + backward of net with the double references (the graph's node list
 * from core/graph.h, in order; gradients summed into each input). Returns the
 * mean loss; fills logits (n, classes) and grads (num_params). */
static TU_UNUSED double ref_run(const nn_net *net, const float *x, const int32_t *labels, int n,
                      double *logits, double *grads) {
    const int nn = net->num_nodes;
    double **y = xmalloc((size_t)nn * sizeof *y), **dy = xmalloc((size_t)nn * sizeof *dy);
    size_t *per = xmalloc((size_t)nn * sizeof *per);
    const size_t np = net->num_params;
    double *p = xmalloc(np * sizeof(double));
    float *host = tu_download(net->ctx, net->param_data, np); /* the backend's memory */
    for (size_t i = 0; i < np; i++) p[i] = host[i], grads[i] = 0.0;
    free(host);
    for (int i = 0; i < nn; i++) {
        per[i] = (size_t)nn_shape_numel(&net->nodes[i].out);
        y[i] = xmalloc((size_t)n * per[i] * sizeof(double));
        dy[i] = xmalloc((size_t)n * per[i] * sizeof(double));
        for (size_t j = 0; j < (size_t)n * per[i]; j++) dy[i][j] = 0.0;
    }
    double loss = 0.0;
    for (int i = 0; i < nn; i++) {
        const nn_node *node = &net->nodes[i];
        const int src = node->num_inputs ? node->inputs[0] : -1;
        const double *xin = src >= 0 ? y[src] : NULL;
        const double *w = NULL, *b = NULL;
        if (node->num_params > 0) {
            w = p + net->params[node->param_index].offset;
            if (node->num_params > 1) b = p + net->params[node->param_index + 1].offset;
        }
        const size_t count = (size_t)n * per[i];
        switch (node->op) {
        case NN_OP_INPUT:
            for (size_t j = 0; j < count; j++) y[i][j] = x[j];
            break;
        case NN_OP_CONV2D: nn_ref_conv2d_forward(y[i], xin, w, b, &node->d.conv, n); break;
        case NN_OP_MAXPOOL: nn_ref_maxpool_forward(y[i], xin, &node->d.pool, n); break;
        case NN_OP_AVGPOOL: nn_ref_avgpool_forward(y[i], xin, &node->d.pool, n); break;
        case NN_OP_GAP: nn_ref_gap_forward(y[i], xin, &node->d.pool, n); break;
        case NN_OP_RELU: nn_ref_relu_forward(y[i], xin, count); break;
        case NN_OP_LEAKY_RELU:
        case NN_OP_GELU:
        case NN_OP_SILU:
        case NN_OP_SIGMOID:
        case NN_OP_TANH: ref_act_forward(node->op, node->d.act.slope, y[i], xin, count); break;
        case NN_OP_LINEAR: nn_ref_linear_forward(y[i], xin, w, b, &node->d.linear, n); break;
        case NN_OP_FLATTEN: memcpy(y[i], xin, count * sizeof(double)); break;
        case NN_OP_SOFTMAX_CE:
            memcpy(y[i], xin, count * sizeof(double));
            loss = nn_ref_softmax_ce_forward(xin, labels, node->d.loss.classes, n);
            memcpy(logits, xin, count * sizeof(double));
            nn_ref_softmax_ce_backward(dy[src], xin, labels, node->d.loss.classes, n);
            break;
        default: break;
        }
    }
    for (int i = net->loss_node - 1; i > 0; i--) {
        const nn_node *node = &net->nodes[i];
        const int src = node->inputs[0];
        const size_t count = (size_t)n * per[i], in_count = (size_t)n * per[src];
        double *dx = xmalloc(in_count * sizeof(double));
        double *dw = NULL, *db = NULL;
        const double *w = NULL;
        if (node->num_params > 0) {
            w = p + net->params[node->param_index].offset;
            dw = grads + net->params[node->param_index].offset;
            if (node->num_params > 1) db = grads + net->params[node->param_index + 1].offset;
        }
        switch (node->op) {
        case NN_OP_CONV2D:
            nn_ref_conv2d_backward(dx, dw, db, dy[i], y[src], w, &node->d.conv, n);
            break;
        case NN_OP_MAXPOOL: nn_ref_maxpool_backward(dx, dy[i], y[src], &node->d.pool, n); break;
        case NN_OP_AVGPOOL: nn_ref_avgpool_backward(dx, dy[i], &node->d.pool, n); break;
        case NN_OP_GAP: nn_ref_gap_backward(dx, dy[i], &node->d.pool, n); break;
        case NN_OP_RELU: nn_ref_relu_backward(dx, dy[i], y[src], count); break;
        case NN_OP_LEAKY_RELU:
        case NN_OP_GELU:
        case NN_OP_SILU:
        case NN_OP_SIGMOID:
        case NN_OP_TANH:
            ref_act_backward(node->op, node->d.act.slope, dx, dy[i], y[src], count);
            break;
        case NN_OP_LINEAR:
            nn_ref_linear_backward(dx, dw, db, dy[i], y[src], w, &node->d.linear, n);
            break;
        case NN_OP_FLATTEN: memcpy(dx, dy[i], count * sizeof(double)); break;
        default:
            for (size_t j = 0; j < in_count; j++) dx[j] = 0.0;
            break;
        }
        for (size_t j = 0; j < in_count; j++) dy[src][j] += dx[j];
        free(dx);
    }
    for (int i = 0; i < nn; i++) free(y[i]), free(dy[i]);
    free(y), free(dy), free(per), free(p);
    return loss;
}

#endif /* NN_TEST_GRAPH_REF_H */
