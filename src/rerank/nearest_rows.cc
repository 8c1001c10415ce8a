#include "rerank/nearest_rows.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/vector_math.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "rerank/amx.h"

namespace attnsearch {
namespace {

using memory = dnnl::memory;

// Query rows per matmul of Find: a block's similarities (kBlock x k
// floats) stay within a few MiB for the largest tables.
constexpr size_t kBlock = 64;
// Similarities' matmul shapes kept (one per number of query rows).
constexpr size_t kByTableShapes = 64;

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

// ---- The AMX tile kernel --------------------------------------------------
//
// A matmul library writes every similarity out (n x k floats) before the
// argmax can read it back, and with d = 128 that traffic, not the
// arithmetic, bounds it (about 0.6 TFLOPS on two cores at k = 32,768). The
// tile kernel keeps each 32 x 32 block of similarities in AMX tiles, reduces
// it while in L1, and keeps only a running maximum per row: 2.8x faster
// there, and the k-means that trains a codec uses it too.
//
// Layout: the table, padded to a multiple of 32 rows and of 32 dimensions,
// is stored once as tiles of 16 dimension pairs x 16 table rows (the "VNNI"
// pairs TDPBF16PS wants: element (p, c) holds dimensions 2p and 2p + 1 of
// row c), 1 KiB each, ordered [row block][dimension step]. The query rows
// are converted to bf16 256 at a time, padded to a multiple of 32.

constexpr size_t kTileRows = 256;  // query rows per task

// Rows [0, t) of `a` (t a multiple of 32, dp bf16 values each) against the
// table's `blocks` (even) blocks of 16 rows, `k` of them real; best[i] and
// at[i] hold row i's running maximum and its table row.
// With kAll, every similarity is written to all[j * stride + i] instead
// (rows i < valid only), and best / at are not used.
template <bool kAll>
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw"))) void TileArgMax(
    const uint16_t* a, size_t t, size_t dp, const uint16_t* tiles, size_t blocks, size_t k,
    float* best, uint32_t* at, float* all = nullptr, size_t valid = 0, size_t stride = 0) {
  _tile_loadconfig(&kAmxTileConfig);
  const size_t steps = dp / 32;
  alignas(64) float c[4][256];
  const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
  for (size_t cb = 0; cb < blocks; cb += 2) {
    const uint16_t* b0 = tiles + cb * steps * 512;
    const uint16_t* b1 = b0 + steps * 512;
    const size_t col0 = cb * 16;
    const __mmask16 m0 = col0 >= k        ? 0
                         : k - col0 >= 16 ? 0xffff
                                          : __mmask16((1u << (k - col0)) - 1);
    const __mmask16 m1 = col0 + 16 >= k        ? 0
                         : k - col0 - 16 >= 16 ? 0xffff
                                               : __mmask16((1u << (k - col0 - 16)) - 1);
    for (size_t tb = 0; tb < t; tb += 32) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (size_t s = 0; s < steps; ++s) {
        _tile_loadd(4, a + tb * dp + s * 32, dp * 2);
        _tile_loadd(5, a + (tb + 16) * dp + s * 32, dp * 2);
        _tile_loadd(6, b0 + s * 512, 64);
        _tile_loadd(7, b1 + s * 512, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      if constexpr (kAll) {
        // c[2h + half][r * 16 + l]: query row tb + 16h + r, table row
        // col0 + 16 half + l.
        for (int h = 0; h < 2; ++h) {
          for (int r = 0; r < 16; ++r) {
            const size_t i = tb + h * 16 + r;
            if (i >= valid) break;
            for (size_t l = 0; l < 32 && col0 + l < k; ++l) {
              all[(col0 + l) * stride + i] = c[h * 2 + l / 16][r * 16 + l % 16];
            }
          }
        }
        continue;
      }
      for (int h = 0; h < 2; ++h) {
        for (int r = 0; r < 16; ++r) {
          const size_t i = tb + h * 16 + r;
          const __m512 v0 = _mm512_mask_mov_ps(minus_inf, m0, _mm512_load_ps(c[h * 2] + r * 16));
          const __m512 v1 =
              _mm512_mask_mov_ps(minus_inf, m1, _mm512_load_ps(c[h * 2 + 1] + r * 16));
          // Mostly nothing beats the running maximum: one compare decides.
          // (The masked max: GCC 12 warns of _mm512_max_ps's undefined source.)
          const __m512 top = _mm512_mask_max_ps(v0, 0xffff, v0, v1);
          if (_mm512_cmp_ps_mask(top, _mm512_set1_ps(best[i]), _CMP_GT_OQ) == 0) {
            continue;
          }
          alignas(64) float v[32];
          _mm512_store_ps(v, v0);
          _mm512_store_ps(v + 16, v1);
          for (int l = 0; l < 32; ++l) {
            if (v[l] > best[i]) {
              best[i] = v[l];
              at[i] = uint32_t(col0 + l);
            }
          }
        }
      }
    }
  }
  _tile_release();
}

}  // namespace

struct NearestRows::Blocks {
  size_t rows = 0;
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
  memory weights;  // the table in the layout the primitive wants, made once
};

struct NearestRows::ByTable {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};

struct NearestRows::Rep {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  size_t k = 0;
  uint32_t dim = 0;
  std::vector<uint16_t> table;  // k x dim, bf16
  // The tile kernel's copy of the table (empty when oneDNN runs instead).
  std::vector<uint16_t> tiles;
  size_t padded_dim = 0, blocks = 0;
  // Where oneDNN has no bf16 matmul (before AVX-512): the bf16 values
  // widened to f32, exactly, and multiplied by an f32 matmul.
  bool widen = false;
  Blocks full;                    // kBlock rows a matmul
  std::vector<float> table_wide;  // widened: the table in f32, for ByTable
  // Similarities' matmuls, by the number of rows (at most kByTableShapes
  // kept; others are made for one call).
  mutable absl::Mutex mu;
  mutable absl::flat_hash_map<size_t, std::shared_ptr<const ByTable>> by_table ABSL_GUARDED_BY(mu);
};

NearestRows::NearestRows(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
NearestRows::~NearestRows() = default;

absl::StatusOr<std::unique_ptr<NearestRows>> NearestRows::Create(
    const float* table, size_t k, uint32_t dim, const NearestRowsOptions& options) {
  if (k == 0 || dim == 0) {
    return absl::InvalidArgumentError("nearest rows: an empty table");
  }
  auto rep = std::make_unique<Rep>();
  rep->k = k;
  rep->dim = dim;
  rep->table.resize(k * dim);
  FloatToBf16(table, rep->table.data(), k * dim);
  if (options.tile_kernel && AmxUsable(AmxKind::kBf16) && k < (size_t{1} << 31)) {
    rep->padded_dim = (dim + 31) / 32 * 32;
    rep->blocks = (k + 31) / 32 * 2;
    const size_t steps = rep->padded_dim / 32;
    rep->tiles.assign(rep->blocks * steps * 512, 0);
    for (size_t j = 0; j < k; ++j) {
      for (size_t x = 0; x < dim; ++x) {
        const size_t tile = (j / 16) * steps + x / 32;
        rep->tiles[tile * 512 + (x % 32) / 2 * 32 + (j % 16) * 2 + x % 2] = rep->table[j * dim + x];
      }
    }
    return std::unique_ptr<NearestRows>(new NearestRows(std::move(rep)));
  }
  // S (rows x k) = Q (rows x d) * Tᵀ (d x k), the table read row-major
  // with strides {1, d}, in bf16 (or widened to f32).
  const auto make = [&rep](memory::data_type dt, size_t rows, Blocks* b) {
    const memory::dim m = memory::dim(rows), d = rep->dim, kk = memory::dim(rep->k);
    memory::desc q_md({m, d}, dt, {d, 1});
    memory::desc t_md({d, kk}, dt, {1, d});
    memory::desc any_md({d, kk}, dt, memory::format_tag::any);
    memory::desc s_md({m, kk}, memory::data_type::f32, {kk, 1});
    b->rows = rows;
    b->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(q_md, any_md, s_md), rep->engine);
    b->primitive = dnnl::matmul(b->pd);
    // The table reordered once into the kernel's own layout.
    b->weights = memory(b->pd.weights_desc(), rep->engine);
    std::vector<float> wide;
    const void* data = rep->table.data();
    if (dt == memory::data_type::f32) {
      wide.resize(rep->table.size());
      Bf16ToFloat(rep->table.data(), wide.data(), wide.size());
      data = wide.data();
    }
    memory user(t_md, rep->engine, const_cast<void*>(data));
    dnnl::stream stream(rep->engine);
    dnnl::reorder(user, b->weights).execute(stream, user, b->weights);
    stream.wait();
  };
  try {
    try {
      make(memory::data_type::bf16, kBlock, &rep->full);
    } catch (const dnnl::error&) {
      rep->widen = true;  // no bf16 matmul on this CPU
      make(memory::data_type::f32, kBlock, &rep->full);
      rep->table_wide.resize(rep->table.size());
      Bf16ToFloat(rep->table.data(), rep->table_wide.data(), rep->table_wide.size());
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("nearest rows: oneDNN: ", e.what()));
  }
  return std::unique_ptr<NearestRows>(new NearestRows(std::move(rep)));
}

const char* NearestRows::kernel() const {
  if (!rep_->tiles.empty()) return "amx tiles";
  return rep_->widen ? "onednn matmul (bf16 widened to f32)" : "onednn matmul";
}

absl::Status NearestRows::Find(const float* rows, size_t n, uint32_t* out) const {
  const Rep& r = *rep_;
  const size_t d = r.dim, k = r.k;
  if (!r.tiles.empty()) {
    const size_t dp = r.padded_dim, tasks = (n + kTileRows - 1) / kTileRows;
#pragma omp parallel if (tasks > 1)
    {
      std::vector<uint16_t> a(kTileRows * dp, 0);
      std::vector<float> best(kTileRows);
      std::vector<uint32_t> at(kTileRows);
#pragma omp for schedule(dynamic)
      for (size_t task = 0; task < tasks; ++task) {
        const size_t first = task * kTileRows, valid = std::min(kTileRows, n - first);
        const size_t padded = (valid + 31) / 32 * 32;
        for (size_t i = 0; i < valid; ++i) {
          FloatToBf16(rows + (first + i) * d, a.data() + i * dp, d);
        }
        std::fill(a.begin() + long(valid * dp), a.begin() + long(padded * dp), uint16_t(0));
        std::fill(best.begin(), best.end(), -INFINITY);
        std::fill(at.begin(), at.end(), 0u);
        TileArgMax<false>(a.data(), padded, dp, r.tiles.data(), r.blocks, k, best.data(),
                          at.data());
        std::copy_n(at.data(), valid, out + first);
      }
    }
    return absl::OkStatus();
  }
  return MatmulBlocks(rep_->full, rows, n, [&](size_t at, size_t valid, const float* s) {
  // Each thread reduces the rows its part of the matmul wrote.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < valid; ++i) out[at + i] = ArgMax(s + i * k, k);
  });
}

absl::Status NearestRows::Similarities(const float* rows, size_t n, float* out) const {
  const Rep& r = *rep_;
  const size_t d = r.dim, k = r.k;
  if (n == 0) return absl::OkStatus();
  if (!r.tiles.empty()) {
    const size_t dp = r.padded_dim;
    std::vector<uint16_t> a(kTileRows * dp, 0);
    for (size_t first = 0; first < n; first += kTileRows) {
      const size_t valid = std::min(kTileRows, n - first);
      const size_t padded = (valid + 31) / 32 * 32;
      for (size_t i = 0; i < valid; ++i) {
        FloatToBf16(rows + (first + i) * d, a.data() + i * dp, d);
      }
      std::fill(a.begin() + long(valid * dp), a.begin() + long(padded * dp), uint16_t(0));
      TileArgMax<true>(a.data(), padded, dp, r.tiles.data(), r.blocks, k, nullptr, nullptr,
                       out + first, valid, n);
    }
    return absl::OkStatus();
  }
  // S (k x n) = T (k x d) * Qᵀ (d x n): the table is the source, read in
  // place, and the rows (row-major) are the weights, strides {1, d}.
  const memory::data_type dt = r.widen ? memory::data_type::f32 : memory::data_type::bf16;
  std::shared_ptr<const ByTable> shape;
  try {
    {
      absl::MutexLock lock(&r.mu);
      if (auto it = r.by_table.find(n); it != r.by_table.end()) shape = it->second;
    }
    if (shape == nullptr) {
      auto made = std::make_shared<ByTable>();
      const memory::dim kk = memory::dim(k), dd = memory::dim(d), nn = memory::dim(n);
      memory::desc t_md({kk, dd}, dt, {dd, 1});
      memory::desc q_md({dd, nn}, dt, {1, dd});
      memory::desc s_md({kk, nn}, memory::data_type::f32, {nn, 1});
      made->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(t_md, q_md, s_md), r.engine);
      made->primitive = dnnl::matmul(made->pd);
      shape = made;
      absl::MutexLock lock(&r.mu);
      if (r.by_table.size() < kByTableShapes) r.by_table.emplace(n, shape);
    }
    std::vector<uint16_t> q(n * d);
    std::vector<float> wide(r.widen ? n * d : 0);
    FloatToBf16(rows, q.data(), n * d);
    if (r.widen) Bf16ToFloat(q.data(), wide.data(), wide.size());
    void* const table = r.widen ? static_cast<void*>(const_cast<float*>(r.table_wide.data()))
                                : static_cast<void*>(const_cast<uint16_t*>(r.table.data()));
    dnnl::stream stream(r.engine);
    memory t_mem(shape->pd.src_desc(), r.engine, table);
    memory q_mem(shape->pd.weights_desc(), r.engine,
                 r.widen ? static_cast<void*>(wide.data()) : q.data());
    memory s_mem(shape->pd.dst_desc(), r.engine, out);
    shape->primitive.execute(
        stream, {{DNNL_ARG_SRC, t_mem}, {DNNL_ARG_WEIGHTS, q_mem}, {DNNL_ARG_DST, s_mem}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("nearest rows: oneDNN: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status NearestRows::MatmulBlocks(
    const Blocks& b, const float* rows, size_t n,
    const std::function<void(size_t first, size_t valid, const float* s)>& block) const {
  const Rep& r = *rep_;
  const size_t d = r.dim, k = r.k, per = b.rows;
  std::vector<uint16_t> q(per * d, 0);
  std::vector<float> wide(r.widen ? per * d : 0);
  std::vector<float> s(per * k);
  try {
    dnnl::stream stream(r.engine);
    memory q_mem(b.pd.src_desc(), r.engine, r.widen ? static_cast<void*>(wide.data()) : q.data());
    memory s_mem(b.pd.dst_desc(), r.engine, s.data());
    for (size_t at = 0; at < n; at += per) {
      const size_t valid = std::min(per, n - at);
      FloatToBf16(rows + at * d, q.data(), valid * d);
      if (valid < per) std::fill(q.begin() + long(valid * d), q.end(), uint16_t(0));
      if (r.widen) Bf16ToFloat(q.data(), wide.data(), wide.size());
      b.primitive.execute(
          stream, {{DNNL_ARG_SRC, q_mem}, {DNNL_ARG_WEIGHTS, b.weights}, {DNNL_ARG_DST, s_mem}});
      stream.wait();
      block(at, valid, s.data());
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("nearest rows: oneDNN: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace attnsearch
