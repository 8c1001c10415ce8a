// ATTN_SIMD_CLONES: compiles a function once per instruction set (AVX-512F,
// AVX2, baseline), the loader picking the widest the CPU has, for loops
// written so that the compiler vectorises them. Sanitizer builds keep one
// version: their run-time library is not ready when the loader resolves
// the clones.
#ifndef ATTNSEARCH_CORE_SIMD_CLONES_H_
#define ATTNSEARCH_CORE_SIMD_CLONES_H_

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ATTN_NO_SIMD_CLONES
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(ATTN_NO_SIMD_CLONES)
#define ATTN_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ATTN_SIMD_CLONES
#endif

#endif  // ATTNSEARCH_CORE_SIMD_CLONES_H_
