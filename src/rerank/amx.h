// Whether this process may run AMX tile instructions, and the tile
// configuration the rerank kernels load. Internal to rerank/.
//
// A kernel runs on tiles only where the CPU has them, where
// ONEDNN_MAX_CPU_ISA (when set) allows an AMX level as it does for oneDNN's
// own kernels (so a test or an operator can run the AVX-512 path on an AMX
// machine), and once Linux has granted the process the tile state.
#ifndef ATTNSEARCH_RERANK_AMX_H_
#define ATTNSEARCH_RERANK_AMX_H_

#include <cstdint>

namespace attnsearch {

enum class AmxKind { kBf16, kInt8 };

// True when tiles of `kind` (TDPBF16PS, or TDPBSSD) may run here: the CPU
// has AVX-512 BW, AMX-TILE and the kind's AMX, ONEDNN_MAX_CPU_ISA is unset,
// ALL, DEFAULT or an AMX level, and the tile state was granted. Decided
// once per process.
bool AmxUsable(AmxKind kind);

// The 64-byte operand of LDTILECFG (palette 1): every one of the 8 tiles
// 16 rows of 64 bytes. Load kAmxTileConfig, never a local copy: GCC's
// _tile_loadconfig tells the compiler it reads only 8 bytes, so the rest of
// a local may never be written.
struct AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};
extern const AmxTileConfig kAmxTileConfig;

}  // namespace attnsearch

#endif  // ATTNSEARCH_RERANK_AMX_H_
