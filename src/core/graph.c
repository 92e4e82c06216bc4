/*
 * graph.c - the network: builds nodes from a model file, places parameters in
 * one flat buffer, plans activation memory, and runs forward in topological
 * order and backward in reverse through the context's backend.
 */
#include "core/graph.h"
#include "backend/backend.h"

#include <errno.h>
#include <omp.h>
#include <math.h>
#include <string.h>
#include <unistd.h>


/* Gives every parameter of every node its name, shape and flat offset. */
static nn_status place_params(nn_net *net) {
    int count = 0;
    for (int i = 0; i < net->num_nodes; i++) count += net->nodes[i].num_params;
    net->params = calloc((size_t)(count ? count : 1), sizeof *net->params);
    if (!net->params) return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
    size_t offset = 0;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        if (node->num_params == 0) continue;
        node->param_index = net->num_param_tensors;
        for (int j = 0; j < node->num_params; j++) {
            nn_param_info *p = &net->params[net->num_param_tensors++];
            snprintf(p->name, sizeof p->name, "%s.%s", node->name, node->param_suffix[j]);
            p->shape = node->param_shape[j];
            p->numel = (size_t)nn_shape_numel(&p->shape);
            p->offset = offset;
            if (p->numel > SIZE_MAX / 8 - offset) /* offset * 8 bytes fits below */
                return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s:%d: layer '%s' has too many "
                                   "parameters", net->source, node->line, node->name);
            p->fan_in = node->param_fan_in;
            p->is_bias = strcmp(node->param_suffix[j], "bias") == 0;
            p->init = node->param_init[j];
            p->init_value = node->param_init_value[j];
            offset += p->numel;
        }
    }
    /* parameters and gradients: checked before anything is allocated (and
     * zero-filled), against the cap and the memory available */
    const uint64_t bytes = nn_size_mul(nn_size_mul(offset, sizeof(float)), 2);
    nn_status st = nn_memory_check(net->ctx, bytes, bytes,
                                   "%s: %llu parameters and their gradients need %.1f MiB",
                                   net->source, (unsigned long long)offset, NN_MIB(bytes));
    if (st) return st;
    const nn_backend *be = net->ctx->backend;
    net->num_params = offset;
    net->param_data = be->alloc(offset * sizeof(float));
    net->grad_data = be->alloc(offset * sizeof(float));
    if (!net->param_data || !net->grad_data)
        return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory for %zu parameters "
                           "(%.1f MiB with their gradients)", net->source, offset, NN_MIB(bytes));
    return NN_OK;
}

/* Writes value into n floats of device memory at dev, through a host chunk. */
static void fill_device(const nn_backend *be, float *dev, size_t n, float value) {
    float chunk[1024];
    for (size_t i = 0; i < sizeof chunk / sizeof chunk[0]; i++) chunk[i] = value;
    for (size_t i = 0; i < n; i += 1024)
        nn_dev_upload(be, dev + i, chunk, (n - i < 1024 ? n - i : 1024) * sizeof(float));
}

/* Sets every buffer (batch-norm statistics) to its initial value. */
static void reset_buffers(nn_net *net) {
    for (int i = 0; i < net->num_buffer_tensors; i++) {
        const nn_param_info *p = &net->buffers[i];
        fill_device(net->ctx->backend, net->buffer_data + p->offset, p->numel, p->init_value);
    }
}

/* The same for buffers: names, shapes and offsets in the flat buffer, each
 * node's contiguous, filled with their initial values. */
static nn_status place_buffers(nn_net *net) {
    int count = 0;
    for (int i = 0; i < net->num_nodes; i++) count += net->nodes[i].num_buffers;
    net->buffers = calloc((size_t)(count ? count : 1), sizeof *net->buffers);
    if (!net->buffers) return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
    size_t offset = 0;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        node->buffer_index = -1;
        if (node->num_buffers == 0) continue;
        node->buffer_index = net->num_buffer_tensors;
        for (int j = 0; j < node->num_buffers; j++) {
            nn_param_info *p = &net->buffers[net->num_buffer_tensors++];
            snprintf(p->name, sizeof p->name, "%s.%s", node->name, node->buffer_suffix[j]);
            p->shape = node->buffer_shape[j];
            p->numel = (size_t)nn_shape_numel(&p->shape);
            p->offset = offset;
            p->init = NN_INIT_CONSTANT;
            p->init_value = node->buffer_init[j];
            offset += p->numel;
        }
    }
    net->num_buffers = offset;
    net->buffer_data = net->ctx->backend->alloc((offset ? offset : 1) * sizeof(float));
    if (!net->buffer_data)
        return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory for %zu buffer values",
                           net->source, offset);
    reset_buffers(net);
    return NN_OK;
}

/* The node whose planned memory node j uses (itself unless it is an alias). */
static int memory_root(const nn_net *net, int j) {
    while (net->nodes[j].alias_of >= 0) j = net->nodes[j].alias_of;
    return j;
}

static int consumers(const nn_net *net, int j) {
    int count = 0;
    for (int i = 0; i < net->num_nodes; i++)
        for (int k = 0; k < net->nodes[i].num_inputs; k++) count += net->nodes[i].inputs[k] == j;
    return count;
}

static const nn_op_def *def_of(const nn_node *node) { return nn_op_def_get(node->op); }

/* A node whose kernels take a prologue (a depthwise convolution) and whose
 * input is a batch norm's output (through its fused ReLU), read by nothing
 * else: in training passes the convolution normalizes the batch norm's input
 * itself while loading it, so the batch norm writes no output (one pass over
 * memory less forward, and its backward reads its input, not its output).
 * Eval passes run as before (the batch norm may then fold into the
 * convolution before it). */
static void plan_prologues(nn_net *net) {
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].prologue_from = -1;
    if (!net->ctx->fuse) return;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        const nn_op_kernels *k = nn_backend_kernels(net->ctx->backend, node->op);
        if (node->alias_of >= 0 || node->num_inputs < 1 || !k || !k->takes_prologue ||
            !k->takes_prologue(node, net->ctx))
            continue;
        const int j = node->inputs[0], p = memory_root(net, j);
        nn_node *src = &net->nodes[p];
        const nn_op_def *sdef = def_of(src);
        if (p == net->input_node || !sdef->give_prologue || !sdef->prologue_coefs ||
            consumers(net, j) != 1 || consumers(net, p) != 1 || j == net->logits_node ||
            p == net->logits_node || (j != p && net->nodes[j].alias_of != p) ||
            src->num_inputs != 1 || memory_root(net, src->inputs[0]) == net->input_node)
            continue;
        if (!sdef->give_prologue(src)) continue;
        node->prologue_from = p;
        if (k->sums_prologue_grad && k->sums_prologue_grad(node, net->ctx) &&
            sdef->give_grad_sums && sdef->prologue_grad_sums)
            sdef->give_grad_sums(src);
    }
}

/* Whether node i is the first to read memory root p's output, reading it
 * through its first input alone: no kernel of an earlier node reads it. */
static int first_reader(const nn_net *net, int p, int i) {
    for (int m = 0; m < net->num_nodes; m++) {
        const nn_node *node = &net->nodes[m];
        if (node->alias_of >= 0) continue; /* runs no kernel */
        for (int k = 0; k < node->num_inputs; k++)
            if (memory_root(net, node->inputs[k]) == p && (m < i || (m == i && k > 0))) return 0;
    }
    return 1;
}

/* A node whose forward kernel can write the output of the batch norm it
 * reads, a part at a time, each part right before it reads it from its
 * cache (writes_prologue), where plan_prologues did not take it: the output
 * has later readers too (a residual block's input, read again by the
 * block's add) or a residual add fused in. The first reader writes it, in
 * training forward passes, and does not read it back from memory. The
 * batch norm makes only the map; backward passes read the output as
 * written. */
static void plan_written_prologues(nn_net *net) {
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].writes_from = -1;
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].written_by = -1;
    if (!net->ctx->fuse) return;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        const nn_op_kernels *k = nn_backend_kernels(net->ctx->backend, node->op);
        if (node->alias_of >= 0 || node->num_inputs < 1 || node->prologue_from >= 0 || !k ||
            !k->writes_prologue || !k->writes_prologue(node, net->ctx))
            continue;
        const int j = node->inputs[0], p = memory_root(net, j);
        nn_node *src = &net->nodes[p];
        const nn_op_def *sdef = def_of(src);
        if (p == net->input_node || !sdef->give_written_prologue || !sdef->prologue_coefs ||
            j == net->logits_node || p == net->logits_node ||
            memory_root(net, src->inputs[0]) == net->input_node || !first_reader(net, p, i))
            continue;
        if (sdef->give_written_prologue(src)) node->writes_from = p, src->written_by = i;
    }
}

/* A batch norm whose input is a node's output, read by nothing else, where
 * the node's forward kernels can sum each output row while it is in their
 * cache: in training passes they write the batch norm's per-row statistics
 * (the same row kernel as its own pass, so the same bytes), and the batch
 * norm skips its pass over its input. */
