#include "core/checksum.h"

#include "xxhash.h"

namespace attnsearch {

uint64_t Checksum64(const void* data, size_t n) { return XXH3_64bits(data, n); }

}  // namespace attnsearch
