#include "rerank/code_scorer.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace attnsearch {
namespace {

int8_t Steps(float value, float step) {
  return int8_t(std::clamp(std::lround(value / step), -127L, 127L));
}

uint32_t ReadId(const uint8_t* code, size_t id_bytes, uint32_t num_centroids) {
  uint32_t id = 0;
  if (id_bytes == 2) {
    uint16_t short_id;
    std::memcpy(&short_id, code, 2);  // little endian
    id = short_id;
  } else {
    std::memcpy(&id, code, 4);
  }
  return id < num_centroids ? id : 0;
}

// Codes ahead of the one being decoded whose centroid rows are asked for:
// with 8,192 centroids (1 MiB of c8 rows at d = 128) a row is rarely in L1,
// and its load waited for (AVX-512, 2-bit codes at d = 128 on Zen 5:
// 5.3-6.0 ns a token without, 4.3-4.6 with 4 to 16 ahead; unchanged at 512
// centroids). The AVX2 decoding measured no gain from it.
constexpr size_t kCentroidsAhead = 8;

// Asks for the c8 row of code i + kCentroidsAhead, if there is one.
inline void PrefetchCentroidAhead(const uint8_t* code, size_t i, size_t n, size_t stride,
                                  size_t id_bytes, uint32_t num_centroids, const int8_t* centroids,
                                  uint32_t d) {
  if (i + kCentroidsAhead >= n) return;
  const int8_t* row =
      centroids + size_t(ReadId(code + kCentroidsAhead * stride, id_bytes, num_centroids)) * d;
  for (uint32_t t = 0; t < d; t += 64) __builtin_prefetch(row + t, 0, 3);
}

// Bits p, p + b, p + 2b, ... of a 64-bit word: where bit p of each
// dimension's b-bit code lies.
constexpr uint64_t Pattern(uint32_t b, uint32_t p) {
  uint64_t m = 0;
  for (uint32_t j = 0; j * b < 64; ++j) m |= uint64_t(1) << (j * b + p);
  return m;
}
// The patterns of bits 0 .. b-1, computed at compile time.
template <uint32_t kBits>
constexpr std::array<uint64_t, kBits> Patterns() {
  std::array<uint64_t, kBits> a{};
  for (uint32_t p = 0; p < kBits; ++p) a[p] = Pattern(kBits, p);
  return a;
}

const bool kHasAvx512Bw = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("bmi2");
const bool kHasBitalg = kHasAvx512Bw && __builtin_cpu_supports("avx512bitalg");

// (c · j + 128) >> 8 in each of 64 s8 lanes, for j in 0..255: vpmaddubsw
// multiplies the unsigned j, set in the even (j_even) or the odd (j_odd)
// byte of each 16-bit pair and 0 in the other, by the signed c, so each
// product has a 16-bit lane of its own (|c · j| + 128 <= 127 · 255 + 128
// fits); the result is bits 8..15 of product + 128, moved down for the even
// bytes and in place for the odd ones.
__attribute__((target("avx512f,avx512bw"))) inline __m512i ApplyGain(__m512i c, __m512i j_even,
                                                                     __m512i j_odd) {
  const __m512i half = _mm512_set1_epi16(128);
  const __m512i even =
      _mm512_srli_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(j_even, c), half), 8);
  const __m512i odd = _mm512_add_epi16(_mm512_maddubs_epi16(j_odd, c), half);
  return _mm512_mask_blend_epi8(__mmask64(0xAAAAAAAAAAAAAAAAull), even, odd);
}

