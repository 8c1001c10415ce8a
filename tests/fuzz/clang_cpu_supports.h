// Force-included into src/ann/simd_distance.cc in the ATTN_FUZZ (clang)
// build only: clang 14's __builtin_cpu_supports does not know "f16c", which
// that file asks for next to "avx2". Every CPU with AVX2 here has F16C, so
// "f16c" is answered as "avx2"; every other feature goes to the builtin.
#ifndef ATTNSEARCH_TESTS_FUZZ_CLANG_CPU_SUPPORTS_H_
#define ATTNSEARCH_TESTS_FUZZ_CLANG_CPU_SUPPORTS_H_

#include <cstring>

static inline bool AttnFuzzCpuSupports(const char* f) {
  __builtin_cpu_init();
  if (std::strcmp(f, "avx2") == 0 || std::strcmp(f, "f16c") == 0) {
    return __builtin_cpu_supports("avx2");
  }
  if (std::strcmp(f, "fma") == 0) return __builtin_cpu_supports("fma");
  if (std::strcmp(f, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(f, "avx512bw") == 0) return __builtin_cpu_supports("avx512bw");
  if (std::strcmp(f, "avx512vl") == 0) return __builtin_cpu_supports("avx512vl");
  return false;
}
#define __builtin_cpu_supports(feature) AttnFuzzCpuSupports(feature)

#endif  // ATTNSEARCH_TESTS_FUZZ_CLANG_CPU_SUPPORTS_H_