static void plan_output_stats(nn_net *net) {
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].stats_to = -1;
    if (!net->ctx->fuse) return;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        const nn_op_def *def = def_of(node);
        if (node->alias_of >= 0 || node->num_inputs < 1 || !def->give_input_stats ||
            !def->input_stats)
            continue;
        const int p = node->inputs[0];
        nn_node *src = &net->nodes[p];
        const nn_op_kernels *k = nn_backend_kernels(net->ctx->backend, src->op);
        if (p == net->input_node || src->alias_of >= 0 || consumers(net, p) != 1 ||
            p == net->logits_node || !k || !k->sums_output_stats ||
            !k->sums_output_stats(src, net->ctx) || !def->give_input_stats(node))
            continue;
        src->stats_to = i;
    }
}

/* A batch norm whose input is a node's output, read by nothing else, where
 * the node's backward kernels can form their dy from the batch norm's output
 * gradient while loading it (forms_dy): in training passes the batch norm's
 * backward then makes only its coefficients, and the node computes the batch
 * norm's input gradient itself, image by image in its cache: one pass over
 * memory less and one array less written and read back. The batch norm's
 * output gradient lives until the node's backward (plan_gradient_slots).
 * A batch norm with a residual add fused in (a second input) leaves g in
 * that input's gradient (formed_dy_args); its producer must be the node just
 * before it, so that no other backward runs between the two. */
static void plan_dy_forms(nn_net *net) {
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].dy_from = -1;
    if (!net->ctx->fuse) return;
    for (int i = 0; i < net->num_nodes; i++) {
        const nn_node *node = &net->nodes[i];
        if (node->alias_of >= 0 || !def_of(node)->deferred_dx) continue;
        if (node->num_inputs != 1 && (node->num_inputs != 2 || node->inputs[0] != i - 1))
            continue;
        const int p = node->inputs[0];
        nn_node *src = &net->nodes[p];
        const nn_op_kernels *k = nn_backend_kernels(net->ctx->backend, src->op);
        if (p == net->input_node || src->alias_of >= 0 || consumers(net, p) != 1 ||
            p == net->logits_node || !k || !k->forms_dy || !k->forms_dy(src, net->ctx))
            continue;
        src->dy_from = i;
    }
}

/* A two-input add (node i) whose later input j has it as only reader, runs
 * a kernel of its own and takes NN_EPILOGUE_ADD (batch norm): j reads the
 * add's other input as one more input of its own and writes the sum, and
 * the add shares j's memory and runs no kernel. The other input is computed
 * before j (it is an earlier node) and its memory lives on (the add still
 * lists it). */
static void fuse_residual(nn_net *net, int i) {
    nn_node *node = &net->nodes[i];
    if (node->num_inputs != 2 || node->inputs[0] == node->inputs[1]) return;
    const int j = node->inputs[0] > node->inputs[1] ? node->inputs[0] : node->inputs[1];
    const int other = node->inputs[0] + node->inputs[1] - j;
    nn_node *src = &net->nodes[j];
    const nn_op_def *sdef = def_of(src);
    if (src->alias_of >= 0 || !sdef->fuse_epilogue || consumers(net, j) != 1 ||
        j == net->logits_node || src->num_inputs >= NN_MAX_INPUTS)
        return;
    if (!sdef->fuse_epilogue(src, NN_EPILOGUE_ADD)) return;
    src->inputs[src->num_inputs++] = other;
    node->alias_of = j;
}

/* Decides which nodes share memory with their input, from the registry
 * entries: ops that alias their input (flatten) always; an element-wise op
 * that can be an epilogue (relu) when the op before it takes it onto its own
 * output (conv2d, linear: applied in the producer's kernel while the data is
 * in cache) and nothing else reads that output. Then marks which nodes must
 * compute an input gradient: none flows into the image. */
static void fuse_and_alias(nn_net *net) {
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        const nn_op_def *def = def_of(node);
        node->alias_of = -1;
        if (def->aliases_input) node->alias_of = node->inputs[0];
        if (def->epilogue == NN_EPILOGUE_ADD && net->ctx->fuse) {
            fuse_residual(net, i);
        } else if (def->epilogue != NN_EPILOGUE_NONE && net->ctx->fuse) {
            int j = node->inputs[0];
            nn_node *src = &net->nodes[j];
            /* an epilogue already running inside its producer (a residual
             * add) hands this one on to that producer */
            if (src->alias_of >= 0 && def_of(src)->epilogue != NN_EPILOGUE_NONE)
                src = &net->nodes[memory_root(net, j)];
            const nn_op_def *sdef = def_of(src);
            if (sdef->fuse_epilogue && consumers(net, j) == 1 && j != net->logits_node &&
                src->alias_of < 0 && sdef->fuse_epilogue(src, def->epilogue))
                node->alias_of = j;
        }
    }
    /* the only reader of a fused epilogue's output may apply its gradient
     * mask itself: a max-pool sends each gradient only to its window's
     * maximum, which a ReLU masks exactly when it is not > 0. The
     * convolution's backward then reads no mask (it skips a pass over its
     * output, 12.8 MB for conv_heavy's first layers at batch 64). */
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        const nn_op_def *def = def_of(node);
        if (!def->mask_epilogue) continue;
        const int j = node->inputs[0];
        const nn_node *act = &net->nodes[j];
        const nn_epilogue e = def_of(act)->epilogue;
        if (e == NN_EPILOGUE_NONE || act->alias_of < 0 || consumers(net, j) != 1) continue;
        nn_node *producer = &net->nodes[act->alias_of];
        const nn_op_def *pdef = def_of(producer);
        if (pdef->epilogue_masked_later && def->mask_epilogue(node, e))
            pdef->epilogue_masked_later(producer);
    }
    plan_prologues(net);
    plan_written_prologues(net);
    plan_output_stats(net);
    /* which input gradients each kernel computes (none flows into the image),
     * and how many kernels write each memory root's gradient */
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].grad_writers = 0;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        node->needs_dx = 0;
        if (node->alias_of >= 0) continue; /* aliases run no kernel backward */
        for (int k = 0; k < node->num_inputs; k++) {
            int root = memory_root(net, node->inputs[k]);
            if (root == net->input_node) continue;
            node->needs_dx |= 1u << k;
            net->nodes[root].grad_writers++;
        }
    }
    plan_dy_forms(net); /* after needs_dx: a first layer's kernel may form dy */
    for (int i = 0; i < net->num_nodes; i++) /* every plan tries the prefetch anew */
        for (int pass = 0; pass < 2; pass++)
            net->nodes[i].prefetch[pass] = (nn_prefetch_trial){.calls = 0, .pick = -1};
    /* the first kernel of the backward pass (the latest node) to write a
     * gradient that several kernels add into writes it in place, unless it
     * reads that memory through more than one input: the others add theirs
     * through the scratch buffer. Nothing then zeroes it first. */
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].dx_direct = 0, net->nodes[i].grad_in_place = 0;
    for (int r = 0; r < net->num_nodes; r++) {
        if (net->nodes[r].grad_writers < 2) continue;
        for (int i = net->num_nodes - 1; i > r; i--) {
            nn_node *node = &net->nodes[i];
            int slots = 0, slot = -1;
            for (int k = 0; k < node->num_inputs; k++)
                if ((node->needs_dx >> k & 1u) && memory_root(net, node->inputs[k]) == r)
                    slots++, slot = k;
            if (slots == 0) continue;
            if (slots == 1) node->dx_direct |= 1u << slot, net->nodes[r].grad_in_place = 1;
            break;
        }
    }
}


nn_status nn_net_parse(nn_ctx *ctx, const char *text, const char *source, nn_net **out) {
    return nn_net_parse_with(ctx, text, source, NULL, 0, out);
}

nn_status nn_net_parse_with(nn_ctx *ctx, const char *text, const char *source,
                            const char *const *params, int num_params, nn_net **out) {
    *out = NULL;
    nn_net *net = calloc(1, sizeof *net);
    if (!net) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", source);
    net->ctx = ctx;
    nn_ctx_backend_of(ctx); /* the CPU unless one was chosen (context.c is below backends) */
    net->loss_node = -1;
    net->training = 1;
    snprintf(net->source, sizeof net->source, "%s", source);
    nn_status st = nn_model_parse_lines(net, text, params, num_params);
    if (!st) st = place_params(net);
    if (!st) st = place_buffers(net);
    if (st) {
        nn_net_free(net);
        return st;
    }
    net->input_node = 0;
    net->logits_node = net->nodes[net->loss_node].inputs[0];
    fuse_and_alias(net);
    *out = net;
    return NN_OK;
}

nn_status nn_net_load(nn_ctx *ctx, const char *path, nn_net **out) {
    return nn_net_load_with(ctx, path, NULL, 0, out);
}

nn_status nn_net_load_with(nn_ctx *ctx, const char *path, const char *const *params,
                           int num_params, nn_net **out) {
    *out = NULL;
    const char *why;
    int fd = nn_open_regular(path, &why);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        if (fd >= 0) why = strerror(errno), close(fd);
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open model file: %s", path, why);
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            if (cap > (16u << 20)) {
                free(text);
                fclose(f);
                return nn_ctx_fail(ctx, NN_EFORMAT, "%s: model file larger than 16 MiB", path);
            }
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory", path);
            }
            text = t;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got < 4096) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(text);
        return nn_ctx_fail(ctx, NN_EIO, "%s: read error", path);
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        free(text);
        return nn_ctx_fail(ctx, NN_EFORMAT, "%s: contains a NUL byte (model files are plain text)", path);
    }
    nn_status st = nn_net_parse_with(ctx, text, path, params, num_params, out);
    free(text);
    return st;
}

