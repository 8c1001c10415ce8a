// NearestRows: for many query rows, the row of a fixed table with the
// largest inner product (e.g. a token's nearest centroid), in bf16: on AMX
// by a tile kernel that keeps only each row's running maximum; elsewhere by
// oneDNN matmuls (AVX-512 kernels where present) block by block, each
// block's similarities reduced to their row-wise argmax while in cache.
// bf16 keeps about three significant digits: of two rows whose products
// differ by less than that, either may be chosen.
//
// Thread safety: immutable after Create; Find may run from several threads
// at once.
#ifndef ATTNSEARCH_RERANK_NEAREST_ROWS_H_
#define ATTNSEARCH_RERANK_NEAREST_ROWS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"

namespace attnsearch {

struct NearestRowsOptions {
  // Where the CPU has AMX (and ONEDNN_MAX_CPU_ISA, if set, allows an AMX
  // level), a tile kernel that reduces each block of similarities while it
  // is still in the tiles' output; otherwise oneDNN's bf16 matmul, block by
  // block. Default: true.
  bool tile_kernel = true;
};

class NearestRows {
 public:
  // A finder over `table`: k rows of dim values (copied). INVALID_ARGUMENT
  // when k or dim is 0.
  static absl::StatusOr<std::unique_ptr<NearestRows>> Create(
      const float* table, size_t k, uint32_t dim, const NearestRowsOptions& options = {});
  ~NearestRows();

  // The kernel Find runs: "amx tiles" or "onednn matmul".
  const char* kernel() const;

  // out[i]: the table row with the largest inner product with rows[i]
  // (n x dim values).
  absl::Status Find(const float* rows, size_t n, uint32_t* out) const;
  // out (k x n, row-major, table row by table row): out[j * n + i] is
  // table row j's inner product with rows[i], in bf16 arithmetic, on the
  // same kernel as Find (AMX tiles on one thread; oneDNN on the calling
  // thread's OpenMP thread count). oneDNN multiplies the table by the
  // rows (one matmul whose shape is cached per n), so that each table row's
  // n similarities come out side by side.
  absl::Status Similarities(const float* rows, size_t n, float* out) const;

 private:
  struct Rep;
  struct Blocks;   // a oneDNN matmul of a fixed number of rows against the table
  struct ByTable;  // a oneDNN matmul of the table against n rows
  explicit NearestRows(std::unique_ptr<Rep> rep);
  // oneDNN's path: the rows' similarities b's rows at a time, each block
  // handed to `block` (rows [first, first + valid), valid x k).
  absl::Status MatmulBlocks(
      const Blocks& b, const float* rows, size_t n,
      const std::function<void(size_t first, size_t valid, const float* s)>& block) const;
  std::unique_ptr<Rep> rep_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_NEAREST_ROWS_H_
