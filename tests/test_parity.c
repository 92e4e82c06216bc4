/*
 * test_parity.c - whole-model parity with PyTorch: 20 SGD steps of the seed CNN.
 *
 * scripts/make_parity_fixture.py ran the same 20 steps in PyTorch 1.13 (float32,
 * one thread) and stored the losses and final parameter statistics in
 * tests/fixtures/seed_sgd_parity.txt. Weights and data are not stored: both
 * sides derive them from the same exact uint32 hash (see hash32 below), so
 * this test regenerates them bit for bit, trains with libnnopt and compares:
 *   - each step's loss, relative error <= 1e-4;
 *   - final parameter sums within 1e-3 x abssum, abssums within 1e-4 relative,
 *     and the first four values within 1e-4 relative or 1e-6 absolute.
 * The run is repeated with 1 and 2 threads. Before training, the regenerated
 * weights and the first batch are checked against the fixture's "init" and
 * "data" lines, which separates a hash/layout problem from a training one.
 */
#include "nnopt.h"
#include "test_util.h"

#define FIXTURE_PATH NN_SOURCE_DIR "/tests/fixtures/seed_sgd_parity.txt"

enum { STEPS = 20, BATCH = 8, PIXELS = 28 * 28, NUM_TENSORS = 8, NUM_FIRST = 4 };
enum { DATA_STREAM = 1000, LABEL_STREAM = 2000 };

static const double LOSS_RTOL = 1e-4;
static const double SUM_TOL = 1e-3;    /* relative to abssum: a sum may be near 0 */
static const double ABSSUM_RTOL = 1e-4;
static const double FIRST_RTOL = 1e-4;
static const double FIRST_ATOL = 1e-6;

/* Parameter tensors in stream order: tensor i uses hash stream i + 1. */
static const char *const PARAM_NAMES[NUM_TENSORS] = {
    "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
    "fc1.weight",   "fc1.bias",   "fc2.weight",   "fc2.bias"};

/* ------------------------------------------------------------ hash data */

/* Step t's batch. x: (BATCH, 1, 28, 28) normalized; labels: (BATCH). The float
 * operations and their order match numpy float32 in the script. */
static void make_batch(int t, float *x, int32_t *labels)
{
    for (uint32_t i = 0; i < (uint32_t)(BATCH * PIXELS); i++) {
        float byte = (float)(hash_value(DATA_STREAM + (uint32_t)t, i) >> 24);
        x[i] = (byte / 255.0f - 0.2860f) / 0.3530f;
    }
    for (uint32_t j = 0; j < BATCH; j++)
        labels[j] = (int32_t)(hash_value(LABEL_STREAM + (uint32_t)t, j) % 10U);
}

/* ------------------------------------------------------------ fixture */

/* One "init" or "param" line. */
typedef struct {
    char name[64];
    long numel;
    double sum, abssum;
    double first[NUM_FIRST];
} param_stats;

typedef struct {
    param_stats init[NUM_TENSORS];
    param_stats final[NUM_TENSORS];
    int n_init, n_final;
    double loss[STEPS];
    int have_loss[STEPS];
    double data_xsum;
    int data_labels[BATCH];
    int have_data;
} fixture;

static int parse_stats(const char *rest, param_stats *p)
{
    int n = sscanf(rest, "%63s %ld %lf %lf %lf %lf %lf %lf", p->name, &p->numel, &p->sum,
                   &p->abssum, &p->first[0], &p->first[1], &p->first[2], &p->first[3]);
    return n == 8;
}