static void release_plan(nn_net *net) {
    const nn_backend *be = net->ctx->backend;
    be->free(net->arena);
    be->free(net->ws);
    be->free(net->input_dev);
    be->free(net->labels_dev);
    be->free(net->fold_ws);
    net->fold_ws = NULL;
    be->free(net->shard_ws);
    net->shard_ws = NULL;
    net->shard_ws_floats = 0;
    net->shard_slots = 0;
    for (int k = 0; k < NN_MAX_INPUTS; k++) {
        be->free(net->gscratch[k]);
        net->gscratch[k] = NULL;
    }
    net->gscratch_floats = 0;
    net->arena = net->ws = net->input_dev = NULL;
    net->labels_dev = NULL;
    net->arena_floats = net->ws_floats = 0;
    net->num_slots = 1;
    net->slot = 0;
    net->max_batch = 0;
}

const char *nn_net_model_text(const nn_net *net) { return net->model_text; }

void nn_net_free(nn_net *net) {
    if (!net) return;
    release_plan(net);
    free(net->model_text);
    free(net->nodes);
    free(net->name_slots);
    free(net->params);
    free(net->buffers);
    net->ctx->backend->free(net->buffer_data);
    free(net->time_fwd);
    free(net->time_bwd);
    net->ctx->backend->free(net->param_data);
    net->ctx->backend->free(net->grad_data);
    free(net);
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/*
 * Activation gradients share memory where their lives in the backward pass
 * do not overlap. Backward runs the kernel of node k at step loss_node - k;
 * the gradient of a memory root r is first written by the kernel of its
 * latest consumer and last read by r's own kernel. A gradient that several
 * kernels add into is zeroed before the pass, so it lives from step -1,
 * unless that latest consumer writes it in place (dx_direct); one
 * that no kernel writes (a branch the loss does not read) keeps memory of
 * its own, which stays zero. Greedy over first writes: each gradient takes
 * the free slot closest in size, or a new one; a slot is as large as its
 * largest gradient. A batch norm's output gradient whose input gradient the
 * producer forms (dy_from) lives until the producer's kernel instead.
 * slot[r] is r's slot (-1: no gradient); returns the number of slots, sizes
 * in slot_floats (num_nodes entries).
 */
static size_t size_gap(size_t a, size_t b) { return a > b ? a - b : b - a; }

static int plan_gradient_slots(const nn_net *net, int max_batch, int *slot,
                               size_t *slot_floats) {
    const int N = net->num_nodes, L = net->loss_node;
    int *first = malloc((size_t)N * sizeof *first), *free_after = calloc((size_t)N, sizeof(int));
    int *last_read = malloc((size_t)N * sizeof *last_read);
    int slots = 0;
    if (!first || !free_after || !last_read) {
        free(first), free(free_after), free(last_read);
        return -1;
    }
    for (int r = 0; r < N; r++) first[r] = N + 1; /* never written */
    for (int k = 1; k <= L; k++) {
        const nn_node *node = &net->nodes[k];
        if (node->alias_of >= 0) continue;
        for (int m = 0; m < node->num_inputs; m++)
            if (node->needs_dx >> m & 1u) {
                const int r = memory_root(net, node->inputs[m]);
                if (L - k < first[r]) first[r] = L - k;
            }
    }
    /* a batch norm's residual input gradient, which the writer of its output
     * may write first, in its backward (written_sums) */
    for (int k = 1; k <= L; k++) {
        const int from = net->nodes[k].writes_from;
        const nn_node *p = from >= 0 ? &net->nodes[from] : NULL;
        if (!p || p->num_inputs < 2 || !(p->needs_dx >> 1 & 1u)) continue;
        const int r = memory_root(net, p->inputs[1]);
        if (L - k < first[r]) first[r] = L - k;
    }
    /* the step after which nothing reads r's gradient: its own kernel's, or
     * that of the producer that forms its input gradient from it (dy_from) */
    for (int r = 0; r < N; r++) last_read[r] = r <= L ? L - r : N + 1;
    for (int p = 0; p < N; p++) {
        const int from = net->nodes[p].dy_from, r = from >= 0 ? memory_root(net, from) : -1;
        if (r >= 0 && L - p > last_read[r]) last_read[r] = L - p;
    }
    for (int r = 0; r < N; r++) {
        const nn_node *node = &net->nodes[r];
        slot[r] = -1;
        if (r == net->input_node || node->alias_of >= 0 || r == L) continue;
        if (node->grad_writers > 1 && !node->grad_in_place) first[r] = -1;
    }
    /* in order of first write (then node order: deterministic) */
    for (int step = -1; step <= N + 1; step++)
        for (int r = N - 1; r >= 0; r--) {
            const nn_node *node = &net->nodes[r];
            if (r == net->input_node || node->alias_of >= 0 || r == L || first[r] != step)
                continue;
            const size_t need = round16((size_t)max_batch * (size_t)nn_shape_numel(&node->out));
            const int last = last_read[r];
            int best = -1;
            if (step <= L) /* written by a kernel: may share */
                for (int s = 0; s < slots; s++) {
                    if (free_after[s] >= step) continue; /* still in use */
                    if (best < 0 || size_gap(slot_floats[s], need) <
                                        size_gap(slot_floats[best], need))
                        best = s;
                }
            if (best < 0) {
                best = slots++;
                slot_floats[best] = 0;
            }
            if (need > slot_floats[best]) slot_floats[best] = need;
            /* a gradient no kernel writes is never freed */
            free_after[best] = step <= L ? last : 1 << 30;
            slot[r] = best;
        }
    free(first), free(free_after), free(last_read);
    return slots;
}

/*
 * Eval mode folds a per-channel affine op (batch norm with its running
 * statistics) into the producer before it when that op is the producer's
 * only reader: the producer's kernel runs once with its weights and bias
 * scaled and shifted (and the affine op's fused ReLU), writing the affine
 * op's output, and the affine op runs no kernel. The folded parameters are
 * made again before every such kernel from the current weights and
 * statistics (K x (row + 3) floats: far less than the kernel's work), in
 * fold_ws. Marks the pairs; 1 if out of memory.
 */
static int plan_folds(nn_net *net) {
    size_t need = 0;
    for (int i = 0; i < net->num_nodes; i++) net->nodes[i].fold_into = -1, net->nodes[i].folded = 0;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        const nn_op_def *def = def_of(node);
        if (!def->absorb_affine || node->alias_of >= 0 || node->param_index < 0 ||
            consumers(net, i) != 1 || i == net->logits_node)
            continue;
        for (int j = i + 1; j < net->num_nodes; j++) {
            nn_node *next = &net->nodes[j];
            if (next->num_inputs != 1 || next->inputs[0] != i) continue;
            nn_node copy = *node;
            const int K = def->absorb_affine(&copy, 0);
            if (def_of(next)->eval_affine && next->alias_of < 0 && K > 0 &&
                nn_shape_numel(&next->out) == nn_shape_numel(&node->out)) {
                node->fold_into = j;
                next->folded = 1;
                const size_t n = net->params[node->param_index].numel + 3 * (size_t)K;
                if (n > need) need = n;
            }
            break;
        }
    }
    if (!need) return 0;
    net->fold_ws = net->ctx->backend->alloc(need * sizeof(float));
    return net->fold_ws == NULL;
}

/* Shards running at once (nn_net_set_shards with several threads): the
 * threads share out the shards, each shard's kernels running on one thread
 * with a workspace of its own, planned for the largest shard of the planned
 * batch. One thread per shard keeps a shard's bytes those of one thread,
 * the same as shards run one after another on one thread. */
static nn_status plan_shard_ws(nn_net *net) {
    const nn_backend *be = net->ctx->backend;
    be->free(net->shard_ws);
    net->shard_ws = NULL;
    net->shard_ws_floats = 0;
    net->shard_slots = 0;
    const int max_threads = net->ctx->max_threads;
    if (net->shards <= 1 || !net->max_batch || max_threads < 2) return NN_OK;
    const int slots = max_threads < net->shards ? max_threads : net->shards;
    const int batch = (net->max_batch + net->shards - 1) / net->shards;
    size_t ws = 16;
    for (int i = 0; i < net->num_nodes; i++) {
        const nn_op_kernels *k = nn_backend_kernels(be, net->nodes[i].op);
        if (k && k->workspace) {
            size_t w = k->workspace(&net->nodes[i], batch, 1);
            if (w > ws) ws = w;
        }
    }
    ws = round16(ws);
    const uint64_t bytes = nn_size_mul(nn_size_mul(ws, (uint64_t)slots), sizeof(float));
    nn_status st = nn_memory_check(net->ctx, bytes, bytes, "%s: the workspaces of %d shards "
                                   "at once need %.1f MiB", net->source, slots, NN_MIB(bytes));
    if (st) return st;
    if (!(net->shard_ws = be->alloc((size_t)bytes)))
        return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory for the workspaces of %d "
                           "shards", net->source, slots);
    net->shard_ws_floats = ws;
    net->shard_slots = slots;
    return NN_OK;
}

