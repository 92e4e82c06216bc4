/* rng.c - PCG32 (XSH-RR variant): small, fast, and its whole position is two
 * integers, so checkpoints can save and restore it exactly. */
#include "nnopt.h"

#define PCG_MULT 6364136223846793005ULL

uint32_t nn_rng_u32(nn_rng *rng) {
    uint64_t old = rng->state;
    rng->state = old * PCG_MULT + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

void nn_rng_seed(nn_rng *rng, uint64_t seed, uint64_t stream) {
    rng->state = 0;
    rng->inc = (stream << 1u) | 1u;
    nn_rng_u32(rng);
    rng->state += seed;
    nn_rng_u32(rng);
}

float nn_rng_uniform(nn_rng *rng) {
    return (float)(nn_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

uint32_t nn_rng_below(nn_rng *rng, uint32_t n) {
    /* reject the low values that would bias the modulo */
    uint32_t threshold = (uint32_t)(-n) % n;
    for (;;) {
        uint32_t r = nn_rng_u32(rng);
        if (r >= threshold) return r % n;
    }
}
