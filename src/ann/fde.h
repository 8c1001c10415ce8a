// Fixed dimensional encodings (MUVERA, Dhulipala et al. 2024): one vector
// per token set whose inner products approximate the late-interaction
// (Chamfer / MAXSIM) score, so that a single-vector index finds
// multi-vector neighbours.
//
// For each of `repetitions` independent draws, SimHash with `simhash_bits`
// Gaussian hyperplanes splits the token space into B = 2^simhash_bits
// partitions (a token's partition: the signs of its products with the
// hyperplanes). Per partition p, a block of `projection_dim` values:
//   query:     Σ_{q in p} w_q · S q        (summed, weighted)
//   document:  (1 / |D ∩ p|) Σ_{x in p} S x (averaged)
// with S a random ±1/√projection_dim projection (the identity when
// projection_dim is 0). A document partition holding no token takes the
// token whose partition is nearest in Hamming distance (fill_empty), so
// every query token meets some document token. The blocks of all
// repetitions are concatenated (repetitions · B · projection_dim values)
// and, when final_dim > 0, reduced by a count sketch (each value added to
// one of final_dim outputs, with a random sign: inner products are kept in
// expectation).
//
// Everything random comes from `seed` through mt19937_64, whose sequence the
// C++ standard fixes (normal values by Box-Muller, not the library's
// distributions): two encoders with the same options give the same
// encodings on any machine and across restarts.
//
// Thread safety: immutable after Create; encoding may run from any number
// of threads at once.
#ifndef ATTNSEARCH_ANN_FDE_H_
#define ATTNSEARCH_ANN_FDE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace attnsearch {

// The defaults give 2,560 values. On the clustered documents of
// first_stage_test (d = 64), the exact top 100 by encodings holds the
// exhaustive top 10 at 0.84 with them, 0.95 at 20,480 values (no
// projection), 0.75 sketched to 4,096 and 0.55 to 1,024; pooled vectors
// hold 0.68, the centroid first stage 1.0.
struct FdeOptions {
  uint32_t repetitions = 20;  // 1..64
  uint32_t simhash_bits = 4;  // 0..8 (0: one partition, i.e. pooling)
  // Values per partition block; 0: the token dimension (no projection).
  uint32_t projection_dim = 8;
  // Output dimension after the count sketch; 0: no final projection.
  uint32_t final_dim = 0;
  bool fill_empty = true;
  uint64_t seed = 1;
};

class FdeEncoder {
 public:
  // INVALID_ARGUMENT naming the option out of range (dim 0, repetitions,
  // simhash_bits, projection_dim above dim, an encoding over 1 << 20
  // values).
  static absl::StatusOr<std::unique_ptr<FdeEncoder>> Create(uint32_t dim,
                                                            const FdeOptions& options);

  uint32_t dim() const { return dim_; }
  // Values of an encoding.
  uint32_t output_dim() const;

  // The encoding of n tokens (n x dim) into out (output_dim values). A
  // query's tokens are summed with weights (null: 1 each); a document's
  // averaged per partition. n == 0 gives zeros.
  void EncodeQuery(const float* tokens, const float* weights, size_t n, float* out) const;
  void EncodeDocument(const float* tokens, size_t n, float* out) const;

 private:
  FdeEncoder(uint32_t dim, const FdeOptions& options);
  // Every repetition's products of x with its hyperplanes and its
  // projection (repetitions x stride_ values) into out.
  void Products(const float* x, float* out) const;
  // The partition of the token whose products are `products`, in
  // repetition r.
  uint32_t Partition(uint32_t r, const float* products) const;
  // S_r x (block_ values): from the products, or x itself without a
  // projection.
  const float* Projected(uint32_t r, const float* x, const float* products) const;
  // The blocks before the final projection into `full`, then `out`.
  void Finish(const std::vector<float>& full, float* out) const;

  const uint32_t dim_;
  const FdeOptions options_;
  uint32_t block_ = 0;       // values per partition block
  uint32_t partitions_ = 0;  // 2^simhash_bits
  uint32_t stride_ = 0;      // products per repetition: bits + projection_dim
  // Per input value, per repetition: its Gaussian hyperplanes' coefficients,
  // then its ±1/√block projection's (see Products).
  std::vector<float> table_;         // dim x repetitions x stride_
  std::vector<uint32_t> sketch_to_;  // full index -> output index
  std::vector<float> sketch_sign_;   // full index -> ±1
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ANN_FDE_H_
