#include "engine/filter_index.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace attnsearch {

void FilterIndex::Add(Label label, const Document& doc) {
  absl::WriterMutexLock lock(&mu_);
  for (const auto& [k, v] : doc.metadata) {
    std::vector<Label>& list = postings_[k][v];
    // Labels arrive in increasing order; a catch-up may offer one again.
    if (list.empty() || list.back() < label) {
      list.push_back(label);
    } else if (auto it = std::lower_bound(list.begin(), list.end(), label);
               it == list.end() || *it != label) {
      list.insert(it, label);
    }
    double x;
    if (config_.IsNumericField(k) && absl::SimpleAtod(v, &x) && std::isfinite(x)) {
      numeric_[k].emplace(x, label);
    }
  }
}

absl::Status FilterIndex::Check(const std::vector<MetadataCondition>& must,
                                const std::vector<RangeCondition>& ranges,
                                const CollectionConfig& config) {
  for (size_t i = 0; i < must.size(); ++i) {
    if (must[i].key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("filter.must[", i, "].key: must not be empty"));
    }
    if (must[i].values.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("filter.must[", i, "].values: must not be empty"));
    }
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    const RangeCondition& r = ranges[i];
    const std::string field = absl::StrCat("filter.ranges[", i, "]");
    if (r.key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".key: must not be empty"));
    }
    if (!config.IsNumericField(r.key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".key: \"", r.key, "\" is not a numeric field of this collection"));
    }
    if (!r.gte && !r.gt && !r.lte && !r.lt) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": no bound given; give gte, gt, lte and/or lt"));
    }
    if (r.gte && r.gt) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": gte and gt both given; give one lower bound"));
    }
    if (r.lte && r.lt) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": lte and lt both given; give one upper bound"));
    }
    for (const auto& [name, bound] : {std::pair{"gte", r.gte}, std::pair{"gt", r.gt},
                                      std::pair{"lte", r.lte}, std::pair{"lt", r.lt}}) {
      if (bound && std::isnan(*bound)) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".", name, ": is NaN"));
      }
    }
    const std::optional<double> lower = r.gte ? r.gte : r.gt;
    const std::optional<double> upper = r.lte ? r.lte : r.lt;
    if (lower && upper && *lower > *upper) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": the lower bound ", *lower, " is above the upper bound ", *upper));
    }
  }
  return absl::OkStatus();
}

LabelBitmap FilterIndex::Match(const std::vector<MetadataCondition>& must,
                               const std::vector<RangeCondition>& ranges) const {
  absl::ReaderMutexLock lock(&mu_);
  LabelBitmap admitted;
  bool first = true;
  // ANDs one condition's matches into the result.
  auto combine = [&](LabelBitmap&& matches) {
    if (first) {
      admitted = std::move(matches);
      first = false;
    } else {
      admitted.And(matches);
    }
  };
  for (const auto& cond : must) {
    LabelBitmap matches;
    if (auto key_it = postings_.find(cond.key); key_it != postings_.end()) {
      for (const auto& v : cond.values) {
        auto val_it = key_it->second.find(v);
        if (val_it == key_it->second.end()) continue;
        for (Label l : val_it->second) matches.Set(l);
      }
    }
    combine(std::move(matches));
    if (admitted.empty()) return admitted;
  }
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr Label kMaxLabel = std::numeric_limits<Label>::max();
  for (const auto& r : ranges) {
    LabelBitmap matches;
    if (auto it = numeric_.find(r.key); it != numeric_.end()) {
      const auto& values = it->second;
      const double hi = r.lte ? *r.lte : r.lt ? *r.lt : kInf;
      const bool hi_inclusive = !r.lt;
      auto pos = r.gt ? values.upper_bound({*r.gt, kMaxLabel})
                      : values.lower_bound({r.gte ? *r.gte : -kInf, 0});
      for (; pos != values.end(); ++pos) {
        if (hi_inclusive ? pos->first > hi : pos->first >= hi) break;
        matches.Set(pos->second);
      }
    }
    combine(std::move(matches));
    if (admitted.empty()) return admitted;
  }
  return admitted;
}

}  // namespace attnsearch
