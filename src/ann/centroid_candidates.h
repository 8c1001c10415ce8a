// CentroidCandidates: a first stage that ranks documents by late
// interaction over their tokens' centroids (the residual codec's, see
// residual_codec.h), in the manner of PLAID and WARP.
//
// Each document is held as the set of centroids its tokens were coded
// with, with, per centroid, the largest gain among those tokens (1 for a
// codec without a gain byte). A per-centroid inverted list names the
// documents that have it. A query token i probes its `probe` nearest
// centroids by inner product (ann_index.h: FAISS's flat scan or HNSW graph
// over the centroids, with the SIMD kernels), with
// similarities s_i1 >= ... >= s_ip; a document D then scores
//
//   score(D) = Σ_i w_i · ŝ_i(D),
//   ŝ_i(D) = max { g_D(c) · s_ic : c probed by token i and held by D },
//            or, when D holds none of them, the floor f_i = ḡ · s_ip,
//
// g_D(c) the document's gain on c and ḡ the mean gain of what is held (the
// best a document missed can be: its tokens lie nearer other centroids). It
// approximates MAXSIM (and ATTENTION, its soft version) over the decoded
// tokens; only the documents on probed lists are touched, so a search costs
// the length of those lists, not the collection. With `refine` (below) the
// lists only gather documents and a fuller centroid interaction ranks them.
//
// Deletes are lazy: Remove marks the document's slot dead, searches skip
// it, and the lists are swept once dead slots pass a quarter of the live.
//
// Thread safety: Search may run concurrently with itself; Add and Remove
// take the writer lock.
#ifndef ATTNSEARCH_ANN_CENTROID_CANDIDATES_H_
#define ATTNSEARCH_ANN_CENTROID_CANDIDATES_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ann/ann_index.h"
#include "core/types.h"

namespace attnsearch {

struct CentroidCandidatesOptions {
  // Centroids each query token probes when a search gives none. k-means
  // centroids split a cluster of tokens among several (1,024 centroids for
  // 120 clusters: probe 4 keeps 0.76 of the exhaustive top 10 in 100
  // candidates, 16 keeps 1.0; centroid_candidates_test); a vocabulary of
  // words as centroids needs fewer (4 keeps 1.0 on cranfield and
  // scifact-train). Default: 16.
  uint32_t probe = 16;
  // The centroid search: exact (a flat scan) up to this many centroids,
  // else an HNSW graph over them (`graph_spec`, an ann_index.h factory
  // string) searched with a beam of ef_search (at least probe). Defaults:
  // 4096; 32; "HNSW16,SQfp16" (on cranfield's 5,129 centroids 1.6x faster
  // than HNSW32,Flat at the same candidates, bench/RESULTS.md).
  uint32_t exact_below = 4096;
  uint32_t ef_search = 32;
  std::string graph_spec = "HNSW16,SQfp16";
  // Where a query token is a positive multiple s of one centroid c plus
  // components no centroid has (a text row on the encoder's vocabulary,
  // found by the codec's sign hash), its similarities with the centroids
  // are s times c's, so its probed centroids are c's nearest: searched once
  // per centroid (k = kCachedNeighbours, beam max(ef_search, 64)), kept, and
  // scaled by s. Returns false (the token is searched) when it is not so.
  // Null: every token is searched.
  std::function<bool(const float* token, uint32_t* centroid, float* scale)> own_centroid;
  // Every query token's similarity with every centroid at once, centroid
  // by centroid (out: num x m, out[c * m + i] token i's with centroid c;
  // e.g. one matmul of the centroids with the query), each token's probe
  // best then selected; used instead of the centroid search for tokens
  // own_centroid does not place. Null: the search.
  std::function<absl::Status(const float* query, uint32_t m, float* out)> similarities;
  // The gain a byte j stands for is gain_max · j / 256 (residual_codec.h);
  // 0: the codes have no gain byte (every gain is 1).
  float gain_max = 0.f;
  // With the similarities hook, refine > 0 replaces the walk: the probed
  // lists only gather documents, each list read once, by
  //
  //   gathered(D) = Σ { g_D(c) · u_c : c probed and held by D, u_c > 0 },
  //   u_c = Σ { w_i · s_ic : token i probes c },
  //
  // (a sum where the walk keeps each token's best: no per-token state), and
  // the best max(refine, k) by it, of those it reaches (gathered > 0), are
  // scored again over every centroid they hold (PLAID's full centroid
  // interaction),
  //
  //   refined(D) = Σ_i w_i · max { g_D(c) · s_ic : c held by D },
  //
  // the MAXSIM of the query with D's tokens moved to their centroids,
  // from the similarities held as IEEE halves (within Σ_i w_i · max g ·
  // 2^-11 · max |s_ic| of the exact sum), and returned best first by it,
  // ahead of the others (the gathered in gathering order, then the rest at
  // the floor, all scored at most the last refined). 0: off (the walk's
  // score ranks). Default: 0.
  uint32_t refine = 0;
};

// The knobs of one search; 0 (refine: -1): the options'.
struct CentroidSearchParams {
  uint32_t probe = 0;      // centroids each query token probes
  uint32_t ef_search = 0;  // the centroid graph's beam (at least probe)
  int64_t refine = -1;     // documents refined (0: none)
};

class CentroidCandidates {
 public:
  // Neighbours kept per centroid for own_centroid tokens; a larger probe
  // searches.
  static constexpr uint32_t kCachedNeighbours = 32;