nn_status nn_net_plan(nn_net *net, int max_batch) { return nn_net_plan_slots(net, max_batch, 1); }

nn_status nn_net_plan_slots(nn_net *net, int max_batch, int num_slots) {
    if (max_batch <= 0 || max_batch > (1 << 20))
        return nn_ctx_fail(net->ctx, NN_EINVAL, "batch size %d out of range (1..1048576)", max_batch);
    if (num_slots < 1 || num_slots > 1024)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%d activation slots; expected 1..1024", num_slots);
    release_plan(net);
    const nn_backend *be = net->ctx->backend;
    /* workspace for the most threads the context may run with: fewer is
     * always safe (nn_ctx_set_threads) */
    int threads = net->ctx->max_threads;
    /* the context's precision, for the ops that have one (conv2d) */
    for (int i = 0; i < net->num_nodes; i++) {
        const nn_op_def *def = def_of(&net->nodes[i]);
        if (def->set_precision) def->set_precision(&net->nodes[i], net->ctx->precision);
    }
    /* a reader planned (when the net was built) to normalize a batch norm's
     * input must still run a kernel that does: the precision or the ISA set
     * since may have changed its kernel, and the batch norm writes no output */
    for (int i = 0; i < net->num_nodes; i++) {
        const nn_node *node = &net->nodes[i];
        const nn_op_kernels *k = nn_backend_kernels(be, node->op);
        if ((node->prologue_from >= 0 &&
             (!k || !k->takes_prologue || !k->takes_prologue(node, net->ctx))) ||
            (node->writes_from >= 0 && (!k || !k->writes_prologue)))
            return nn_ctx_fail(net->ctx, NN_EINVAL,
                               "%s: layer '%s' was built to normalize its batch norm's input, and "
                               "its kernel no longer does: set the precision and the ISA before "
                               "building the net",
                               net->source, node->name);
    }
    int *slot = malloc((size_t)net->num_nodes * sizeof *slot);
    size_t *slot_floats = malloc((size_t)net->num_nodes * sizeof *slot_floats);
    const int slots =
        slot && slot_floats ? plan_gradient_slots(net, max_batch, slot, slot_floats) : -1;
    if (slots < 0) {
        free(slot), free(slot_floats);
        return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory", net->source);
    }
    /* gradients into memory that several kernels write go through a scratch
     * buffer per input slot and are added up; a slot has one when some
     * node's gradient into that input goes there */
    size_t scratch = 0;
    unsigned slots_used = 0;
    for (int i = 0; i < net->num_nodes; i++) {
        const nn_node *node = &net->nodes[i];
        if (node->grad_writers > 1) {
            size_t n = (size_t)max_batch * (size_t)nn_shape_numel(&node->out);
            if (n > scratch) scratch = n;
        }
        for (int k = 0; k < node->num_inputs && node->alias_of < 0; k++)
            if ((node->needs_dx >> k & 1u) && !(node->dx_direct >> k & 1u) &&
                net->nodes[memory_root(net, node->inputs[k])].grad_writers > 1)
                slots_used |= 1u << k;
    }
    int scratch_slots = 0;
    for (int k = 0; k < NN_MAX_INPUTS; k++) scratch_slots += slots_used >> k & 1u;
    /* pass 1: sizes (64-bit, saturating), checked against the memory limits
     * before anything is allocated; pass 2: pointers into one arena:
     * activations, then the gradient slots. Layer outputs are at most 2^28
     * floats and batches 2^20, so each term fits. */
    size_t total = 0, ws = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0;
        for (int i = 0; i < net->num_nodes; i++) {
            nn_node *node = &net->nodes[i];
            size_t n = round16((size_t)max_batch * (size_t)nn_shape_numel(&node->out));
            int alias = i == net->input_node || node->alias_of >= 0;
            if (!alias) {
                if (pass) node->y = net->arena + off;
                off = nn_size_add(off, n);
            }
            if (node->aux_bytes || node->aux_fixed_bytes) {
                size_t a = round16(
                    (node->aux_bytes * (size_t)max_batch + node->aux_fixed_bytes + 3) / 4);
                if (pass) node->aux = net->arena + off;
                off = nn_size_add(off, a);
            }
            const nn_op_kernels *k = nn_backend_kernels(be, node->op);
            if (!pass && k && k->workspace) {
                size_t w = k->workspace(node, max_batch, threads);
                if (w > ws) ws = w;
            }
        }
        for (int s = 0; s < slots; s++) {
            for (int i = 0; i < net->num_nodes && pass; i++)
                if (slot[i] == s) net->nodes[i].dy = net->arena + off;
            off = nn_size_add(off, slot_floats[s]);
        }
        if (!pass) {
            total = off;
            const uint64_t held =
                nn_size_mul(nn_size_add(nn_size_mul(net->num_params, 2), net->num_buffers), 4);
            const uint64_t act = nn_size_mul(nn_size_mul(total, 4), (uint64_t)num_slots);
            const uint64_t work = nn_size_mul(
                nn_size_add(ws ? ws : 16, nn_size_mul(scratch, (uint64_t)scratch_slots)), 4);
            const uint64_t fresh = nn_size_add(act, work);
            nn_status st = nn_memory_check(
                net->ctx, nn_size_add(held, fresh), fresh,
                "%s: batch %d needs %.1f MiB (parameters, gradients and buffers %.1f, "
                "activations and their gradients %.1f, workspace %.1f)",
                net->source, max_batch, NN_MIB(nn_size_add(held, fresh)), NN_MIB(held),
                NN_MIB(act), NN_MIB(work));
            if (st) {
                free(slot), free(slot_floats);
                return st;
            }
            net->arena = be->alloc(total * (size_t)num_slots * sizeof(float));
            net->ws = be->alloc((ws ? ws : 16) * sizeof(float));
            /* a device keeps its own copy of the batch; the CPU reads the caller's */
            if (!be->host_visible) {
                const nn_shape in = net->nodes[net->input_node].out;
                net->input_dev = be->alloc((size_t)max_batch * (size_t)nn_shape_numel(&in) *
                                           sizeof(float));
                net->labels_dev = be->alloc((size_t)max_batch * sizeof(int32_t));
            }
            if (!net->arena || !net->ws ||
                (!be->host_visible && (!net->input_dev || !net->labels_dev))) {
                free(slot), free(slot_floats);
                release_plan(net);
                return nn_ctx_fail(net->ctx, NN_ENOMEM,
                                   "%s: out of memory planning %.1f MiB of activations and "
                                   "%.1f MiB of workspace for batch %d", net->source,
                                   NN_MIB(act), NN_MIB(work), max_batch);
            }
        }
    }
    free(slot), free(slot_floats);
    net->arena_floats = total;
    net->num_slots = num_slots;
    net->slot = 0;
    net->ws_floats = ws;
    net->max_batch = max_batch;
    for (int k = 0; k < NN_MAX_INPUTS; k++) {
        if (!(slots_used >> k & 1u)) continue;
        if (!(net->gscratch[k] = be->alloc(scratch * sizeof(float)))) {
            release_plan(net);
            return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory for gradient sums",
                               net->source);
        }
    }
    net->gscratch_floats = scratch;
    if (plan_folds(net)) {
        release_plan(net);
        return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory for folded weights",
                           net->source);
    }
    nn_status sst = plan_shard_ws(net);
    if (sst) {
        release_plan(net);
        return sst;
    }
    /* aliases share their source's memory (sources come earlier) */
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        if (node->alias_of >= 0) {
            node->y = net->nodes[node->alias_of].y;
            node->dy = net->nodes[node->alias_of].dy;
        }
    }
    return NN_OK;
}

size_t nn_net_planned_bytes(const nn_net *net) {
    return (net->arena_floats + net->ws_floats) * sizeof(float);
}

void nn_net_init_params(nn_net *net, nn_rng *rng) {
    const nn_backend *be = net->ctx->backend;
    for (int i = 0; i < net->num_param_tensors; i++) {
        const nn_param_info *p = &net->params[i];
        float *w = net->param_data + p->offset; /* device */
        if (p->init == NN_INIT_CONSTANT) {
            fill_device(be, w, p->numel, p->init_value);
            continue;
        }
        /* drawn on the host in order, uploaded a chunk at a time */
        float bound = (float)(1.0 / sqrt((double)p->fan_in)), chunk[1024];
        for (size_t j = 0; j < p->numel; j += 1024) {
            const size_t m = p->numel - j < 1024 ? p->numel - j : 1024;
            for (size_t k = 0; k < m; k++) chunk[k] = (2.0f * nn_rng_uniform(rng) - 1.0f) * bound;
            nn_dev_upload(be, w + j, chunk, m * sizeof(float));
        }
    }
    reset_buffers(net);
}