// The masks of bits p = 0 .. kBits-1 of the 64 dimensions' codes in the
// block `from` (kBits·8 bytes, `have` of them present): mask bit i is bit p
// of dimension i's code, i.e. bit i·kBits + p of the block.
template <uint32_t kBits, bool kBitalg>
__attribute__((target("avx512f,avx512bw,avx512bitalg,bmi2"))) inline void BitMasks(
    const uint8_t* from, size_t have, __mmask64* bit) {
  if constexpr (kBitalg) {
    // vpshufbitqmb takes mask bit i from 64-bit lane i/8 at the position in
    // byte i of the index: lane l (dimensions 8l .. 8l+7) gets the block's
    // word l·kBits/8, and byte i the position (i·kBits + p) mod 64.
    alignas(64) static constexpr std::array<int64_t, 8> kWordOfLane = [] {
      std::array<int64_t, 8> lane{};
      for (uint32_t l = 0; l < 8; ++l) lane[l] = l * kBits / 8;
      return lane;
    }();
    alignas(64) static constexpr std::array<std::array<uint8_t, 64>, kBits> kPlace = [] {
      std::array<std::array<uint8_t, 64>, kBits> place{};
      for (uint32_t p = 0; p < kBits; ++p) {
        for (uint32_t i = 0; i < 64; ++i) place[p][i] = uint8_t((i * kBits + p) % 64);
      }
      return place;
    }();
    const __mmask64 bytes = have >= 64 ? ~__mmask64(0) : (__mmask64(1) << have) - 1;
    const __m512i words = _mm512_permutexvar_epi64(_mm512_load_si512(kWordOfLane.data()),
                                                   _mm512_maskz_loadu_epi8(bytes, from));
    for (uint32_t p = 0; p < kBits; ++p) {
      bit[p] = _mm512_bitshuffle_epi64_mask(words, _mm512_load_si512(kPlace[p].data()));
    }
  } else {
    constexpr uint32_t kPerWord = 64 / kBits;
    static constexpr std::array<uint64_t, kBits> kPattern = Patterns<kBits>();
    uint64_t words[kBits] = {};
    if (have >= kBits * 8) {
      std::memcpy(words, from, kBits * 8);  // a fixed size: plain loads
    } else {
      std::memcpy(words, from, have);
    }
    for (uint32_t p = 0; p < kBits; ++p) {
      uint64_t m = 0;
      for (uint32_t w = 0; w < kBits; ++w) {
        m |= _pext_u64(words[w], kPattern[p]) << (w * kPerWord);
      }
      bit[p] = __mmask64(m);
    }
  }
}

// 64 dimensions at a time: the masks of each code bit select, by a tree of
// byte blends, among the 2^b level vectors; then the centroid's bytes
// (times the gain, if any: kGain) are added with saturation. kFull: dim is
// a multiple of 64 and ids take 2 bytes, the common case, with no lane
// masks. The tables are read through local pointers, so the compiler need
// not reload them after each store to `out`. kDim (0: dim at run time): a
// dim of 64 or 128 known at compile time, for 1 or 2 bits, with kFull; the
// level vectors are then loaded once, before the first code, and held in
// registers. (Loaded next to each blend, GCC makes them merge-masked loads,
// which on AMD Zen 5 took 2-bit codes at d = 128 to 6.4-8.1 ns a token
// against 3.8 held.)
template <uint32_t kBits, bool kBitalg, bool kGain, bool kFull, uint32_t kDim = 0>
__attribute__((target("avx512f,avx512bw,avx512bitalg,bmi2"))) void DecodeAvx512(
    const Int8CodeBook& book, const uint8_t* codes, size_t n, int8_t* out) {
  constexpr uint32_t kLevels = 1u << kBits;
  static_assert(kDim == 0 || (kFull && kDim % 64 == 0 && kLevels * kDim / 64 <= 8));
  const uint32_t d = kDim != 0 ? kDim : book.dim, num_centroids = book.num_centroids;
  const size_t id_bytes = kFull ? 2 : book.id_bytes;
  const size_t stride = book.code_bytes();
  const size_t residual_bytes = stride - id_bytes - (kGain ? 1 : 0);
  const int8_t* const centroids = book.centroids.data();
  const int8_t* const levels = book.levels.data();
  // kDim: every level vector, 64 dimensions each, in registers.
  constexpr uint32_t kHeld = kDim != 0 ? kDim / 64 : 1;
  __m512i held[kHeld][kLevels];
  if constexpr (kDim != 0) {
    for (uint32_t h = 0; h < kHeld; ++h) {
      for (uint32_t b = 0; b < kLevels; ++b) {
        held[h][b] = _mm512_loadu_si512(levels + size_t(b) * d + h * 64);
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * stride;
    PrefetchCentroidAhead(code, i, n, stride, id_bytes, num_centroids, centroids, d);
    const int8_t* c8 = centroids + size_t(ReadId(code, id_bytes, num_centroids)) * d;
    __m512i j_even = _mm512_setzero_si512(), j_odd = j_even;
    if constexpr (kGain) {
      const int j = code[id_bytes];
      j_even = _mm512_set1_epi16(int16_t(j));
      j_odd = _mm512_set1_epi16(int16_t(j << 8));
    }
    const uint8_t* res = code + id_bytes + (kGain ? 1 : 0);
    int8_t* row = out + i * d;
    for (uint32_t t0 = 0; t0 < d; t0 += 64) {
      __mmask64 lanes = ~__mmask64(0);
      if constexpr (!kFull) {
        const uint32_t width = std::min<uint32_t>(64, d - t0);
        lanes = width == 64 ? ~__mmask64(0) : (__mmask64(1) << width) - 1;
      }
      const size_t from = size_t(t0) * kBits / 8;
      __mmask64 bit[kBits];
      BitMasks<kBits, kBitalg>(res + from, kFull ? kBits * 8 : residual_bytes - from, bit);
      __m512i level[kLevels];
      for (uint32_t b = 0; b < kLevels; ++b) {
        if constexpr (kDim != 0) {
          level[b] = held[t0 / 64][b];
        } else {
          level[b] = _mm512_maskz_loadu_epi8(lanes, levels + size_t(b) * d + t0);
        }
      }
      // Level index = Σ_p bit_p 2^p: halve the candidates bit after bit.
      for (uint32_t p = 0, count = kLevels; p < kBits; ++p, count /= 2) {
        for (uint32_t q = 0; q < count / 2; ++q) {
          level[q] = _mm512_mask_blend_epi8(bit[p], level[2 * q], level[2 * q + 1]);
        }
      }
      __m512i c = _mm512_maskz_loadu_epi8(lanes, c8 + t0);
      if constexpr (kGain) c = ApplyGain(c, j_even, j_odd);
      _mm512_mask_storeu_epi8(row + t0, lanes, _mm512_adds_epi8(c, level[0]));
    }
  }
}

const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");

// ApplyGain on AVX2 (32 lanes).
__attribute__((target("avx2"))) inline __m256i ApplyGainAvx2(__m256i c, __m256i j_even,
                                                             __m256i j_odd) {
  const __m256i half = _mm256_set1_epi16(128);
  const __m256i even =
      _mm256_srli_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(j_even, c), half), 8);
  const __m256i odd = _mm256_add_epi16(_mm256_maddubs_epi16(j_odd, c), half);
  return _mm256_blendv_epi8(even, odd, _mm256_set1_epi16(int16_t(0xFF00)));
}

