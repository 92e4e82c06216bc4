/*
 * registry.c - the op registry: the table of every op's entry, generated
 * from NN_OP_LIST (core/graph.h), and lookups by type and by keyword. The
 * entries themselves live beside their kernels, one op family per file.
 */
#include "ops/ops.h" /* and through it core/graph.h: NN_OP_LIST */

#include <string.h>

#define NN_OP_ENTRY_(E, k) [NN_OP_##E] = &nn_##k##_def,
static const nn_op_def *const registry[NN_OP_COUNT] = {NN_OP_LIST(NN_OP_ENTRY_)};
#undef NN_OP_ENTRY_

const nn_op_def *nn_op_def_get(nn_op_type op) {
    return ((int)op >= 0 && op < NN_OP_COUNT) ? registry[op] : NULL;
}

int nn_op_find(const char *name) {
    for (int i = 0; i < NN_OP_COUNT; i++)
        if (strcmp(registry[i]->name, name) == 0) return i;
    return -1;
}

const nn_op_def *nn_op_def_find(const char *name) {
    const int op = nn_op_find(name);
    return op >= 0 ? registry[op] : NULL;
}

void nn_op_names(char *buf, size_t size) {
    size_t len = 0;
    if (size == 0) return;
    buf[0] = '\0';
    for (int i = 0; i < NN_OP_COUNT && len < size; i++) {
        const char *sep = i == 0 ? "" : i == NN_OP_COUNT - 1 ? " or " : ", ";
        int w = snprintf(buf + len, size - len, "%s%s", sep, registry[i]->name);
        if (w < 0) break;
        len += (size_t)w;
    }
}
