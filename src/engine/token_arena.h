// TokenArena: one collection's token matrices held in memory, by label, so
// that a search scores its candidates without reading the store.
//
// A record is the bytes a label's tokens take (today the store's encoding of
// its matrix: rows, int8 scales, elements). Records are appended to slabs
// (64 KiB doubling to max_slab_bytes) and found through a directory indexed
// by label; labels are versions, so a record never changes once added.
//
// Readers take no lock. A search pins the arena (Pin) before it looks its
// candidates up, and every record it finds stays readable until the pin is
// dropped:
//   - Remove clears the label's directory slot at once (a reader that looks
//     afterwards finds nothing, and reads the store instead); the record's
//     bytes stay until its slab is compacted. A directory page (4,096
//     labels) whose slots are all clear is retired, unless it holds the
//     newest label: labels only grow, so overwrites leave no directory
//     behind.
//   - A slab whose live share falls below compact_below is compacted: its
//     live records move to the tail slab, their slots are switched, and the
//     old slab is retired. Retired memory is freed once every pin taken
//     before the retirement is gone (epochs, freed oldest first).
//
// Memory: slabs and directory pages are charged to an ArenaBudget that
// several arenas share (the server's). What the budget refuses is not
// allocated: Add answers RESOURCE_EXHAUSTED and the arena stays as it was.
//
// Thread safety: Pin and Find may be called concurrently with everything;
// Add and Remove are serialised internally.
#ifndef ATTNSEARCH_ENGINE_TOKEN_ARENA_H_
#define ATTNSEARCH_ENGINE_TOKEN_ARENA_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/types.h"

namespace attnsearch {

// Bytes several arenas may hold together.
class ArenaBudget {
 public:
  // limit_bytes 0: no limit.
  explicit ArenaBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}
  // Takes `bytes` if they fit under the limit.
  bool TryTake(uint64_t bytes);
  void Give(uint64_t bytes) { used_.fetch_sub(bytes); }
  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_.load(); }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

struct TokenArenaOptions {
  // Shared with other arenas; null: no limit.
  std::shared_ptr<ArenaBudget> budget;
  // Largest slab; a record larger than this gets a slab of its own.
  // Default: 16 MiB.
  size_t max_slab_bytes = size_t{16} << 20;
  // A slab other than the tail is compacted once its live records fill less
  // than this share of it. Default: 0.5.
  double compact_below = 0.5;
};

class TokenArena {
 public:
  // `name` names the arena in errors (the collection).
  TokenArena(std::string name, TokenArenaOptions options);
  ~TokenArena();
  TokenArena(const TokenArena&) = delete;
  TokenArena& operator=(const TokenArena&) = delete;

  // Keeps every record found after it readable while it lives. Cheap to
  // take (a mutex held for a pointer copy) and to move.
  class Pin {
   public:
    Pin() = default;

   private:
    friend class TokenArena;
    explicit Pin(std::shared_ptr<const void> epoch) : epoch_(std::move(epoch)) {}
    std::shared_ptr<const void> epoch_;
  };
  Pin PinNow() const;

  // The record of `label`, or empty when the arena holds none; its tag to
  // *tag when given. Valid while a pin taken before the call lives; 16-byte
  // aligned.
  std::string_view Find(Label label, uint32_t* tag = nullptr) const;
  // Asks the cache for the slots and the records' first bytes of `n`
  // labels, so that the Finds that follow do not each wait on memory
  // (a search's candidates lie all over the arena).
  void Prefetch(const Label* labels, size_t n) const;

  // Adds the record of `label` (`rows` token rows, counted in the stats;
  // `tag` is the caller's, e.g. the record's format). RESOURCE_EXHAUSTED
  // naming the sizes when the budget refuses a slab; ALREADY_EXISTS when
  // the label has a record.
  absl::Status Add(Label label, std::string_view record, uint32_t rows, uint32_t tag = 0);
  // Replaces the record of `label` (e.g. re-encoded): readers find the new
  // one from now on, and one that found the old keeps it under its pin.
  // NOT_FOUND when the label has none; RESOURCE_EXHAUSTED as Add (the old
  // record stays).
  absl::Status Replace(Label label, std::string_view record, uint32_t rows, uint32_t tag = 0);
  // Removes the record of `label`, if any.
  void Remove(Label label);
  // Compacts every slab but the tail whose live records fill less than
  // `below` of it (after many records were replaced, e.g. by a
  // re-encoding, slabs may each be just over compact_below, so up to twice
  // the live bytes stay allocated). Stops early when the budget refuses a
  // slab to move into.
  void Compact(double below);

  struct Stats {
    uint64_t records = 0;          // labels held
    uint64_t rows = 0;             // their token rows
    uint64_t live_bytes = 0;       // their records' bytes
    uint64_t allocated_bytes = 0;  // slabs and directory, retired ones until freed
    uint64_t compactions = 0;      // slabs compacted
  };
  Stats stats() const;

 private:
  struct Slab;
  struct Page;
  struct Directory;
  struct Epoch;
  // Where `label`'s slot is, growing the directory; null when the budget
  // refuses a directory page. REQUIRES: mu_.
  std::atomic<const char*>* Slot(Label label) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The directory page holding `label`'s slot; null when there is none.
  // REQUIRES: mu_.
  Page* PageOf(Label label) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retires `label`'s page once none of its slots is set, unless it is the
  // newest label's page. REQUIRES: mu_.
  void FreePageIfEmpty(Label label) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies `record` into the tail slab (a new one when it does not fit);
  // null when the budget refuses. REQUIRES: mu_.
  const char* Append(Label label, std::string_view record, uint32_t rows, uint32_t tag, Slab** slab)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Put(Label label, std::string_view record, uint32_t rows, uint32_t tag, bool replace)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Counts the record at `r` as gone (its slot already changed), and
  // compacts its slab when due. REQUIRES: mu_.
  void Forget(const char* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The slab holding `p`. REQUIRES: mu_.
  Slab* SlabOf(const char* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeCompact(Slab* slab) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the slab's live records to the tail and retires it; false when
  // the budget refused the memory (the slab stays, partly moved).
  bool CompactSlab(Slab* slab) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees `what` once every pin taken so far is gone.
  void Retire(std::shared_ptr<void> what);

  const std::string name_;
  const TokenArenaOptions options_;

  mutable absl::Mutex epoch_mu_;
  std::shared_ptr<Epoch> epoch_ ABSL_GUARDED_BY(epoch_mu_);

  std::atomic<const Directory*> dir_{nullptr};

  absl::Mutex mu_;  // writers
  std::shared_ptr<Directory> dir_owner_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Page>> pages_ ABSL_GUARDED_BY(mu_);
  std::map<const char*, std::shared_ptr<Slab>> slabs_ ABSL_GUARDED_BY(mu_);  // by address
  Slab* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  Label max_label_ ABSL_GUARDED_BY(mu_) = 0;         // the largest label put
  size_t next_slab_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // set by the constructor

  std::atomic<uint64_t> records_{0}, rows_{0}, live_bytes_{0}, compactions_{0};
  std::shared_ptr<std::atomic<uint64_t>> allocated_;
};

}  // namespace attnsearch

#endif  // ATTNSEARCH_ENGINE_TOKEN_ARENA_H_
