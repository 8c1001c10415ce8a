// Small pieces the HNSW graph search and the graph construction share.
#ifndef ATTNSEARCH_ANN_GRAPH_UTIL_H_
#define ATTNSEARCH_ANN_GRAPH_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <queue>
#include <utility>
#include <vector>

namespace attnsearch::ann_internal {

using faiss_idx_t = int64_t;

// Visited marks for graph search, reused by a thread across searches.
class VisitedMarks {
 public:
  void Reset(size_t n) {
    if (marks_.size() < n) marks_.resize(n, 0);
    if (++epoch_ == 0) {
      std::fill(marks_.begin(), marks_.end(), 0);
      epoch_ = 1;
    }
  }
  // Marks i; returns whether it was already marked.
  bool TestAndSet(size_t i) {
    if (marks_[i] == epoch_) return true;
    marks_[i] = epoch_;
    return false;
  }

 private:
  std::vector<uint16_t> marks_;
  uint16_t epoch_ = 0;
};

// Keeps the k best (position, score) pairs seen.
class TopK {
 public:
  explicit TopK(size_t k) : k_(k) {}
  void Push(float score, faiss_idx_t pos) {
    if (heap_.size() < k_) {
      heap_.emplace(score, pos);
    } else if (score > heap_.top().first) {
      heap_.pop();
      heap_.emplace(score, pos);
    }
  }
  bool full() const { return heap_.size() >= k_; }
  float worst() const { return heap_.top().first; }
  size_t size() const { return heap_.size(); }
  // Best first.
  std::vector<std::pair<float, faiss_idx_t>> Take() {
    std::vector<std::pair<float, faiss_idx_t>> v;
    while (!heap_.empty()) {
      v.push_back(heap_.top());
      heap_.pop();
    }
    std::reverse(v.begin(), v.end());
    return v;
  }

 private:
  using Entry = std::pair<float, faiss_idx_t>;
  size_t k_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
};

}  // namespace attnsearch::ann_internal

#endif  // ATTNSEARCH_ANN_GRAPH_UTIL_H_
