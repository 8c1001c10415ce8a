// AnnIndex: the FAISS candidate index over one unit pooled vector per
// document, searched by inner product.
//
// The index is described by a FAISS factory string ("HNSW32,Flat" by
// default, "Flat" for exact search) and searched with runtime knobs given as
// "efSearch=128" (HNSW) or "nprobe=16" (IVF). It maps FAISS's sequential
// positions to the engine's labels. A filter (tombstones, metadata) is
// applied inside the search, so k results come back whenever k admissible
// vectors exist (exactly for Flat and exhaustive searches; for HNSW as far as
// the graph search reaches them).
//
// The index is derived state: Save() writes a checksummed snapshot that
// records the configuration and the highest label contained; Load() refuses
// a snapshot that is missing, corrupt or of another configuration, and the
// caller then rebuilds from the store.
//
// Thread safety: Search, Save and the accessors may run concurrently with
// each other; Add must not run concurrently with anything (the engine holds a
// reader/writer lock around it).
#ifndef ATTNSEARCH_ANN_ANN_INDEX_H_
#define ATTNSEARCH_ANN_ANN_INDEX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/label_bitmap.h"
#include "core/types.h"

namespace attnsearch {

struct AnnOptions {
  // HNSW graph construction beam width. Higher builds slower and searches
  // with better recall. Default: 80.
  int ef_construction = 80;
  // HNSW search beam width when a request gives none. The beam is never
  // narrower than the number of results asked for. Default: 64.
  int ef_search = 64;
  // IVF lists probed when a request gives none. Default: 16.
  int nprobe = 16;
  // SearchFiltered scores the admitted vectors exactly when at most this
  // many are admitted (a graph search would walk past nearly every node to
  // find k of them); above it, it searches the index. Default: 20000.
  size_t exact_filter_max = 20000;
  // Indexes that need training (IVF, PQ, SQ8) hold vectors unindexed, and
  // search them exactly, until at least this many have been added (and,
  // for IVF, 39 per list); then they train on a random sample of at most
  // train_sample_max of them and index them all. Default: 1000.
  size_t train_min = 1000;
  size_t train_sample_max = 100000;
  // Widest HNSW beam SearchFiltered uses when it widens the beam by the
  // inverse of the filter's selectivity. Default: 2048.
  int max_filtered_ef = 2048;
};

// Runtime knobs of one search, parsed from "efSearch=128,nprobe=8" (or,
// for the centroid first stage, "probe=4,probe_ef=32,refine=1000").
struct AnnSearchParams {
  int ef_search = 0;  // 0: AnnOptions::ef_search
  int nprobe = 0;     // 0: AnnOptions::nprobe
  // The centroid first stage (centroid_candidates.h): centroids per query
  // token, and the beam of the centroid graph. 0: its defaults.
  int probe = 0;
  int probe_ef = 0;
  // The centroid first stage: documents scored again over all their
  // centroids (0: none). -1: its default.
  int refine = -1;
  // Score every stored vector instead of searching the index (exact).
  bool exhaustive = false;

  // INVALID_ARGUMENT naming the unknown, malformed or repeated knob, or an
  // empty one (e.g. a trailing ','). Empty text: every default.
  static absl::StatusOr<AnnSearchParams> Parse(absl::string_view text);
  // INVALID_ARGUMENT naming a given knob that does nothing for an index of
  // `spec` (efSearch needs HNSW, nprobe IVF) or, unless `centroids`, a
  // centroid first stage's knob.
  absl::Status CheckApplies(absl::string_view spec, bool centroids) const;
};

// What AnnIndex::Tune chose.
struct AnnTuneResult {
  // The chosen knob ("efSearch" or "nprobe"; empty when nothing is tunable,
  // e.g. Flat) and its value; as ann_params text, e.g. "efSearch=40".
  std::string knob;
  int value = 0;
  std::string ann_params;
  // Mean recall@k of the chosen setting over the sample, and how many
  // sample queries were used.
  double sample_recall = 1.0;
  size_t sample_queries = 0;
};

// One result: a label and its inner product with the query.
struct AnnNeighbor {
  Label label;
  float score;
};

// Returns true for labels the search may return.
using LabelFilter = std::function<bool(Label)>;

class AnnIndex {
 public:
  // An empty index for `spec` over `dim`-dimensional vectors; INVALID_ARGUMENT
  // when FAISS rejects the factory string.
  static absl::StatusOr<std::unique_ptr<AnnIndex>> Create(const std::string& spec, uint32_t dim,
                                                          const AnnOptions& options);
  // Reads a snapshot written by Save. NOT_FOUND when there is no file;
  // DATA_LOSS when it is truncated or corrupt; FAILED_PRECONDITION when it
  // was built for another spec or dimension.
  static absl::StatusOr<std::unique_ptr<AnnIndex>> Load(const std::string& path,
                                                        const std::string& spec, uint32_t dim,
                                                        const AnnOptions& options);
  ~AnnIndex();