size_t nn_net_num_params(const nn_net *net) { return net->num_params; }
float *nn_net_params(nn_net *net) { return net->param_data; }
float *nn_net_grads(nn_net *net) { return net->grad_data; }

float *nn_net_shard_grads(nn_net *net, int k) {
    const int shards = net->shards > 1 ? net->shards : 1;
    return k >= 0 && k < shards ? net->grad_data + (size_t)k * net->num_params : NULL;
}

nn_status nn_net_set_shards(nn_net *net, int shards) {
    const int now = net->shards > 1 ? net->shards : 1;
    if (shards < 1 || shards > NN_MAX_SHARDS)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%d shards; expected 1..%d", shards, NN_MAX_SHARDS);
    if (shards == now) return NN_OK;
    const nn_backend *be = net->ctx->backend;
    if (shards > 1 && be->kernels != NN_KERNELS_CPU)
        return nn_ctx_fail(net->ctx, NN_EUNSUPPORTED, "%s: shards run on the CPU kernels only",
                           net->source);
    /* an op called once per shard must keep nothing for the whole batch */
    for (int i = 0; i < net->num_nodes && shards > 1; i++) {
        const nn_node *node = &net->nodes[i];
        if (node->aux_fixed_bytes && !def_of(node)->couples_batch)
            return nn_ctx_fail(net->ctx, NN_EUNSUPPORTED, "%s:%d: layer '%s' (%s) cannot run in "
                               "shards", net->source, node->line, node->name, def_of(node)->name);
    }
    /* shard k's gradients follow shard k-1's: one allocation, zeroed */
    const uint64_t bytes = nn_size_mul(nn_size_mul(net->num_params, sizeof(float)), (size_t)shards);
    nn_status st = nn_memory_check(net->ctx, bytes, bytes, "%s: the gradients of %d shards need "
                                   "%.1f MiB", net->source, shards, NN_MIB(bytes));
    if (st) return st;
    float *g = be->alloc((size_t)bytes);
    if (!g)
        return nn_ctx_fail(net->ctx, NN_ENOMEM, "%s: out of memory for the gradients of %d "
                           "shards", net->source, shards);
    nn_dev_begin(be);
    nn_dev_zero(be, g, (size_t)bytes);
    nn_dev_end(be);
    be->free(net->grad_data);
    net->grad_data = g;
    net->shards = shards;
    return plan_shard_ws(net);
}

int nn_net_shards(const nn_net *net) { return net->shards > 1 ? net->shards : 1; }
int nn_net_num_param_tensors(const nn_net *net) { return net->num_param_tensors; }

const nn_param_info *nn_net_param_info(const nn_net *net, int i) {
    return (i >= 0 && i < net->num_param_tensors) ? &net->params[i] : NULL;
}

int nn_net_find_param(const nn_net *net, const char *name) {
    for (int i = 0; i < net->num_param_tensors; i++)
        if (strcmp(net->params[i].name, name) == 0) return i;
    return -1;
}

int nn_net_num_buffer_tensors(const nn_net *net) { return net->num_buffer_tensors; }

const nn_param_info *nn_net_buffer_info(const nn_net *net, int i) {
    return (i >= 0 && i < net->num_buffer_tensors) ? &net->buffers[i] : NULL;
}

float *nn_net_buffers(nn_net *net) { return net->buffer_data; }
size_t nn_net_num_buffers(const nn_net *net) { return net->num_buffers; }

int nn_net_find_buffer(const nn_net *net, const char *name) {
    for (int i = 0; i < net->num_buffer_tensors; i++)
        if (strcmp(net->buffers[i].name, name) == 0) return i;
    return -1;
}

void nn_net_set_training(nn_net *net, int training) { net->training = training != 0; }
int nn_net_training(const nn_net *net) { return net->training; }

int nn_net_num_layers(const nn_net *net) { return net->num_nodes; }

void nn_net_layer_info(const nn_net *net, int i, nn_layer_info *out) {
    const nn_node *node = &net->nodes[i];
    const nn_op_def *def = def_of(node);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", node->name);
    snprintf(out->op, sizeof out->op, "%s", def->name);
    out->out = node->out;
    for (int j = 0; j < node->num_params; j++)
        out->params += nn_shape_numel(&node->param_shape[j]);
    out->flops = def->flops ? def->flops(node) : 0;
    out->bwd_flops = def->backward_flops ? def->backward_flops(node) : out->flops;
    int alias = i == net->input_node || node->alias_of >= 0;
    out->act_bytes = alias ? 0 : nn_shape_numel(&node->out) * (int64_t)sizeof(float);
    const nn_op_kernels *k = nn_backend_kernels(net->ctx->backend, node->op);
    if (k && k->kernel_name)
        snprintf(out->kernel, sizeof out->kernel, "%s", k->kernel_name(node, net->ctx));
    const int uses = k && k->uses_prefetch && k->uses_prefetch(node, net->ctx);
    const int mode = net->ctx->prefetch_mode;
    for (int pass = 0; pass < 2; pass++)
        out->prefetch[pass] = !uses ? -1 : mode != NN_PREFETCH_AUTO ? mode
                                                                     : node->prefetch[pass].pick;
}

nn_shape nn_net_input_shape(const nn_net *net) { return net->nodes[net->input_node].out; }

int nn_net_num_classes(const nn_net *net) {
    return (int)nn_shape_numel(&net->nodes[net->logits_node].out);
}

const float *nn_net_logits(const nn_net *net) { return net->nodes[net->logits_node].y; }

/* Whether a reader that leaves its input gradient to its producer
 * (deferred_dx) with a residual add fused in writes that add's input
 * gradient g into the input's own gradient (not a scratch added in after
 * it), where its producer reads it (formed_dy_args). */
static int residual_g_direct(const nn_net *net, const nn_node *node, const nn_op_args *a) {
    return node->num_inputs == 1 || a->dxs[1] == net->nodes[node->inputs[1]].dy;
}

/* Fills the kernel arguments of node for a batch of n. */
static void node_args(nn_net *net, nn_node *node, int n, nn_op_args *a) {
    memset(a, 0, sizeof *a);
    a->node = node;
    a->n = n;
    a->y = node->y;
    a->dy = node->dy;
    a->aux = node->aux;
    a->ws = net->ws;
    a->ws_floats = net->ws_floats;
    a->ctx = net->ctx;
    a->training = net->training;
    a->dropout_seed = net->dropout_seed;
    a->node_index = (int)(node - net->nodes);
    a->reduce = net->reduce;
    a->reduce_user = net->reduce_user;
    if (node->buffer_index >= 0) a->buf = net->buffer_data + net->buffers[node->buffer_index].offset;
    for (int k = 0; k < node->num_inputs; k++) {
        nn_node *in = &net->nodes[node->inputs[k]];
        a->xs[k] = in->y;
        a->dxs[k] = (node->needs_dx >> k & 1u) ? in->dy : NULL;
        if (a->dxs[k] && net->nodes[memory_root(net, node->inputs[k])].grad_writers > 1 &&
            !(node->dx_direct >> k & 1u)) {
            /* a later writer: added in by the kernel itself where it can
             * (the first writer has run: in place, or after the zeroing),
             * else written to scratch and added by backward_nodes */
            const nn_op_kernels *kk = nn_backend_kernels(net->ctx->backend, node->op);
            if (k == 0 && net->ctx->fuse && kk && kk->accumulates_dx &&
                kk->accumulates_dx(node, net->ctx))
                a->dx_add |= 1u;
            else
                a->dxs[k] = net->gscratch[k];
        }
    }
    if (node->prologue_from >= 0 && net->prologue_pass) {
        const nn_node *p = &net->nodes[node->prologue_from];
        a->xs[0] = net->nodes[p->inputs[0]].y;
        a->in_scale = def_of(p)->prologue_coefs(p, &a->in_shift, &a->in_relu);
        if (def_of(p)->prologue_grad_sums) /* NULL unless give_grad_sums took */
            a->in_grad_sums = def_of(p)->prologue_grad_sums(p, &a->in_mean);
    }
    if (node->stats_to >= 0 && net->training) {
        const nn_node *r = &net->nodes[node->stats_to];
        a->out_stats = def_of(r)->input_stats(r);
    }
    if (node->num_inputs >= 1 && net->nodes[node->inputs[0]].dy_from == a->node_index &&
        net->training) {
        /* the producer forms this node's dx if its kernel (as set now) can */
        const nn_node *p = &net->nodes[node->inputs[0]];
        const nn_op_kernels *pk = nn_backend_kernels(net->ctx->backend, p->op);
        a->defer_dx = pk && pk->forms_dy && pk->forms_dy(p, net->ctx) &&
                      residual_g_direct(net, node, a);
    }
    a->x = a->xs[0];
    a->dx = a->dxs[0];
    if (node->param_index >= 0) {
        const nn_param_info *p = &net->params[node->param_index];
        a->w = net->param_data + p->offset;
        a->dw = net->grad_data + p->offset;
        if (node->num_params > 1) {
            const nn_param_info *b = &net->params[node->param_index + 1];
            a->b = net->param_data + b->offset;
            a->db = net->grad_data + b->offset;
        }
    }
}

