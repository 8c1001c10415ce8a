#include "rerank/nearest_rows.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/vector_math.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attnsearch {
namespace {

using memory = dnnl::memory;

// Query rows per matmul: a block's similarities (kBlock x k floats) stay
// within a few MiB for the largest tables.
constexpr size_t kBlock = 64;

// The index of the largest of n values (the first, on a tie): 16 running
// maxima and their places side by side (the compiler vectorises the
// compare-and-blend, with AVX-512 where the CPU has it), then the best of
// the 16.
template <int kUnused = 0>
inline uint32_t ArgMaxLanes(const float* v, size_t n) {
  float lanes[16];
  uint32_t at[16];
  for (int j = 0; j < 16; ++j) {
    lanes[j] = -3.4e38f;
    at[j] = 0;
  }
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) {
      const bool more = v[i + j] > lanes[j];
      lanes[j] = more ? v[i + j] : lanes[j];
      at[j] = more ? uint32_t(i + j) : at[j];
    }
  }
  float best = -3.4e38f;
  uint32_t best_at = 0;
  for (int j = 0; j < 16; ++j) {
    if (lanes[j] > best || (lanes[j] == best && at[j] < best_at)) {
      best = lanes[j];
      best_at = at[j];
    }
  }
  for (; i < n; ++i) {
    if (v[i] > best) {
      best = v[i];
      best_at = uint32_t(i);
    }
  }
  return best_at;
}

__attribute__((target("avx512f"))) uint32_t ArgMaxAvx512(const float* v, size_t n) {
  return ArgMaxLanes(v, n);
}
uint32_t ArgMaxPortable(const float* v, size_t n) { return ArgMaxLanes(v, n); }

const bool kHasAvx512 = __builtin_cpu_supports("avx512f");

uint32_t ArgMax(const float* v, size_t n) {
  return kHasAvx512 ? ArgMaxAvx512(v, n) : ArgMaxPortable(v, n);
}

}  // namespace

struct NearestRows::Rep {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  size_t k = 0;
  uint32_t dim = 0;
  std::vector<uint16_t> table;  // k x dim, bf16
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  memory weights;  // the table in the layout the primitive wants, made once
};

NearestRows::NearestRows(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
NearestRows::~NearestRows() = default;

absl::StatusOr<std::unique_ptr<NearestRows>> NearestRows::Create(const float* table, size_t k,
                                                                 uint32_t dim) {
  if (k == 0 || dim == 0) {
    return absl::InvalidArgumentError("nearest rows: an empty table");
  }
  auto rep = std::make_unique<Rep>();
  rep->k = k;
  rep->dim = dim;
  rep->table.resize(k * dim);
  FloatToBf16(table, rep->table.data(), k * dim);
  try {
    const memory::dim m = kBlock, d = dim, kk = memory::dim(k);
    // S (block x k) = Q (block x d) * Tᵀ (d x k), the table read row-major
    // with strides {1, d}.
    memory::desc q_md({m, d}, memory::data_type::bf16, {d, 1});
    memory::desc t_md({d, kk}, memory::data_type::bf16, {1, d});
    memory::desc any_md({d, kk}, memory::data_type::bf16, memory::format_tag::any);
    memory::desc s_md({m, kk}, memory::data_type::f32, {kk, 1});
    rep->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(q_md, any_md, s_md), rep->engine);
    rep->primitive = dnnl::matmul(rep->pd);
    // The table reordered once into the kernel's own layout.
    rep->weights = memory(rep->pd.weights_desc(), rep->engine);
    memory user(t_md, rep->engine, rep->table.data());
    dnnl::stream stream(rep->engine);
    dnnl::reorder(user, rep->weights).execute(stream, user, rep->weights);
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("nearest rows: oneDNN: ", e.what()));
  }
  return std::unique_ptr<NearestRows>(new NearestRows(std::move(rep)));
}

absl::Status NearestRows::Find(const float* rows, size_t n, uint32_t* out) const {
  const Rep& r = *rep_;
  const size_t d = r.dim, k = r.k;
  std::vector<uint16_t> q(kBlock * d, 0);
  std::vector<float> s(kBlock * k);
  try {
    dnnl::stream stream(r.engine);
    memory q_mem(r.pd.src_desc(), r.engine, q.data());
    memory s_mem(r.pd.dst_desc(), r.engine, s.data());
    for (size_t at = 0; at < n; at += kBlock) {
      const size_t valid = std::min(kBlock, n - at);
      FloatToBf16(rows + at * d, q.data(), valid * d);
      if (valid < kBlock) std::fill(q.begin() + long(valid * d), q.end(), uint16_t(0));
      r.primitive.execute(
          stream, {{DNNL_ARG_SRC, q_mem}, {DNNL_ARG_WEIGHTS, r.weights}, {DNNL_ARG_DST, s_mem}});
      stream.wait();
      // Each thread reduces the rows its part of the matmul wrote.
#pragma omp parallel for schedule(static)
      for (size_t i = 0; i < valid; ++i) out[at + i] = ArgMax(s.data() + i * k, k);
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("nearest rows: oneDNN: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace attnsearch
