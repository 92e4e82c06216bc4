/*
 * fuzz_space.c - libFuzzer harness of the search-space reader (sp_load,
 * src/search/space.c, INI through inih). A refused file must leave a one-line
 * message naming the file. An accepted space must hold together: every
 * condition refers to an earlier choice and names its values, ranges are
 * ordered, and values drawn by every sampler lie in their ranges, print and
 * read back (sp_value_text / sp_value_parse), as a study stores them.
 */
#include "fuzz_common.h"
#include "search/search.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_values(const nn_space *sp, const double *v, const unsigned char *a,
                         const char *path) {
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        if (!a[i]) continue;
        if ((p->kind == SP_INT || p->kind == SP_FLOAT) && !(v[i] >= p->lo && v[i] <= p->hi))
            fuzz_die("a drawn value outside its range", p->name);
        if (p->kind == SP_CHOICE && !(v[i] >= 0 && v[i] < p->num_choices))
            fuzz_die("a drawn choice outside the list", p->name);
        char text[SP_WORD + 32];
        double back;
        sp_value_text(p, v[i], text, sizeof text);
        if (sp_value_parse(p, text, &back) != 0) fuzz_die("a drawn value does not read back", text);
    }
    (void)path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nn_ctx *ctx = fuzz_ctx();
    const char *path = fuzz_path("s.space");
    fuzz_write(path, data, size);
    nn_ctx_clear_error(ctx);
    nn_space *sp = NULL;
    if (sp_load(ctx, path, &sp) != NN_OK) {
        if (sp) fuzz_die("sp_load failed but returned a space", path);
        fuzz_check_message(nn_ctx_error(ctx), path);
        return 0;
    }
    if (!sp->model[0] || sp->num_objectives < 1) fuzz_die("a space without model or objective", path);
    for (int i = 0; i < sp->num_params; i++) {
        const sp_param *p = &sp->param[i];
        if (p->cond >= i || (p->cond >= 0 && sp->param[p->cond].kind != SP_CHOICE))
            fuzz_die("a condition on a later or non-choice parameter", p->name);
        if ((p->kind == SP_INT || p->kind == SP_FLOAT) && !(p->lo <= p->hi))
            fuzz_die("a reversed range", p->name);
    }
    /* a few trials of every sampler, each seeing the ones before */
    trial t[12];
    memset(t, 0, sizeof t);
    for (int k = 0; k < 12; k++) {
        nn_rng rng;
        nn_rng_seed(&rng, 1, (uint64_t)k);
        sampler_kind kind = (sampler_kind)(k % 4);
        if (sampler_propose(kind, sp, t, k, &rng, t[k].value, t[k].active) && kind != SAMPLER_GRID)
            fuzz_die("only the grid may run out", path);
        t[k].id = k + 1;
        t[k].state = TRIAL_COMPLETE;
        for (int m = 0; m < M_COUNT; m++) t[k].metric[m] = (double)(k % 5) / 5;
        check_values(sp, t[k].value, t[k].active, path);
    }
    sp_free(sp);
    return 0;
}
