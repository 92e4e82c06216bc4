/*
 * shape.c - layers that only describe or reshape data: input and flatten.
 * Flatten shares its input's memory (the graph aliases it), so it has no
 * kernels.
 */
#include "ops/ops.h"

#include <string.h>

static nn_status input_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    (void)in;
    const char *s = nn_kv_str(kv, "shape");
    if (!s)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: input needs shape=CxHxW (e.g. 1x28x28)",
                           kv->source, kv->line);
    nn_shape shape = {0, {0}};
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || v > 65536 || shape.ndim == 3 || (*end && *end != 'x'))
            return nn_ctx_fail(kv->ctx, NN_EINVAL,
                               "%s:%d: input shape '%s' is not CxHxW with positive sizes",
                               kv->source, kv->line, s);
        shape.dim[shape.ndim++] = v;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: input shape '%s' ends with 'x'",
                               kv->source, kv->line, s);
    }
    if (shape.ndim != 3 && shape.ndim != 1)
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: input shape '%s' must be CxHxW (or a flat size)", kv->source,
                           kv->line, s);
    node->out = shape;
    return NN_OK;
}


static nn_status flatten_configure(nn_node *node, nn_kvlist *kv, const nn_shape *in) {
    (void)kv;
    node->out = (nn_shape){1, {nn_shape_numel(in), 0, 0, 0}};
    return NN_OK;
}

/* the one layer that reads no other: the graph feeds it the batch */
const nn_op_def nn_input_def = {
    .name = "input",
    .min_inputs = 0,
    .max_inputs = 0,
    .keys = "shape",
    .configure = input_configure,
};

const nn_op_def nn_flatten_def = {
    .name = "flatten",
    .min_inputs = 1,
    .max_inputs = 1,
    .keys = "",
    .configure = flatten_configure,
    .aliases_input = 1,
};