/* Reads the fixture; returns 0 and prints path:line on a malformed line. */
static int fixture_load(const char *path, fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot open fixture (run scripts/make_parity_fixture.py)\n", path);
        return 0;
    }
    char line[512];
    int lineno = 0, ok = 1;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        int t;
        double v;
        if (strncmp(line, "init ", 5) == 0) {
            ok = fx->n_init < NUM_TENSORS && parse_stats(line + 5, &fx->init[fx->n_init++]);
        } else if (strncmp(line, "param ", 6) == 0) {
            ok = fx->n_final < NUM_TENSORS && parse_stats(line + 6, &fx->final[fx->n_final++]);
        } else if (sscanf(line, "loss %d %lf", &t, &v) == 2) {
            ok = t >= 0 && t < STEPS;
            if (ok) {
                fx->loss[t] = v;
                fx->have_loss[t] = 1;
            }
        } else if (strncmp(line, "data ", 5) == 0) {
            int *y = fx->data_labels;
            ok = sscanf(line + 5, "%d %lf %d %d %d %d %d %d %d %d", &t, &fx->data_xsum, &y[0],
                        &y[1], &y[2], &y[3], &y[4], &y[5], &y[6], &y[7]) == 2 + BATCH &&
                 t == 0;
            fx->have_data = ok;
        } else {
            ok = 0;
        }
        if (!ok)
            fprintf(stderr, "%s:%d: malformed fixture line: %s", path, lineno, line);
    }
    fclose(f);
    if (!ok)
        return 0;
    for (int t = 0; t < STEPS; t++) {
        if (!fx->have_loss[t]) {
            fprintf(stderr, "%s: no loss line for step %d\n", path, t);
            return 0;
        }
    }
    if (fx->n_init != NUM_TENSORS || fx->n_final != NUM_TENSORS || !fx->have_data) {
        fprintf(stderr, "%s: expected %d init, %d param lines and a data line\n", path,
                NUM_TENSORS, NUM_TENSORS);
        return 0;
    }
    return 1;
}

static const param_stats *find_stats(const param_stats *list, const char *name)
{
    for (int i = 0; i < NUM_TENSORS; i++)
        if (strcmp(list[i].name, name) == 0)
            return &list[i];
    return NULL;
}

/* ------------------------------------------------------------ checks */

static int failures;

static void fail(const char *fmt, const char *a, double got, double want)
{
    failures++;
    printf("FAIL ");
    printf(fmt, a);
    printf(": got %.9g, expected %.9g\n", got, want);
}

/* Compares one parameter tensor's statistics; returns the number of failures. */
static int check_stats(const char *what, const float *p, const nn_param_info *info,
                       const param_stats *ref, double sum_tol, double abssum_rtol,
                       double first_rtol, double first_atol)
{
    int before = failures;
    char label[160];
    if (!ref) {
        failures++;
        printf("FAIL %s %s: not in the fixture\n", what, info->name);
        return 1;
    }
    snprintf(label, sizeof label, "%s %s", what, info->name);
    if ((long)info->numel != ref->numel) {
        fail("%s numel", label, (double)info->numel, (double)ref->numel);
        return failures - before;
    }
    double sum = 0.0, abssum = 0.0;
    for (size_t i = 0; i < info->numel; i++) {
        sum += p[i];
        abssum += fabs(p[i]);
    }
    if (!(fabs(sum - ref->sum) <= sum_tol * ref->abssum))
        fail("%s sum", label, sum, ref->sum);
    if (!(fabs(abssum - ref->abssum) <= abssum_rtol * ref->abssum))
        fail("%s abssum", label, abssum, ref->abssum);
    for (int k = 0; k < NUM_FIRST; k++) {
        double d = fabs(p[k] - ref->first[k]);
        if (!(d <= first_atol || d <= first_rtol * fabs(ref->first[k]))) {
            char lk[200];
            snprintf(lk, sizeof lk, "%s[%d]", label, k);
            fail("%s", lk, p[k], ref->first[k]);
        }
    }
    return failures - before;
}

/* ------------------------------------------------------------ model */

/* Writes the hash-derived weights into net's flat parameter buffer and checks
 * them (and the layout the net reports) against the fixture's "init" lines. */