nn_status nn_net_check_batch(nn_net *net, int n, int training) {
    /* the ops' own conditions on the batch (batchnorm's statistics) */
    for (int i = 0; i < net->num_nodes; i++) {
        const nn_node *node = &net->nodes[i];
        const nn_op_def *def = def_of(node);
        nn_status st;
        if (def->check_batch && (st = def->check_batch(node, n, training, net->source, net->ctx)))
            return st;
    }
    return NN_OK;
}

/* A training forward's arguments of node (writes_from): x is the batch
 * norm's input, with its map, its residual add's other input, and its
 * output to write. */
static void written_args(const nn_net *net, const nn_node *node, nn_op_args *a) {
    const nn_node *p = &net->nodes[node->writes_from];
    a->x = a->xs[0] = net->nodes[p->inputs[0]].y;
    a->in_scale = def_of(p)->prologue_coefs(p, &a->in_shift, &a->in_relu);
    a->in_res = p->num_inputs > 1 ? net->nodes[p->inputs[1]].y : NULL;
    a->in_out = p->y;
}

/* Eval mode, node's fold_into set: its parameters with that reader's affine
 * map folded in (into net->fold_ws), and a's node, weights, bias and output
 * pointed at them, so its kernel computes the reader's output. */
static void fold_args(nn_net *net, nn_node *node, nn_node *copy, nn_op_args *a) {
    nn_node *reader = &net->nodes[node->fold_into];
    nn_op_args r;
    node_args(net, reader, a->n, &r);
    const size_t numel = net->params[node->param_index].numel;
    int relu = 0;
    *copy = *node;
    const int K = def_of(node)->absorb_affine(copy, 0);
    float *fw = net->fold_ws, *fb = fw + numel, *scale = fb + K, *shift = scale + K;
    def_of(reader)->eval_affine(reader, r.w, r.b, r.buf, scale, shift, &relu);
    def_of(node)->absorb_affine(copy, relu);
    const size_t row = numel / (size_t)K;
    for (int k = 0; k < K; k++) {
        const float *w = a->w + (size_t)k * row;
        float *out = fw + (size_t)k * row;
        for (size_t j = 0; j < row; j++) out[j] = w[j] * scale[k];
        fb[k] = (a->b ? a->b[k] : 0.0f) * scale[k] + shift[k];
    }
    a->node = copy;
    a->w = fw;
    a->b = fb;
    a->y = reader->y;
}

/* Shards (nn_net_set_shards): a training pass on n samples runs as
 * net->shards contiguous shards, k n / K up to (k + 1) n / K as the trainer
 * splits a global batch over K ranks; 0 when this pass runs whole batches. */
static int shard_pass(nn_net *net, int n) {
    if (net->shards <= 1 || !net->training) return 0;
    net->shard_ctx = *net->ctx; /* for shards run at once: one thread each */
    net->shard_ctx.threads = 1;
    if (net->shard_n != n) {
        for (int k = 0; k <= net->shards; k++)
            net->shard_bounds[k] = (int)((int64_t)k * n / net->shards);
        net->shard_n = n;
    }
    return net->shards;
}

/* a's pointers moved to shard k (samples lo..lo+cnt of the batch): every
 * activation, gradient and saved per-sample datum, the labels, and shard k's
 * parameter gradients. Ops with whole-batch saved data are not sharded
 * (nn_net_set_shards refuses them). */
static void shard_view(const nn_net *net, const nn_node *node, nn_op_args *a, int k, int lo,
                       int cnt) {
    const size_t off = (size_t)lo, out = (size_t)nn_shape_numel(&node->out);
    a->n = cnt;
    if (a->y) a->y += off * out;
    if (a->dy) a->dy += off * out;
    for (int j = 0; j < node->num_inputs; j++) {
        const size_t in = (size_t)nn_shape_numel(&net->nodes[node->inputs[j]].out);
        if (a->xs[j]) a->xs[j] += off * in;
        if (a->dxs[j]) a->dxs[j] += off * in;
    }
    if (a->in_out) { /* the batch norm's output and its residual add's input (writes_from) */
        const size_t bn = (size_t)nn_shape_numel(&net->nodes[node->writes_from].out);
        a->in_out += off * bn;
        if (a->in_res) a->in_res += off * bn; /* x, of the same shape, moved above */
    }
    a->x = a->xs[0];
    a->dx = a->dxs[0];
    if (a->aux) a->aux = (char *)a->aux + off * node->aux_bytes;
    if (a->in_grad_sums) /* the producer's per-sample rows */
        a->in_grad_sums += off * net->nodes[node->prologue_from].aux_bytes / sizeof(double);
    if (a->out_stats) /* the reader's per-sample rows */
        a->out_stats += off * net->nodes[node->stats_to].aux_bytes / sizeof(double);
    if (a->labels) a->labels += off;
    const size_t g = (size_t)k * net->num_params;
    if (a->dw) a->dw += g;
    if (a->db) a->db += g;
}

static void backward_kernel(nn_net *net, const nn_node *node, const nn_op_kernels *k,
                            const nn_op_args *a, int lo, float loss_scale);

/* Runs node's kernel (forward, or backward with loss_scale) once per shard
 * of a shard pass, each on its shard's rows (parts[s]: shard s's loss).
 * With several threads the shards run at once, shared out among them
 * (shard s on thread s mod P), each shard's kernels on one thread with a
 * workspace of its own: the bytes of the shards run one after another on
 * one thread. */
static void run_shards(nn_net *net, const nn_node *node, const nn_op_kernels *k,
                       const nn_op_args *a, int backward, float loss_scale, float *parts) {
    const int shards = net->shards;
    int par = net->ctx->threads < shards ? net->ctx->threads : shards;
    if (par > net->shard_slots) par = net->shard_slots;
#pragma omp parallel for schedule(static, 1) num_threads(par > 1 ? par : 1)
    for (int s = 0; s < shards; s++) {
        const int lo = net->shard_bounds[s], cnt = net->shard_bounds[s + 1] - lo;
        parts[s] = 0.0f;
        if (!cnt) continue;
        nn_op_args v = *a;
        shard_view(net, node, &v, s, lo, cnt);
        if (par > 1) {
            v.ctx = &net->shard_ctx;
            v.ws = net->shard_ws + (size_t)omp_get_thread_num() * net->shard_ws_floats;
            v.ws_floats = net->shard_ws_floats;
        }
        if (backward) {
            backward_kernel(net, node, k, &v, lo, loss_scale);
        } else {
            if (v.loss) v.loss = &parts[s];
            k->forward(&v);
        }
    }
}

/* 1 if node's kernel runs on the whole batch in this pass (shards: 0 or the
 * pass's count); a then carries the shards for a couples_batch op. */
static int whole_batch(const nn_net *net, const nn_node *node, nn_op_args *a, int shards) {
    if (shards && !def_of(node)->couples_batch) return 0;
    a->shards = shards ? shards : 1;
    a->shard_bounds = net->shard_bounds;
    a->grad_stride = net->num_params;
    return 1;
}

/* One node's forward kernel, once per shard in a shard pass (the loss: the
 * mean over the shards' means, each weighted by its samples). */
static void forward_kernel(nn_net *net, nn_node *node, const nn_op_kernels *k, nn_op_args *a,
                           int shards) {
    if (whole_batch(net, node, a, shards)) {
        k->forward(a);
        return;
    }
    float parts[NN_MAX_SHARDS];
    run_shards(net, node, k, a, 0, 1.0f, parts);
    if (a->loss) {
        double loss = 0.0;
        for (int s = 0; s < shards; s++)
            loss += (double)parts[s] * (net->shard_bounds[s + 1] - net->shard_bounds[s]);
        *a->loss = (float)(loss / a->n);
    }
}

/* The software prefetch node's kernels run with in this pass (0 forward, 1
 * backward), set in the contexts they get (nn_ctx_set_prefetch): the mode's
 * own where it is on or off; under NN_PREFETCH_AUTO, for kernels that read
 * it (uses_prefetch), the node's pick, or while it has none the trial's turn
 * (on for the warm-up and for passes that are not timed: eval). Returns -1
 * where nothing is tried, else the setting, for prefetch_timed. */
static int prefetch_for(nn_net *net, const nn_node *node, const nn_op_kernels *k, int pass) {
    const int mode = net->ctx->prefetch_mode;
    int on = mode != 0, trial = -1;
    if (mode == NN_PREFETCH_AUTO && k && k->uses_prefetch && k->uses_prefetch(node, net->ctx)) {
        const nn_prefetch_trial *t = &node->prefetch[pass];
        if (t->pick >= 0) on = t->pick;
        else if (net->training) on = t->calls == 0 || t->calls % 2 == 1, trial = on;
    }
    net->ctx->prefetch = on;
    net->shard_ctx.prefetch = on;
    return trial;
}

_Static_assert(NN_PREFETCH_TRIALS == 3, "prefetch_timed takes the median of 3");
static double median3(const double v[NN_PREFETCH_TRIALS]) {
    double a = v[0], b = v[1], c = v[2];
    return a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
}

/* One trial call of `seconds` with the prefetch `on` (prefetch_for's
 * return; -1: none); after the last, the pick. */