// A 32-bit mask as 32 byte lanes: 0xFF where its bit is set.
__attribute__((target("avx2"))) inline __m256i ByteLanes(uint32_t mask) {
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(int(mask)),
                          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                           2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// The decoding on AVX2 and BMI2 (CPUs without AVX-512 BW, e.g. AMD Zen 3),
// 32 dimensions at a time, as DecodeAvx512: each code bit's mask gathered
// by pext from the block's kBits·4 bytes, the levels chosen by byte blends,
// the centroid's bytes (times the gain) added with saturation.
// REQUIRES: dim % 32 == 0.
template <uint32_t kBits, bool kGain>
__attribute__((target("avx2,bmi2"))) void DecodeAvx2(const Int8CodeBook& book, const uint8_t* codes,
                                                     size_t n, int8_t* out) {
  constexpr uint32_t kLevels = 1u << kBits;
  constexpr auto kPattern = Patterns<kBits>();
  constexpr uint32_t kPerWord = 64 / kBits;               // dimensions a 64-bit word holds
  constexpr uint32_t kWords = kBits > 1 ? kBits / 2 : 1;  // 64-bit words a block takes
  const uint32_t d = book.dim, num_centroids = book.num_centroids;
  const size_t id_bytes = book.id_bytes, stride = book.code_bytes();
  const int8_t* const centroids = book.centroids.data();
  const int8_t* const levels = book.levels.data();
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * stride;
    const int8_t* c8 = centroids + size_t(ReadId(code, id_bytes, num_centroids)) * d;
    __m256i j_even = _mm256_setzero_si256(), j_odd = j_even;
    if constexpr (kGain) {
      const int j = code[id_bytes];
      j_even = _mm256_set1_epi16(int16_t(j));
      j_odd = _mm256_set1_epi16(int16_t(j << 8));
    }
    const uint8_t* res = code + id_bytes + (kGain ? 1 : 0);
    int8_t* row = out + i * d;
    for (uint32_t t0 = 0; t0 < d; t0 += 32) {
      // The block's 32 · kBits bits (1 bit: half a word).
      uint64_t words[kWords] = {};
      std::memcpy(words, res + size_t(t0) * kBits / 8, size_t(kBits) * 4);
      __m256i bit[kBits];
      for (uint32_t p = 0; p < kBits; ++p) {
        uint64_t m = 0;
        for (uint32_t w = 0; w < kWords; ++w)
          m |= _pext_u64(words[w], kPattern[p]) << (w * kPerWord);
        bit[p] = ByteLanes(uint32_t(m));
      }
      __m256i level[kLevels];
      for (uint32_t b = 0; b < kLevels; ++b) {
        level[b] =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(levels + size_t(b) * d + t0));
      }
      // Level index = Σ_p bit_p 2^p: halve the candidates bit after bit.
      for (uint32_t p = 0, count = kLevels; p < kBits; ++p, count /= 2) {
        for (uint32_t q = 0; q < count / 2; ++q) {
          level[q] = _mm256_blendv_epi8(level[2 * q], level[2 * q + 1], bit[p]);
        }
      }
      __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c8 + t0));
      if constexpr (kGain) c = ApplyGainAvx2(c, j_even, j_odd);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + t0), _mm256_adds_epi8(c, level[0]));
    }
  }
}