static int set_params(nn_ctx *ctx, nn_net *net, const fixture *fx)
{
    if (nn_net_num_param_tensors(net) != NUM_TENSORS) {
        fail("%s", "number of parameter tensors", nn_net_num_param_tensors(net), NUM_TENSORS);
        return 0;
    }
    /* written on the host, uploaded at the end */
    float *params = tu_download(ctx, nn_net_params(net), nn_net_num_params(net));
    for (int s = 0; s < NUM_TENSORS; s++) {
        const char *name = PARAM_NAMES[s];
        int idx = nn_net_find_param(net, name);
        if (idx < 0) {
            failures++;
            printf("FAIL parameter %s not found in the net\n", name);
            return 0;
        }
        const nn_param_info *info = nn_net_param_info(net, idx);
        /* fan_in from the layer's weight shape (PyTorch layout): C*R*S or in_features. */
        char wname[80];
        snprintf(wname, sizeof wname, "%.*s.weight", (int)(strchr(name, '.') - name), name);
        int widx = nn_net_find_param(net, wname);
        if (widx < 0) {
            failures++;
            printf("FAIL parameter %s not found in the net\n", wname);
            return 0;
        }
        const nn_param_info *w = nn_net_param_info(net, widx);
        int64_t fan_in = 1;
        for (int d = 1; d < w->shape.ndim; d++)
            fan_in *= w->shape.dim[d];
        if (info->fan_in != fan_in)
            fail("%s fan_in", name, info->fan_in, (double)fan_in);
        if ((size_t)nn_shape_numel(&info->shape) != info->numel)
            fail("%s numel vs shape", name, (double)info->numel,
                 (double)nn_shape_numel(&info->shape));
        if (info->offset + info->numel > nn_net_num_params(net)) {
            failures++;
            printf("FAIL %s: offset %zu + numel %zu beyond %zu parameters\n", name, info->offset,
                   info->numel, nn_net_num_params(net));
            return 0;
        }

        float bound = (float)(1.0 / sqrt((double)fan_in));
        float *p = params + info->offset;
        for (size_t i = 0; i < info->numel; i++)
            p[i] = (2.0f * hash_uniform((uint32_t)s + 1U, (uint32_t)i) - 1.0f) * bound;

        /* Regenerated bit for bit: only summation order and the fixture's 9-digit
         * printing (relative error < 1e-8) can differ. */
        if (check_stats("init", p, info, find_stats(fx->init, name), 1e-8, 1e-8, 1e-8, 0.0)) {
            free(params);
            return 0;
        }
    }
    nn_ctx_upload(ctx, nn_net_params(net), params, nn_net_num_params(net) * sizeof(float));
    free(params);
    return 1;
}

typedef struct {
    double loss[STEPS];
    float *params; /* final flat parameters (num_params), owned */
    size_t num_params;
} run_result;

/* Trains STEPS steps with `threads` threads and compares with the fixture.
 * Returns 1 if the run completed (its comparisons may still have failed). */