  // Over `num` centroids of `dim` floats (row-major). INVALID_ARGUMENT when
  // a size is 0, more than 2^24 centroids, or an option is out of range.
  static absl::StatusOr<std::unique_ptr<CentroidCandidates>> Create(
      const float* centroids, uint32_t num, uint32_t dim, const CentroidCandidatesOptions& options);
  ~CentroidCandidates();

  // Holds `label` with the centroids of its n tokens (ids[t]) and their
  // gain bytes (gains[t]; null without a gain byte), replacing what the
  // label held. INVALID_ARGUMENT naming the token when an id is out of
  // range; RESOURCE_EXHAUSTED past 2^24 documents.
  absl::Status Add(Label label, const uint32_t* ids, const uint8_t* gains, size_t n);
  // Forgets `label`, if held.
  void Remove(Label label);

  // The best k admitted labels (admit empty: all) by the score above, best
  // first, into *out. A document no probed list names has the sum of the
  // floors; such documents fill the result when fewer than k were touched.
  // A probe above the centroids probes them all. `admit` is asked in
  // score order, only until k are admitted. `while_locked` (if any) runs
  // before Search returns, while no Add or Remove can run (e.g. to take a
  // store view that holds every label returned); its error is returned.
  // INVALID_ARGUMENT when m is 0 or the query is not finite.
  absl::Status Search(const float* query, const float* weights, uint32_t m, size_t k,
                      const CentroidSearchParams& params, const LabelFilter& admit,
                      std::vector<AnnNeighbor>* out,
                      const std::function<absl::Status()>& while_locked = {}) const;

  uint32_t dim() const { return dim_; }
  uint32_t num_centroids() const { return num_; }
  size_t size() const;  // documents held
  // Bytes of the lists, the per-document tables and the centroids (counted
  // at 4 bytes a value; the graph's links are not counted).
  size_t memory_bytes() const;

 private:
  CentroidCandidates(uint32_t num, uint32_t dim, const CentroidCandidatesOptions& options);
  // Drops dead slots from the lists and frees them for reuse. REQUIRES: mu_.
  void Sweep() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Kill(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Centroid c's nearest centroids (similarities with c), searched with
  // `token` = s·c + (components no centroid has) on first use.
  const std::vector<AnnNeighbor>* NeighboursOf(uint32_t c, const float* token, float scale) const;

  const uint32_t num_, dim_;
  const CentroidCandidatesOptions options_;
  std::unique_ptr<AnnIndex> centroids_;
  // NeighboursOf's lists, set once each (compare-and-swap), freed with this.
  mutable std::unique_ptr<std::atomic<const std::vector<AnnNeighbor>*>[]> neighbours_;
  float gain_of_[256];  // a gain byte's gain
  float max_centroid_norm_ = 0.f;

  mutable absl::Mutex mu_;
  // Per centroid, its documents' entries (slot << 8 | gain byte), sorted.
  std::vector<std::vector<uint32_t>> lists_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Label, uint32_t> slot_of_ ABSL_GUARDED_BY(mu_);
  std::vector<Label> label_of_ ABSL_GUARDED_BY(mu_);
  std::vector<uint8_t> alive_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);
  // Per slot: its entries and their gains' sum (for ḡ and the counts).
  std::vector<uint32_t> slot_entries_ ABSL_GUARDED_BY(mu_);
  // Per slot: where its entries (centroid << 8 | gain byte) start in held_,
  // for the refining; held_ is appended to and compacted by Sweep.
  std::vector<size_t> slot_held_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> held_ ABSL_GUARDED_BY(mu_);
  std::vector<float> slot_gain_ ABSL_GUARDED_BY(mu_);
  size_t dead_ ABSL_GUARDED_BY(mu_) = 0;
  size_t entries_ ABSL_GUARDED_BY(mu_) = 0;       // in the lists, dead included
  size_t live_entries_ ABSL_GUARDED_BY(mu_) = 0;  // of live slots
  double gain_sum_ ABSL_GUARDED_BY(mu_) = 0;      // of live slots' entries
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ANN_CENTROID_CANDIDATES_H_
