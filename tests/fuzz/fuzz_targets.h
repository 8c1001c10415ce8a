// The fuzz targets' bodies, one function per target, shared by the libFuzzer
// binaries (fuzz_main.cc, built with ATTN_FUZZ=ON) and by fuzz_replay_test
// (every build), which runs each target's seed corpus and every recorded
// crash input through the same function.
//
// Each body takes arbitrary bytes and returns 0. A violated expectation (a
// decoder accepting what it cannot round-trip, a span outside its input, ...)
// prints what went wrong and aborts, which libFuzzer and the replay test both
// report as a crash.
#ifndef ATTNSEARCH_TESTS_FUZZ_FUZZ_TARGETS_H_
#define ATTNSEARCH_TESTS_FUZZ_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace attnsearch::fuzz {

// request: byte 0 picks the message (even: SearchRequest, odd:
// UpsertRequest); the rest is parsed as that protobuf message and, when it
// parses, converted as the server converts it (server/convert.h) and run
// against a small collection (dim 16, numeric field "n") held by a Catalog in
// a temporary directory: Search, or Upsert (then its new ids are deleted
// again so the collection stays small).
int FuzzRequest(const uint8_t* data, size_t size);

// jsonl: byte 0 picks ParseOptions (dim 1..8, beir); the rest is one input
// line for indexer::ParseJsonLine. A document it accepts must satisfy
// ValidateDocument and have the shapes the options ask for.
int FuzzJsonLine(const uint8_t* data, size_t size);

// fvecs: the bytes are an .fvecs file (plain, or gzip when they start with
// gzip's magic) read by ReadFvecs and by the indexer's fvecs source.
int FuzzFvecs(const uint8_t* data, size_t size);

// tokenizer: byte 0 picks TokenizerOptions; the rest is text for
// text::Tokenizer. Tokens must be non-empty, in order, within the input and
// on code point boundaries; invalid UTF-8 must be an error.
int FuzzTokenizer(const uint8_t* data, size_t size);

// codec: byte 0 picks a decoder of storage/codec.h (label key, document
// record, token matrix with dim and dtype from byte 1, pooled vector,
// config, ANN tuning, u64); the rest is the stored value. Decoding never
// crashes; what decodes re-encodes and decodes to the same value.
int FuzzCodec(const uint8_t* data, size_t size);

}  // namespace attnsearch::fuzz

// Aborts with a message when `cond` is false (a finding, not an input error).
#define ATTN_FUZZ_CHECK(cond)                                                            \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#endif  // ATTNSEARCH_TESTS_FUZZ_FUZZ_TARGETS_H_