template <uint32_t kBits>
void DecodeBitsAvx2(const Int8CodeBook& book, const uint8_t* codes, size_t n, int8_t* out) {
  if (book.gain_bytes() > 0) return DecodeAvx2<kBits, true>(book, codes, n, out);
  DecodeAvx2<kBits, false>(book, codes, n, out);
}

// kFull codes of 1 or 2 bits at dim 64 or 128 (the levels held in
// registers), else with dim at run time.
template <uint32_t kBits, bool kBitalg, bool kGain>
void DecodeFull(const Int8CodeBook& book, const uint8_t* codes, size_t n, int8_t* out) {
  if constexpr (kBits <= 2) {
    if (book.dim == 128) return DecodeAvx512<kBits, kBitalg, kGain, true, 128>(book, codes, n, out);
    if (book.dim == 64) return DecodeAvx512<kBits, kBitalg, kGain, true, 64>(book, codes, n, out);
  }
  DecodeAvx512<kBits, kBitalg, kGain, true>(book, codes, n, out);
}

template <uint32_t kBits, bool kBitalg>
void DecodeBits(const Int8CodeBook& book, const uint8_t* codes, size_t n, int8_t* out) {
  const bool full = book.dim % 64 == 0 && book.id_bytes == 2;
  if (book.gain_bytes() > 0) {
    return full ? DecodeFull<kBits, kBitalg, true>(book, codes, n, out)
                : DecodeAvx512<kBits, kBitalg, true, false>(book, codes, n, out);
  }
  return full ? DecodeFull<kBits, kBitalg, false>(book, codes, n, out)
              : DecodeAvx512<kBits, kBitalg, false, false>(book, codes, n, out);
}

}  // namespace

absl::StatusOr<Int8CodeBook> Int8CodeBook::Make(uint32_t dim, uint32_t bits, size_t id_bytes,
                                                const std::vector<float>& centroids,
                                                const std::vector<float>& bucket_values,
                                                float gain_max) {
  if (bits != 1 && bits != 2 && bits != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("code book: bits must be 1, 2 or 4, not ", bits));
  }
  if (id_bytes != 2 && id_bytes != 4) {
    return absl::InvalidArgumentError("code book: id_bytes must be 2 or 4");
  }
  if (!(gain_max >= 0.f) || !std::isfinite(gain_max)) {
    return absl::InvalidArgumentError("code book: gain_max must be finite and >= 0");
  }
  const size_t levels = size_t(1) << bits;
  if (dim == 0 || centroids.empty() || centroids.size() % dim != 0 ||
      bucket_values.size() != size_t(dim) * levels) {
    return absl::InvalidArgumentError("code book: centroids or bucket values do not match dim");
  }
  Int8CodeBook book;
  book.dim = dim;
  book.bits = bits;
  book.id_bytes = id_bytes;
  book.gain_max = gain_max;
  // The centroids at their largest gain (1 without a gain byte).
  const float top = gain_max > 0.f ? gain_max : 1.f;
  book.num_centroids = uint32_t(centroids.size() / dim);
  if (id_bytes == 2 && book.num_centroids > 65536) {
    return absl::InvalidArgumentError("code book: more than 65,536 centroids need 4-byte ids");
  }
  book.dim_scale.assign(dim, 0.f);
  float widest = 0.f;  // the largest centroid step of any dimension
  for (uint32_t t = 0; t < dim; ++t) {
    float c_max = 0.f, v_max = 0.f;
    for (uint32_t k = 0; k < book.num_centroids; ++k) {
      c_max = std::max(c_max, std::fabs(centroids[size_t(k) * dim + t]));
    }
    for (size_t b = 0; b < levels; ++b) {
      v_max = std::max(v_max, std::fabs(bucket_values[size_t(t) * levels + b]));
    }
    book.dim_scale[t] = (top * c_max + v_max) / 127.f;
    widest = std::max(widest, top * c_max / 127.f);
  }
  // The query is quantized to s8 after its values are multiplied by the
  // steps, so a dimension with a small step loses query precision as much
  // as it gains code precision. A step is raised to the geometric mean of
  // its own and the widest (never lowered: the codes must fit): for text,
  // whose lexical dimensions all have one small magnitude, this halves the
  // scores' error against the rows (cranfield: top-10 overlap with the
  // bf16 reranker 0.978 -> 0.984).
  for (uint32_t t = 0; t < dim; ++t) {
    float& step = book.dim_scale[t];
    step = std::max(step, std::sqrt(step * widest));
    if (!(step > 0.f)) step = 1.f;
  }
  book.centroids.resize(centroids.size());
  for (size_t k = 0; k < book.num_centroids; ++k) {
    for (uint32_t t = 0; t < dim; ++t) {
      book.centroids[k * dim + t] = Steps(top * centroids[k * dim + t], book.dim_scale[t]);
    }
  }
  book.levels.resize(levels * dim);
  for (size_t b = 0; b < levels; ++b) {
    for (uint32_t t = 0; t < dim; ++t) {
      book.levels[b * dim + t] = Steps(bucket_values[size_t(t) * levels + b], book.dim_scale[t]);
    }
  }
  return book;
}

