#include "ann/hnsw_build.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <numeric>
#include <queue>
#include <utility>
#include <vector>

#include "ann/graph_util.h"
#include "ann/simd_storage.h"

namespace attnsearch {
namespace {

using node_t = faiss::HNSW::storage_idx_t;
using Scored = std::pair<float, node_t>;  // inner product with the point, node

// A one-byte spin lock per node: uncontended (the common case) it costs one
// atomic exchange, and 100,000 nodes take 100 kB rather than 4 MB of mutexes.
class NodeLock {
 public:
  void lock() {
    while (flag_.exchange(true, std::memory_order_acquire)) {
      while (flag_.load(std::memory_order_relaxed)) _mm_pause();
    }
  }
  void unlock() { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

// Neighbour-list slots are read without the node's lock (searches during
// construction) while the owner of the lock rewrites them: every access is
// a relaxed atomic, so a reader sees each slot's old or new value (any of
// them a valid node or -1), never a torn one.
inline node_t LoadLink(const node_t& slot) {
  return std::atomic_ref<const node_t>(slot).load(std::memory_order_relaxed);
}
inline void StoreLink(node_t& slot, node_t v) {
  std::atomic_ref<node_t>(slot).store(v, std::memory_order_relaxed);
}

class GraphBuilder {
 public:
  explicit GraphBuilder(faiss::IndexHNSW& index)
      : g_(index.hnsw), storage_(*index.storage), locks_(new NodeLock[g_.levels.size()]) {}

  // Links point `pt` (vector x) into the graph.
  void Insert(node_t pt, const float* x) {
    thread_local Scratch scratch;
    CodeScorer& score = scratch.scorer;
    score.Bind(storage_, x);
    const int level = g_.levels[size_t(pt)] - 1;
    node_t entry;
    int top;
    {
      std::lock_guard<std::mutex> lock(entry_mu_);
      entry = g_.entry_point;
      top = g_.max_level;
      if (entry < 0) {  // the first point
        g_.entry_point = pt;
        g_.max_level = level;
        return;
      }
    }
    // Greedy descent through the levels above the point's own.
    float entry_score = score(size_t(entry));
    for (int l = top; l > level; --l) {
      for (bool moved = true; moved;) {
        moved = false;
        CopyLinks(entry, l, &scratch.links);
        for (node_t v : scratch.links) {
          const float s = score(size_t(v));
          if (s > entry_score) {
            entry_score = s;
            entry = v;
            moved = true;
          }
        }
      }
    }
    // Beam search and linking at each of the point's levels.
    for (int l = std::min(level, top); l >= 0; --l) {
      SearchLayer(score, pt, entry, entry_score, l, &scratch);
      std::vector<Scored>& found = scratch.found;  // best first
      entry = found.front().second;
      entry_score = found.front().first;
      const size_t max_links = size_t(g_.nb_neighbors(l));
      SelectNeighbors(&found, max_links, &scratch);
      {
        // Other insertions may already have linked pt to their point at
        // this level (they reached pt through its links at a level above):
        // keep those links, re-selecting when they overflow, or their point
        // could lose its only way in.
        std::lock_guard<NodeLock> lock(locks_[size_t(pt)]);
        size_t begin, end;
        g_.neighbor_range(pt, l, &begin, &end);
        std::vector<Scored>& links = scratch.pool;
        links.assign(found.begin(), found.end());
        for (size_t j = begin; j < end && g_.neighbors[j] >= 0; ++j) {
          const node_t v = g_.neighbors[j];
          if (std::none_of(found.begin(), found.end(),
                           [v](const Scored& f) { return f.second == v; })) {
            links.emplace_back(score(size_t(v)), v);
          }
        }
        if (links.size() > max_links) {
          std::sort(links.begin(), links.end(), std::greater<Scored>());
          SelectNeighbors(&links, max_links, &scratch);
        }
        size_t j = begin;
        for (const Scored& f : links) StoreLink(g_.neighbors[j++], f.second);
        for (; j < end; ++j) StoreLink(g_.neighbors[j], -1);
      }
      for (const Scored& f : found) AddLink(f.second, pt, f.first, l, &scratch);
    }
    if (level > top) {
      std::lock_guard<std::mutex> lock(entry_mu_);
      if (level > g_.max_level) {
        g_.max_level = level;
        g_.entry_point = pt;
      }
    }
  }

 private:
  struct Scratch {
    CodeScorer scorer;  // bound to the point being inserted
    CodeScorer pair;    // bound to stored rows (neighbour selection)
    std::vector<float> row;
    std::vector<node_t> links;
    std::vector<Scored> found, kept, pool, frontier;
    ann_internal::VisitedMarks visited;
  };

  // The neighbours of v at level l (a copy; see LoadLink).
  void CopyLinks(node_t v, int l, std::vector<node_t>* out) {
    out->clear();
    size_t begin, end;
    g_.neighbor_range(v, l, &begin, &end);
    for (size_t j = begin; j < end; ++j) {
      const node_t u = LoadLink(g_.neighbors[j]);
      if (u < 0) break;
      out->push_back(u);
    }
  }

  // Prefetches v's neighbour list at level l.
  void PrefetchLinks(node_t v, int l) const {
    const char* p = reinterpret_cast<const char*>(g_.neighbors.data() + g_.offsets[size_t(v)] +
                                                  size_t(g_.cum_nb_neighbors(l)));
    const size_t bytes = size_t(g_.nb_neighbors(l)) * sizeof(node_t);
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
  }

  // Beam search of width efConstruction at level l from `entry`, never
  // visiting `self` (the point being inserted, which other insertions may
  // have linked already); the beam, best first, lands in scratch->found.
  void SearchLayer(const CodeScorer& score, node_t self, node_t entry, float entry_score, int l,
                   Scratch* scratch) {
    const size_t ef = size_t(std::max(g_.efConstruction, 1));
    scratch->visited.Reset(g_.levels.size());
    scratch->visited.TestAndSet(size_t(self));  // never a neighbour of itself
    scratch->visited.TestAndSet(size_t(entry));
    // Heaps on reused vectors: the frontier best on top, the beam worst on
    // top (as a max-heap of negated scores).
    std::vector<Scored>& frontier = scratch->frontier;
    std::vector<Scored>& beam = scratch->found;
    frontier.assign(1, {entry_score, entry});
    beam.assign(1, {-entry_score, entry});
    while (!frontier.empty()) {
      const Scored top = frontier.front();
      if (beam.size() >= ef && top.first < -beam.front().first) break;
      std::pop_heap(frontier.begin(), frontier.end());
      frontier.pop_back();
      CopyLinks(top.second, l, &scratch->links);
      const std::vector<node_t>& links = scratch->links;
      for (size_t j = 0; j < links.size(); ++j) {
        if (j + 1 < links.size()) {
          _mm_prefetch(reinterpret_cast<const char*>(score.row(size_t(links[j + 1]))), _MM_HINT_T0);
        }
        const node_t v = links[j];
        if (scratch->visited.TestAndSet(size_t(v))) continue;
        const float sv = score(size_t(v));
        if (beam.size() < ef || sv > -beam.front().first) {
          if (frontier.empty() || sv > frontier.front().first) PrefetchLinks(v, l);
          frontier.emplace_back(sv, v);
          std::push_heap(frontier.begin(), frontier.end());
          beam.emplace_back(-sv, v);
          std::push_heap(beam.begin(), beam.end());
          if (beam.size() > ef) {
            std::pop_heap(beam.begin(), beam.end());
            beam.pop_back();
          }
        }
      }
    }
    // Best first.
    for (Scored& b : beam) b.first = -b.first;
    std::sort(beam.begin(), beam.end(), std::greater<Scored>());
  }

  // HNSW's heuristic: walking the candidates best first, keep one only if
  // it is more similar to the point than to every one kept so far; at most
  // max_links. `candidates` is sorted best first and is replaced by the kept.
  void SelectNeighbors(std::vector<Scored>* candidates, size_t max_links, Scratch* scratch) {
    if (candidates->size() <= max_links) return;
    std::vector<Scored>& kept = scratch->kept;
    kept.clear();
    CodeScorer& pair = scratch->pair;
    pair = scratch->scorer;
    for (const Scored& c : *candidates) {
      if (kept.size() >= max_links) break;
      pair.BindRow(size_t(c.second), &scratch->row);
      bool good = true;
      for (const Scored& r : kept) {
        if (pair(size_t(r.second)) > c.first) {
          good = false;
          break;
        }
      }
      if (good) kept.push_back(c);
    }
    candidates->swap(kept);
  }

  // Adds the link src -> dst (similarity s) at level l; when src's list is
  // full, re-selects its neighbours from the list and dst.
  void AddLink(node_t src, node_t dst, float s, int l, Scratch* scratch) {
    std::lock_guard<NodeLock> lock(locks_[size_t(src)]);
    size_t begin, end;
    g_.neighbor_range(src, l, &begin, &end);
    if (g_.neighbors[end - 1] < 0) {
      size_t j = end;
      while (j > begin && g_.neighbors[j - 1] < 0) --j;
      StoreLink(g_.neighbors[j], dst);
      return;
    }
    CodeScorer& pair = scratch->pair;
    pair = scratch->scorer;
    pair.BindRow(size_t(src), &scratch->row);
    std::vector<Scored>& pool = scratch->pool;
    pool.clear();
    pool.emplace_back(s, dst);
    for (size_t j = begin; j < end; ++j) {
      const node_t v = g_.neighbors[j];
      pool.emplace_back(pair(size_t(v)), v);
    }
    std::sort(pool.begin(), pool.end(), std::greater<Scored>());
    SelectNeighbors(&pool, end - begin, scratch);
    size_t j = begin;
    for (const Scored& k : pool) StoreLink(g_.neighbors[j++], k.second);
    for (; j < end; ++j) StoreLink(g_.neighbors[j], -1);
  }

  faiss::HNSW& g_;
  const faiss::Index& storage_;
  std::unique_ptr<NodeLock[]> locks_;
  std::mutex entry_mu_;
};

}  // namespace

bool CanBuildWithSimd(const faiss::IndexHNSW& index) {
  CodeScorer probe;
  const std::vector<float> zero(size_t(index.d), 0.f);
  return index.storage != nullptr && probe.Bind(*index.storage, zero.data());
}

void AddToHnsw(faiss::IndexHNSW& index, size_t n, const float* x) {
  if (n == 0) return;
  const size_t n0 = size_t(index.ntotal);
  index.storage->add(faiss::Index::idx_t(n), x);
  index.ntotal = index.storage->ntotal;
  faiss::HNSW& g = index.hnsw;
  g.prepare_level_tab(n, false);
  // Highest level first, so the upper layers exist before the bulk of the
  // points descends through them.
  std::vector<node_t> order(n);
  std::iota(order.begin(), order.end(), node_t(n0));
  std::stable_sort(order.begin(), order.end(),
                   [&](node_t a, node_t b) { return g.levels[size_t(a)] > g.levels[size_t(b)]; });
  GraphBuilder builder(index);
  const int d = index.d;
  builder.Insert(order[0], x + (size_t(order[0]) - n0) * size_t(d));
#pragma omp parallel for schedule(dynamic, 64)
  for (size_t i = 1; i < n; ++i) {
    builder.Insert(order[i], x + (size_t(order[i]) - n0) * size_t(d));
  }
}

}  // namespace attnsearch
