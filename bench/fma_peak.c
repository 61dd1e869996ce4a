/* The core's float32 FMA peak: 12 independent chains of one-register multiply-adds (enough in flight to cover
 * the FMA latency on every current x86 and ARM core), compiled for the build machine (-march=native).
 * Prints GFLOP/s for one thread. Used by roofline.py. A vector wider than the machine's registers would
 * take two registers per chain and spill (AVX2 with 16-float vectors: 7.8 of 97 GFLOP/s). */
#include <stdio.h>
#include <time.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vec __attribute__((vector_size(LANES * 4)));

int main(void) {
    vec a, b;
    for (int i = 0; i < LANES; i++) { a[i] = 1.0000001f; b[i] = 0.9999999f; }
    /* named accumulators, not an array: an array indexed in a loop may live in memory */
    vec c0 = a, c1 = a * 2, c2 = a * 3, c3 = a * 4, c4 = a * 5, c5 = a * 6, c6 = a * 7, c7 = a * 8, c8 = a * 9,
        c9 = a * 10, c10 = a * 11, c11 = a * 12;
    const long steps = 100000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < steps; k++) {
        c0 = c0 * a + b; c1 = c1 * a + b; c2 = c2 * a + b; c3 = c3 * a + b; c4 = c4 * a + b; c5 = c5 * a + b;
        c6 = c6 * a + b; c7 = c7 * a + b; c8 = c8 * a + b; c9 = c9 * a + b; c10 = c10 * a + b; c11 = c11 * a + b;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    vec all = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
    float sink = all[0];
    printf("%.1f %g\n", steps * 12.0 * LANES * 2 / seconds / 1e9, sink);
    return 0;
}