void Int8CodeBook::DecodePortable(const uint8_t* codes, size_t n, int8_t* out) const {
  const size_t stride = code_bytes();
  const uint32_t mask = (1u << bits) - 1;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* code = codes + i * stride;
    const int8_t* c8 = centroids.data() + size_t(ReadId(code, id_bytes, num_centroids)) * dim;
    const int j = gain_bytes() > 0 ? code[id_bytes] : -1;
    const uint8_t* res = code + id_bytes + gain_bytes();
    for (uint32_t t = 0; t < dim; ++t) {
      const size_t bit = size_t(t) * bits;
      const uint32_t b = (res[bit / 8] >> (bit % 8)) & mask;
      const int c = j < 0 ? int(c8[t]) : (int(c8[t]) * j + 128) >> 8;
      const int sum = c + int(levels[size_t(b) * dim + t]);
      out[i * dim + t] = int8_t(std::clamp(sum, -128, 127));
    }
  }
}

template <bool kBitalg>
void Int8CodeBook::DecodeVector(const uint8_t* codes, size_t n, int8_t* out) const {
  switch (bits) {
    case 1:
      return DecodeBits<1, kBitalg>(*this, codes, n, out);
    case 2:
      return DecodeBits<2, kBitalg>(*this, codes, n, out);
    default:
      return DecodeBits<4, kBitalg>(*this, codes, n, out);
  }
}

void Int8CodeBook::DecodeWithoutBitalg(const uint8_t* codes, size_t n, int8_t* out) const {
  if (!kHasAvx512Bw) return DecodeAvx2Version(codes, n, out);
  DecodeVector<false>(codes, n, out);
}

void Int8CodeBook::DecodeAvx2Version(const uint8_t* codes, size_t n, int8_t* out) const {
  if (!kHasAvx2 || dim % 32 != 0) return DecodePortable(codes, n, out);
  switch (bits) {
    case 1:
      return DecodeBitsAvx2<1>(*this, codes, n, out);
    case 2:
      return DecodeBitsAvx2<2>(*this, codes, n, out);
    default:
      return DecodeBitsAvx2<4>(*this, codes, n, out);
  }
}

void Int8CodeBook::Decode(const uint8_t* codes, size_t n, int8_t* out) const {
  if (!kHasAvx512Bw) return DecodeAvx2Version(codes, n, out);
  if (kHasBitalg) return DecodeVector<true>(codes, n, out);
  return DecodeVector<false>(codes, n, out);
}

