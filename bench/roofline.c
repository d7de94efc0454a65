/* Roofline probes for bench/roofline.py: this core's float32 FMA peak and its read bandwidth
 * from a buffer of a given size (so from L1, L2, L3 or memory). Built by roofline.py with the
 * machine's C compiler (-O2 -march=native); prints "key value" lines.
 *
 * Usage: roofline FMA_ITERATIONS [BYTES ...]
 *   peak_gflops  FMAs on 12 independent register chains at the widest vector width the compiler
 *                targets (no memory traffic): the most any float32 kernel can do on one core
 *   read_gbs N   best GB/s of summing a warm N-byte buffer into 8 independent vector sums
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif
typedef float vec __attribute__((vector_size(VW * 4)));
#if defined(__x86_64__) || defined(__i386__)
#define REG(v) "+v"(v)
#else
#define REG(v) "+w"(v)
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static volatile float sink;

static double peak_gflops(long n) {
  /* 12 named chains (an array would be kept in memory at -O2), n from the command line. */
  vec b = (vec){0} + 0.9999999f, c = (vec){0} + 1e-7f;
  vec a0 = b, a1 = b + c, a2 = b + 2 * c, a3 = b + 3 * c, a4 = b + 4 * c, a5 = b + 5 * c;
  vec a6 = b + 6 * c, a7 = b + 7 * c, a8 = b + 8 * c, a9 = b + 9 * c, a10 = b + 10 * c;
  vec a11 = b + 11 * c;
  double best = 1e30;
  for (int r = 0; r < 7; ++r) {
    double t = now();
    for (long k = 0; k < n; ++k) {
      a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;
      a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
      a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;
      /* an empty asm that "may change" every chain: each FMA must really run, in a register */
      __asm__ volatile("" : REG(a0), REG(a1), REG(a2), REG(a3), REG(a4), REG(a5), REG(a6),
                       REG(a7), REG(a8), REG(a9), REG(a10), REG(a11));
    }
    t = now() - t;
    if (t < best) best = t;
  }
  vec s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  sink = s[0];
  return n * 12.0 * VW * 2 / best / 1e9;
}

static double read_gbs(size_t bytes) {
  size_t n = bytes / sizeof(float) / (8 * VW) * (8 * VW);
  float* buf = aligned_alloc(64, n * sizeof(float) + 64);
  for (size_t i = 0; i < n; ++i) buf[i] = 1e-3f * (float)(i % 7);
  const vec* v = (const vec*)buf;
  const size_t nv = n / VW;
  long reps = (long)(4e8 / (double)(n * sizeof(float))) + 1;
  double best = 1e30;
  for (int r = 0; r < 9; ++r) {
    vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
    double t = now();
    for (long k = 0; k < reps; ++k)
      for (size_t i = 0; i < nv; i += 8) {
        s0 += v[i]; s1 += v[i + 1]; s2 += v[i + 2]; s3 += v[i + 3];
        s4 += v[i + 4]; s5 += v[i + 5]; s6 += v[i + 6]; s7 += v[i + 7];
      }
    t = (now() - t) / reps;
    if (t < best) best = t;
    vec s = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
    sink = s[0];
  }
  free(buf);
  return n * sizeof(float) / best / 1e9;
}

int main(int argc, char** argv) {
  printf("vector_floats %d\n", VW);
  printf("peak_gflops %.2f\n", peak_gflops(strtol(argv[1], NULL, 10)));
  for (int i = 2; i < argc; ++i) {
    size_t bytes = strtoull(argv[i], NULL, 10);
    printf("read_gbs %zu %.2f\n", bytes, read_gbs(bytes));
  }
  return 0;
}
