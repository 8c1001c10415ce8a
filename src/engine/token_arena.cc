#include "engine/token_arena.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace attnsearch {
namespace {

// Labels per directory page.
constexpr size_t kPageBits = 12;
constexpr size_t kPageSlots = size_t{1} << kPageBits;
// A record: u32 size, u32 rows, u32 tag, u32 unused, then its bytes;
// records start 16-aligned.
constexpr size_t kHeader = 16;
constexpr size_t kAlign = 16;
constexpr size_t kMinSlabBytes = size_t{64} << 10;

size_t Footprint(size_t record_bytes) {
  return (kHeader + record_bytes + kAlign - 1) / kAlign * kAlign;
}

uint32_t Load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

bool ArenaBudget::TryTake(uint64_t bytes) {
  uint64_t used = used_.load();
  do {
    if (limit_ != 0 && used + bytes > limit_) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes));
  return true;
}

struct TokenArena::Page {
  std::atomic<const char*> slots[kPageSlots] = {};
  uint32_t live = 0;  // slots that are set; written under mu_
};

struct TokenArena::Directory {
  explicit Directory(size_t n) : capacity(n), pages(new std::atomic<Page*>[n]) {
    for (size_t i = 0; i < n; ++i) pages[i].store(nullptr, std::memory_order_relaxed);
  }
  const size_t capacity;  // pages
  std::unique_ptr<std::atomic<Page*>[]> pages;
};

// Memory charged to the budget and counted as allocated, given back when
// the holder is freed.
struct Charge {
  Charge(std::shared_ptr<ArenaBudget> b, std::shared_ptr<std::atomic<uint64_t>> a, size_t n)
      : budget(std::move(b)), allocated(std::move(a)), bytes(n) {
    *allocated += bytes;
  }
  ~Charge() {
    *allocated -= bytes;
    if (budget) budget->Give(bytes);
  }
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  std::shared_ptr<ArenaBudget> budget;
  std::shared_ptr<std::atomic<uint64_t>> allocated;
  size_t bytes;
};

struct TokenArena::Slab {
  Slab(size_t n, std::shared_ptr<ArenaBudget> b, std::shared_ptr<std::atomic<uint64_t>> a)
      : mem(new (std::align_val_t(kAlign)) char[n]),
        capacity(n),
        charge(std::move(b), std::move(a), n) {}
  ~Slab() { ::operator delete[](mem, std::align_val_t(kAlign)); }
  char* const mem;
  const size_t capacity;
  size_t used = 0;
  size_t live = 0;            // bytes of the records still found through it
  std::vector<Label> labels;  // of every record appended
  Charge charge;
};

// Memory retired while the epoch was current; freed with the epoch, which
// goes once every pin on it or on an older epoch is gone (an epoch holds
// the next one).
struct TokenArena::Epoch {
  ~Epoch() {
    retired.clear();
    // The chain is freed in a loop, not by recursion.
    std::shared_ptr<Epoch> n = std::move(next);
    while (n && n.use_count() == 1) {
      std::shared_ptr<Epoch> after = std::move(n->next);
      n.reset();
      n = std::move(after);
    }
  }
  std::vector<std::shared_ptr<void>> retired;
  std::shared_ptr<Epoch> next;
};

TokenArena::TokenArena(std::string name, TokenArenaOptions options)
    : name_(std::move(name)),
      options_(std::move(options)),
      epoch_(std::make_shared<Epoch>()),
      allocated_(std::make_shared<std::atomic<uint64_t>>(0)) {
  absl::MutexLock lock(&mu_);
  next_slab_bytes_ = std::min(kMinSlabBytes, options_.max_slab_bytes);
}

TokenArena::~TokenArena() {
  absl::MutexLock lock(&mu_);
  const uint64_t page_bytes = pages_.size() * sizeof(Page);
  if (options_.budget) options_.budget->Give(page_bytes);
  *allocated_ -= page_bytes;
}

TokenArena::Pin TokenArena::PinNow() const {
  absl::MutexLock lock(&epoch_mu_);
  return Pin(epoch_);
}

std::string_view TokenArena::Find(Label label, uint32_t* tag) const {
  const Directory* d = dir_.load(std::memory_order_acquire);
  const size_t page = size_t(label >> kPageBits);
  if (d == nullptr || page >= d->capacity) return {};
  const Page* p = d->pages[page].load(std::memory_order_acquire);
  if (p == nullptr) return {};
  const char* r = p->slots[label & (kPageSlots - 1)].load(std::memory_order_acquire);
  if (r == nullptr) return {};
  if (tag != nullptr) *tag = Load32(r + 8);
  return std::string_view(r + kHeader, Load32(r));
}

