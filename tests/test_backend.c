/*
 * test_backend.c - the device seam. The guard backend keeps every buffer of a
 * network and its optimizer where host code cannot touch it outside kernels
 * and explicit copies: a deliberate host read of the parameters kills the
 * process with a message naming the backend, while the same read through
 * nn_ctx_download works, and a training step on the guard backend gives the
 * CPU backend's results bit for bit. Choosing a backend: unknown names and a
 * change after the first network are refused.
 */
#include "nnopt.h"
#include "test_util.h"

#include <signal.h>
#include <sys/wait.h>

static const char *const TINY =
    "input shape=1x6x6\n"
    "conv2d name=c1 out=4 kernel=3 pad=1\n"
    "batchnorm name=bn1\n"
    "relu\n"
    "maxpool size=2\n"
    "flatten\n"
    "linear name=fc out=3\n"
    "softmax_ce\n";

static nn_net *tiny_net(nn_ctx *ctx) {
    nn_net *net = NULL;
    if (nn_net_parse(ctx, TINY, "tiny.nn", &net) || nn_net_plan(net, 4)) {
        printf("cannot build the tiny net: %s\n", nn_ctx_error(ctx));
        exit(1);
    }
    nn_rng rng;
    nn_rng_seed(&rng, 5, 1);
    nn_net_init_params(net, &rng);
    return net;
}

/* Two SGD steps with momentum on a fixed batch; the parameters and buffers
 * after them, downloaded, into out (num_params + num_buffers floats). */
static float *train_two_steps(const char *backend, size_t *count) {
    nn_ctx *ctx = nn_ctx_new(1);
    nn_status s = nn_ctx_set_backend(ctx, backend);
    char name[64];
    snprintf(name, sizeof name, "nn_ctx_set_backend(\"%s\")", backend);
    check(s == NN_OK, name, "%s", nn_ctx_error(ctx));
    nn_net *net = tiny_net(ctx);
    float x[4 * 36];
    int32_t y[4] = {0, 1, 2, 1};
    for (int i = 0; i < 4 * 36; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    nn_optim_config oc = nn_optim_defaults(NN_OPTIM_SGD);
    oc.lr = 0.1f;
    oc.momentum = 0.9f;
    nn_optimizer *opt = NULL;
    s = nn_optim_new(ctx, &oc, nn_net_num_params(net), &opt);
    for (int step = 0; step < 2 && !s; step++) {
        float loss;
        nn_net_zero_grad(net);
        s = nn_net_forward(net, x, y, 4, &loss);
        if (!s) s = nn_net_backward(net);
        if (!s) nn_optim_step(opt, ctx, nn_net_params(net), nn_net_grads(net));
    }
    if (s) printf("training on %s: %s\n", backend, nn_ctx_error(ctx));
    const size_t np = nn_net_num_params(net), nb = nn_net_num_buffers(net);
    float *out = xmalloc((np + nb) * sizeof(float));
    nn_ctx_download(ctx, out, nn_net_params(net), np * sizeof(float));
    nn_ctx_download(ctx, out + np, nn_net_buffers(net), nb * sizeof(float));
    *count = np + nb;
    nn_optim_free(opt);
    nn_net_free(net);
    nn_ctx_free(ctx);
    return out;
}

static void test_same_results(void) {
    size_t nc, ng;
    float *c = train_two_steps("cpu", &nc), *g = train_two_steps("guard", &ng);
    check(nc == ng && nc > 0 && memcmp(c, g, nc * sizeof(float)) == 0,
          "two SGD steps give the same parameters and batch-norm statistics on cpu and guard",
          "%zu and %zu values", nc, ng);
    free(c);
    free(g);
}

/* In a child: a host read of the guard backend's parameters. The child must
 * die of SIGSEGV after printing the guard's message. */
static void test_host_access_caught(void) {
    char log[512];
    snprintf(log, sizeof log, "%s", tmp_path("child.err"));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "w", stderr)) _exit(3);
        nn_ctx *ctx = nn_ctx_new(1);
        if (nn_ctx_set_backend(ctx, "guard")) _exit(4);
        nn_net *net = tiny_net(ctx);
        float through_copy = tu_get(ctx, nn_net_params(net));
        volatile float direct = nn_net_params(net)[0]; /* the deliberate stray access */
        (void)direct;
        (void)through_copy;
        _exit(0); /* not reached */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char msg[512] = "";
    FILE *f = fopen(log, "r");
    if (f) {
        if (!fgets(msg, sizeof msg, f)) msg[0] = '\0';
        fclose(f);
    }
    check(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV &&
              contains(msg, "guard backend: host code touched device memory"),
          "a host read of guard-backend parameters is caught (SIGSEGV with a message)",
          "status 0x%x, stderr '%s'", status, msg);
}

static void test_choose(void) {
    nn_ctx *ctx = nn_ctx_new(1);
    nn_status s = nn_ctx_set_backend(ctx, "tpu");
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "tpu") &&
              contains(nn_ctx_error(ctx), "cpu, guard"),
          "an unknown backend is refused, naming it and the choices", "%s", nn_ctx_error(ctx));
    check(strcmp(nn_ctx_backend(ctx), "cpu") == 0, "the default backend is cpu", "%s",
          nn_ctx_backend(ctx));
    nn_net *net = tiny_net(ctx);
    s = nn_ctx_set_backend(ctx, "guard");
    check(s == NN_EINVAL && contains(nn_ctx_error(ctx), "first network"),
          "the backend cannot change once a network uses one", "%s", nn_ctx_error(ctx));
    check(nn_ctx_set_backend(ctx, "cpu") == NN_OK, "setting the backend in use again is fine",
          NULL);
    nn_net_free(net);
    nn_ctx_free(ctx);
}

/* The device limits are a GPU's own: on the CPU (and guard) there are none
 * to report, and the figures stay zero (bench measures the CPU's itself). */
static void test_device_peaks(void) {
    const char *names[] = {"cpu", "guard"};
    for (int i = 0; i < 2; i++) {
        nn_ctx *ctx = nn_ctx_new(1);
        nn_ctx_set_backend(ctx, names[i]);
        nn_device_peaks p;
        memset(&p, 0x55, sizeof p);
        const int rc = nn_measure_device_peaks(ctx, 1, &p);
        check(rc == -1 && p.name[0] == '\0' && p.fma_gflops == 0.0 && p.sgemm_gflops == 0.0 &&
                  p.bf16_gemm_gflops == 0.0,
              "no device limits on a host backend", "%s: rc %d", names[i], rc);
        nn_ctx_free(ctx);
    }
}

int main(void) {
    test_choose();
    test_device_peaks();
    test_same_results();
    test_host_access_caught();
    return test_summary();
}
