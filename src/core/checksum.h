// The one checksum of the files the engine writes outside RocksDB (the ANN
// snapshot) and of the indexer's input fingerprints: XXH3-64 (xxHash), whose
// error detection is that of a 64-bit hash of known quality (it passes the
// SMHasher suite), at memory speed.
#ifndef ATTNSEARCH_CORE_CHECKSUM_H_
#define ATTNSEARCH_CORE_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace attnsearch {

// XXH3-64 of `n` bytes at `data` (seed 0).
uint64_t Checksum64(const void* data, size_t n);

}  // namespace attnsearch

#endif  // ATTNSEARCH_CORE_CHECKSUM_H_