void TokenArena::Prefetch(const Label* labels, size_t n) const {
  const Directory* d = dir_.load(std::memory_order_acquire);
  if (d == nullptr) return;
  auto slot = [&](Label label) -> const std::atomic<const char*>* {
    const size_t page = size_t(label >> kPageBits);
    if (page >= d->capacity) return nullptr;
    const Page* p = d->pages[page].load(std::memory_order_acquire);
    return p == nullptr ? nullptr : &p->slots[label & (kPageSlots - 1)];
  };
  // The slots first, all of them in flight at once; then the records they
  // point to.
  for (size_t i = 0; i < n; ++i) {
    if (const auto* s = slot(labels[i])) __builtin_prefetch(s);
  }
  for (size_t i = 0; i < n; ++i) {
    const auto* s = slot(labels[i]);
    if (s == nullptr) continue;
    const char* r = s->load(std::memory_order_acquire);
    if (r != nullptr) __builtin_prefetch(r);
  }
}

TokenArena::Page* TokenArena::PageOf(Label label) const {
  const size_t page = size_t(label >> kPageBits);
  if (dir_owner_ == nullptr || page >= dir_owner_->capacity) return nullptr;
  return dir_owner_->pages[page].load(std::memory_order_relaxed);
}

void TokenArena::FreePageIfEmpty(Label label) {
  Page* p = PageOf(label);
  // The page of the newest label stays: the next labels go there.
  if (p == nullptr || p->live != 0 || (label >> kPageBits) >= (max_label_ >> kPageBits)) return;
  dir_owner_->pages[size_t(label >> kPageBits)].store(nullptr, std::memory_order_release);
  auto it = std::find_if(pages_.begin(), pages_.end(),
                         [p](const std::unique_ptr<Page>& q) { return q.get() == p; });
  std::unique_ptr<Page> owned = std::move(*it);
  *it = std::move(pages_.back());
  pages_.pop_back();
  // A reader that found the page keeps reading it under its pin; its memory
  // goes back to the budget when it is freed.
  Retire(std::shared_ptr<void>(owned.release(),
                               [budget = options_.budget, allocated = allocated_](void* page) {
                                 delete static_cast<Page*>(page);
                                 *allocated -= sizeof(Page);
                                 if (budget) budget->Give(sizeof(Page));
                               }));
}

std::atomic<const char*>* TokenArena::Slot(Label label) {
  const size_t page = size_t(label >> kPageBits);
  if (dir_owner_ == nullptr || page >= dir_owner_->capacity) {
    size_t n = dir_owner_ ? dir_owner_->capacity : 16;
    while (n <= page) n *= 2;
    auto grown = std::make_shared<Directory>(n);
    if (dir_owner_) {
      for (size_t i = 0; i < dir_owner_->capacity; ++i) {
        grown->pages[i].store(dir_owner_->pages[i].load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
      }
    }
    dir_.store(grown.get(), std::memory_order_release);
    if (dir_owner_) Retire(std::move(dir_owner_));
    dir_owner_ = std::move(grown);
  }
  Page* p = dir_owner_->pages[page].load(std::memory_order_relaxed);
  if (p == nullptr) {
    if (options_.budget && !options_.budget->TryTake(sizeof(Page))) return nullptr;
    pages_.push_back(std::make_unique<Page>());
    p = pages_.back().get();
    *allocated_ += sizeof(Page);
    dir_owner_->pages[page].store(p, std::memory_order_release);
  }
  return &p->slots[label & (kPageSlots - 1)];
}

const char* TokenArena::Append(Label label, std::string_view record, uint32_t rows, uint32_t tag,
                               Slab** slab) {
  const size_t need = Footprint(record.size());
  if (tail_ == nullptr || tail_->capacity - tail_->used < need) {
    size_t bytes = std::max(next_slab_bytes_, need);
    if (options_.budget && !options_.budget->TryTake(bytes)) {
      // Near the limit: a slab just large enough.
      bytes = std::max(need, kMinSlabBytes);
      if (!options_.budget->TryTake(bytes)) return nullptr;
    }
    auto s = std::make_shared<Slab>(bytes, options_.budget, allocated_);
    tail_ = s.get();
    slabs_.emplace(s->mem, std::move(s));
    next_slab_bytes_ = std::min(next_slab_bytes_ * 2, options_.max_slab_bytes);
  }
  char* r = tail_->mem + tail_->used;
  const uint32_t size = uint32_t(record.size());
  std::memcpy(r, &size, 4);
  std::memcpy(r + 4, &rows, 4);
  std::memcpy(r + 8, &tag, 4);
  std::memcpy(r + kHeader, record.data(), record.size());
  tail_->used += need;
  tail_->live += need;
  tail_->labels.push_back(label);
  *slab = tail_;
  return r;
}

TokenArena::Slab* TokenArena::SlabOf(const char* p) {
  auto it = slabs_.upper_bound(p);
  return std::prev(it)->second.get();
}

absl::Status TokenArena::Add(Label label, std::string_view record, uint32_t rows, uint32_t tag) {
  return Put(label, record, rows, tag, /*replace=*/false);
}

absl::Status TokenArena::Replace(Label label, std::string_view record, uint32_t rows,
                                 uint32_t tag) {
  return Put(label, record, rows, tag, /*replace=*/true);
}

absl::Status TokenArena::Put(Label label, std::string_view record, uint32_t rows, uint32_t tag,
                             bool replace) {
  absl::MutexLock lock(&mu_);
  std::atomic<const char*>* slot = Slot(label);
  const char* old = slot == nullptr ? nullptr : slot->load(std::memory_order_relaxed);
  if (old != nullptr && !replace) {
    return absl::AlreadyExistsError(
        absl::StrCat(name_, ": the token arena already holds label ", label));
  }
  if (old == nullptr && replace) {
    return absl::NotFoundError(absl::StrCat(name_, ": the token arena holds no label ", label));
  }
  Slab* slab = nullptr;
  const char* r = slot == nullptr ? nullptr : Append(label, record, rows, tag, &slab);
  if (r == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat(name_, ": the token arenas' memory budget is spent: ", options_.budget->used(),
                     " of its ", options_.budget->limit(), " bytes are taken, ", allocated_->load(),
                     " of them by this arena"));
  }
  slot->store(r, std::memory_order_release);
  if (old == nullptr) PageOf(label)->live += 1;
  max_label_ = std::max(max_label_, label);
  records_ += 1;
  rows_ += rows;
  live_bytes_ += record.size();
  if (old != nullptr) {
    // A reader that found the old record keeps reading it under its pin.
    Forget(old);
  }
  return absl::OkStatus();
}