absl::StatusOr<std::unique_ptr<CodeScorer>> CodeScorer::Create(Int8CodeBook book,
                                                               const RerankerOptions& options) {
  if (book.dim == 0 || book.centroids.size() != size_t(book.num_centroids) * book.dim ||
      book.levels.size() != (size_t(1) << book.bits) * book.dim) {
    return absl::InvalidArgumentError("code scorer: an empty or inconsistent code book");
  }
  ATTN_ASSIGN_OR_RETURN(std::unique_ptr<Reranker> reranker,
                        Reranker::Create(book.dim, TokenDtype::kInt8, options));
  return std::unique_ptr<CodeScorer>(new CodeScorer(std::move(book), std::move(reranker)));
}

absl::Status CodeScorer::Score(const RerankQuery& query, const CandidateCodes& candidates,
                               float* scores) const {
  if (candidates.count == 0) return absl::OkStatus();
  return WithDecoded(query, candidates, [&](const RerankQuery& q, const CandidateTokens& tokens) {
    return reranker_->Score(q, tokens, scores);
  });
}

absl::Status CodeScorer::Explain(const RerankQuery& query, const CandidateCodes& candidates,
                                 std::vector<std::vector<TokenEvidence>>* out) const {
  out->clear();
  if (candidates.count == 0) return absl::OkStatus();
  return WithDecoded(query, candidates, [&](const RerankQuery& q, const CandidateTokens& tokens) {
    return reranker_->Explain(q, tokens, out);
  });
}

absl::Status CodeScorer::AttentionMaps(const RerankQuery& query, const CandidateCodes& candidates,
                                       std::vector<std::vector<float>>* out,
                                       std::vector<std::vector<TokenEvidence>>* evidence) const {
  out->clear();
  if (evidence != nullptr) evidence->clear();
  if (candidates.count == 0) return absl::OkStatus();
  return WithDecoded(query, candidates, [&](const RerankQuery& q, const CandidateTokens& tokens) {
    return reranker_->AttentionMaps(q, tokens, out, evidence);
  });
}

absl::Status CodeScorer::WithDecoded(
    const RerankQuery& query, const CandidateCodes& candidates,
    const std::function<absl::Status(const RerankQuery&, const CandidateTokens&)>& fn) const {
  if (query.tokens == nullptr || query.num_tokens == 0) {
    return absl::InvalidArgumentError("code scorer: empty query");
  }
  const uint32_t d = book_.dim, m = query.num_tokens;
  // The query in the codes' steps: q'_i[t] = q_i[t] · σ_t.
  thread_local std::vector<float> scaled;
  scaled.resize(size_t(m) * d);
  for (uint32_t i = 0; i < m; ++i) {
    for (uint32_t t = 0; t < d; ++t) {
      scaled[size_t(i) * d + t] = query.tokens[size_t(i) * d + t] * book_.dim_scale[t];
    }
  }
  // The candidates' bytes are decoded piece by piece, in cache, by the
  // reranker's threads right before each piece's matmul.
  const size_t code_bytes = book_.code_bytes();
  const std::function<void(size_t, size_t, void*)> decode = [&](size_t first, size_t n, void* out) {
    int8_t* to = static_cast<int8_t*>(out);
    if (candidates.sources == nullptr)
      return book_.Decode(candidates.codes + first * code_bytes, n, to);
    // Rows [first, first + n) may span candidates (a matmul piece).
    const size_t* offsets = candidates.offsets;
    size_t c = size_t(std::upper_bound(offsets, offsets + candidates.count, first) - offsets) - 1;
    // The next candidate with codes, wherever they lie, is asked for now,
    // so its reads overlap this decoding instead of stalling the next one.
    size_t next =
        size_t(std::lower_bound(offsets, offsets + candidates.count, first + n) - offsets);
    while (next < candidates.count && candidates.rows[next] == 0) ++next;
    if (next < candidates.count) {
      const char* at = reinterpret_cast<const char*>(candidates.sources[next]);
      const size_t bytes = candidates.rows[next] * code_bytes;
      for (size_t b = 0; b < bytes; b += 64) _mm_prefetch(at + b, _MM_HINT_T0);
    }
    for (; n > 0; ++c) {
      const size_t in = first - offsets[c];
      const size_t take = std::min<size_t>(n, candidates.rows[c] - in);
      book_.Decode(candidates.sources[c] + in * code_bytes, take, to);
      to += take * d;
      first += take;
      n -= take;
    }
  };
  RerankQuery q = query;
  q.tokens = scaled.data();
  CandidateTokens tokens{nullptr,          candidates.total_rows,
                         candidates.rows,  candidates.offsets,
                         candidates.count, nullptr};
  tokens.rows_from = &decode;
  return fn(q, tokens);
}

}  // namespace attnsearch