static int run_parity(int threads, const fixture *fx, run_result *res)
{
    int done = 0;
    nn_net *net = NULL;
    nn_optimizer *opt = NULL;
    nn_ctx *ctx = test_ctx_new(threads);
    float *x = malloc(sizeof(float) * BATCH * PIXELS); /* (BATCH, 1, 28, 28) */
    int32_t labels[BATCH];
    memset(res, 0, sizeof *res);
    if (!ctx || !x) {
        failures++;
        printf("FAIL out of memory\n");
        goto out;
    }
    printf("-- %d thread(s) (nn_ctx_threads = %d)\n", threads, nn_ctx_threads(ctx));

    nn_status st = nn_net_parse(ctx, SEED_MODEL, "test_parity:model", &net);
    if (st == NN_OK)
        st = nn_net_plan(net, BATCH);
    if (st != NN_OK) {
        failures++;
        printf("FAIL building the net: %s: %s\n", nn_status_str(st), nn_ctx_error(ctx));
        goto out;
    }
    if (!set_params(ctx, net, fx))
        goto out;

    const nn_optim_config cfg = {.kind = NN_OPTIM_SGD, .lr = 0.01f, .momentum = 0.9f,
                                 .dampening = 0.0f, .weight_decay = 5e-4f, .nesterov = 0};
    st = nn_optim_new(ctx, &cfg, nn_net_num_params(net), &opt);
    if (st != NN_OK) {
        failures++;
        printf("FAIL nn_optim_new: %s: %s\n", nn_status_str(st), nn_ctx_error(ctx));
        goto out;
    }

    double max_rel = 0.0;
    int worst = 0;
    for (int t = 0; t < STEPS; t++) {
        make_batch(t, x, labels);
        if (t == 0) {
            double xsum = 0.0;
            for (int i = 0; i < BATCH * PIXELS; i++)
                xsum += x[i];
            if (!(fabs(xsum - fx->data_xsum) <= 1e-9 * fabs(fx->data_xsum) + 1e-6))
                fail("%s", "step 0 input sum", xsum, fx->data_xsum);
            for (int j = 0; j < BATCH; j++)
                if (labels[j] != fx->data_labels[j])
                    fail("%s", "step 0 label", labels[j], fx->data_labels[j]);
        }
        float loss = NAN;
        nn_net_zero_grad(net);
        st = nn_net_forward(net, x, labels, BATCH, &loss);
        if (st == NN_OK)
            st = nn_net_backward(net);
        if (st != NN_OK) {
            failures++;
            printf("FAIL step %d: %s: %s\n", t, nn_status_str(st), nn_ctx_error(ctx));
            goto out;
        }
        nn_optim_step(opt, ctx, nn_net_params(net), nn_net_grads(net));
        res->loss[t] = loss;

        double rel = fabs(loss - fx->loss[t]) / fabs(fx->loss[t]);
        if (!(rel <= LOSS_RTOL)) {
            char lbl[32];
            snprintf(lbl, sizeof lbl, "%d", t);
            fail("loss step %s", lbl, loss, fx->loss[t]);
        }
        if (!(rel <= max_rel)) { /* also catches NaN */
            max_rel = rel;
            worst = t;
        }
    }
    printf("losses: step 0 %.7f (torch %.7f), step %d %.7f (torch %.7f)\n", res->loss[0],
           fx->loss[0], STEPS - 1, res->loss[STEPS - 1], fx->loss[STEPS - 1]);
    printf("max loss rel error %.3g at step %d (tolerance %.0e)\n", max_rel, worst, LOSS_RTOL);
    if (nn_optim_steps(opt) != STEPS)
        fail("%s", "nn_optim_steps", (double)nn_optim_steps(opt), STEPS);

    float *params = tu_download(ctx, nn_net_params(net), nn_net_num_params(net));
    double max_sum_err = 0.0, max_abssum_err = 0.0;
    for (int s = 0; s < NUM_TENSORS; s++) {
        const nn_param_info *info = nn_net_param_info(net, nn_net_find_param(net, PARAM_NAMES[s]));
        const param_stats *ref = find_stats(fx->final, PARAM_NAMES[s]);
        const float *p = params + info->offset;
        check_stats("final", p, info, ref, SUM_TOL, ABSSUM_RTOL, FIRST_RTOL, FIRST_ATOL);
        double sum = 0.0, abssum = 0.0;
        for (size_t i = 0; i < info->numel; i++) {
            sum += p[i];
            abssum += fabs(p[i]);
        }
        double es = fabs(sum - ref->sum) / ref->abssum;
        double ea = fabs(abssum - ref->abssum) / ref->abssum;
        max_sum_err = es > max_sum_err ? es : max_sum_err;
        max_abssum_err = ea > max_abssum_err ? ea : max_abssum_err;
    }
    printf("final params: max |sum err|/abssum %.3g (tol %.0e), max abssum rel err %.3g "
           "(tol %.0e)\n",
           max_sum_err, SUM_TOL, max_abssum_err, ABSSUM_RTOL);

    res->num_params = nn_net_num_params(net);
    res->params = params; /* the host copy */
    done = 1;
out:
    nn_optim_free(opt);
    nn_net_free(net);
    nn_ctx_free(ctx);
    free(x);
    return done;
}

int main(void)
{
    fixture fx;
    if (!fixture_load(FIXTURE_PATH, &fx))
        return 1;

    run_result r1, r2;
    int ok1 = run_parity(1, &fx, &r1);
    int ok2 = run_parity(2, &fx, &r2);

    /* Informational: how far the thread counts drift from each other. */
    if (ok1 && ok2 && r1.params && r2.params && r1.num_params == r2.num_params) {
        double dl = 0.0, dp = 0.0;
        for (int t = 0; t < STEPS; t++)
            dl = fmax(dl, fabs(r1.loss[t] - r2.loss[t]));
        for (size_t i = 0; i < r1.num_params; i++)
            dp = fmax(dp, fabs((double)r1.params[i] - r2.params[i]));
        printf("1 vs 2 threads: max |loss diff| %.3g, max |param diff| %.3g\n", dl, dp);
    }
    free(r1.params);
    free(r2.params);

    if (failures) {
        printf("test_parity: FAILED (%d check(s))\n", failures);
        return 1;
    }
    printf("test_parity: OK (%d steps x 2 thread counts match PyTorch)\n", STEPS);
    return 0;
}