static void prefetch_timed(nn_node *node, int pass, int on, double seconds) {
    nn_prefetch_trial *t = &node->prefetch[pass];
    if (on < 0 || t->pick >= 0) return;
    if (t->calls++ == 0) return; /* the warm-up: first touches, cold caches */
    t->seconds[on][(t->calls - 2) / 2] = seconds;
    if (t->calls == 1 + 2 * NN_PREFETCH_TRIALS)
        t->pick = median3(t->seconds[1]) <= median3(t->seconds[0]);
}

/* Backward: where the reader's backward (dy_from, run just before) left its
 * input gradient to node, its output gradient and coefficients (bn_dy,
 * bn_dx). Whether it did is a flag in the backend's memory: a copy, not a
 * host read. */
static void formed_dy_args(nn_net *net, const nn_node *node, nn_op_args *a) {
    if (node->dy_from < 0 || !net->training) return;
    const nn_node *r = &net->nodes[node->dy_from];
    nn_bn_dx coefs;
    float left = 0.0f;
    nn_dev_download(net->ctx->backend, &left, def_of(r)->deferred_dx(r, &coefs), sizeof left);
    if (left != 0.0f) /* g: r's output gradient, or its fused add's (residual_g_direct) */
        a->bn_dx = coefs, a->bn_dy = r->num_inputs == 2 ? net->nodes[r->inputs[1]].dy : r->dy;
}

/* Whether the writer of batch norm p's output (writes_from) runs p's sums
 * pass in its backward, on its input gradient, in this pass: training, the
 * whole batch, no reducer; the writer's input gradient written in place
 * (the writer is the output's first reader, so its backward, the last to
 * add into that gradient, completes it); a residual input's gradient that p
 * writes directly (residual_g_direct). Else p runs the pass itself. */
static int written_sums(nn_net *net, const nn_node *writer, int n) {
    if (!net->training || net->reduce || net->shards > 1) return 0;
    nn_node *p = &net->nodes[writer->writes_from];
    if (!def_of(p)->written_grad_rows) return 0;
    nn_op_args wa, pa;
    node_args(net, (nn_node *)writer, n, &wa);
    if (!wa.dx || wa.dx != net->nodes[writer->inputs[0]].dy) return 0;
    node_args(net, p, n, &pa);
    return residual_g_direct(net, p, &pa);
}

/* Backward: the sums pass for the writer (in_rows) and the batch norm's
 * rows given (rows_given), where written_sums. */
static void written_rows_args(nn_net *net, const nn_node *node, int n, nn_op_args *a) {
    if (node->writes_from >= 0 && written_sums(net, node, n)) {
        const nn_node *p = &net->nodes[node->writes_from];
        float *dr = p->num_inputs > 1 ? net->nodes[p->inputs[1]].dy : NULL;
        def_of(p)->written_grad_rows(p, net->nodes[p->inputs[0]].y, p->y, dr, &a->in_rows);
    }
    if (node->written_by >= 0 && written_sums(net, &net->nodes[node->written_by], n))
        a->rows_given = 1;
}

/* Runs the forward kernels of nodes first..last (the input node excepted);
 * returns 1 if some affine op ran folded into its producer. */
static int forward_nodes(nn_net *net, int first, int last, int n, const int32_t *labels) {
    const nn_backend *be = net->ctx->backend;
    /* eval mode on host memory: affine readers folded into their producers */
    const int fold = !net->training && net->fold_ws && net->ctx->fuse && be->host_visible;
    const int shards = shard_pass(net, n);
    int folded = 0;
    net->prologue_pass = net->training;
    for (int i = first; i <= last; i++) {
        nn_node *node = &net->nodes[i];
        if (i == net->input_node) continue;
        if (node->alias_of >= 0) {
            node->y = net->nodes[node->alias_of].y;
            continue;
        }
        if (fold && node->folded) continue; /* ran in its producer's kernel */
        nn_op_args a;
        nn_node copy;
        node_args(net, node, n, &a);
        if (node->writes_from >= 0 && net->prologue_pass) written_args(net, node, &a);
        if (fold && node->fold_into >= 0) {
            fold_args(net, node, &copy, &a);
            folded = 1;
        }
        a.labels = labels;
        a.loss = def_of(node)->is_loss ? &net->last_loss : NULL;
        const nn_op_kernels *k = nn_backend_kernels(be, node->op);
        const int trial = prefetch_for(net, node, k, 0);
        const int timed = net->timing || net->hook || trial >= 0;
        double t0 = timed ? omp_get_wtime() : 0.0;
        nn_dev_begin(be);
        forward_kernel(net, node, k, &a, shards);
        nn_dev_end(be);
        if (timed) {
            double t1 = omp_get_wtime();
            if (net->timing) net->time_fwd[i] += t1 - t0;
            if (net->hook) net->hook(net->hook_user, i, 0, t0, t1);
            prefetch_timed(node, 0, trial, t1 - t0);
        }
    }
    return folded;
}

/* The checks every forward pass makes on a batch of n: planned, in range,
 * labels inside the classes, the ops' own conditions. */
static nn_status check_forward(nn_net *net, const int32_t *labels, int n) {
    if (net->max_batch == 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s: forward before nn_net_plan", net->source);
    if (n <= 0 || n > net->max_batch)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "batch of %d is outside 1..%d (the planned batch)", n,
                           net->max_batch);
    int classes = nn_net_num_classes(net);
    if (labels)
        for (int i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= classes)
                return nn_ctx_fail(net->ctx, NN_EINVAL,
                                   "label %d of sample %d is outside the model's %d classes",
                                   labels[i], i, classes);
    return nn_net_check_batch(net, n, net->training);
}

nn_status nn_net_forward(nn_net *net, const float *x, const int32_t *labels, int n, float *loss) {
    nn_status st = check_forward(net, labels, n);
    if (st) return st;
    const nn_backend *be = net->ctx->backend;
    /* the batch goes to the device (the CPU reads it where it is) */
    if (!be->host_visible) {
        const nn_shape in = net->nodes[net->input_node].out;
        nn_dev_upload(be, net->input_dev, x, (size_t)n * (size_t)nn_shape_numel(&in) * sizeof(float));
        x = net->input_dev;
        if (labels) {
            nn_dev_upload(be, net->labels_dev, labels, (size_t)n * sizeof(int32_t));
            labels = net->labels_dev;
        }
    }
    net->nodes[net->input_node].y = (float *)x;
    net->folded_pass = forward_nodes(net, 0, labels ? net->loss_node : net->logits_node, n, labels);
    net->cur_n = labels ? n : 0;
    net->labels = labels;
    if (labels && loss) *loss = net->last_loss;
    return NN_OK;
}

/* One node's backward kernel on samples lo..lo+cnt (a: viewed on them),
 * then the loss gradient scaled and gradients written to scratch added to
 * their node's. */
static void backward_kernel(nn_net *net, const nn_node *node, const nn_op_kernels *k,
                            const nn_op_args *a, int lo, float loss_scale) {
    const nn_backend *be = net->ctx->backend;
    const size_t n = (size_t)a->n;
    k->backward(a);
    if (def_of(node)->is_loss && loss_scale != 1.0f && a->dx)
        nn_dev_scale(be, a->dx, n * (size_t)nn_shape_numel(&net->nodes[node->inputs[0]].out),
                     loss_scale);
    for (int j = 0; j < node->num_inputs; j++) {
        const size_t numel = (size_t)nn_shape_numel(&net->nodes[node->inputs[j]].out);
        if (a->dxs[j] && a->dxs[j] == net->gscratch[j] + (size_t)lo * numel) {
            const nn_node *root = &net->nodes[memory_root(net, node->inputs[j])];
            nn_dev_add(be, root->dy + (size_t)lo * numel, a->dxs[j], n * numel);
        }
    }
}

/* Zeroes the gradients that several kernels add into among those the range
 * writes (nodes first-1..last-1), then runs the backward kernels of nodes
 * last down to first (node 0 excepted), once per shard in a shard pass.
 * loss_scale multiplies the gradient the loss node hands back. */
static void backward_nodes(nn_net *net, int first, int last, int n, const int32_t *labels,
                           float loss_scale) {
    const nn_backend *be = net->ctx->backend;
    const int shards = shard_pass(net, n);
    nn_dev_begin(be);
    for (int i = first > 0 ? first - 1 : 0; i < last; i++)
        if (net->nodes[i].grad_writers > 1 && !net->nodes[i].grad_in_place)
            nn_dev_zero(be, net->nodes[i].dy,
                        (size_t)n * (size_t)nn_shape_numel(&net->nodes[i].out) * sizeof(float));
    nn_dev_end(be);
    for (int i = last; i >= first && i > 0; i--) {
        nn_node *node = &net->nodes[i];
        if (node->alias_of >= 0) continue;
        const nn_op_kernels *k = nn_backend_kernels(be, node->op);
        nn_op_args a;
        node_args(net, node, n, &a);
        formed_dy_args(net, node, &a);
        written_rows_args(net, node, n, &a);
        a.labels = labels;
        const int trial = prefetch_for(net, node, k, 1);
        const int timed = net->timing || net->hook || trial >= 0;
        double t0 = timed ? omp_get_wtime() : 0.0;
        nn_dev_begin(be);
        if (whole_batch(net, node, &a, shards)) {
            backward_kernel(net, node, k, &a, 0, loss_scale);
        } else {
            float parts[NN_MAX_SHARDS];
            run_shards(net, node, k, &a, 1, loss_scale, parts);
        }
        nn_dev_end(be);
        if (timed) {
            double t1 = omp_get_wtime();
            if (net->timing) net->time_bwd[i] += t1 - t0;
            if (net->hook) net->hook(net->hook_user, i, 1, t0, t1);
            prefetch_timed(node, 1, trial, t1 - t0);
        }
        if (net->grad_hook && node->num_params > 0)
            net->grad_hook(net->grad_hook_user, net->params[node->param_index].offset);
    }
}

