// libFuzzer entry point of one target; ATTN_FUZZ_BODY names its body in
// fuzz_targets.h (set per binary by fuzz_tests.cmake).
#include "fuzz/fuzz_targets.h"

#ifndef ATTN_FUZZ_BODY
#error "ATTN_FUZZ_BODY must name a body of fuzz_targets.h"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return attnsearch::fuzz::ATTN_FUZZ_BODY(data, size);
}
