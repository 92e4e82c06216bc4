/*
 * model_file.c - turns the layer lines of a model file (docs/model-format.md)
 * into graph nodes: an op keyword then key=value pairs per line, blocks
 * already expanded by model_expand.c. Every error names source:line and what
 * was expected.
 */
#include "core/graph.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

static nn_kv *kv_lookup(nn_kvlist *kv, const char *key) {
    for (int i = 0; i < kv->count; i++)
        if (strcmp(kv->kv[i].key, key) == 0) {
            kv->kv[i].used = 1;
            return &kv->kv[i];
        }
    return NULL;
}

const char *nn_kv_str(nn_kvlist *kv, const char *key) {
    nn_kv *e = kv_lookup(kv, key);
    return e ? e->val : NULL;
}

static int parse_int(const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno || v < INT_MIN || v > INT_MAX) return 0;
    *out = (int)v;
    return 1;
}

/* The entry for key, or NULL when absent; an error if it is required. */
static nn_status kv_find(nn_kvlist *kv, const char *key, int required, nn_kv **e) {
    *e = kv_lookup(kv, key);
    if (!*e && required)
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: missing required key '%s'", kv->source,
                           kv->line, key);
    return NN_OK;
}

nn_status nn_kv_int(nn_kvlist *kv, const char *key, int def, int required, int *out) {
    nn_kv *e;
    if (kv_find(kv, key, required, &e)) return NN_EINVAL;
    if (!e) {
        *out = def;
        return NN_OK;
    }
    if (!parse_int(e->val, out))
        return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: key '%s' expects an integer, got '%s'",
                           kv->source, kv->line, key, e->val);
    return NN_OK;
}

nn_status nn_kv_pair(nn_kvlist *kv, const char *key, int def, int required, int *a, int *b) {
    nn_kv *e;
    if (kv_find(kv, key, required, &e)) return NN_EINVAL;
    if (!e) {
        *a = *b = def;
        return NN_OK;
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s", e->val);
    char *x = strchr(buf, 'x');
    if (x) *x = '\0';
    if (!parse_int(buf, a) || (x && !parse_int(x + 1, b)))
        return nn_ctx_fail(kv->ctx, NN_EINVAL,
                           "%s:%d: key '%s' expects an integer or AxB, got '%s'", kv->source,
                           kv->line, key, e->val);
    if (!x) *b = *a;
    return NN_OK;
}

int nn_model_valid_name(const char *s) {
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return 0;
    return 1;
}

/* Whether key is one of the space-separated words in keys. */
static int key_allowed(const char *keys, const char *key) {
    size_t len = strlen(key);
    for (const char *p = keys; *p;) {
        while (*p == ' ') p++;
        size_t w = strcspn(p, " ");
        if (w == len && strncmp(p, key, len) == 0) return 1;
        p += w;
    }
    return 0;
}

/* FNV-1a: the layer-name index's hash. */
static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Looks names up in the index, not by scanning the layers: a model of 10000
 * layers then builds in linear time. */
int nn_model_find_layer(const nn_net *net, const char *name) {
    if (!net->name_cap) return -1;
    const uint32_t mask = (uint32_t)net->name_cap - 1;
    for (uint32_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
        const int v = net->name_slots[i];
        if (!v) return -1;
        if (strcmp(net->nodes[v - 1].name, name) == 0) return v - 1;
    }
}

/* Adds layer idx (its name not yet indexed) to the name index, which grows to
 * stay at most half full. */
static nn_status index_name(nn_net *net, int idx) {
    if (2 * (idx + 1) > net->name_cap) {
        const int cap = net->name_cap ? 2 * net->name_cap : 64;
        int *slots = calloc((size_t)cap, sizeof *slots);
        if (!slots) return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
        free(net->name_slots);
        net->name_slots = slots;
        net->name_cap = cap;
        for (int i = 0; i < idx; i++) {
            uint32_t j = name_hash(net->nodes[i].name) & (uint32_t)(cap - 1);
            while (slots[j]) j = (j + 1) & (uint32_t)(cap - 1);
            slots[j] = i + 1;
        }
    }
    const uint32_t mask = (uint32_t)net->name_cap - 1;
    uint32_t j = name_hash(net->nodes[idx].name) & mask;
    while (net->name_slots[j]) j = (j + 1) & mask;
    net->name_slots[j] = idx + 1;
    return NN_OK;
}

/* Splits one line into the op keyword and key=value pairs. */
static nn_status tokenize(nn_kvlist *kv, char *line, char **op) {
    char *save = NULL;
    *op = strtok_r(line, " \t", &save);
    for (char *tok = strtok_r(NULL, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || eq[1] == '\0')
            return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: expected key=value, found '%s'",
                               kv->source, kv->line, tok);
        *eq = '\0';
        if (kv->count == NN_MAX_KV)
            return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: more than %d keys on one line",
                               kv->source, kv->line, NN_MAX_KV);
        if (strlen(tok) >= sizeof kv->kv[0].key || strlen(eq + 1) >= sizeof kv->kv[0].val)
            return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: key or value too long near '%s'",
                               kv->source, kv->line, tok);
        for (int i = 0; i < kv->count; i++)
            if (strcmp(kv->kv[i].key, tok) == 0)
                return nn_ctx_fail(kv->ctx, NN_EINVAL, "%s:%d: key '%s' given twice",
                                   kv->source, kv->line, tok);
        nn_kv *e = &kv->kv[kv->count++];
        strcpy(e->key, tok);
        strcpy(e->val, eq + 1);
        e->used = 0;
    }
    return NN_OK;
}