nn_status nn_net_backward(nn_net *net) {
    if (net->cur_n == 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s: backward without a forward with labels",
                           net->source);
    if (net->folded_pass)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s: backward after an eval-mode forward whose "
                           "batch norms ran folded into their convolutions (backward needs "
                           "training mode, or fusion off: nn_ctx_set_fusion)", net->source);
    /* every node whose gradient several kernels add into starts at zero */
    backward_nodes(net, 0, net->loss_node, net->cur_n, net->labels, 1.0f);
    return NN_OK;
}

/* ------------------------------------------------------------------ stages */

void nn_net_use_slot(nn_net *net, int slot) {
    NN_ASSERT(slot >= 0 && slot < net->num_slots);
    if (slot == net->slot) return;
    const ptrdiff_t delta = (ptrdiff_t)(slot - net->slot) * (ptrdiff_t)net->arena_floats;
    const float *lo = net->arena, *hi = net->arena + net->arena_floats * (size_t)net->num_slots;
    for (int i = 0; i < net->num_nodes; i++) {
        nn_node *node = &net->nodes[i];
        if (node->y >= lo && node->y < hi) node->y += delta;
        if (node->dy >= lo && node->dy < hi) node->dy += delta;
        if ((float *)node->aux >= lo && (float *)node->aux < hi) node->aux = (float *)node->aux + delta;
    }
    net->slot = slot;
}

nn_status nn_net_forward_range(nn_net *net, const float *x, const int32_t *labels, int n,
                               int first, int last, float *loss) {
    NN_ASSERT(net->ctx->backend->host_visible); /* stages run on the CPU backend */
    nn_status st = check_forward(net, labels, n);
    if (st) return st;
    if (first <= net->input_node) net->nodes[net->input_node].y = (float *)x;
    forward_nodes(net, first, last, n, labels);
    if (loss) *loss = last >= net->loss_node ? net->last_loss : 0.0f;
    return NN_OK;
}

void nn_net_backward_range(nn_net *net, const float *x, int first, int last, int n,
                           const int32_t *labels, float loss_scale) {
    /* the input's memory is the caller's batch, not a slot: point the input
     * and the nodes that share its memory at this micro-batch's again */
    if (first <= net->input_node) {
        net->nodes[net->input_node].y = (float *)x;
        for (int i = 0; i <= last; i++)
            if (net->nodes[i].alias_of >= 0 && memory_root(net, i) == net->input_node)
                net->nodes[i].y = (float *)x;
    }
    backward_nodes(net, first, last, n, labels, loss_scale);
}

/* Stage boundaries: a cut after node c leaves one tensor crossing it, c's
 * memory, when every later node reads only c or later nodes and shares no
 * earlier node's memory but c's, and c's kernel writes no later node's
 * statistics (stats_to: they would stay on c's stage) nor forms a later
 * node's input gradient (dy_from: it reads that node's output gradient). */
static int valid_cut(const nn_net *net, int c) {
    if (c < 1 || c >= net->loss_node || net->nodes[c].stats_to > c || net->nodes[c].dy_from > c)
        return 0;
    const int root = memory_root(net, c);
    for (int j = c + 1; j <= net->loss_node; j++) {
        const nn_node *node = &net->nodes[j];
        for (int k = 0; k < node->num_inputs; k++)
            if (node->inputs[k] < c) return 0;
        if (node->prologue_from >= 0 && net->nodes[node->prologue_from].inputs[0] < c) return 0;
        if (node->writes_from >= 0) { /* it reads the batch norm's inputs and writes its output */
            const nn_node *p = &net->nodes[node->writes_from];
            if (node->writes_from < c) return 0;
            for (int k = 0; k < p->num_inputs; k++)
                if (p->inputs[k] < c) return 0;
        }
        if (node->alias_of >= 0 && node->alias_of <= c && node->alias_of != root) return 0;
    }
    return 1;
}

int nn_net_stage_cuts(const nn_net *net, int stages, const double *cost, int *last) {
    const int L = net->loss_node;
    int *cand = malloc((size_t)(L + 1) * sizeof *cand);
    double *prefix = malloc((size_t)(L + 2) * sizeof *prefix);
    double *best = malloc((size_t)stages * (size_t)(L + 1) * sizeof *best);
    int *from = malloc((size_t)stages * (size_t)(L + 1) * sizeof *from);
    int ok = 0;
    if (!cand || !prefix || !best || !from) goto out;
    /* candidates: the valid cuts, then the loss node (the last stage's end) */
    int m = 0;
    for (int c = 1; c < L; c++)
        if (valid_cut(net, c)) cand[m++] = c;
    cand[m++] = L;
    if (m < stages) goto out;
    prefix[0] = 0;
    for (int i = 0; i <= L; i++) prefix[i + 1] = prefix[i] + (cost ? cost[i] : 1.0);
    /* best[s][e]: the smallest largest cost of stages 0..s when stage s ends at
     * candidate e (nodes 0..cand[e]); from[s][e] the candidate stage s-1 ends at */
#define AT(a, s, e) a[(size_t)(s) * (size_t)(L + 1) + (size_t)(e)]
    for (int e = 0; e < m; e++) {
        AT(best, 0, e) = prefix[cand[e] + 1];
        AT(from, 0, e) = -1;
    }
    for (int s = 1; s < stages; s++)
        for (int e = 0; e < m; e++) {
            AT(best, s, e) = INFINITY;
            AT(from, s, e) = -1;
            for (int b = s - 1; b < e; b++) {
                const double stage = prefix[cand[e] + 1] - prefix[cand[b] + 1];
                const double v = AT(best, s - 1, b) > stage ? AT(best, s - 1, b) : stage;
                if (v < AT(best, s, e)) {
                    AT(best, s, e) = v;
                    AT(from, s, e) = b;
                }
            }
        }
    for (int s = stages - 1, e = m - 1; s >= 0; s--) {
        last[s] = cand[e];
        e = AT(from, s, e);
    }
#undef AT
    ok = 1;
out:
    free(cand), free(prefix), free(best), free(from);
    return ok;
}

void nn_net_zero_grad(nn_net *net) {
    const nn_backend *be = net->ctx->backend;
    nn_dev_begin(be);
    nn_dev_zero(be, net->grad_data,
                (size_t)nn_net_shards(net) * net->num_params * sizeof(float));
    nn_dev_end(be);
}

void nn_net_set_timing(nn_net *net, int on) {
    if (on && !net->time_fwd) {
        net->time_fwd = calloc((size_t)net->num_nodes, sizeof(double));
        net->time_bwd = calloc((size_t)net->num_nodes, sizeof(double));
        if (!net->time_fwd || !net->time_bwd) on = 0;
    }
    net->timing = on;
    if (on)
        for (int i = 0; i < net->num_nodes; i++) net->time_fwd[i] = net->time_bwd[i] = 0.0;
}

void nn_net_layer_time(const nn_net *net, int layer, double *forward_s, double *backward_s) {
    int ok = net->time_fwd && layer >= 0 && layer < net->num_nodes;
    *forward_s = ok ? net->time_fwd[layer] : 0.0;
    *backward_s = ok ? net->time_bwd[layer] : 0.0;
}

void nn_net_set_grad_hook(nn_net *net, nn_grad_hook hook, void *user) {
    net->grad_hook = hook;
    net->grad_hook_user = user;
}

void nn_net_set_reducer(nn_net *net, nn_reducer reduce, void *user) {
    net->reduce = reduce;
    net->reduce_user = user;
}

void nn_net_set_hook(nn_net *net, nn_layer_hook hook, void *user) {
    net->hook = hook;
    net->hook_user = user;
}

double nn_wall_time(void) { return omp_get_wtime(); }

nn_status nn_net_set_label_smoothing(nn_net *net, float eps) {
    if (!(eps >= 0.0f && eps <= 1.0f))
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s: label smoothing must be in [0, 1], got %g",
                           net->source, eps);
    if (net->loss_node < 0)
        return nn_ctx_fail(net->ctx, NN_EINVAL, "%s: model has no loss layer to smooth",
                           net->source);
    net->nodes[net->loss_node].d.loss.smoothing = eps;
    return NN_OK;
}

void nn_net_set_dropout_seed(nn_net *net, uint64_t seed) { net->dropout_seed = seed; }
