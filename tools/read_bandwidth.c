// DRAM read bandwidth: an AVX2 read loop over 256 MiB at 1 and 2 threads, best of 3 (the bound
// for memory-bound decode; docs/kernels.md). Build: gcc -O2 -mavx2 tools/read_bandwidth.c -lpthread
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define N (256ull << 20)
static char* buf;
static double now() { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void* rd(void* arg) {
  size_t lo = ((size_t*)arg)[0], hi = ((size_t*)arg)[1];
  __m256i acc = _mm256_setzero_si256();
  for (int r = 0; r < 4; r++)
    for (size_t i = lo; i < hi; i += 128) {
      acc = _mm256_xor_si256(acc, _mm256_load_si256((__m256i*)(buf + i)));
      acc = _mm256_xor_si256(acc, _mm256_load_si256((__m256i*)(buf + i + 32)));
      acc = _mm256_xor_si256(acc, _mm256_load_si256((__m256i*)(buf + i + 64)));
      acc = _mm256_xor_si256(acc, _mm256_load_si256((__m256i*)(buf + i + 96)));
    }
  static volatile int sink; sink = _mm256_extract_epi32(acc, 0);
  return NULL;
}
int main() {
  buf = aligned_alloc(64, N); memset(buf, 1, N);
  for (int t = 1; t <= 2; t++) {
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
      pthread_t th[2]; size_t rg[2][2];
      double t0 = now();
      for (int i = 0; i < t; i++) { rg[i][0] = N / t * i; rg[i][1] = N / t * (i + 1); pthread_create(&th[i], 0, rd, rg[i]); }
      for (int i = 0; i < t; i++) pthread_join(th[i], 0);
      double dt = now() - t0; if (dt < best) best = dt;
    }
    printf("threads %d: %.1f GB/s\n", t, 4.0 * N / best / 1e9);
  }
}
