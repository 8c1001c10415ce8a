// LabelBitmap: a dense set of labels, one bit per label, growing on demand.
//
// Used for tombstones and for evaluated filters: a query's filter becomes one
// bitmap (postings OR-ed per condition, AND-ed across conditions, tombstones
// removed), which the ANN search tests per node and counts to choose between
// an exact scan of the matches and a graph search.
//
// Not thread-safe for writes; concurrent const use is fine.
#ifndef ATTNSEARCH_CORE_LABEL_BITMAP_H_
#define ATTNSEARCH_CORE_LABEL_BITMAP_H_

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "core/types.h"

namespace attnsearch {

class LabelBitmap {
 public:
  LabelBitmap() = default;

  // Adds `label`; returns whether it was absent.
  bool Set(Label label) {
    const size_t word = size_t(label / 64);
    if (word >= words_.size()) words_.resize(word + 1 + word / 2, 0);
    const uint64_t bit = uint64_t{1} << (label % 64);
    if (words_[word] & bit) return false;
    words_[word] |= bit;
    ++count_;
    return true;
  }
  // Removes `label`; returns whether it was present.
  bool Reset(Label label) {
    const size_t word = size_t(label / 64);
    if (word >= words_.size()) return false;
    const uint64_t bit = uint64_t{1} << (label % 64);
    if (!(words_[word] & bit)) return false;
    words_[word] &= ~bit;
    --count_;
    return true;
  }
  bool Test(Label label) const {
    const size_t word = size_t(label / 64);
    return word < words_.size() && (words_[word] >> (label % 64)) & 1;
  }
  // Number of labels in the set.
  size_t count() const { return count_; }
  bool empty() const { return count_ == 0; }

  // this &= other.
  void And(const LabelBitmap& other) {
    if (words_.size() > other.words_.size()) words_.resize(other.words_.size());
    for (size_t i = 0; i < words_.size(); ++i) words_[i] &= other.words_[i];
    Recount();
  }
  // this &= ~other.
  void AndNot(const LabelBitmap& other) {
    const size_t n = std::min(words_.size(), other.words_.size());
    for (size_t i = 0; i < n; ++i) words_[i] &= ~other.words_[i];
    Recount();
  }
  // this |= other.
  void Or(const LabelBitmap& other) {
    if (words_.size() < other.words_.size()) words_.resize(other.words_.size(), 0);
    for (size_t i = 0; i < other.words_.size(); ++i) words_[i] |= other.words_[i];
    Recount();
  }

  // Calls fn(label) for every label in increasing order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (size_t i = 0; i < words_.size(); ++i) {
      for (uint64_t w = words_[i]; w != 0; w &= w - 1) {
        fn(Label(i) * 64 + Label(std::countr_zero(w)));
      }
    }
  }
  // The labels in increasing order.
  std::vector<Label> ToVector() const {
    std::vector<Label> out;
    out.reserve(count_);
    ForEach([&](Label l) { out.push_back(l); });
    return out;
  }

 private:
  void Recount() {
    count_ = 0;
    for (uint64_t w : words_) count_ += size_t(std::popcount(w));
  }

  std::vector<uint64_t> words_;
  size_t count_ = 0;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_LABEL_BITMAP_H_