nn_status nn_model_add_layer(nn_net *net, char *line, int lineno) {
    nn_kvlist kv = {.count = 0, .source = net->source, .line = lineno, .ctx = net->ctx};
    char *opname;
    nn_status st = tokenize(&kv, line, &opname);
    if (st) return st;
    const int op = nn_op_find(opname);
    if (op < 0) {
        char names[512];
        nn_op_names(names, sizeof names);
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s:%d: unknown layer type '%s' (expected %s)",
                           net->source, lineno, opname, names);
    }
    const nn_op_def *def = nn_op_def_get((nn_op_type)op);
    const int is_input = def->max_inputs == 0; /* the one layer that reads no other */
    if (net->num_nodes == 0 && !is_input)
        return nn_ctx_fail(net->ctx, NN_EINVAL,
                           "%s:%d: the first layer must be 'input shape=CxHxW', found '%s'",
                           net->source, lineno, opname);
    if (net->num_nodes > 0 && is_input)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s:%d: only one input layer is allowed",
                           net->source, lineno);
    if (net->loss_node >= 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL,
                           "%s:%d: layer '%s' after the loss; softmax_ce must be last",
                           net->source, lineno, opname);
    if (net->num_nodes == net->cap_nodes) {
        int cap = net->cap_nodes ? 2 * net->cap_nodes : 16;
        nn_node *nodes = realloc(net->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
        net->nodes = nodes;
        net->cap_nodes = cap;
    }
    nn_node *node = &net->nodes[net->num_nodes];
    memset(node, 0, sizeof *node);
    node->line = lineno;
    node->param_index = -1;
    node->buffer_index = -1;
    node->op = (nn_op_type)op;

    const char *name = nn_kv_str(&kv, "name");
    if (name) {
        if (!nn_model_valid_name(name))
            return nn_ctx_fail(net->ctx, NN_EINVAL,
                               "%s:%d: bad layer name '%s' (letters, digits and _ only)",
                               net->source, lineno, name);
        if (strlen(name) >= sizeof node->name)
            return nn_ctx_fail(net->ctx, NN_EINVAL, "%s:%d: layer name '%s' is longer than %zu characters",
                               net->source, lineno, name, sizeof node->name - 1);
        snprintf(node->name, sizeof node->name, "%s", name);
    } else {
        const int count = net->op_layers[node->op] + 1;
        if (is_input)
            snprintf(node->name, sizeof node->name, "%s", def->name);
        else
            snprintf(node->name, sizeof node->name, "%s%d", def->name, count);
    }
    if (nn_model_find_layer(net, node->name) >= 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s:%d: layer name '%s' is already used",
                           net->source, lineno, node->name);

    nn_shape in_shapes[NN_MAX_INPUTS];
    const nn_shape *in_shape = NULL;
    if (def->max_inputs > 0) {
        /* in=NAME or in=NAME,NAME,...; one input defaults to the previous layer */
        const int lo = def->min_inputs, hi = def->max_inputs;
        const char *in = nn_kv_str(&kv, "in");
        if (!in && lo > 1)
            return lo == hi ? nn_ctx_fail(net->ctx, NN_EINVAL,
                                          "%s:%d: %s needs in=A,B (%d earlier layers)",
                                          net->source, lineno, def->name, lo)
                            : nn_ctx_fail(net->ctx, NN_EINVAL,
                                          "%s:%d: %s needs in=A,B,... (%d to %d earlier layers)",
                                          net->source, lineno, def->name, lo, hi);
        char list[128];
        snprintf(list, sizeof list, "%s", in ? in : net->nodes[net->num_nodes - 1].name);
        char *save = NULL;
        int count = 0;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int src = nn_model_find_layer(net, tok);
            if (src < 0)
                return nn_ctx_fail(net->ctx, NN_EINVAL, "%s:%d: in=%s: '%s' names no earlier layer",
                                   net->source, lineno, in, tok);
            if (count == hi)
                return lo == hi ? nn_ctx_fail(net->ctx, NN_EINVAL,
                                              "%s:%d: %s takes %d input%s, in=%s names more",
                                              net->source, lineno, def->name, hi,
                                              hi > 1 ? "s" : "", in)
                                : nn_ctx_fail(net->ctx, NN_EINVAL,
                                              "%s:%d: %s takes at most %d inputs, in=%s names more",
                                              net->source, lineno, def->name, hi, in);
            node->inputs[count] = src;
            in_shapes[count++] = net->nodes[src].out;
        }
        if (count < lo)
            return lo == hi ? nn_ctx_fail(net->ctx, NN_EINVAL,
                                          "%s:%d: %s takes %d inputs, in=%s names %d",
                                          net->source, lineno, def->name, lo, in ? in : "", count)
                            : nn_ctx_fail(net->ctx, NN_EINVAL,
                                          "%s:%d: %s takes %d inputs or more (at most %d), in=%s "
                                          "names %d",
                                          net->source, lineno, def->name, lo, hi, in ? in : "",
                                          count);
        node->num_inputs = count;
        in_shape = in_shapes;
    }
    for (int i = 0; i < kv.count; i++)
        if (!kv.kv[i].used && !key_allowed(def->keys, kv.kv[i].key))
            return nn_ctx_fail(net->ctx, NN_EINVAL,
                               "%s:%d: unknown key '%s' for layer type '%s' (expected: name in%s%s)",
                               net->source, lineno, kv.kv[i].key, def->name,
                               *def->keys ? " " : "", def->keys);
    st = def->configure(node, &kv, in_shape);
    if (st) return st;
    for (int i = 0; i < node->out.ndim; i++)
        if (node->out.dim[i] <= 0)
            return nn_ctx_fail(net->ctx, NN_EINVAL,
                               "%s:%d: layer '%s' would have an empty output (dimension %d is %lld)",
                               net->source, lineno, node->name, i, (long long)node->out.dim[i]);
    if (nn_shape_numel(&node->out) > (1LL << 28))
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s:%d: layer '%s' output is too large",
                           net->source, lineno, node->name);
    st = index_name(net, net->num_nodes);
    if (st) return st;
    if (def->is_loss) net->loss_node = net->num_nodes;
    net->op_layers[node->op]++;
    net->num_nodes++;
    return NN_OK;
}

nn_status nn_model_check(nn_net *net, int lineno) {
    if (net->num_nodes == 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s: no layers (expected 'input shape=CxHxW' first)",
                           net->source);
    if (net->loss_node < 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL,
                           "%s:%d: model has no loss layer (expected 'softmax_ce' last)",
                           net->source, lineno);
    /* every layer must feed the loss: a dead branch would train nothing and
     * its backward would clobber gradients shared with live layers */
    char *live = calloc((size_t)net->num_nodes, 1);
    if (!live) return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
    live[net->loss_node] = 1;
    for (int i = net->loss_node; i >= 0; i--)
        if (live[i])
            for (int k = 0; k < net->nodes[i].num_inputs; k++) live[net->nodes[i].inputs[k]] = 1;
    for (int i = 0; i < net->num_nodes; i++)
        if (!live[i]) {
            int line = net->nodes[i].line;
            const char *name = net->nodes[i].name;
            free(live);
            return nn_ctx_fail(net->ctx, NN_EINVAL,
                               "%s:%d: the output of layer '%s' is never used on the way to the loss",
                               net->source, line, name);
        }
    free(live);
    return NN_OK;
}