  // Adds n unit vectors (n x dim, row-major) under `labels`, which must be
  // increasing and above max_label(). Indexes that need training (IVF, PQ,
  // SQ8) train once AnnOptions::train_min vectors have arrived.
  absl::Status Add(const Label* labels, const float* vectors, size_t n);

  // Up to k labels with the highest inner product with `query` (dim values)
  // among those `filter` admits (all when filter is empty), best first.
  absl::Status Search(const float* query, size_t k, const AnnSearchParams& params,
                      const LabelFilter& filter, std::vector<AnnNeighbor>* out) const;

  // Exact search among the given labels only (sorted increasing; labels the
  // index does not hold are skipped): the k with the highest inner product,
  // best first. For selective filters, where a graph search would have to
  // walk past nearly every node to find k admissible ones.
  absl::Status SearchAmong(const float* query, size_t k, const Label* labels, size_t n,
                           std::vector<AnnNeighbor>* out) const;

  // Up to k labels from `admitted` with the highest inner product, best
  // first: exactly (SearchAmong) when admitted.count() is at most
  // exact_filter_max, else by Search with admitted as the filter and, for
  // HNSW, the beam widened to ef / selectivity (at most max_filtered_ef).
  absl::Status SearchFiltered(const float* query, size_t k, const AnnSearchParams& params,
                              const LabelBitmap& admitted, std::vector<AnnNeighbor>* out) const;

  // Picks the smallest efSearch (HNSW) or nprobe (IVF) whose mean recall@k
  // reaches `target_recall` for `sample` of the index's own vectors held
  // out: they are searched, as queries, in a copy of the index built from
  // all the other vectors (so tuning costs about one build and the memory
  // of a second index). Deterministic for a seed. INVALID_ARGUMENT
  // for a target outside (0, 1] or k == 0; FAILED_PRECONDITION when the
  // index holds fewer than k + 2 vectors.
  absl::StatusOr<AnnTuneResult> Tune(double target_recall, size_t k, size_t sample,
                                     uint64_t seed = 42) const;

  // Whether the index is trained (untrained indexes search their vectors
  // exactly until enough arrived; see AnnOptions::train_min).
  bool trained() const;
  // How stored vectors are scored, e.g. "simd-avx512 f32" or "faiss".
  std::string distance_implementation() const;

  // Writes a snapshot atomically (temporary file, fsync, rename).
  absl::Status Save(const std::string& path) const;

  // Number of vectors in the index (including ones the caller tombstoned).
  size_t size() const;
  // Highest label added, or -1 (as uint64 max) when empty; has_labels() tells.
  bool has_labels() const { return !labels_.empty(); }
  Label max_label() const { return labels_.empty() ? 0 : labels_.back(); }
  // Every label added, increasing.
  const std::vector<Label>& labels() const { return labels_; }
  uint32_t dim() const { return dim_; }
  const std::string& spec() const { return spec_; }

 private:
  struct Rep;
  AnnIndex(std::unique_ptr<Rep> rep, std::string spec, uint32_t dim, const AnnOptions& options);

  std::unique_ptr<Rep> rep_;
  const std::string spec_;
  const uint32_t dim_;
  const AnnOptions options_;
  // Position -> label. While the index is untrained, the vectors of every
  // position wait in pending_ (n x dim) and FAISS holds none.
  std::vector<Label> labels_;
  std::vector<float> pending_;

  // The HNSW graph search: the k best of the ef-wide beam that `admit`
  // (by position; all when empty) admits.
  std::vector<std::pair<float, int64_t>> WalkGraph(const float* query, size_t k, size_t ef,
                                                   const std::function<bool(size_t)>& admit) const;
  // Adds to the FAISS index: HNSW graphs over SIMD storage are linked by
  // hnsw_build.h, everything else by FAISS. Throws FAISS's exceptions.
  void AddToFaiss(size_t n, const float* vectors);
  // Trains on a sample of pending_ and moves it into FAISS.
  absl::Status TrainAndIndexPending();
  // Tune's held-out sample: `queries` (sample x dim) taken out of `copy`,
  // an index of the other vectors, and each query's exact top k in it.
  struct HeldOut {
    std::unique_ptr<AnnIndex> copy;
    std::vector<float> queries;
    std::vector<std::vector<Label>> truth;
    size_t sample = 0;
  };
  // A seeded sample of `sample` stored vectors (at most n - (k + 1)).
  absl::StatusOr<HeldOut> HoldOut(size_t k, size_t sample, uint64_t seed) const;
  // Mean recall@k of the held-out queries searched with `params`.
  static absl::StatusOr<double> MeanRecall(const HeldOut& set, size_t k,
                                           const AnnSearchParams& params);
  // Exact top k among positions (all when `positions` is null), scored by
  // the storage's distance computer or over pending_.
  absl::Status ScanExact(const float* query, size_t k, const std::vector<size_t>* positions,
                         const std::function<bool(size_t)>& admit,
                         std::vector<std::pair<float, int64_t>>* best) const;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ANN_ANN_INDEX_H_