void TokenArena::Forget(const char* r) {
  const uint32_t size = Load32(r);
  records_ -= 1;
  rows_ -= Load32(r + 4);
  live_bytes_ -= size;
  Slab* slab = SlabOf(r);
  slab->live -= Footprint(size);
  MaybeCompact(slab);
}

void TokenArena::Remove(Label label) {
  absl::MutexLock lock(&mu_);
  const size_t page = size_t(label >> kPageBits);
  if (dir_owner_ == nullptr || page >= dir_owner_->capacity) return;
  Page* p = dir_owner_->pages[page].load(std::memory_order_relaxed);
  if (p == nullptr) return;
  std::atomic<const char*>& slot = p->slots[label & (kPageSlots - 1)];
  const char* r = slot.load(std::memory_order_relaxed);
  if (r == nullptr) return;
  slot.store(nullptr, std::memory_order_release);
  p->live -= 1;
  Forget(r);
  // Labels only grow, so a page whose labels are all gone is not written
  // again: without this, every write would leave 8 bytes of directory.
  FreePageIfEmpty(label);
}

void TokenArena::MaybeCompact(Slab* slab) {
  if (slab == tail_ || double(slab->live) >= options_.compact_below * double(slab->used)) return;
  CompactSlab(slab);
}

void TokenArena::Compact(double below) {
  absl::MutexLock lock(&mu_);
  std::vector<Slab*> sparse;
  for (const auto& [mem, slab] : slabs_) {
    if (slab.get() != tail_ && double(slab->live) < below * double(slab->used)) {
      sparse.push_back(slab.get());
    }
  }
  // Slabs the moves create are new and full: only those found first.
  for (Slab* slab : sparse) {
    if (!CompactSlab(slab)) return;
  }
}

bool TokenArena::CompactSlab(Slab* slab) {
  // Its live records move to the tail; a reader that found one here keeps
  // reading it here (the slab is freed after its pin).
  for (Label label : slab->labels) {
    if (slab->live == 0) break;
    Page* p = PageOf(label);  // none when its labels are all gone
    if (p == nullptr) continue;
    std::atomic<const char*>* slot = &p->slots[label & (kPageSlots - 1)];
    const char* r = slot->load(std::memory_order_relaxed);
    if (r < slab->mem || r >= slab->mem + slab->capacity) continue;
    const uint32_t size = Load32(r);
    Slab* to = nullptr;
    const char* moved =
        Append(label, std::string_view(r + kHeader, size), Load32(r + 4), Load32(r + 8), &to);
    if (moved == nullptr) return false;  // no memory to move into: tried again on the next removal
    slot->store(moved, std::memory_order_release);
    slab->live -= Footprint(size);
  }
  auto it = slabs_.find(slab->mem);
  std::shared_ptr<Slab> retired = std::move(it->second);
  slabs_.erase(it);
  compactions_ += 1;
  Retire(std::move(retired));
  return true;
}

void TokenArena::Retire(std::shared_ptr<void> what) {
  std::shared_ptr<Epoch> old;
  absl::MutexLock lock(&epoch_mu_);
  epoch_->retired.push_back(std::move(what));
  auto next = std::make_shared<Epoch>();
  epoch_->next = next;
  old = std::exchange(epoch_, std::move(next));
}

TokenArena::Stats TokenArena::stats() const {
  Stats s;
  s.records = records_.load();
  s.rows = rows_.load();
  s.live_bytes = live_bytes_.load();
  s.allocated_bytes = allocated_->load();
  s.compactions = compactions_.load();
  return s;
}

}  // namespace attnsearch
